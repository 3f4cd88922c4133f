"""The one batched inference path.

item -> decoded tensor (threads) -> preprocess (batched resize, normalise)
-> device, channels-last -> precision policy -> forward -> output.

Every pass that does not train goes through :func:`run`: the extractor's
``transform``, the fine-tuned estimators' ``predict``/``predict_proba`` (with
test-time flips), the frozen part of a fine-tuned network (the training data
pipeline calls :func:`forward`), ``explain`` (with gradients) and ``compare``
(pixels for its classical models: no network).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ._device import precision_policy
from ._images import ImageSource
from ._inputs import Preprocess, iter_batches

#: The four flips of an image, as views of a normalised batch.
FLIPS = ("identity", "hflip", "vflip", "hvflip")


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """A flip of a batch ``(n, C, H, W)`` (``"identity"``: unchanged)."""
    if view == "identity":
        return x
    if view == "hflip":
        return x.flip(-1)
    if view == "vflip":
        return x.flip(-2)
    if view == "hvflip":
        return x.flip(-2, -1)
    raise ValueError(f"unknown view {view!r}; one of {FLIPS}")


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``, channels-last (faster convolutions on CPU and GPU)."""
    return batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


_MODES = {"inference": torch.inference_mode, "no_grad": torch.no_grad,
          "grad": torch.enable_grad}


def forward(network, x: torch.Tensor, *, device: torch.device, dtype: torch.dtype,
            fn: Callable | None = None, mode: str = "inference"):
    """One forward pass of ``fn`` (default: ``network``) under the precision policy.

    ``mode``: ``"inference"`` (:func:`torch.inference_mode`), ``"no_grad"``
    (the output feeds a training step) or ``"grad"`` (Grad-CAM).
    """
    with _MODES[mode](), precision_policy(network, device, dtype):
        return (fn or network)(x)


def run(source: ImageSource, indices: Sequence[int], *, preprocess: Preprocess,
        batch_size: int, n_jobs: int | None = None, network=None,
        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
        fn: Callable | None = None, views: Sequence[str] = ("identity",),
        mode: str = "inference", skipped: list | None = None,
        progress=None) -> Iterator[tuple[np.ndarray, list]]:
    """Yield ``(positions, outputs)`` for the images ``indices`` of ``source``.

    ``positions`` are offsets into ``indices``; ``outputs`` holds one output
    per view in ``views``, each from one forward pass of ``fn(x, positions)``
    (default: ``network(x)``) on the preprocessed batch ``x``, on ``device``,
    under the precision policy with ``dtype``. With ``network=None`` the
    outputs are the preprocessed batch itself (no network). Unreadable
    images follow :func:`~sktransfer._inputs.iter_batches` (``skipped``).
    ``progress`` (a tqdm bar) advances by each batch's size.
    """
    for pos, batch in iter_batches(source, indices, batch_size, preprocess, n_jobs,
                                   skipped=skipped):
        if network is None:
            outputs = [apply_view(batch, v) for v in views]
        else:
            x = to_device(batch, torch.device(device))
            call = None if fn is None else (lambda b, pos=pos: fn(b, pos))
            outputs = [forward(network, apply_view(x, v), device=x.device, dtype=dtype,
                               fn=call, mode=mode) for v in views]
        if progress is not None:
            progress.update(len(pos))
        yield pos, outputs
