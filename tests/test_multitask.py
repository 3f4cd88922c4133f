"""Several targets from one backbone: TransferClassifier with a 2-D y."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.model_selection import GridSearchCV, KFold, cross_validate

from sktransfer import TransferClassifier, _tasks

from .conftest import TINY, make_images

FAST = dict(TINY, max_epochs=2, batch_size=8)
# Nothing shared trains, nothing random but the shared draws: each head of a
# multi-task model is then the single-task model of its column.
HEAD_ONLY = dict(TINY, max_epochs=3, batch_size=8, trainable_stages=0, dropout=0.0,
                 augment=False, max_grad_norm=1e6, label_smoothing=0.0)


def _multiclass_y(n):
    """Column 0 the image's class, column 1 strings of three classes."""
    _, y = make_images(n)
    return np.column_stack([y, np.array(["a", "b", "c"] * n, dtype=object)[:n]]).astype(object)


def _column_labels(y):
    return [np.unique(np.asarray(y[:, t].tolist())).tolist() for t in range(y.shape[1])]


def test_multiclass_multioutput_outputs():
    X, y1 = make_images(12)
    y = np.empty((12, 2), dtype=object)
    y[:, 0] = np.where(y1 == 1, "crack", "ok")
    y[:, 1] = np.array([3, 5, 7] * 4)
    clf = TransferClassifier(**FAST).fit(X, y)
    assert clf.n_outputs_ == 2
    assert [c.tolist() for c in clf.classes_] == [["crack", "ok"], [3, 5, 7]]
    proba = clf.predict_proba(X)
    assert isinstance(proba, list) and [p.shape for p in proba] == [(12, 2), (12, 3)]
    for p in proba:
        np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    pred = clf.predict(X)
    assert pred.shape == (12, 2) and pred.dtype == object
    assert set(pred[:, 0]) <= {"crack", "ok"} and set(pred[:, 1]) <= {3, 5, 7}
    np.testing.assert_array_equal(pred[:, 1], clf.classes_[1][proba[1].argmax(1)])
    expected = np.mean([(pred[i] == y[i]).all() for i in range(12)])
    assert clf.score(X, y) == pytest.approx(expected)


def test_multilabel_indicator_outputs():
    X, y1 = make_images(12)
    y = np.column_stack([y1, 1 - y1, np.arange(12) % 3 == 0]).astype(int)
    clf = TransferClassifier(**FAST).fit(X, y)
    tasks = clf.target_encoder_
    assert tasks.kind == "multilabel-indicator" and tasks.widths == (1, 1, 1)
    assert clf.model_.head[-1].heads[0].out_features == 1  # one sigmoid per label
    assert [c.tolist() for c in clf.classes_] == [[0, 1]] * 3
    proba = clf.predict_proba(X)
    assert [p.shape for p in proba] == [(12, 2)] * 3
    pred = clf.predict(X)
    assert pred.shape == (12, 3) and pred.dtype.kind == "i"
    for p, col in zip(proba, pred.T):
        np.testing.assert_array_equal(col, p.argmax(1))
    # subset accuracy, as scikit-learn scores a multilabel indicator
    assert clf.score(X, y) == pytest.approx(accuracy_score(y, pred))


def test_each_head_equals_the_single_task_model_when_nothing_shared_trains():
    X, _ = make_images(16)
    y = _multiclass_y(16)
    multi = TransferClassifier(**HEAD_ONLY).fit(X, y)
    proba = multi.predict_proba(X)
    for t in range(2):
        single = TransferClassifier(**HEAD_ONLY).fit(X, np.asarray(y[:, t].tolist()))
        np.testing.assert_allclose(proba[t], single.predict_proba(X), atol=2e-3)


def test_a_missing_label_masks_that_task_only():
    tasks = _tasks.Tasks("multiclass-multioutput", (np.arange(2), np.arange(3)))
    loss = _tasks.TaskLoss(tasks.widths, False, [0.5, 0.5], label_smoothing=0.1)
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.tensor([[0, 2], [1, _tasks.MISSING], [1, 0], [_tasks.MISSING, 1]])
    loss(logits, targets).sum().backward()
    grad = logits.grad
    assert grad[1, 2:].abs().sum() == 0 and grad[1, :2].abs().sum() > 0
    assert grad[3, :2].abs().sum() == 0 and grad[3, 2:].abs().sum() > 0
    assert grad[0].abs().min() > 0


