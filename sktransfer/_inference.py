"""The one batched inference path.

item -> decoded tensor (threads) -> preprocess (batched resize, normalise)
-> device, channels-last -> view (a flip) -> ``fn`` -> output.

Every pass that does not train goes through :func:`run`: the extractor's
``transform``, the fine-tuned estimators' ``predict``/``predict_proba`` (with
test-time flips), the frozen trunk's outputs (:mod:`sktransfer._trunk`),
``explain`` (with gradients) and ``compare`` (pixels for its classical
models: no network). What runs, and at which precision, is ``fn``'s: the
frozen trunk and the trained top each apply the precision policy
(:mod:`sktransfer._device`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

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
    """A batch on ``device``, channels-last (faster convolutions on CPU and GPU).

    To a GPU from page-locked memory, so the copy runs while the CPU
    prepares the next batch.
    """
    if device.type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


_MODES = {"inference": torch.inference_mode, "no_grad": torch.no_grad,
          "grad": torch.enable_grad}


def run(source: ImageSource, indices: Sequence[int], *, preprocess: Preprocess,
        batch_size: int, n_jobs: int | None = None, device: torch.device | str = "cpu",
        fn: Callable | None = None, views: Sequence[str] = ("identity",),
        mode: str = "inference", skipped: list | None = None,
        progress=None) -> Iterator[tuple[np.ndarray, list]]:
    """Yield ``(positions, outputs)`` for the images ``indices`` of ``source``.

    ``positions`` are offsets into ``indices``; ``outputs`` holds one output
    per view in ``views``, each ``fn(x, positions)`` on the preprocessed
    batch ``x`` as that view, on ``device``, under ``mode``:
    ``"inference"`` (:func:`torch.inference_mode`), ``"no_grad"`` (the
    output feeds a training step) or ``"grad"`` (Grad-CAM). With
    ``fn=None`` the outputs are the preprocessed batch itself (no network).
    Unreadable images follow :func:`~sktransfer._inputs.iter_batches`
    (``skipped``). ``progress`` (a tqdm bar) advances by each batch's size.
    """
    # On a GPU the decoded pixels cross as they are and are resized there.
    for pos, batch in iter_batches(source, indices, batch_size, preprocess, n_jobs,
                                   skipped=skipped, device=torch.device(device)):
        if fn is None:
            outputs = [apply_view(batch, v) for v in views]
        else:
            x = to_device(batch, torch.device(device))
            with _MODES[mode]():
                outputs = [fn(apply_view(x, v), pos) for v in views]
        if progress is not None:
            progress.update(len(pos))
        yield pos, outputs


@dataclass(frozen=True)
class Feed:
    """How images reach a network: preprocessing, batch size, decoding
    threads and device, the settings :func:`run` takes besides the images."""

    preprocess: Preprocess
    batch_size: int
    n_jobs: int | None
    device: torch.device

    def run(self, source: ImageSource, indices: Sequence[int], **kwargs):
        """:func:`run` with these settings (``fn``, ``views``, ``mode``... as there)."""
        return run(source, indices, preprocess=self.preprocess, batch_size=self.batch_size,
                   n_jobs=self.n_jobs, device=self.device, **kwargs)
