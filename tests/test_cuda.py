"""The GPU path: what ``device="auto"`` promises on a machine with CUDA.

Marked ``cuda``: skipped where CUDA is not available (CI), run by
``benchmarks/gpu_check.py`` on a GPU machine (``pytest -m cuda``). The last
test runs on every machine: the float16 loss scaling of GPUs without bf16,
on the CPU.
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from sktransfer import PretrainedFeatureExtractor, TransferClassifier

from .conftest import TINY, make_images

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# two trained stages: the tiny random backbone's last stage alone learns nothing
GPU = dict(TINY, device="auto", max_epochs=10, batch_size=8, lr=1e-2, trainable_stages=2)


@pytest.fixture
def data():
    return make_images(n=24)


@pytest.mark.cuda
@on_gpu
def test_auto_fits_on_the_gpu_with_its_native_mixed_precision(data):
    X, y = data
    clf = TransferClassifier(**GPU).fit(X, y)
    assert clf.device_.type == "cuda"
    assert next(clf.model_.parameters()).is_cuda
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    assert clf.precision_ == expected
    assert clf.score(X, y) >= 0.9
    # one answer: a second call, and a pickled copy, on the GPU
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), proba)


@pytest.mark.cuda
@on_gpu
def test_same_random_state_same_model_on_the_gpu(data):
    X, y = data
    a = TransferClassifier(**GPU).fit(X, y).predict_proba(X)
    b = TransferClassifier(**GPU).fit(X, y).predict_proba(X)
    # cuDNN may pick different kernels between runs: equal within bf16's step
    np.testing.assert_allclose(a, b, atol=2e-2)


@pytest.mark.cuda
@on_gpu
def test_gpu_and_cpu_features_agree_in_float32(data):
    X, _ = data
    kw = dict(backbone="timm/test_efficientnet", weights=None, image_size=32,
              precision="float32", engine="torch", random_state=0)
    on_gpu_ = PretrainedFeatureExtractor(device="cuda", **kw).fit(X).transform(X)
    on_cpu = PretrainedFeatureExtractor(device="cpu", **kw).fit(X).transform(X)
    np.testing.assert_allclose(on_gpu_, on_cpu, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
@on_gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_decoded_pixels_are_resized_on_the_gpu_as_on_the_cpu(dtype):
    """On a GPU, decoded pixels cross as they are (uint8: a quarter of the
    bytes) and are converted and resized there: within float rounding of the
    CPU's batch, grayscale and colour alike."""
    from sktransfer._inputs import Preprocess

    rng = np.random.default_rng(0)
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1}[dtype]
    images = [(rng.random(shape) * top).astype(dtype)
              for shape in [(3, 40, 50), (1, 40, 50), (3, 40, 50), (3, 20, 20)]]
    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    on_cpu = pre.normalize(pre.resize(images))
    on_gpu_ = pre.normalize(pre.resize(images, torch.device("cuda")))
    assert on_gpu_.is_cuda
    np.testing.assert_allclose(on_gpu_.cpu().numpy(), on_cpu.numpy(), atol=1e-4)


@pytest.mark.cuda
@on_gpu
def test_fp16_with_loss_scaling_where_the_gpu_has_no_bf16(data, monkeypatch):
    X, y = data
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    clf = TransferClassifier(**GPU).fit(X, y)
    assert clf.precision_ == "float32"  # the frozen trunk
    assert clf.score(X, y) >= 0.9
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.cuda
@on_gpu
def test_a_gpu_model_loads_and_predicts_on_a_machine_without_cuda(data, tmp_path):
    X, y = data
    clf = TransferClassifier(**GPU).fit(X, y)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(clf))
    np.save(tmp_path / "X.npy", X)
    script = (
        "import pickle, sys, warnings, numpy as np, torch\n"
        "assert not torch.cuda.is_available()\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    clf = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "assert any('lacks' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "assert clf.device_.type == 'cpu'\n"
        "np.save(sys.argv[1], clf.predict(X))\n")
    out = tmp_path / "pred.npy"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True,
                   env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    # bf16 on the GPU, float32 on the CPU: the same classes on these clear images
    assert (np.load(out) == clf.predict(X)).mean() >= 0.9


@pytest.mark.cuda
@on_gpu
@pytest.mark.parametrize("mixed", ["no", "bf16", "fp16"])
def test_accelerator_mixed_precision_on_the_gpu(data, mixed):
    """One process with an accelerator: its mixed precision (fp16 with its loss
    scaler, unscaled before gradient clipping) trains; the model pickles and
    predicts the same."""
    accelerate = pytest.importorskip("accelerate")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = accelerate.Accelerator(mixed_precision=mixed)
    X, y = data
    # class weights: the loss's buffers go to the GPU with the accelerator
    clf = TransferClassifier(**dict(GPU, device="auto"), class_weight="balanced",
                             accelerator=accelerator).fit(X, y)
    assert clf.device_.type == "cuda"
    assert (accelerator.scaler is not None) == (mixed == "fp16")
    assert clf.score(X, y) >= 0.9
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_fp16_loss_scaling_trains_and_skips_overflowing_steps(data, monkeypatch):
    """The GradScaler path of GPUs without bf16, exercised on the CPU."""
    from sktransfer import _device
    from sktransfer._training.net import TransferNet

    monkeypatch.setattr(_device, "training_dtype", lambda precision, device: torch.float16)
    steps = []
    original = TransferNet.train_step

    def spy(self, batch, **fit_params):
        steps.append(self.grad_scaler_.get_scale())
        return original(self, batch, **fit_params)

    monkeypatch.setattr(TransferNet, "train_step", spy)
    X, y = make_images(n=24)
    clf = TransferClassifier(**dict(GPU, device="cpu")).fit(X, y)
    assert len(steps) == 10 * 3  # every step went through the scaler
    assert steps[0] == 2.0**16 and min(steps) < steps[0]  # overflowing steps lowered it
    assert clf.score(X, y) >= 0.9
    assert all(torch.isfinite(p).all() for p in clf.model_.parameters())
