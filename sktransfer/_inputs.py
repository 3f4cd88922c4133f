"""Batches of image tensors for the networks: decoded images (:mod:`._images`),
resized and normalised on whole batches, decoded in threads one batch ahead.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from ._images import ImageError, ImageSource, to_unit_float

# Interpolations of the backbones' configurations, as torch names them.
_INTERPOLATION = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}


class Preprocess:
    """Resize, expand to 3 channels and normalise a list of decoded images.

    Resizing is done on whole groups of equally sized images at once
    (batched resize is several times faster than per-image PIL transforms),
    and grayscale images are expanded to 3 channels only after resizing.
    ``interpolation`` is the backbone's own (timm's data config, or the
    torchvision weights' transforms): bilinear and bicubic with antialiasing,
    as PIL does, or nearest.
    """

    def __init__(self, size, mean, std, interpolation="bicubic"):
        if interpolation not in _INTERPOLATION:
            raise ValueError(
                f"interpolation {interpolation!r} is not supported; sktransfer resizes "
                f"with {sorted(_INTERPOLATION)}.")
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.interpolation = interpolation

    def resize(self, images: list, device: torch.device | None = None) -> torch.Tensor:
        """Decoded images -> ``(n, 3, size, size)`` float batch in [0, 1].

        With a CUDA ``device``, each group of equally sized images crosses to
        it as decoded (uint8: a quarter of the bytes of float32) and is
        converted and resized there; the batch is returned on the device.
        """
        cuda = device is not None and torch.device(device).type == "cuda"
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.float32,
                          device=device if cuda else None)
        groups: dict = {}
        for i, t in enumerate(images):
            groups.setdefault((tuple(t.shape), t.dtype), []).append(i)
        mode = _INTERPOLATION[self.interpolation]
        for (shape, _), idx in groups.items():
            if cuda:
                x = _unit_float_on(np.stack([images[i] for i in idx]), device)
            else:
                x = torch.from_numpy(to_unit_float(np.stack([images[i] for i in idx])))
            if shape[1:] != (self.size, self.size):
                smooth = mode in ("bilinear", "bicubic")
                x = F.interpolate(
                    x, size=(self.size, self.size), mode=mode, antialias=smooth,
                    align_corners=False if smooth else None,
                ).clamp_(0, 1)
            out[idx] = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return out

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel ``(x - mean) / std`` of a batch in [0, 1], in place."""
        if x.device.type != "cpu":
            return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        return x.sub_(self.mean).div_(self.std)

    def __call__(self, images: list) -> torch.Tensor:
        return self.normalize(self.resize(images))


def _unit_float_on(stack: np.ndarray, device) -> torch.Tensor:
    """A stack of decoded pixels on ``device`` as float32 in [0, 1], converted
    there (what :func:`~sktransfer._images.to_unit_float` does on the CPU)."""
    x = torch.from_numpy(stack)
    if x.dtype == torch.uint16:  # no uint16 arithmetic on CUDA
        x = x.to(torch.int32)
    x = x.pin_memory().to(device, non_blocking=True)
    if stack.dtype == np.uint8:
        return x.float() / 255
    if stack.dtype == np.uint16:
        return x.float() / 65535
    return x.float()


def iter_batches(source: ImageSource, indices, batch_size,
                 preprocess: Preprocess, n_jobs: int | None = None, skipped=None,
                 normalize: bool = True, device: torch.device | None = None):
    """Yield ``(positions, batch)`` for ``indices`` of ``source``.

    ``batch_size``: an int, or the size of each batch in turn (summing to
    ``len(indices)``). ``positions`` are offsets into ``indices`` of the images in ``batch``, a
    ``(n, 3, size, size)`` float tensor, normalised, or in [0, 1] when
    ``normalize`` is False; on a CUDA ``device``, resized and normalised
    there (:meth:`Preprocess.resize`), else on the CPU.
    Images are decoded in a thread pool of ``n_jobs`` workers (decoders
    release the GIL), one batch ahead of the consumer. Memory is bounded by
    two batches, never by ``len(indices)``.

    Unreadable images: by default, after the first one no more batches are
    yielded, but every remaining image is still decoded so that the final
    :class:`ImageError` lists all of them at once. If ``skipped`` is a list,
    they are left out of the batches and ``(index, item, reason)`` of each is
    appended to it instead.
    """
    indices = list(indices)
    if isinstance(batch_size, (int, np.integer)):
        chunks = [range(s, min(s + batch_size, len(indices)))
                  for s in range(0, len(indices), batch_size)]
    else:  # the size of each batch, in order
        ends = np.cumsum(batch_size)
        chunks = [range(e - k, e) for k, e in zip(batch_size, ends)]
    workers = _n_workers(n_jobs)
    problems = []
    draft = preprocess.size
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(chunk):
            return [pool.submit(source.try_load, indices[p], draft) for p in chunk]

        pending = submit(chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            futures = pending
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else None
            results = [f.result() for f in futures]
            problems.extend(err for _, err in results if err is not None)
            if problems and skipped is None:
                continue
            keep = [(p, t) for p, (t, err) in zip(chunk, results) if err is None]
            if keep:
                batch = preprocess.resize([t for _, t in keep], device)
                yield (np.array([p for p, _ in keep]),
                       preprocess.normalize(batch) if normalize else batch)
    if skipped is not None:
        skipped.extend(problems)
    elif problems:
        raise ImageError(problems)


def _n_workers(n_jobs) -> int:
    cpus = os.cpu_count() or 1
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, cpus + 1 + n_jobs)
    return max(1, int(n_jobs))


