import random

import numpy as np
import pytest
import torch

# A tiny random-init timm backbone: fast, offline, same code paths as the
# real default backbone. API tests run it with torch; the ONNX Runtime engine
# (the default "auto", which exports a graph per setting) has its own tests.
TINY = dict(backbone="timm/test_efficientnet", weights=None, image_size=32, random_state=0,
            engine="torch")


@pytest.fixture(autouse=True)
def seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


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


@pytest.fixture
def png_files(tmp_path, images):
    from PIL import Image

    X, y = images
    paths = []
    for i, arr in enumerate(X):
        p = tmp_path / f"img{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths, y
