"""The one training data pipeline of a fine-tuning run.

An epoch shows every training image once, in a new random order, as one view
drawn at random: one of its four flips (``augment="flips"``), one random
augmentation (``True`` or a callable), or the image itself (``False``). The
trained top of the network receives the frozen units' output for that view.

When the views are a fixed set (flips, or none) and the frozen units do not
change during the fit, their outputs are computed once per image and view
before training by the frozen trunk (or read from ``memory``,
:mod:`sktransfer._trunk`), and each epoch draws from them; otherwise they
are computed batch by batch. Both give the same training — the same draws, the same
numerics — at a different cost: ``max_epochs`` means the same in both.
Decoding runs in ``n_jobs`` threads, one batch ahead (the inference path's
:func:`~sktransfer._inputs.iter_batches`).

In a fit over several processes (:mod:`sktransfer._distributed`), every process draws
the same order and views, and each global batch of ``batch_size`` images is
split across the processes: each trains on its share, and the all-reduced
gradient is the one of the whole batch. The frozen outputs computed once
are computed by each process for its share of the images and exchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .. import _inference
from .._distributed import ONE_PROCESS, Processes
from .._images import ImageSource
from .._inference import Feed
from .._inputs import iter_batches
from .._trunk import FrozenPart, as_top_input
from .frozen import FrozenOutputs


class TrainingData(torch.utils.data.Dataset):
    """The images and targets of one part of a fit (training or validation),
    as the trained top sees them.

    Parameters
    ----------
    source : ImageSource
        All images of the fit.
    indices : array of int
        The images of this part.
    targets, weights : arrays
        Of this part's images, in the order of ``indices``. The weights are
        scaled to mean 1.
    views : tuple of str, default=("identity",)
        The fixed views to draw from (``FLIPS`` or ``("identity",)``);
        ignored when ``augment`` is given.
    augment : callable or None, default=None
        A random augmentation of one ``(3, H, W)`` image in [0, 1].
    frozen : FrozenPart
        The frozen units, run on each batch when nothing is stored.
    feed : Feed
        How the images are decoded and batched, and the device.
    stored : FrozenOutputs or None, default=None
        The frozen part's outputs of this part's images and views, computed
        once (only with fixed views); ``None``: computed batch by batch.
    """

    def __init__(self, source: ImageSource, indices, targets, weights, *,
                 views=("identity",), augment: Callable | None = None,
                 frozen: FrozenPart, feed: Feed, stored: FrozenOutputs | None = None):
        if stored is not None and augment is not None:
            raise ValueError("random augmentation has no fixed views to store")
        self.source = source
        self.indices = np.asarray(indices)
        self.targets = torch.as_tensor(np.asarray(targets))
        weights = np.asarray(weights, dtype=np.float64)
        self.weights = torch.as_tensor(weights / weights.mean(), dtype=torch.float32)
        self.views = tuple(views) if augment is None else ("augmented",)
        self.augment = augment
        self.frozen = frozen
        self.feed = feed
        self.stored = stored

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        x, yw = next(self.batches(np.array([i]), np.zeros(1, dtype=int)))
        return x[0], (yw[0][0], yw[1][0])

    @property
    def n_views(self) -> int:
        return len(self.views)

    def batches(self, order: np.ndarray, views: np.ndarray, sizes=None, scales=None):
        """Yield ``(x, (targets, weights))`` for positions ``order`` of this part,
        each seen as view ``views[k]`` (an index into ``self.views``), in
        batches of ``sizes`` (default: :func:`batch_bounds` of the feed's
        batch size), the weights of batch ``b`` multiplied by ``scales[b]``."""
        if sizes is None:
            sizes = [e - s for s, e in batch_bounds(len(order), self.feed.batch_size)]
        scales = [1.0] * len(sizes) if scales is None else scales
        if self.stored is not None and self.stored.where == "disk":
            yield from self._stored_batches(order, views, sizes, scales)
            return
        if self.stored is not None:
            starts = np.cumsum([0, *sizes])
            for s, e, scale in zip(starts[:-1], starts[1:], scales):
                pos = torch.as_tensor(order[s:e])
                x = self.stored.batch(views[s:e], order[s:e])
                yield as_top_input(x), (self.targets[pos], _scaled(self.weights[pos], scale))
            return
        # Decoded in this order, one batch ahead, in n_jobs threads.
        feed = self.feed
        for b, (pos, batch) in enumerate(iter_batches(
                self.source, self.indices[order], sizes, feed.preprocess, feed.n_jobs,
                normalize=False, device=None if self.augment is not None else feed.device)):
            chunk = order[pos]
            batch = self._view(batch, views[pos])
            x = _inference.to_device(feed.preprocess.normalize(batch), feed.device)
            with torch.no_grad():
                x = self.frozen(x)
            chunk = torch.as_tensor(chunk)
            yield as_top_input(x), (self.targets[chunk], _scaled(self.weights[chunk], scales[b]))

    def _stored_batches(self, order, views, sizes, scales):
        """Batches of the outputs stored in a mapped file, each read while the
        one before trains."""
        starts = np.cumsum([0, *sizes])
        bounds = list(zip(starts[:-1], starts[1:]))
        if not bounds:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            def gather(s, e):
                return self.stored.batch(views[s:e], order[s:e])

            pending = pool.submit(gather, *bounds[0])
            for k, ((s, e), scale) in enumerate(zip(bounds, scales)):
                x = pending.result()
                if k + 1 < len(bounds):
                    pending = pool.submit(gather, *bounds[k + 1])
                pos = torch.as_tensor(order[s:e])
                yield as_top_input(x), (self.targets[pos], _scaled(self.weights[pos], scale))

    def _view(self, batch: torch.Tensor, views: np.ndarray) -> torch.Tensor:
        """Each image of a batch in [0, 1] as its drawn view."""
        if self.augment is not None:
            return torch.stack([self.augment(img).clamp(0, 1) for img in batch])
        for v in np.unique(views):
            mask = torch.as_tensor(views == v, device=batch.device)
            batch[mask] = _inference.apply_view(batch[mask], self.views[v])
        return batch


#: Images each process needs of every training batch: BatchNorm in training
#: mode cannot normalise one image whose map is 1x1 (a small ``image_size``
#: at the last stage), and one image in a batch of its own would get a whole
#: step's pull.
MIN_SHARE = 2


def batch_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """``(start, end)`` of each training batch of ``n`` images: ``batch_size``
    each, except that a last batch too small to give each of the ``world``
    processes :data:`MIN_SHARE` images joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < MIN_SHARE * world:
        starts.pop()
    return [(s, ends) for s, ends in zip(starts, starts[1:] + [n])]


