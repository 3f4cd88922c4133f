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

import contextlib
import hashlib
import json
import os
import tempfile
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2  # 2: stage features pooled in float32

#: Entries read from and written to disk caches by this process, by kind:
#: ``STATS["frozen", "read"]`` counts frozen-part outputs a fit or a
#: prediction took from ``memory`` instead of computing them.
STATS: Counter = Counter()

# Recently read or written embeddings, shared by every estimator of this
# process: a grid search clones the extractor for each candidate, and each
# clone would otherwise reread the same files.
_MEMO: OrderedDict[tuple, np.ndarray] = OrderedDict()
_MEMO_BYTES = [0]
MEMO_LIMIT_BYTES = 1 << 30


class _Recent(OrderedDict):
    """A dict that keeps its ``size`` most recently used entries: a long-lived
    process (a notebook, a Dask worker) searching over ``image_size`` or
    ``trainable_stages`` would otherwise keep every graph and compiled model."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)

    def update(self, other=(), /, **kwargs):
        for key, value in dict(other, **kwargs).items():
            self[key] = value


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
        vec = _MEMO.get(memo_key)
        if vec is not None:
            _MEMO.move_to_end(memo_key)
            STATS[self.kind, "read"] += 1
            return vec
        try:
            vec = np.load(self._path(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if ((self.dtype is not None and vec.dtype != self.dtype)
                or (self.shape is not None and vec.shape != self.shape)):
            return None
        self._remember(memo_key, vec)
        STATS[self.kind, "read"] += 1
        return vec

    def put(self, key: str, vec: np.ndarray) -> None:
        vec = np.ascontiguousarray(vec, dtype=self.dtype)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings_file = self.root / "settings.json"
        if not settings_file.exists():
            _atomic_write(settings_file, json.dumps(self.settings, indent=2).encode())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vec, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
        self._remember((str(self.root), key), vec)
        STATS[self.kind, "written"] += 1

    @staticmethod
    def _remember(memo_key, vec):
        if memo_key in _MEMO:
            return
        _MEMO[memo_key] = vec
        _MEMO_BYTES[0] += vec.nbytes
        while _MEMO_BYTES[0] > MEMO_LIMIT_BYTES and _MEMO:
            _, old = _MEMO.popitem(last=False)
            _MEMO_BYTES[0] -= old.nbytes


def clear_memo() -> None:
    """Forget the in-process copies (the files on disk stay)."""
    _MEMO.clear()
    _MEMO_BYTES[0] = 0


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
