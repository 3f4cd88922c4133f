"""Per-image arrays on disk: each image goes through a network once per set of settings.

Two kinds share the layout and the rules: the extractor's embeddings
(``sktransfer-embeddings``) and the fine-tuned estimators' frozen-part
outputs (``sktransfer-frozen``, one entry per image and view). Layout under
the cache location::

    sktransfer-<kind>/<settings-hash>/settings.json
    sktransfer-<kind>/<settings-hash>/<ab>/<key>.npy

The settings hash covers everything that changes the arrays (backbone,
weights identity, layer or cut point, pooling, image size, normalisation,
precision, engine, device type), so an entry made with other settings is
never returned. The key starts with the hash of the image bytes, not its
name. Entries are written to a temporary file and renamed into place, so a
killed process never leaves a corrupt entry behind, and processes sharing
the directory (a grid search's workers, a cluster's) can write concurrently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import _testing
from ._io import atomic_write
from ._process_cache import cache

FORMAT_VERSION = 2  # 2: stage features pooled in float32


def memory_location(memory) -> str | None:
    """The directory of a ``memory`` parameter (str, path or joblib.Memory), or None."""
    from sklearn.utils.validation import check_memory

    if memory is None:
        return None
    if isinstance(memory, os.PathLike):
        memory = os.fspath(memory)
    return check_memory(memory).location


def settings_hash(settings: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class EmbeddingCache:
    """Per-image arrays stored on disk under ``location``.

    Parameters
    ----------
    location : str or path-like
        Cache directory (created on first write).
    settings : dict
        JSON-serialisable description of everything that changes the arrays.
    shape : int, tuple of int or None
        Shape of each array (an int: vectors of that length); an entry of
        another shape is ignored. ``None``: any shape.
    dtype : numpy dtype or None, default=float32
        Of each array; an entry of another dtype is ignored. ``None``: any
        dtype.
    kind : str, default="embeddings"
        The cache's directory is ``sktransfer-<kind>``; reads and writes are
        counted in ``STATS[kind, "read"]`` and ``STATS[kind, "written"]``.
    """

    def __init__(self, location, settings: dict, shape, dtype=np.float32,
                 kind: str = "embeddings"):
        self.settings = settings
        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else shape
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.kind = kind
        self.root = Path(location) / f"sktransfer-{kind}" / settings_hash(settings)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str):
        memo_key = (str(self.root), key)
        vec = cache("stored").get(memo_key)
        if vec is None:
            try:
                vec = np.load(self._path(key), allow_pickle=False)
            except (OSError, ValueError, EOFError):
                return None
            if ((self.dtype is not None and vec.dtype != self.dtype)
                    or (self.shape is not None and vec.shape != self.shape)):
                return None
            cache("stored").put(memo_key, vec, vec.nbytes)
        _testing.record(self.kind, "read")
        return vec

    def put(self, key: str, vec: np.ndarray) -> None:
        vec = np.ascontiguousarray(vec, dtype=self.dtype)
        settings_file = self.root / "settings.json"
        if not settings_file.exists():
            atomic_write(settings_file, json.dumps(self.settings, indent=2).encode())
        atomic_write(self._path(key), lambda f: np.save(f, vec, allow_pickle=False))
        cache("stored").put((str(self.root), key), vec, vec.nbytes)
        _testing.record(self.kind, "written")
