"""A fit either succeeds or changes nothing.

Every way a fit can fail, for both fine-tuned estimators, unfitted or
fitted, with and without ``warm_start``: the estimator afterwards pickles
to the same bytes and predicts the same as before (an unfitted one stays
unfitted). A failing process of a distributed fit: ``test_distributed.py``.
"""

import pickle

import numpy as np
import pytest

from sktransfer import ImageError, PretrainedFeatureExtractor, TransferClassifier, TransferRegressor
from sktransfer._export import ExportError

from .conftest import TINY, interrupt_in_epoch, make_images, write_pngs

FAST = dict(TINY, max_epochs=2, batch_size=4)
N = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``N`` PNG files and the same list with the last one truncated."""
    root = tmp_path_factory.mktemp("transaction")
    paths = write_pngs(make_images(N, size=32)[0], root)
    broken = root / "truncated.png"
    data = (root / "img00.png").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    return paths, paths[:-1] + [str(broken)]


def _first_targets(Est):
    y = np.arange(N) % 2
    return np.where(y == 1, "crack", "ok") if Est is TransferClassifier else y * 0.5


def _new_targets(Est, continuing):
    """What the failing fit is given: for a fresh fit, new labels or new units
    (a half-done refit would then answer in them)."""
    y = np.arange(N) % 2
    if Est is TransferClassifier:
        return np.where(y == 1, "crack", "ok") if continuing else np.where(y == 1, "dog", "cat")
    return y * 500.0


def _poison_after(monkeypatch, calls_before_nan):
    from sktransfer import _network

    original = _network.TopNetwork.forward
    calls = {"n": 0}

    def poisoned(self, x):
        calls["n"] += 1
        out = original(self, x)
        return out * float("nan") if calls["n"] > calls_before_nan else out

    monkeypatch.setattr(_network.TopNetwork, "forward", poisoned)


def _failing_export(monkeypatch):
    from sktransfer import _engines

    def refuse(*args, **kwargs):
        raise ExportError("this network cannot be exported here")

    monkeypatch.setattr(_engines, "_export", refuse)


#: way of failing -> (set-up, parameters of the failing fit, what it raises)
WAYS = {
    "unreadable image": (None, {}, ImageError),
    "NaN loss": (lambda mp: _poison_after(mp, 4), {}, FloatingPointError),
    "interruption": (lambda mp: interrupt_in_epoch(mp, 2), {}, KeyboardInterrupt),
    # a class without validation images; no training images left
    "impossible split": (None, {"validation_fraction": 0.05}, ValueError),
    "a cut the backbone does not have": (None, {"trainable_stages": 9}, ValueError),
    # no graph exported by an earlier test (fresh process caches)
    "engine that cannot export": (_failing_export, {"engine": "onnxruntime"}, ExportError),
}

pytestmark = pytest.mark.usefixtures("fresh_process_caches")


def _outputs(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("fitted", [False, True])
@pytest.mark.parametrize("Est", [TransferClassifier, TransferRegressor])
def test_a_failed_fit_changes_nothing(files, monkeypatch, Est, fitted, warm_start, way):
    good, broken = files
    setup, params, raises = WAYS[way]
    if way == "impossible split" and Est is TransferRegressor:
        params = {"validation_fraction": 0.99}  # a random split: no training image left
    est = Est(**FAST, warm_start=warm_start)
    if fitted:
        est.fit(good, _first_targets(Est))
        expected = _outputs(est, good)
    before = pickle.dumps(est.set_params(**params))
    if setup is not None:
        setup(monkeypatch)
    X = broken if way == "unreadable image" else good
    with pytest.raises(raises):
        est.fit(X, _new_targets(Est, continuing=warm_start and fitted))
    monkeypatch.undo()
    assert pickle.dumps(est) == before
    if fitted:
        np.testing.assert_array_equal(_outputs(est, good), expected)
        if Est is TransferClassifier:
            assert set(est.predict(good)) <= {"crack", "ok"}  # the old labels, not cat/dog
    else:
        assert not hasattr(est, "model_")
        assert set(vars(est)) == set(est.get_params())


@pytest.mark.parametrize("Est", [TransferClassifier, TransferRegressor])
def test_a_failed_warm_start_leaves_the_network_untrained(files, monkeypatch, Est):
    """A continued fit trains a copy: the fitted network's weights are those
    of the first fit after a continuation that failed in its second epoch."""
    good, _ = files
    est = Est(**FAST, warm_start=True).fit(good, _first_targets(Est))
    weights = {k: v.clone() for k, v in est.model_.state_dict().items()}
    _poison_after(monkeypatch, 4)
    with pytest.raises(FloatingPointError, match="left as it was"):
        est.fit(good, _first_targets(Est))
    for k, v in est.model_.state_dict().items():
        assert (v == weights[k]).all(), k


# -- a warm start continues what it can -------------------------------------------------------


@pytest.mark.parametrize("change, match", [
    (dict(backbone="timm/test_resnet"), r"backbone='timm/test_resnet', but the network is "
                                        r"'timm/test_efficientnet'"),
    (dict(image_size=40), r"image_size=40 means 40 px, but the network was fitted at 32 px"),
])
@pytest.mark.parametrize("Est", [TransferClassifier, TransferRegressor])
def test_a_warm_start_refuses_another_network(images, Est, change, match):
    X, y = images
    est = Est(**FAST, warm_start=True).fit(X, y)
    before = pickle.dumps(est.set_params(**change))
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    assert pickle.dumps(est) == before


def test_a_regressor_warm_start_refuses_another_number_of_targets(images):
    X, _ = images
    y = np.linspace(0, 1, len(X))
    reg = TransferRegressor(**FAST, warm_start=True).fit(X, y)
    before = pickle.dumps(reg)
    with pytest.raises(ValueError, match="y has 2 target column.*fitted on 1"):
        reg.fit(X, np.column_stack([y, y]))
    assert pickle.dumps(reg) == before
    assert reg.predict(X).shape == (len(X),)


@pytest.mark.parametrize("y_new, match", [
    (lambda y: np.where(y == 1, "crack", "dent"), r"labels \['dent'\] not seen in the first fit"),
    (lambda y: np.column_stack([y, y]), "y has 2 columns; this model was fitted on one"),
])
def test_a_classifier_warm_start_refuses_other_targets(images, y_new, match):
    X, y = images
    clf = TransferClassifier(**FAST, warm_start=True).fit(X, np.where(y == 1, "crack", "ok"))
    before = pickle.dumps(clf)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y_new(y))
    assert pickle.dumps(clf) == before


def test_a_multitask_warm_start_refuses_another_number_of_columns(images):
    X, y = images
    y2 = np.column_stack([y, np.arange(len(y)) % 3])
    clf = TransferClassifier(**FAST, warm_start=True).fit(X, y2)
    with pytest.raises(ValueError, match="y has one column; this model was fitted on 2"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="y has 3 columns; this model was fitted on 2"):
        clf.fit(X, np.column_stack([y2, y]))


def test_a_warm_start_continues_with_auto_image_size_on_other_images(images):
    """``image_size="auto"`` keeps the fitted network's size."""
    X, y = images
    clf = TransferClassifier(**{**FAST, "image_size": "auto"}, warm_start=True).fit(X, y)
    size = clf.image_size_
    big, _ = make_images(len(X), size=2 * size)  # "auto" would pick a larger size
    clf.fit(big, y)
    assert clf.image_size_ == size and clf.n_epochs_ == FAST["max_epochs"]


@pytest.mark.parametrize("change, raises", [
    (dict(layer="stage9"), ValueError),  # checked once the network is built
    (dict(engine="onnxruntime"), ExportError),
])
def test_a_failed_extractor_fit_changes_nothing(files, monkeypatch, change, raises):
    good, _ = files
    est = PretrainedFeatureExtractor(**TINY).fit(good)
    expected = est.transform(good)
    before = pickle.dumps(est.set_params(**change))
    _failing_export(monkeypatch)
    with pytest.raises(raises):
        est.fit(good)
    monkeypatch.undo()
    assert pickle.dumps(est) == before
    np.testing.assert_array_equal(est.transform(good), expected)