@pytest.fixture
def scales(monkeypatch):
    """The task scales of each fit's loss, and the training targets they came from."""
    calls = []
    original = _tasks.task_scales

    def spy(codes, weights, task_weights, class_weights=None):
        out = original(codes, weights, task_weights, class_weights)
        calls.append((codes, out))
        return out

    monkeypatch.setattr(_tasks, "task_scales", spy)
    return calls


def test_missing_labels_in_fit(scales):
    X, _ = make_images(12)
    y = _multiclass_y(12)
    y[2, 1] = None
    y[5, 0] = np.nan
    clf = TransferClassifier(**FAST).fit(X, y)
    assert [c.tolist() for c in clf.classes_] == _column_labels(np.delete(y, [2, 5], axis=0))
    # the tasks' losses are means over the images labelled for them
    np.testing.assert_allclose(scales[-1][1], [0.5 * 12 / 11, 0.5 * 12 / 11])
    # an image with no label at all takes no part (as a weight of zero)
    y[7, :] = None
    assert clf.fit(X, y).n_outputs_ == 2
    # scoring compares the labelled columns only
    y_full = clf.predict(X)
    y_full[2, 1] = None
    assert clf.score(X, y_full) == 1.0


def test_task_weights(scales):
    X, _ = make_images(12)
    y = _multiclass_y(12)
    clf = TransferClassifier(**FAST, task_weights=[3, 1]).fit(X, y)
    np.testing.assert_allclose(scales[-1][1], [0.75, 0.25])
    with pytest.raises(ValueError, match="task_weights has shape \\(3,\\); y has 2 target"):
        clone(clf).set_params(task_weights=[1, 1, 1]).fit(X, y)
    with pytest.raises(ValueError, match="not all zero"):
        clone(clf).set_params(task_weights=[0, 0]).fit(X, y)
    with pytest.raises(ValueError, match="y has 1 target"):
        clone(clf).set_params(task_weights=[1, 2]).fit(X, y[:, 0].astype(int))


def test_task_weights_weigh_the_training_losses():
    X, _ = make_images(12)
    y = _multiclass_y(12)
    shuffled = y.copy()
    shuffled[:, 1] = np.roll(y[:, 1], 1)  # same classes, other labels

    def defect_proba(target, weights):
        clf = TransferClassifier(**FAST, task_weights=weights).fit(X, target)
        return clf.predict_proba(X)[0]

    # a column weighted zero changes nothing the other head learns...
    np.testing.assert_allclose(defect_proba(y, [1, 0]), defect_proba(shuffled, [1, 0]),
                               atol=1e-6)
    # ...weighted like the other, its labels train the shared part
    assert np.abs(defect_proba(y, [1, 1]) - defect_proba(shuffled, [1, 1])).max() > 1e-4


def test_multilabel_with_missing_labels_from_pandas_pickle_and_explain(scales):
    pd = pytest.importorskip("pandas")
    X, y1 = make_images(12)
    y = pd.DataFrame({"crack": y1, "dark": 1 - y1,
                      "edge": (np.arange(12) % 3 == 0).astype(int)}).astype("Int64")
    y.iloc[2, 1] = pd.NA
    y.iloc[5, 0] = pd.NA
    clf = TransferClassifier(**FAST).fit(X, y)
    assert clf.target_encoder_.kind == "multilabel-indicator"
    assert [c.tolist() for c in clf.classes_] == [[0, 1]] * 3
    # each label's loss is its mean over the 11 or 12 images labelled for it
    np.testing.assert_allclose(scales[-1][1], [12 / 11 / 3, 12 / 11 / 3, 1 / 3])
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    maps = again.explain(X[:2], task=2, target=1)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


@pytest.mark.parametrize("y, match", [
    (np.zeros((12, 2, 2)), r"1-D or 2-D"),
    (np.column_stack([np.arange(12) % 2, np.ones(12)]), r"column 1 has a single class \(1"),
    ([[0, 1]] * 11 + [[1]], r"ragged"),
    (np.array([[0, "a"]] * 6 + [[1, 2]] * 6, dtype=object), r"column 1 mixes label types"),
    (np.column_stack([np.arange(12) % 2, np.linspace(0, 1, 12)]), r"column 1 holds continuous"),
])
def test_bad_2d_targets_are_refused_clearly(y, match):
    X, _ = make_images(12)
    with pytest.raises(ValueError, match=match):
        TransferClassifier(**FAST).fit(X, y)


def test_class_weight_per_column():
    X, _ = make_images(12)
    y = _multiclass_y(12)
    per_column = [{0: 1, 1: 3}, {"a": 2, "b": 1, "c": 1}]
    clf = TransferClassifier(**FAST, class_weight=per_column).fit(X, y)
    codes = clf.target_encoder_.encode(y)
    loss = _tasks.classification_loss(clf.target_encoder_, codes, np.ones(12),
                                      class_weight=per_column, task_weights=None,
                                      label_smoothing=0.1)
    # each column's class weights weigh that column's loss, per class
    np.testing.assert_allclose(loss.class_weights_0.numpy(), [1, 3])
    np.testing.assert_allclose(loss.class_weights_1.numpy(), [2, 1, 1])  # a, b, c
    # ... and each task's loss stays its weighted mean over its images
    per_task = np.array([(np.where(codes[:, 0] == 1, 3.0, 1.0)).sum(),
                         (np.where(codes[:, 1] == 0, 2.0, 1.0)).sum()])
    np.testing.assert_allclose(loss.scales.numpy(), 0.5 * 12 / per_task, rtol=1e-6)
    with pytest.raises(ValueError, match="one dict per column"):
        TransferClassifier(**FAST, class_weight={0: 1, 1: 2}).fit(X, y)
    TransferClassifier(**FAST, class_weight="balanced").fit(X, y)


def test_pickle_warm_start_and_explain():
    X, _ = make_images(12)
    y = _multiclass_y(12)
    clf = TransferClassifier(**FAST).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    with pytest.raises(ValueError, match="fitted on 2"):
        clf.set_params(warm_start=True).fit(X, y[:, 0].astype(int))
    assert clf.fit(X, y).n_epochs_ == 2
    maps = clf.explain(X[:3], task=1, target="b")
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="pass task=<column index in 0..1>"):
        clf.explain(X[:3])
    with pytest.raises(ValueError, match=r"not among classes_\[1\]"):
        clf.explain(X[:3], task=1, target="z")


def test_cross_validate_and_grid_search_with_a_scorer_per_task():
    X, _ = make_images(12)
    y = _multiclass_y(12)

    def column_accuracy(t):
        # the user guide's scorer; column 0 holds numbers in an object array
        return make_scorer(lambda yt, yp: accuracy_score(yt[:, t].tolist(), yp[:, t].tolist()))

    scoring = {"defect": column_accuracy(0), "kind": column_accuracy(1)}
    cv = KFold(2, shuffle=True, random_state=0)
    result = cross_validate(TransferClassifier(**FAST), X, y, cv=cv, scoring=scoring)
    assert set(result) >= {"test_defect", "test_kind"} and len(result["test_kind"]) == 2
    search = GridSearchCV(TransferClassifier(**FAST), {"task_weights": [None, [3, 1]]},
                          cv=cv, scoring=scoring, refit="defect").fit(X, y)
    assert search.best_estimator_.n_outputs_ == 2
    assert "mean_test_kind" in search.cv_results_


def test_frozen_part_runs_once_for_all_heads(tmp_path):
    from sktransfer._testing import recording

    X, _ = make_images(12)
    with recording() as counts:
        TransferClassifier(**FAST, memory=tmp_path).fit(X, _multiclass_y(12))
    assert counts["frozen", "written"] == 12 * 4  # each image's four flips, once


