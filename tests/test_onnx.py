"""ONNX export and torch-free serving."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sktransfer import (
    ExportError,
    PretrainedFeatureExtractor,
    TransferClassifier,
    TransferRegressor,
    export_onnx,
    onnx_inputs,
)
from sktransfer._onnx import float32_reference

from .conftest import TINY, make_images


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _at_size(X, size):
    """``X`` resized to the network's size: the same tensors on both sides."""
    return np.stack([np.asarray(Image.fromarray(x).resize((size, size))) for x in X])


@pytest.fixture(scope="module")
def data():
    X, y = make_images(n=16)
    labels = np.where(y == 1, "crack", "ok")
    return X, labels


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory, data):
    X, labels = data
    clf = TransferClassifier(**TINY, max_epochs=2, tta=True).fit(X, labels)
    path = tmp_path_factory.mktemp("onnx") / "clf.onnx"
    return clf, path, export_onnx(clf, path, X=X)


def test_extractor_export_matches_float32_features(tmp_path, data):
    X, _ = data
    ext = PretrainedFeatureExtractor(**TINY).fit(X)
    report = export_onnx(ext, tmp_path / "ext.onnx")
    assert report.outputs == ["features"] and report.opset == 20 and report.n_check == 8
    assert report.max_abs_diff["features"] <= 1e-5
    assert report.file_size == (tmp_path / "ext.onnx").stat().st_size
    model = onnx.load(tmp_path / "ext.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    spec = json.loads(meta["sktransfer.input"])
    assert spec["size"] == ext.image_size_ and spec["layout"] == "NCHW"
    # dynamic batch: 1 and 5 images, the estimator's features at float32
    session = _session(tmp_path / "ext.onnx")
    Xs = _at_size(X, ext.image_size_)
    expected = float32_reference(ext, Xs)["features"]
    for n in (1, 5):
        (got,) = session.run(None, {"images": onnx_inputs(Xs[:n], ext)})
        np.testing.assert_allclose(got, expected[:n], atol=1e-5)


def test_extractor_stage_layer(tmp_path, data):
    X, _ = data
    ext = PretrainedFeatureExtractor(**TINY, layer="stage2").fit(X)
    report = export_onnx(ext, tmp_path / "stage.onnx", X=X[:4])
    assert report.max_abs_diff["features"] <= 1e-5
    (got,) = _session(tmp_path / "stage.onnx").run(None, {"images": onnx_inputs(X[:2], ext)})
    assert got.shape == (2, ext.n_features_out_)


def test_classifier_export_labels_tta_softmax(classifier_file, data):
    X, labels = data
    clf, path, report = classifier_file
    assert report.outputs == ["label", "probabilities"]
    assert report.max_abs_diff["probabilities"] <= 1e-5
    assert report.label_agreement == 1.0 and report.n_check == len(X)
    session = _session(path)
    Xs = _at_size(X, clf.image_size_)
    for n in (1, 7):  # the batch dimension is dynamic
        label, proba = session.run(None, {"images": onnx_inputs(Xs[:n], clf)})
        ref = float32_reference(clf, Xs[:n])
        np.testing.assert_allclose(proba, ref["probabilities"], atol=1e-5)
        assert label.tolist() == ref["label"].tolist()  # the original string labels
    assert set(label) <= {"crack", "ok"}


def test_regressor_export_prediction_in_target_units(tmp_path, data):
    X, _ = data
    y = X.mean(axis=(1, 2, 3)) / 10 + 100  # far from 0: the target scaling is in the graph
    reg = TransferRegressor(**TINY, max_epochs=2).fit(X, y)
    report = export_onnx(reg, tmp_path / "reg.onnx", X=X)
    assert report.outputs == ["prediction"] and report.label_agreement is None
    assert report.max_abs_diff["prediction"] <= 1e-4
    (pred,) = _session(tmp_path / "reg.onnx").run(None, {"images": onnx_inputs(X[:3], reg)})
    assert pred.shape == (3,)


def test_pipeline_export_joins_skl2onnx_steps(tmp_path, data):
    X, labels = data
    pipe = make_pipeline(PretrainedFeatureExtractor(**TINY), StandardScaler(), PCA(4),
                         LogisticRegression()).fit(X, labels)
    report = export_onnx(pipe, tmp_path / "pipe.onnx", X=X)
    assert report.outputs == ["label", "probabilities"]
    assert report.max_abs_diff["probabilities"] <= 1e-5 and report.label_agreement == 1.0
    label, proba = _session(tmp_path / "pipe.onnx").run(
        None, {"images": onnx_inputs(X, tmp_path / "pipe.onnx")})
    assert proba.shape == (len(X), 2) and set(label) <= {"crack", "ok"}


def test_unsupported_cases_name_the_step_and_leave_no_file(tmp_path, data):
    X, labels = data
    with pytest.raises(NotFittedError):
        export_onnx(PretrainedFeatureExtractor(**TINY), tmp_path / "a.onnx")
    pipe = make_pipeline(PretrainedFeatureExtractor(**TINY),
                         FunctionTransformer(np.abs), LogisticRegression())
    pipe.fit(X, labels)
    with pytest.raises(ExportError, match=r"step 2 'functiontransformer'.*skl2onnx"):
        export_onnx(pipe, tmp_path / "b.onnx")
    with pytest.raises(ExportError, match="first step is a PretrainedFeatureExtractor"):
        export_onnx(make_pipeline(StandardScaler(), LogisticRegression()).fit(
            X.reshape(len(X), -1), labels), tmp_path / "c.onnx")
    with pytest.raises(ExportError, match="not an sktransfer estimator"):
        export_onnx(LogisticRegression(), tmp_path / "d.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_onnx_inputs_match_the_estimators_preprocessing(data):
    X, _ = data  # 40 px images, network at 32 px: both resize
    ext = PretrainedFeatureExtractor(**TINY).fit(X)
    from sktransfer._images import check_images
    from sktransfer._inputs import Preprocess, iter_batches

    source = check_images(X)
    (_, torch_batch), = iter_batches(source, range(len(X)), 64,
                                     Preprocess(**ext.preprocess_), normalize=False)
    got = onnx_inputs(list(X), ext)
    assert got.dtype == np.float32 and got.shape == (len(X), 3, 32, 32)
    assert got.min() >= 0 and got.max() <= 1
    # the same antialiased bicubic kernel, PIL in float mode: far within 1/255
    assert np.abs(got - torch_batch.numpy()).max() < 1e-5
    gray16 = (X[0, ..., 0].astype(np.uint16) * 257)
    np.testing.assert_allclose(onnx_inputs([gray16], ext)[0],
                               onnx_inputs([X[0, ..., 0]], ext)[0], atol=1e-6)


def test_onnx_inputs_errors_list_every_bad_item(tmp_path, data):
    X, _ = data
    ext = PretrainedFeatureExtractor(**TINY).fit(X)
    good = tmp_path / "good.png"
    Image.fromarray(X[0]).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    from sktransfer import ImageError

    with pytest.raises(ImageError, match=r"bad\.png") as info:
        onnx_inputs([str(good), str(bad), str(tmp_path / "missing.png")], ext)
    assert "missing.png" in str(info.value)
    with pytest.raises(ValueError, match="neither a fitted sktransfer estimator"):
        onnx_inputs([str(good)], object())


def test_serving_needs_neither_torch_nor_sklearn(tmp_path, classifier_file, data):
    X, _ = data
    clf, path, _ = classifier_file
    files = []
    for i, x in enumerate(X[:6]):
        files.append(str(tmp_path / f"{i}.png"))
        # at the network's size: the same tensors reach ONNX Runtime and torch
        Image.fromarray(x).resize((clf.image_size_,) * 2).save(files[-1])
    code = textwrap.dedent(f"""
        import sys, json
        sys.modules["torch"] = None  # any import of torch or scikit-learn fails
        sys.modules["sklearn"] = None
        import onnxruntime as ort
        from sktransfer.serving import onnx_inputs
        session = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        label, proba = session.run(None, {{"images": onnx_inputs({files!r}, {str(path)!r})}})
        print(json.dumps({{"label": label.tolist(), "proba": proba.tolist()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    got = json.loads(out.stdout)
    ref = float32_reference(clf, files)
    assert got["label"] == ref["label"].tolist()
    np.testing.assert_allclose(got["proba"], ref["probabilities"], atol=1e-5)
