"""TransferClassifier and TransferRegressor on tiny offline backbones."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from sktransfer import TransferClassifier, TransferRegressor

from .conftest import TINY, make_images

FAST = dict(TINY, max_epochs=3, batch_size=8)


@pytest.fixture
def data():
    X, y = make_images(n=24)
    return X, np.where(y == 1, "defect", "ok")


def _bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("augment", ["flips", True, False])
def test_fit_predict_string_labels(data, augment):
    X, y = data
    # batch_size=2: the validation split spans several batches
    clf = TransferClassifier(**{**FAST, "batch_size": 2}, augment=augment, lr=3e-3,
                             validation_fraction=0.25).fit(X, y)
    assert list(clf.classes_) == ["defect", "ok"]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert set(clf.predict(X)) <= {"defect", "ok"}
    assert clf.frozen_precomputed_ == (augment in ("flips", False))
    assert 1 <= clf.n_epochs_ <= 3 and "valid_loss" in clf.history_[0]
    assert 0 <= clf.history_[-1]["valid_acc"] <= 1


@pytest.mark.parametrize("trainable_stages", [0, 1, 2, "gradual"])
def test_frozen_parts_do_not_change(data, trainable_stages):
    """Parameters and BatchNorm buffers of frozen units are unchanged by training."""
    X, y = data
    # no validation split: early stopping could restore an earlier epoch
    clf = TransferClassifier(**dict(FAST, max_epochs=1), trainable_stages=trainable_stages,
                             augment=True, warm_start=True, lr=1e-2,
                             validation_fraction=None).fit(X, y)
    net = clf.model_
    before = [_bn_state(net.unit(i)) for i in range(net.n_units)]
    head_before = _bn_state(net.head)
    clf.set_params(max_epochs=2).fit(X, y)  # continues training (a copy of) the network
    net = clf.model_
    ends = net.stage_ends()
    n_stages = len(clf.stages_)
    cut = {0: net.n_units, "gradual": ends[n_stages - 2]}.get(trainable_stages)
    if cut is None:
        cut = ends[n_stages - trainable_stages - 1]
    for i in range(net.n_units):
        after = _bn_state(net.unit(i))
        if not after:  # pooling, activations: nothing to train
            continue
        same = all(torch.equal(before[i][k], after[k]) for k in after)
        assert same == (i < cut), (trainable_stages, net.unit_names[i])
    assert not all(torch.equal(head_before[k], v) for k, v in _bn_state(net.head).items())


def test_stages_are_the_librarys_and_freeze_by_stage(data):
    """timm's feature_info gives the stages; the last k of them train."""
    import timm

    X, y = data
    clf = TransferClassifier(**dict(FAST, max_epochs=1), trainable_stages=2).fit(X, y)
    expected = [f["module"] for f in timm.create_model("test_efficientnet").feature_info]
    assert clf.stages_ == expected
    net = clf.model_
    trainable = {n for n in net.unit_names
                 if any(p.requires_grad for p in net.backbone.get_submodule(n).parameters())}
    first = net.unit_names.index(expected[-2])  # stage 4 starts after stage 3's end
    assert trainable == {n for n in net.unit_names[first:]
                         if any(True for _ in net.backbone.get_submodule(n).parameters())}
    with pytest.raises(ValueError, match="trainable_stages=9: .* has 5 stages"):
        TransferClassifier(**FAST, trainable_stages=9).fit(X, y)


def test_same_random_state_same_predictions(data):
    X, y = data
    a = TransferClassifier(**FAST, augment=True).fit(X, y).predict_proba(X)
    b = TransferClassifier(**FAST, augment=True).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_pickle_clone_warm_start(data):
    X, y = data
    clf = TransferClassifier(**FAST).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert not hasattr(clone(clf), "model_")
    warm = TransferClassifier(**FAST, warm_start=True).fit(X, y)
    first = {k: v.clone() for k, v in warm.model_.head.state_dict().items()}
    model = warm.model_
    warm.fit(X, y)
    # continued on a copy: the first fit's network is left as it was
    assert warm.model_ is not model
    assert all(torch.equal(first[k], v) for k, v in model.head.state_dict().items())
    assert any(not torch.equal(first[k], v) for k, v in warm.model_.head.state_dict().items())


