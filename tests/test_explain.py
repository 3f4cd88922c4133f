"""Grad-CAM explanations of TransferClassifier, and their plot."""

import numpy as np
import pytest
import torch

from sktransfer import TransferClassifier, plot_explanations

from .conftest import TINY, assert_bf16_close, make_images


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


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_channels_last_backbone_is_explained_on_its_last_map(precision):
    """MambaOut's stages return (N, H, W, C). The heatmaps equal Grad-CAM by
    hand on timm's own channels-first copy of the last stage (its
    ``forward_intermediates``), where the old code averaged over W and C:
    within 1e-4 at float32, within the stated bf16 tolerance under bf16."""
    import torch.nn.functional as F

    from sktransfer._images import check_images
    from sktransfer._inputs import Preprocess, iter_batches

    X, y = make_images(8, size=128)
    clf = TransferClassifier(backbone="timm/test_mambaout", weights=None, image_size=128,
                             engine="torch", max_epochs=1, batch_size=8, precision=precision,
                             random_state=0).fit(X, y)
    maps = clf.explain(X, target=1)
    assert maps.shape == (8, 128, 128) and maps.dtype == np.float32

    ((_, x),) = iter_batches(check_images(X), range(8), 8, Preprocess(**clf.preprocess_))
    net = clf.model_
    backbone = net.backbone
    with torch.no_grad():
        (last,) = backbone.forward_intermediates(x, indices=[3], output_fmt="NCHW",
                                                 intermediates_only=True)
    assert last.shape[1:] == (64, 4, 4)  # 64 channels on a 4 x 4 map
    last.requires_grad_(True)
    # the rest of the network (head's pooling and norm, then the new head), on NHWC
    logits = net.head(backbone.forward_head(last.permute(0, 2, 3, 1)).flatten(1))
    score = logits[:, list(clf.classes_).index(1)].sum()
    (grads,) = torch.autograd.grad(score, last)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * last).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam.detach(), size=(128, 128), mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    if precision == "float32":
        np.testing.assert_allclose(maps, cam.numpy(), atol=1e-4)
    else:  # the frozen stages ran in bf16; the map by hand in float32
        assert_bf16_close(maps, cam.numpy())
    assert (maps.reshape(8, -1).std(axis=1) > 0.05).all()  # maps, not constants


def test_pooled_output_is_not_taken_for_a_map():
    """torchvision's ResNet keeps its pooled features 4-D, (N, C, 1, 1): the
    heatmap comes from layer4's map, not from that 1 x 1 "map" (a constant)."""
    X, y = make_images(8, size=64)
    clf = TransferClassifier(backbone="torchvision/resnet18", weights=None, image_size=64,
                             engine="torch", max_epochs=1, batch_size=8,
                             random_state=0).fit(X, y)
    maps = clf.explain(X)
    assert maps.shape == (8, 64, 64)
    assert (maps.reshape(8, -1).std(axis=1) > 0.05).all()
