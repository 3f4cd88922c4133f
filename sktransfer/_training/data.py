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

import sys
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import _inference
from .._distributed import ONE_PROCESS, Processes
from .._images import ImageSource
from .._inputs import Preprocess, iter_batches
from .._trunk import FrozenTrunk, as_top_input


class TrainingData(torch.utils.data.Dataset):
    """The images of one part of a fit (training or validation), as the top sees them.

    Parameters
    ----------
    source : ImageSource
        All images of the fit.
    indices : array of int
        The images of this part.
    targets, weights : arrays
        Of this part's images, in the order of ``indices``. The weights are
        scaled to mean 1.
    network : BackboneNetwork
        Its first ``n_frozen`` units are the frozen part.
    preprocess : Preprocess
    device, dtype :
        Where the frozen part runs, and its precision when it changes during
        the fit (gradual unfreezing: no trunk).
    views : tuple of str
        The fixed views to draw from (``FLIPS`` or ``("identity",)``);
        ignored when ``augment`` is given.
    augment : callable or None
        A random augmentation of one ``(3, H, W)`` image in [0, 1].
    cache : bool
        Compute the frozen part's outputs once (only with fixed views).
    batch_size, n_jobs, verbose :
        Of the pass that fills the cache, and of decoding.
    trunk : FrozenTrunk or None
        Runs the fixed frozen part (with its engine, precision and store);
        ``None``: the network's first ``n_frozen`` units, in torch, as they
        are at each batch.
    processes : Processes
        The processes of the fit: each computes its share of the cached
        outputs.
    """

    def __init__(self, source: ImageSource, indices, targets, weights, *, network,
                 preprocess: Preprocess, device: torch.device, dtype: torch.dtype,
                 views=("identity",), augment: Callable | None = None, cache: bool = False,
                 batch_size: int = 32, n_jobs: int | None = None, verbose: int = 0,
                 trunk: FrozenTrunk | None = None, processes: Processes = ONE_PROCESS):
        self.source = source
        self.indices = np.asarray(indices)
        self.targets = torch.as_tensor(np.asarray(targets))
        weights = np.asarray(weights, dtype=np.float64)
        self.weights = torch.as_tensor(weights / weights.mean(), dtype=torch.float32)
        self.network = network
        self.preprocess = preprocess
        self.device = device
        self.dtype = dtype
        self.views = tuple(views) if augment is None else ("augmented",)
        self.augment = augment
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.trunk = trunk
        self.processes = processes
        self.cached = None
        if cache:
            if augment is not None:
                raise ValueError("random augmentation cannot be cached")
            self.cached = _on_device(self._frozen_outputs(verbose), device)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        x, yw = next(self.batches(np.array([i]), np.zeros(1, dtype=int)))
        return x[0], (yw[0][0], yw[1][0])

    @property
    def n_views(self) -> int:
        return len(self.views)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        if self.trunk is not None:
            return self.trunk(self.network, x)
        net = self.network
        return net.forward_units(x, 0, net.n_frozen, self.dtype)

    def _frozen_outputs(self, verbose: int) -> torch.Tensor:
        """``(n_views, n, ...)``: the frozen part's output of every image and view
        (each process computes its share; every process gets all of them)."""
        share = self.indices[self.processes.shard(len(self.indices))]
        bar = tqdm(total=len(share), unit="img", disable=not verbose or not self.processes.is_main,
                   desc="frozen part, once", file=sys.stderr)
        with bar:
            local = self.trunk.outputs(
                self.network, self.source, share, self.views,
                preprocess=self.preprocess, batch_size=self.batch_size, n_jobs=self.n_jobs,
                progress=bar)
        return self.processes.gather_rows(local, len(self.indices), dim=1)

    def batches(self, order: np.ndarray, views: np.ndarray, sizes=None, scales=None):
        """Yield ``(x, (targets, weights))`` for positions ``order`` of this part,
        each seen as view ``views[k]`` (an index into ``self.views``), in
        batches of ``sizes`` (default: :func:`batch_bounds` of ``batch_size``),
        the weights of batch ``b`` multiplied by ``scales[b]``."""
        if sizes is None:
            sizes = [e - s for s, e in batch_bounds(len(order), self.batch_size)]
        scales = [1.0] * len(sizes) if scales is None else scales
        if self.cached is not None:
            starts = np.cumsum([0, *sizes])
            for s, e, scale in zip(starts[:-1], starts[1:], scales):
                pos = torch.as_tensor(order[s:e])
                at = self.cached.device
                x = self.cached[torch.as_tensor(views[s:e]).to(at), pos.to(at)]
                yield as_top_input(x), (self.targets[pos], _scaled(self.weights[pos], scale))
            return
        # Decoded in this order, one batch ahead, in n_jobs threads.
        for b, (pos, batch) in enumerate(iter_batches(
                self.source, self.indices[order], sizes, self.preprocess, self.n_jobs,
                normalize=False)):
            chunk = order[pos]
            batch = self._view(batch, views[pos])
            x = _inference.to_device(self.preprocess.normalize(batch), self.device)
            with torch.no_grad():
                x = self._trunk(x)
            chunk = torch.as_tensor(chunk)
            yield as_top_input(x), (self.targets[chunk], _scaled(self.weights[chunk], scales[b]))

    def _view(self, batch: torch.Tensor, views: np.ndarray) -> torch.Tensor:
        """Each image of a batch in [0, 1] as its drawn view."""
        if self.augment is not None:
            return torch.stack([self.augment(img).clamp(0, 1) for img in batch])
        for v in np.unique(views):
            mask = torch.as_tensor(views == v)
            batch[mask] = _inference.apply_view(batch[mask], self.views[v])
        return batch


def batch_bounds(n: int, batch_size: int, min_last: int = 2) -> list[tuple[int, int]]:
    """``(start, end)`` of each training batch of ``n`` images: ``batch_size``
    each, except that a last batch of fewer than ``min_last`` images joins
    the one before.

    BatchNorm in training mode cannot normalise one image whose map is 1x1
    (a small ``image_size`` at the last stage); one image in a batch of its
    own would also get a whole step's pull. Split across processes, every
    process's share of the last batch needs two images: ``min_last`` is
    twice the number of processes.
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()
    return [(s, ends) for s, ends in zip(starts, starts[1:] + [n])]


def _scaled(weights: torch.Tensor, scale: float) -> torch.Tensor:
    return weights if scale == 1.0 else weights * scale


def _on_device(cached: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The stored frozen outputs on a GPU when they take at most a quarter of
    its free memory (each batch is then gathered there, with no copy), else
    where they are."""
    if device.type != "cuda":
        return cached
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = cached.numel() * cached.element_size()
    return cached.to(device) if nbytes <= free // 4 else cached


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
        return batch_bounds(len(self.dataset), self.batch_size, 2 * self.processes.world)

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
