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
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import _inference
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
    """

    def __init__(self, source: ImageSource, indices, targets, weights, *, network,
                 preprocess: Preprocess, device: torch.device, dtype: torch.dtype,
                 views=("identity",), augment: Callable | None = None, cache: bool = False,
                 batch_size: int = 32, n_jobs: int | None = None, verbose: int = 0,
                 trunk: FrozenTrunk | None = None):
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
        """``(n_views, n, ...)``: the frozen part's output of every image and view."""
        bar = tqdm(total=len(self.indices), unit="img", disable=not verbose,
                   desc="frozen part, once", file=sys.stderr)
        with bar:
            return self.trunk.outputs(
                self.network, self.source, self.indices, self.views,
                preprocess=self.preprocess, batch_size=self.batch_size, n_jobs=self.n_jobs,
                progress=bar)

    def batches(self, order: np.ndarray, views: np.ndarray, batch_size: int | None = None):
        """Yield ``(x, (targets, weights))`` for positions ``order`` of this part,
        each seen as view ``views[k]`` (an index into ``self.views``)."""
        batch_size = batch_size or self.batch_size
        if self.cached is not None:
            for s, e in batch_bounds(len(order), batch_size):
                pos = torch.as_tensor(order[s:e])
                at = self.cached.device
                x = self.cached[torch.as_tensor(views[s:e]).to(at), pos.to(at)]
                yield as_top_input(x), (self.targets[pos], self.weights[pos])
            return
        # Decoded in this order, one batch ahead, in n_jobs threads; a last
        # batch of one image is decoded with the one before (batch_bounds).
        bounds = batch_bounds(len(order), batch_size)
        sizes = [e - s for s, e in bounds]
        for pos, batch in iter_batches(self.source, self.indices[order], sizes,
                                       self.preprocess, self.n_jobs, normalize=False):
            chunk = order[pos]
            batch = self._view(batch, views[pos])
            x = _inference.to_device(self.preprocess.normalize(batch), self.device)
            with torch.no_grad():
                x = self._trunk(x)
            chunk = torch.as_tensor(chunk)
            yield as_top_input(x), (self.targets[chunk], self.weights[chunk])

    def _view(self, batch: torch.Tensor, views: np.ndarray) -> torch.Tensor:
        """Each image of a batch in [0, 1] as its drawn view."""
        if self.augment is not None:
            return torch.stack([self.augment(img).clamp(0, 1) for img in batch])
        for v in np.unique(views):
            mask = torch.as_tensor(views == v)
            batch[mask] = _inference.apply_view(batch[mask], self.views[v])
        return batch


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each training batch of ``n`` images: ``batch_size``
    each, except that a last batch of a single image joins the one before.

    BatchNorm in training mode cannot normalise one image whose map is 1x1
    (a small ``image_size`` at the last stage); one image in a batch of its
    own would also get a whole step's pull.
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, ends) for s, ends in zip(starts, starts[1:] + [n])]


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
    """

    def __init__(self, dataset: TrainingData, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self):
        return len(batch_bounds(len(self.dataset), self.batch_size))

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).numpy()
            views = torch.randint(self.dataset.n_views, (n,), generator=self.generator).numpy()
        else:
            order, views = np.arange(n), np.zeros(n, dtype=int)
        return self.dataset.batches(order, views, self.batch_size)