def test_class_weight_and_sample_weight(data):
    """Up-weighting the rare class raises its probability; class_weight="balanced"
    and the equivalent sample weights (7 for each of 3 defects in 24) learn the same."""
    X, y = data
    y = y.copy()
    y[:] = "ok"  # imbalanced: 3 defects in 24
    y[[1, 3, 5]] = "defect"
    params = dict(FAST, precision="float32", validation_fraction=None, lr=1e-2)
    plain = TransferClassifier(**params).fit(X, y)
    balanced = TransferClassifier(**params, class_weight="balanced").fit(X, y)
    sw = np.where(y == "defect", 7.0, 1.0)  # 21 / 3: the balanced ratio
    weighted = TransferClassifier(**params).fit(X, y, sample_weight=list(sw))
    defect = list(plain.classes_).index("defect")
    # 3 epochs of a tiny network: a shift of 0.04 measured, 0.02 asserted
    assert (balanced.predict_proba(X)[:, defect].mean()
            > plain.predict_proba(X)[:, defect].mean() + 0.02)
    np.testing.assert_allclose(weighted.predict_proba(X), balanced.predict_proba(X),
                               rtol=1e-4, atol=1e-5)
    assert list(sw) == list(np.where(y == "defect", 7.0, 1.0))  # not overwritten
    with pytest.raises(ValueError, match="sample_weight"):
        TransferClassifier(**params).fit(X, y, sample_weight=np.ones(len(y) - 1))


def test_weights_leaving_one_class_predict_it(data):
    X, y = data
    only_ok = np.where(y == "ok", 1.0, 0.0)
    clf = TransferClassifier(**FAST, lr=1e-2).fit(X, y, sample_weight=only_ok)
    assert list(clf.classes_) == sorted(set(y))
    assert (clf.predict(X) == "ok").all()


def test_pipeline_cross_val_and_grid_search(data):
    X, y = data
    pipe = make_pipeline(TransferClassifier(**dict(FAST, max_epochs=1)))
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,)
    grid = GridSearchCV(TransferClassifier(**dict(FAST, max_epochs=1)),
                        {"trainable_stages": [0, 1], "lr": [1e-3, 3e-3]}, cv=2).fit(X, y)
    assert grid.best_params_["trainable_stages"] in (0, 1)


def test_regressor_on_a_real_target():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.images[:80] / 16.0
    y = X.mean(axis=(1, 2)) * 100  # ink coverage, in percent
    reg = TransferRegressor(**dict(TINY, max_epochs=6, batch_size=16, lr=3e-3),
                            trainable_stages="all", augment=False).fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == (80,)
    assert abs(pred.mean() - y.mean()) < y.std()
    assert reg.score(X, y) > 0.0
    y2 = np.c_[y, -y]
    assert TransferRegressor(**FAST).fit(X, y2).predict(X).shape == (80, 2)


@pytest.mark.parametrize(
    "params, X_y, match",
    [
        ({}, "short_y", "same length"),
        ({}, "one_class", "single class"),
        ({}, "nan_y", "NaN"),
        ({}, "no_y", "requires y to be passed"),
        ({}, "continuous_y", "Unknown label type"),
        ({"trainable_stages": "some"}, None, "trainable_stages"),
        ({"trainable_stages": 99}, None, "trainable_stages=99"),
        ({"batch_size": 0}, None, "batch_size"),
        ({"validation_fraction": 0.01}, None, "without validation samples"),
    ],
)
def test_bad_input(data, params, X_y, match):
    X, y = data
    y = y.astype(object)
    if X_y == "short_y":
        y = y[:-1]
    elif X_y == "one_class":
        y = np.full(len(X), "ok")
    elif X_y == "nan_y":
        y = np.where(y == "ok", 0.0, 1.0)
        y[3] = np.nan
    elif X_y == "no_y":
        y = None
    elif X_y == "continuous_y":
        y = np.linspace(0, 1, len(X))
    with pytest.raises(ValueError, match=match):
        TransferClassifier(**{**FAST, **params}).fit(X, y)


