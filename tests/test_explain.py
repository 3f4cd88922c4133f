"""Grad-CAM explanations of TransferClassifier, and their plot."""

import numpy as np
import pytest
import torch

from sktransfer import TransferClassifier, plot_explanations

from .conftest import TINY, make_images


@pytest.fixture(scope="module")
def fitted():
    X, y = make_images(16, size=32)
    y = np.where(y == 1, "square", "stripes")
    return TransferClassifier(**TINY, max_epochs=2, batch_size=8).fit(X, y), X, y


def test_heatmaps_are_aligned_and_scaled(fitted):
    clf, X, _ = fitted
    flags = [p.requires_grad for p in clf.model_.parameters()]
    state = {k: v.clone() for k, v in clf.model_.state_dict().items()}
    maps = clf.explain(X)
    assert maps.shape == (16, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    # each image's map is its own: a subset in another order gives the same rows
    np.testing.assert_allclose(clf.explain(X[[5, 2]]), maps[[5, 2]], atol=1e-5)
    # the network is left as it was
    assert [p.requires_grad for p in clf.model_.parameters()] == flags
    for k, v in clf.model_.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_target_class(fitted):
    clf, X, _ = fitted
    a = clf.explain(X[:4], target="square")
    b = clf.explain(X[:4], target=["square"] * 4)
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="'cat'.*classes_"):
        clf.explain(X[:2], target="cat")


def test_hot_region_is_where_the_evidence_is():
    """Real backbone: class 1 differs from class 0 only by a bright patch at the top
    left; the heatmap of class 1 puts its mass there."""
    rng = np.random.default_rng(0)
    X = rng.integers(40, 90, size=(32, 128, 128), dtype=np.uint8)
    y = np.arange(32) % 2
    X[y == 1, 16:48, 16:48] = 250
    clf = TransferClassifier(image_size=128, max_epochs=3, validation_fraction=None,
                             random_state=0).fit(X, y)
    maps = clf.explain(X[y == 1], target=1)
    inside = np.zeros(maps.shape[1:], bool)
    inside[16:48, 16:48] = True
    ratio = maps[:, inside].mean(axis=1) / maps[:, ~inside].mean(axis=1)
    assert (ratio > 1.5).mean() >= 0.75, ratio


def test_plot_overlays_each_image(fitted):
    import matplotlib

    matplotlib.use("Agg")
    clf, X, y = fitted
    fig = plot_explanations(X[:6], clf.explain(X[:6]), titles=y[:6], n_cols=3)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == y[0]
    assert len(fig.axes[0].images) == 2  # the image and its heatmap
    with pytest.raises(ValueError, match="n_images=6"):
        plot_explanations(X[:6], np.zeros((5, 32, 32)))
