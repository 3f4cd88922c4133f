"""A model pickled by the previous release of the fitted-state layout loads
and predicts as it did there (with an ``InconsistentVersionWarning``).

The pickles are made by that release's own code, taken from the git history
(commit ``LAST_OF_0_2``) and run in a subprocess: no binary is committed.
"""

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sktransfer import InconsistentVersionWarning

from .conftest import make_images

ROOT = Path(__file__).resolve().parents[1]
#: The last commit whose estimators pickle the 0.2 fitted-state layout.
LAST_OF_0_2 = "324134c"

SCRIPT = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    import torch
    torch.set_num_threads(int(sys.argv[4]))  # the test's: the same sums, in the same order
    sys.path.insert(0, sys.argv[2])  # the old package first
    import sktransfer
    assert sktransfer.__file__.startswith(sys.argv[2]), sktransfer.__file__
    from sktransfer import PretrainedFeatureExtractor, TransferClassifier, TransferRegressor
    sys.path.insert(0, sys.argv[3])
    from conftest import TINY, make_images

    X, y = make_images(12, size=32)
    fast = dict(TINY, max_epochs=2, batch_size=4)
    models = {
        "classifier": (TransferClassifier(**fast), np.where(y == 1, "crack", "ok")),
        "multitask": (TransferClassifier(**fast), np.column_stack([y, np.arange(12) % 3])),
        "regressor": (TransferRegressor(**fast), np.column_stack([y * 2.0, y + 1.0])),
        "regressor_1d": (TransferRegressor(**fast), y * 2.0),
        "gradual": (TransferClassifier(**fast, trainable_stages="gradual"), y),
        "extractor": (PretrainedFeatureExtractor(**TINY, layer="stage2"), None),
    }
    out = {}
    for name, (est, target) in models.items():
        est.fit(X) if target is None else est.fit(X, target)
        if hasattr(est, "transform"):
            given = est.transform(X)
        elif hasattr(est, "predict_proba"):
            given = (est.predict(X), est.predict_proba(X))
        else:
            given = est.predict(X)
        out[name] = (pickle.dumps(est), given)
    with open(sys.argv[1], "wb") as f:
        pickle.dump((X, out), f)
""")


@pytest.fixture(scope="module")
def old_pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp("old")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", LAST_OF_0_2, "sktransfer",
                              "tests/conftest.py"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {LAST_OF_0_2} is not in this checkout's history")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    out = root / "pickles.pkl"
    script = root / "make.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(out), str(root), str(root / "tests"),
                    str(torch.get_num_threads())], check=True, cwd=root)
    with open(out, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("name", ["classifier", "multitask", "regressor", "regressor_1d",
                                  "gradual", "extractor"])
def test_a_model_of_the_previous_layout_loads_and_predicts_as_it_did(old_pickles, name):
    X, models = old_pickles
    data, given = models[name]
    with pytest.warns(InconsistentVersionWarning, match="0.2.0.dev0"):
        est = pickle.loads(data)
    if hasattr(est, "transform"):
        np.testing.assert_array_equal(est.transform(X), given)
    elif hasattr(est, "predict_proba"):
        labels, proba = given
        np.testing.assert_array_equal(est.predict(X), labels)
        got = est.predict_proba(X)
        for a, b in zip(got if isinstance(got, list) else [got],
                        proba if isinstance(proba, list) else [proba]):
            np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_array_equal(est.predict(X), given)
    # and a fit continues it, with this version's checks
    if name != "extractor":
        same, y = make_images(12, size=32)
        assert (same == X).all()
        est.set_params(warm_start=True, max_epochs=1).fit(X, TARGETS[name](y))
        assert est.n_epochs_ == 1


#: The targets the old script fitted on, from ``make_images``'s classes.
TARGETS = {
    "classifier": lambda y: np.where(y == 1, "crack", "ok"),
    "multitask": lambda y: np.column_stack([y, np.arange(len(y)) % 3]),
    "regressor": lambda y: np.column_stack([y * 2.0, y + 1.0]),
    "regressor_1d": lambda y: y * 2.0,
    "gradual": lambda y: y,
}
