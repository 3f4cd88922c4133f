"""The package's structure: code outside the estimators reads a fitted
estimator through its output description (``__sktransfer_outputs__``) and
its public attributes only, and never writes its fitted state."""

import ast
from pathlib import Path

import numpy as np
import pytest

import sktransfer
from sktransfer import PretrainedFeatureExtractor, TransferClassifier, TransferRegressor

from .conftest import TINY, make_images

PACKAGE = Path(sktransfer.__file__).parent
#: The modules of the estimators themselves: they may read their own state.
ESTIMATOR_MODULES = {"_transfer.py", "_extractor.py"}
#: Fitted attributes that describe how the estimator runs, not what it learned
#: for a user: read through ``__sktransfer_outputs__``.
INTERNAL_FITTED = {"trunk_", "layer_module_", "target_encoder_"}


@pytest.fixture(scope="module")
def fitted():
    X, y = make_images(8, size=32)
    return [PretrainedFeatureExtractor(**TINY).fit(X),
            TransferClassifier(**TINY, max_epochs=1).fit(X, y),
            TransferClassifier(**TINY, max_epochs=1).fit(X, np.column_stack([y, y])),
            TransferRegressor(**TINY, max_epochs=1).fit(X, y.astype(float))]


@pytest.fixture(scope="module")
def private_names(fitted):
    """Every private attribute a fitted estimator has (its own and its
    sktransfer classes'), and the internal fitted ones."""
    names = set(INTERNAL_FITTED)
    for est in fitted:
        names |= {k for k in vars(est) if k.startswith("_") and not k.startswith("__")}
        for cls in type(est).__mro__:
            if cls.__module__.startswith("sktransfer"):
                names |= {k for k in vars(cls) if k.startswith("_") and not k.startswith("__")}
    return names


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ESTIMATOR_MODULES)


def _owner(node: ast.Attribute) -> str:
    value = node.value
    return value.id if isinstance(value, ast.Name) else type(value).__name__


def private_reads(path: Path, names: set) -> list[str]:
    """``owner.name`` for each read of one of ``names`` on anything but
    ``self``/``cls`` in the module at ``path``."""
    return [f"{path.name}:{node.lineno}: {_owner(node)}.{node.attr}"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Attribute) and node.attr in names
            and _owner(node) not in ("self", "cls")]


def fitted_state_writes(path: Path, names: set) -> list[str]:
    """``owner.name = ...`` for each assignment to one of ``names`` on
    anything but ``self`` in the module at ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                   else [])
        found += [f"{path.name}:{node.lineno}: {_owner(t)}.{t.attr} = ..." for t in targets
                  if isinstance(t, ast.Attribute) and t.attr in names and _owner(t) != "self"]
    return found


@pytest.fixture(scope="module")
def fitted_names(fitted):
    return {k for est in fitted for k in vars(est) if k.endswith("_")}


def test_no_module_outside_the_estimators_reads_their_private_state(private_names):
    found = [line for path in _modules() for line in private_reads(path, private_names)]
    assert not found, "read through __sktransfer_outputs__() instead:\n" + "\n".join(found)


def test_no_module_outside_the_estimators_writes_fitted_state(fitted_names):
    """A fitted attribute is set by its estimator's ``fit`` only: nothing
    edits it on a copy."""
    found = [line for path in _modules() for line in fitted_state_writes(path, fitted_names)]
    assert not found, "\n".join(found)


def test_the_checks_see_what_they_look_for(private_names, fitted_names, tmp_path):
    """What the old export check did: read private state, edit a copy."""
    module = tmp_path / "reads.py"
    module.write_text("import copy\n\n\ndef f(estimator):\n"
                      "    ref = copy.copy(estimator)\n"
                      "    ref.precision_ = 'float32'\n"
                      "    return estimator.trunk_, estimator._use_tta(), self_like.model_\n")
    assert [r.split(": ")[1] for r in private_reads(module, private_names)] == [
        "estimator.trunk_", "estimator._use_tta"]
    assert fitted_state_writes(module, fitted_names) == ["reads.py:6: ref.precision_ = ..."]
