"""The frozen part of a fine-tuned network over many images: once per image and view.

A fit whose frozen units do not change (fixed views, a fixed cut point)
computes their output for every training image and view once, and each
epoch draws from it (:class:`~sktransfer._training.data.TrainingData`). With
``memory=``, those outputs are also kept on disk, one entry per image and
view (:class:`~sktransfer._cache.EmbeddingCache`, kind ``"frozen"``), under
settings that name everything they depend on: the backbone, the frozen
units' weights, the cut point, the input size and normalisation, the engine
and its precision. Every later fit or prediction with the same settings — the
other candidates and folds of a grid search, a refit, a re-run after a
failure — reads them instead of running the frozen part again.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _inference
from ._cache import EmbeddingCache


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: its bits are stored as int16, which no frozen
    # part produces itself.
    t = t.contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if a.dtype == np.int16 else t


def as_top_input(x: torch.Tensor) -> torch.Tensor:
    """Stored frozen outputs as the trained part's input: float32, channels-last."""
    x = x.float()
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def frozen_outputs(source, indices, views, *, fn, network, preprocess, device, dtype,
                   batch_size: int, n_jobs: int | None, cache: EmbeddingCache | None = None,
                   progress=None) -> torch.Tensor:
    """``(n_views, n, ...)`` on the CPU: ``fn`` on every image of ``indices`` as each view.

    ``fn`` runs the frozen part on a normalised batch. Outputs keep the dtype
    the frozen part produced (bf16 after the precision policy's switch: half
    the memory). With ``cache``, the views stored there are read, the others
    computed and stored (a grid search's first prediction stores an image's
    identity view; a later fit that trains on it computes only its other
    three flips).
    """
    indices = np.asarray(indices)
    n = len(indices)
    outputs: list[list] = [[None] * n for _ in views]
    keys = [source.content_key(int(i)) for i in indices] if cache is not None else None
    # The views still to compute, per image: all of them without a cache.
    todo: dict[tuple, list] = {tuple(range(len(views))): list(range(n))}
    if cache is not None:
        todo = {}
        for p in range(n):
            missing = []
            for v, view in enumerate(views):
                entry = cache.get(f"{keys[p]}-{view}")
                if entry is None:
                    missing.append(v)
                else:
                    outputs[v][p] = _from_numpy(entry)
            if missing:
                todo.setdefault(tuple(missing), []).append(p)
        if progress is not None:
            progress.update(n - sum(map(len, todo.values())))
    for missing, positions in todo.items():
        positions = np.array(positions, dtype=int)
        for pos, views_out in _inference.run(
                source, indices[positions], preprocess=preprocess, batch_size=batch_size,
                n_jobs=n_jobs, network=network, device=device, dtype=dtype,
                fn=lambda x, _: fn(x), views=[views[v] for v in missing], mode="no_grad",
                progress=progress):
            for v, out in zip(missing, views_out):
                out = out.to("cpu")
                for k, p in enumerate(positions[pos]):
                    outputs[v][p] = out[k]
                    if cache is not None:
                        cache.put(f"{keys[p]}-{views[v]}", _to_numpy(out[k]))
    return torch.stack([torch.stack(per_view) for per_view in outputs])