def test_predict_before_fit(data):
    with pytest.raises(NotFittedError):
        TransferClassifier(**FAST).predict(data[0])


def test_test_time_flips_average_the_four_views(data):
    X, y = data
    clf = TransferClassifier(**FAST, augment="flips", tta=True, precision="float32").fit(X, y)
    with_tta = clf.predict_proba(X)
    views = [X, X[:, :, ::-1], X[:, ::-1], X[:, ::-1, ::-1]]
    logits = np.mean([clf.set_params(tta=False)._raw_predict(v) for v in views], axis=0)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(with_tta, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("Est", [TransferClassifier, TransferRegressor])
def test_contract_on_images(data, Est):
    import joblib

    X, y = data
    y = (y == "defect").astype(float) if Est is TransferRegressor else y
    est = Est(**FAST, precision="float32")  # bf16 results may vary with batch makeup
    assert not [k for k in vars(est) if k.endswith("_")]
    params = joblib.hash(est.get_params())
    with pytest.raises(NotFittedError):
        est.predict(X)
    assert est.fit(X, y) is est
    assert joblib.hash(est.get_params()) == params
    assert all(k.endswith("_") or k.startswith("_") or k in est.get_params() for k in vars(est))
    out = est.predict_proba if Est is TransferClassifier else est.predict
    pred = out(X)
    np.testing.assert_allclose(out(X[::-1]), pred[::-1], rtol=1e-4, atol=1e-5)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_image_size_auto_follows_the_images_within_bounds(tmp_path):
    from PIL import Image

    from sktransfer._images import check_images

    clf = TransferClassifier(image_size="auto")
    base = 224
    for side, expected in [(8, 224), (224, 224), (300, 300), (336, 336), (1000, 336)]:
        X = np.zeros((3, side, side + 5, 3), dtype=np.uint8)  # the shorter side counts
        assert clf._input_size(check_images(X), base) == expected
    # Files: read from the header; an unreadable file does not count here
    # (decoding reports it later) and the median ignores one odd size.
    paths = []
    for i, side in enumerate([300, 300, 260, 1000]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (side, side)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert clf._input_size(check_images([*paths, tmp_path / "bad.png"]), base) == 300
    assert TransferClassifier(image_size=None)._input_size(check_images(paths), base) == base
    assert TransferClassifier(image_size=64)._input_size(check_images(paths), base) == 64


def test_image_size_auto_in_fit(data):
    from sktransfer._backbones import load_backbone

    X, y = data  # 32x32 images, smaller than the tiny backbone's own input
    base = load_backbone(FAST["backbone"], None).input_size
    assert base > 32
    clf = TransferClassifier(**{**FAST, "image_size": "auto"}).fit(X, y)
    assert clf.image_size_ == clf.preprocess_["size"] == base
    assert clf.predict_proba(X).shape == (len(X), 2)


@pytest.mark.parametrize("augment", ["flips", True])
def test_a_last_batch_of_one_image_joins_the_one_before(augment):
    # image_size=32: the last stage's map is 1x1, where BatchNorm in training
    # mode cannot normalise a batch of one image
    X, y = make_images(n=17)
    clf = TransferClassifier(**FAST, augment=augment).fit(X, y)
    assert clf.n_epochs_ == 3
    assert [r["train_batch_count"] for r in clf.history_] == [2, 2, 2]


def test_gradual_fit_that_ends_before_its_schedule_predicts(data):
    """A gradual fit stopped with stages still frozen predicts through the whole network."""
    X, y = data
    clf = TransferClassifier(**dict(FAST, max_epochs=2), trainable_stages="gradual").fit(X, y)
    assert clf.trunk_ is None and clf.model_.cut > 0
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