def check_shares(world: int, batch_size: int, n_train: int, n_valid: int) -> None:
    """Every process needs :data:`MIN_SHARE` images of each training batch
    and one validation image (validation is scored in shares)."""
    if world == 1:
        return
    need = MIN_SHARE * world
    if min(batch_size, n_train) < need:
        raise ValueError(
            f"Each batch is split across the {world} processes of the accelerator, and "
            f"each process needs at least {MIN_SHARE} images of it: batch_size={batch_size} "
            f"and {n_train} training images must both be at least {need}.")
    if 0 < n_valid < world:
        raise ValueError(
            f"The validation part ({n_valid} images) is scored in shares by the {world} "
            "processes of the accelerator, and each needs at least one image: raise "
            "validation_fraction, or set it to None.")


def _scaled(weights: torch.Tensor, scale: float) -> torch.Tensor:
    return weights if scale == 1.0 else weights * scale


class EpochBatches:
    """skorch's ``iterator_train`` / ``iterator_valid`` over a :class:`TrainingData`.

    Each iteration is one epoch: a permutation of the part and one view per
    image drawn from ``generator`` when ``shuffle``, else the images in order
    as themselves (the first view).

    Over several ``processes``, each global batch is split into one
    contiguous share per process (a distributed sampler over the order a
    single process would use). A training share's weights are multiplied
    by ``world * share / batch``, so that the mean of the processes' losses
    (what the gradient all-reduce averages) is the whole batch's loss even
    when the shares differ in size.
    """

    def __init__(self, dataset: TrainingData, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None,
                 processes: Processes = ONE_PROCESS):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.processes = processes

    def _bounds(self):
        return batch_bounds(len(self.dataset), self.batch_size, self.processes.world)

    def __len__(self):
        return len(self._bounds())

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).numpy()
            views = torch.randint(self.dataset.n_views, (n,), generator=self.generator).numpy()
        else:
            order, views = np.arange(n), np.zeros(n, dtype=int)
        bounds = self._bounds()
        procs = self.processes
        if not procs.distributed:
            return self.dataset.batches(order, views, [e - s for s, e in bounds])
        shares = [np.arange(s, e)[procs.shard(e - s)] for s, e in bounds]
        mine = np.concatenate(shares)
        scales = ([procs.world * len(p) / (e - s) for p, (s, e) in zip(shares, bounds)]
                  if self.shuffle else None)
        return self.dataset.batches(order[mine], views[mine], [len(p) for p in shares], scales)
