"""Random seeds without side effects on the global generators.

scikit-learn's convention: an estimator draws what it needs from
``check_random_state(self.random_state)`` and leaves numpy's and Python's
global generators alone. Splits, shuffling and view draws here use local
generators (:func:`sklearn.utils.check_random_state`, :class:`torch.Generator`).

Some torch code has no generator argument: building a model (timm and
torchvision initialise their layers from torch's global generator), dropout,
stochastic depth, torchvision's random transforms. :func:`torch_rng` runs such
code on torch's global generators *forked* for the duration of the block:
their state is saved, seeded, and restored exactly on exit, so the caller's
random streams are what they were before.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.utils import check_random_state


def draw_seed(random_state) -> int:
    """One int seed from ``random_state`` (int, RandomState or None).

    With ``None`` it comes from numpy's global generator, as everywhere in
    scikit-learn.
    """
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def torch_rng(seed: int, device: torch.device | None = None):
    """Run the block on torch's global generators seeded with ``seed``, then restore them.

    Forks the CPU generator and, when ``device`` is a CUDA device, that
    device's generator (:func:`torch.random.fork_rng`), seeds only those, and
    puts their saved states back on exit. No other generator is touched (in
    particular :func:`torch.manual_seed`, which also reseeds every CUDA
    device, is never called). The global generators are process-wide: don't
    run two such blocks at the same time in threads of one process.
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    index = []
    if cuda:
        d = torch.device(device)
        index = [d.index if d.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=index, device_type="cuda"):
        torch.default_generator.manual_seed(int(seed))
        for i in index:
            torch.cuda.default_generators[i].manual_seed(int(seed))
        yield


def torch_generator(seed: int) -> torch.Generator:
    """A local CPU generator: shuffling and view draws without global state."""
    return torch.Generator().manual_seed(int(seed))
