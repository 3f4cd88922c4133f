"""Embedding cache: each image is embedded once per set of settings.

Layout under the cache location::

    sktransfer-embeddings/<settings-hash>/settings.json
    sktransfer-embeddings/<settings-hash>/<ab>/<content-sha256>.npy

The settings hash covers everything that changes the features (backbone,
weights identity, layer, pooling, image size, normalisation, precision,
device type), so an entry made with other settings is never returned. The
content hash is of the image bytes, not its name. Entries are written to a
temporary file and renamed into place, so a killed process never leaves a
corrupt entry behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2  # 2: stage features pooled in float32

# Recently read or written embeddings, shared by every estimator of this
# process: a grid search clones the extractor for each candidate, and each
# clone would otherwise reread the same files.
_MEMO: OrderedDict[tuple, np.ndarray] = OrderedDict()
_MEMO_BYTES = [0]
MEMO_LIMIT_BYTES = 1 << 30


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
    """Per-image feature vectors stored on disk under ``location``.

    Parameters
    ----------
    location : str or path-like
        Cache directory (created on first write).
    settings : dict
        JSON-serialisable description of everything that changes the
        features.
    n_features : int
        Length of each vector; an entry of another length is ignored.
    """

    def __init__(self, location, settings: dict, n_features: int):
        self.settings = settings
        self.n_features = int(n_features)
        self.root = Path(location) / "sktransfer-embeddings" / settings_hash(settings)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str):
        memo_key = (str(self.root), key)
        vec = _MEMO.get(memo_key)
        if vec is not None:
            _MEMO.move_to_end(memo_key)
            return vec
        try:
            vec = np.load(self._path(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if vec.dtype != np.float32 or vec.shape != (self.n_features,):
            return None
        self._remember(memo_key, vec)
        return vec

    def put(self, key: str, vec: np.ndarray) -> None:
        vec = np.ascontiguousarray(vec, dtype=np.float32)
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
