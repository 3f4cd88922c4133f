import random

import numpy as np
import pytest
import torch

# A tiny random-init timm backbone: fast, offline, same code paths as the
# real default backbone. API tests run it with torch; the ONNX Runtime engine
# (the default "auto", which exports a graph per setting) has its own tests.
TINY = dict(backbone="timm/test_efficientnet", weights=None, image_size=32, random_state=0,
            engine="torch")


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-flags", default=None, metavar="FLAG,FLAG",
        help="Run as on a CPU with these /proc/cpuinfo flags (e.g. avx512_bf16, or "
             "amx_bf16,avx512_bf16; '' for neither): what precision='auto' and "
             "engine='auto' resolve to. torch computes bf16 on any CPU, only slower.")


def pytest_configure(config):
    flags = config.getoption("--cpu-flags")
    if flags is not None:
        from sktransfer import _device

        _device._cpu_flags = lambda: frozenset(f for f in flags.split(",") if f)


@pytest.fixture(autouse=True)
def seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


#: The user guide's tolerance between bf16 and float32 outputs ("One answer
#: per input"): a cosine similarity per image of at least this.
BF16_MIN_COSINE = 0.99


def assert_bf16_close(got, want):
    """``got`` (computed in bf16) agrees with ``want`` (float32) within the
    stated tolerance, image by image."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    got, want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= BF16_MIN_COSINE, cosine.min()


def make_images(n=12, size=40, seed=0):
    """Two visually distinct classes: bright squares vs dark stripes."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y == 1):
        X[i, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 230
    for i in np.flatnonzero(y == 0):
        X[i, :, ::6] = 180
    return X, y


@pytest.fixture
def images():
    return make_images()


def write_pngs(images, directory) -> list[str]:
    """Each image as a PNG file in ``directory``; their paths, in order."""
    from PIL import Image

    paths = []
    for i, arr in enumerate(images):
        path = directory / f"img{i:02d}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def png_files(tmp_path, images):
    X, y = images
    return write_pngs(X, tmp_path), y


@pytest.fixture
def fresh_process_caches():
    """Each test starts, and leaves, as a new process would: nothing exported,
    read or unpickled before (use with ``pytest.mark.usefixtures``)."""
    from sktransfer import _process_cache

    _process_cache.clear()
    yield
    _process_cache.clear()


def interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    """Ctrl-C as epoch ``epoch`` of the next fits begins: the epochs before it
    are finished (and checkpointed)."""
    from sktransfer._training import callbacks

    original = callbacks.SeedEpoch.on_epoch_begin

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == epoch:  # the history already has this epoch's row
            raise KeyboardInterrupt
        return original(self, net, **kwargs)

    monkeypatch.setattr(callbacks.SeedEpoch, "on_epoch_begin", on_epoch_begin)
