"""Layouts of module outputs: pooling by layout, and the probe that measures them."""

import pytest
import timm
import torch

from sktransfer._backbones import load_backbone
from sktransfer._layout import NC, NCHW, NHWC, NLC, global_pool, probe


def test_global_pool_averages_over_everything_but_the_channels():
    x = torch.randn(2, 5, 3, 4)  # NCHW: 5 channels on a 3 x 4 map
    want = x.mean(dim=(2, 3))
    torch.testing.assert_close(global_pool(x, NCHW), want)
    # the same map stored channels last pools to the same vector
    torch.testing.assert_close(global_pool(x.permute(0, 2, 3, 1), NHWC), want)
    tokens = x.flatten(2).transpose(1, 2)  # (N, 12 tokens, 5)
    torch.testing.assert_close(global_pool(tokens, NLC), want)
    torch.testing.assert_close(global_pool(want, NC), want)
    torch.testing.assert_close(global_pool(x.mean(dim=(2, 3), keepdim=True), NC), want)
    assert global_pool(x.bfloat16(), NCHW).dtype == torch.float32
    with pytest.raises(ValueError, match="A NHWC output has 4 dimensions; got shape"):
        global_pool(tokens, NHWC)
    with pytest.raises(ValueError, match="layout='CHW' is not one of"):
        global_pool(x, "CHW")


@pytest.mark.parametrize("arch, declared", [("test_mambaout", NHWC), ("test_convnext", NCHW),
                                            ("test_efficientnet", NCHW), ("test_resnet", NCHW),
                                            ("test_vit", NLC)])
def test_probe_measures_what_timm_declares(arch, declared):
    """The probe, run on any backbone, agrees with timm's own description of
    its stages: layout (``output_fmt``; tokens for a ViT), output stride and
    channels (``feature_info``)."""
    model = timm.create_model(arch).eval()
    outputs = probe(model, 160)
    if declared != NLC:  # timm's declaration, for its maps
        assert getattr(model, "output_fmt", NCHW) == declared
    for info in model.feature_info:
        out = outputs[info["module"]]
        assert out.layout == declared, info
        assert out.channels == info["num_chs"], info
        if declared != NLC:
            assert out.stride == info["reduction"], info


def test_backbone_layouts_follow_timm_for_its_stages():
    backbone = load_backbone("timm/test_mambaout", None)
    assert [backbone.layouts[s] for s in backbone.stages] == [NHWC] * 4
    assert backbone.layouts["stem.conv1"] == NCHW  # the stem convolves channels first
    assert backbone.layouts["head"] == NC