def test_export_and_compare_refuse_2d_targets_clearly(tmp_path):
    from sktransfer import compare, export_onnx
    from sktransfer._compare import CompareError
    from sktransfer._onnx import ExportError

    X, _ = make_images(12)
    y = _multiclass_y(12)
    clf = TransferClassifier(**FAST).fit(X, y)
    with pytest.raises(ExportError, match="2 targets"):
        export_onnx(clf, tmp_path / "m.onnx")
    with pytest.raises(CompareError, match="one label per image"):
        compare(X, y, verbose=False)


def test_dask_output_of_several_targets():
    from sktransfer.dask import _output_spec

    X, _ = make_images(12)
    clf = TransferClassifier(**FAST).fit(X, _multiclass_y(12))
    assert _output_spec(clf, "predict") == (["prediction0", "prediction1"], np.dtype(object))
    with pytest.raises(ValueError, match="use method='predict'"):
        _output_spec(clf, "predict_proba")


def test_regressor_task_weights():
    from sktransfer import TransferRegressor

    X, y1 = make_images(12)
    y = np.column_stack([y1 * 2.0, np.arange(12.0)])
    reg = TransferRegressor(**FAST, task_weights=[1, 0]).fit(X, y)
    assert reg.predict(X).shape == (12, 2)
    # the second target's loss weighs nothing
    loss = _tasks.regression_loss([1, 0], 2)
    np.testing.assert_allclose(loss.weights.numpy(), [1, 0])
    pred = torch.zeros(3, 2, requires_grad=True)
    loss(pred, torch.ones(3, 2)).sum().backward()
    assert pred.grad[:, 1].abs().sum() == 0 and pred.grad[:, 0].abs().sum() > 0
    with pytest.raises(ValueError, match="y has 2 target"):
        clone(reg).set_params(task_weights=[1, 1, 1]).fit(X, y)


def test_task_scales_come_from_the_training_part_only(scales):
    """With early stopping, the validation images take no part in the loss's statistics."""
    X, _ = make_images(16)
    y = _multiclass_y(16)
    TransferClassifier(**FAST, validation_fraction=0.25).fit(X, y)
    codes, _ = scales[-1]
    assert len(codes) == 12  # 16 images, 4 of them kept for validation


def test_class_weights_of_one_column_weigh_that_columns_loss_only():
    """A class weight of column 1 leaves what the head of column 0 learns unchanged
    (it once multiplied into one per-image weight that rescaled every task's loss)."""
    X, _ = make_images(12)
    y = _multiclass_y(12)
    y[:, 0] = np.where(np.arange(12) % 2 == 0, 0, 1)

    def head_0(class_weight):
        clf = TransferClassifier(**HEAD_ONLY, class_weight=class_weight).fit(X, y)
        return clf.model_.head[2].heads[0].weight.detach().clone()

    plain = head_0([{0: 1, 1: 1}, {"a": 1, "b": 1, "c": 1}])
    weighted = head_0([{0: 1, 1: 1}, {"a": 50, "b": 1, "c": 1}])
    torch.testing.assert_close(weighted, plain, rtol=0, atol=0)
    assert not torch.equal(head_0([{0: 50, 1: 1}, {"a": 1, "b": 1, "c": 1}]), plain)


def test_early_stopping_watches_the_metric_score_reports():
    """Validation accuracy counts an image right only when every labelled column is,
    as ``score`` does (subset accuracy), not over (image, column) pairs."""
    from types import SimpleNamespace

    from sktransfer._training.callbacks import valid_accuracy

    tasks = _tasks.Tasks("multiclass-multioutput", (np.arange(2), np.arange(3)))
    loss = _tasks.TaskLoss(tasks.widths, False, [0.5, 0.5])
    # predicted codes: image 0 (0, 2), image 1 (1, 0), image 2 (1, 1)
    logits = torch.tensor([[5., 0., 0., 0., 5.], [0., 5., 5., 0., 0.], [0., 5., 0., 5., 0.]])
    net = SimpleNamespace(criterion_=loss, forward_iter=lambda X, training: [logits])
    y = np.array([[0, 2], [1, 1], [0, _tasks.MISSING]])  # right, half right, wrong
    assert valid_accuracy(net, None, y) == pytest.approx(1 / 3)
