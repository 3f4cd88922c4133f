"""What ``memory=`` keeps on disk, and the one rule that names every entry.

Two things are stored under a ``memory=`` directory, both about a frozen
trunk (:class:`~sktransfer._trunk.FrozenTrunk`):

- its exported ONNX graph (``sktransfer-onnx/<key>.onnx``), what the
  inference engines run;
- its outputs per image (:class:`OutputStore`): the extractor's features
  (``sktransfer-embeddings``) and the fine-tuned estimators' frozen-part
  outputs (``sktransfer-frozen``, one entry per image and view)::

      sktransfer-<kind>/<key>/settings.json
      sktransfer-<kind>/<key>/<ab>/<image key>.npy

Every key is :func:`key` of one description of the trunk
(:meth:`~sktransfer._trunk.FrozenTrunk.identity`: backbone, weights, cut
point, pooling, layout, size, precision, engine, normalisation) and of
:data:`FORMAT_VERSION`, the version of the code that gives the files their
meaning: an entry written by another version, or for another trunk, is
never read. An image's key starts with the hash of its bytes, not its name.
Entries are written to a temporary file and renamed into place, so a killed
process never leaves a corrupt entry behind, and processes sharing the
directory (a grid search's workers, a cluster's) can write concurrently.
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

#: The version of what the stored files mean. Raise it whenever the same
#: description would now compute other numbers (3: graphs keyed by it too,
#: as the stored outputs were; 2: stage features pooled in float32).
FORMAT_VERSION = 3


def memory_location(memory) -> str | None:
    """The directory of a ``memory`` parameter (str, path or joblib.Memory), or None."""
    from sklearn.utils.validation import check_memory

    if memory is None:
        return None
    if isinstance(memory, os.PathLike):
        memory = os.fspath(memory)
    return check_memory(memory).location


def key(kind: str, description: dict) -> str:
    """The name of a stored artefact of ``kind`` (``"graph"``, ``"embeddings"``,
    ``"frozen"``) described by ``description``, under this :data:`FORMAT_VERSION`."""
    blob = json.dumps({"format": FORMAT_VERSION, "kind": kind, **description}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def graph_path(location, graph_key: str) -> Path:
    """Where a graph of :func:`key` ``graph_key`` is kept under ``location``."""
    return Path(location) / "sktransfer-onnx" / f"{graph_key}.onnx"


class OutputStore:
    """Per-image arrays of one trunk, stored on disk under ``location``.

    Parameters
    ----------
    location : str or path-like
        The ``memory=`` directory (created on first write).
    description : dict
        JSON-serialisable description of everything that changes the
        arrays (the trunk's identity).
    shape : int, tuple of int or None
        Shape of each array (an int: vectors of that length); an entry of
        another shape is ignored. ``None``: any shape.
    dtype : numpy dtype or None, default=float32
        Of each array; an entry of another dtype is ignored. ``None``: any
        dtype.
    kind : str, default="embeddings"
        The store's directory is ``sktransfer-<kind>``; reads and writes are
        counted as ``(kind, "read")`` and ``(kind, "written")``
        (:mod:`sktransfer._testing`).
    """

    def __init__(self, location, description: dict, shape, dtype=np.float32,
                 kind: str = "embeddings"):
        self.description = description
        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else shape
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.kind = kind
        self.root = Path(location) / f"sktransfer-{kind}" / key(kind, description)

    def _path(self, image_key: str) -> Path:
        return self.root / image_key[:2] / f"{image_key}.npy"

    def get(self, image_key: str):
        memo_key = (str(self.root), image_key)
        vec = cache("stored").get(memo_key)
        if vec is None:
            try:
                vec = np.load(self._path(image_key), allow_pickle=False)
            except (OSError, ValueError, EOFError):
                return None
            if ((self.dtype is not None and vec.dtype != self.dtype)
                    or (self.shape is not None and vec.shape != self.shape)):
                return None
            cache("stored").put(memo_key, vec, vec.nbytes)
        _testing.record(self.kind, "read")
        return vec

    def put(self, image_key: str, vec: np.ndarray) -> None:
        vec = np.ascontiguousarray(vec, dtype=self.dtype)
        settings_file = self.root / "settings.json"
        if not settings_file.exists():
            described = {"format": FORMAT_VERSION, "kind": self.kind, **self.description}
            atomic_write(settings_file, json.dumps(described, indent=2).encode())
        atomic_write(self._path(image_key), lambda f: np.save(f, vec, allow_pickle=False))
        cache("stored").put((str(self.root), image_key), vec, vec.nbytes)
        _testing.record(self.kind, "written")
