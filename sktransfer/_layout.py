"""Where a module's output keeps its channels, and global average pooling by it.

A stage's output is not always a channels-first map. timm names the layouts
(``timm.layers.Format``) and sktransfer uses its names, plus one for vectors:

- ``"NCHW"``: a feature map, channels first (convolutional networks);
- ``"NHWC"``: a feature map, channels last (Swin, MambaOut, ..., whose blocks
  compute on ``(N, H, W, C)``; timm says so in ``model.output_fmt``);
- ``"NLC"``: a sequence of tokens (a ViT's blocks);
- ``"NC"``: an already pooled vector (flattened as it is: a 1 x 1 map too).

A timm model declares the layout of its stages (``output_fmt``, NCHW where
absent, for the maps of ``feature_info``'s modules); for any module of any
backbone, :func:`probe` measures it in one forward pass, with the output
stride of each map (what the stages of a torchvision model are derived from).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

NCHW, NHWC, NLC, NC = "NCHW", "NHWC", "NLC", "NC"
LAYOUTS = (NCHW, NHWC, NLC, NC)
SPATIAL = (NCHW, NHWC)
_NDIM = {NCHW: 4, NHWC: 4, NLC: 3}


def guess_layout(x: torch.Tensor) -> str:
    """The layout of an output nothing is known about: torch's conventions
    (4-D: NCHW, 3-D: tokens, else a vector)."""
    return {4: NCHW, 3: NLC}.get(x.ndim, NC)


def global_pool(x: torch.Tensor, layout: str | None) -> torch.Tensor:
    """Globally average-pool one module's output to ``(N, C)`` float32.

    Parameters
    ----------
    x : torch.Tensor
        The output, in ``layout``.
    layout : {"NCHW", "NHWC", "NLC", "NC"} or None
        Where its channels are: the mean runs over the other axes (the
        spatial ones of a map, the tokens of a sequence); ``"NC"`` is
        flattened as it is. ``None``: unknown, guessed from ``x.ndim`` by
        :func:`guess_layout`.

    Returns
    -------
    pooled : torch.Tensor of shape (N, C), float32
        The mean of many bf16 values is summed in float32.
    """
    layout = layout or guess_layout(x)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}.")
    if layout != NC and x.ndim != _NDIM[layout]:
        raise ValueError(f"A {layout} output has {_NDIM[layout]} dimensions; got shape "
                         f"{tuple(x.shape)}.")
    x = x.float()
    if layout == NCHW:
        return x.mean(dim=(2, 3))
    if layout == NHWC:
        return x.mean(dim=(1, 2))
    if layout == NLC:
        return x.mean(dim=1)
    return x.flatten(1)


def channels_first(x: torch.Tensor, layout: str | None) -> torch.Tensor:
    """A feature map in ``layout`` as ``(N, C, H, W)``: a view of ``x``,
    so gradients flow through it."""
    return x.permute(0, 3, 1, 2) if layout == NHWC else x


class Output(NamedTuple):
    """What :func:`probe` saw a module return."""

    layout: str | None  # None: a 4-D tensor whose channel axis could not be told
    stride: int | None  # input side / map side, for a map larger than 1 x 1
    channels: int
    order: int  # when the module first returned, in the forward pass


_BATCH = 2


def _misfit(h: int, w: int, height: int, width: int) -> tuple[float, float]:
    """How far an ``h x w`` map is from keeping the aspect of a ``height x
    width`` input (relative), and the stride it then has."""
    if h < 1 or w < 1:
        return math.inf, 0.0
    rh, rw = height / h, width / w
    return abs(rh - rw) / max(rh, rw), math.sqrt(rh * rw)


# Valid-padded convolutions (Inception) shave a few pixels off the sides: a
# few percent of aspect; a channel axis taken for a spatial one is off by a
# quarter on the 3:4 probe, unless it has about 3/4 as many channels as rows.
_TOLERANCE = 0.1


def _describe(out: torch.Tensor, height: int, width: int, order: int) -> Output | None:
    shape = tuple(out.shape)
    if not shape or shape[0] != _BATCH:  # windows or heads folded into the batch
        return None
    if len(shape) == 2:
        return Output(NC, None, shape[1], order)
    if len(shape) == 3:
        return Output(NLC, None, shape[2], order)
    if len(shape) != 4:
        return None
    # A 1 x 1 map of the probe's input is a pooled vector kept 4-D (ResNet's avgpool).
    if shape[2:] == (1, 1):
        return Output(NC, None, shape[1], order)
    if shape[1:3] == (1, 1):
        return Output(NC, None, shape[3], order)
    first, first_stride = _misfit(*shape[2:], height, width)
    last, last_stride = _misfit(*shape[1:3], height, width)
    if min(first, last) > _TOLERANCE or first == last:  # neither, or a square probe's C == H
        return Output(None, None, 0, order)
    # Real strides are powers of two.
    if first < last:
        return Output(NCHW, 2 ** round(math.log2(first_stride)), shape[1], order)
    return Output(NHWC, 2 ** round(math.log2(last_stride)), shape[3], order)


def probe(model: nn.Module, input_size: int) -> dict[str, Output]:
    """Run ``model`` once and describe each module's output.

    The input is 3:4, a multiple of 96 x 128 near ``input_size`` (192 x 256
    for 224): the spatial axes of a map keep that aspect, which tells them
    from its channel axis, and their side gives the output stride. A model
    that runs only at its own square size is probed at that size, where a
    4-D output with as many channels as rows stays undecided (layout
    ``None``). A module that returns a tuple is described by its first
    tensor; one that never runs, or folds windows into the batch, is left out.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode (the probe changes no BatchNorm statistics).
    input_size : int
        Side of the input the model was trained at.

    Returns
    -------
    outputs : dict of str to Output
        By qualified module name (``""``: the model); empty if the model ran
        on none of the probe's sizes.
    """
    k = max(1, min(3, input_size // 96))  # near the trained size, at most 288 x 384
    for height, width in ((96 * k, 128 * k), (input_size, input_size)):
        try:
            return _probe_at(model, height, width)
        except Exception:  # a model that takes only its own size, say
            continue
    return {}


def _probe_at(model: nn.Module, height: int, width: int) -> dict[str, Output]:
    seen: dict[str, Output] = {}

    def hook(name, out):
        if name in seen:  # a module run twice: its first output
            return
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        if isinstance(out, torch.Tensor):
            described = _describe(out, height, width, len(seen))
            if described is not None:
                seen[name] = described

    handles = [m.register_forward_hook(lambda _m, _args, out, name=name: hook(name, out))
               for name, m in model.named_modules()]
    x = torch.randn(_BATCH, 3, height, width, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen
