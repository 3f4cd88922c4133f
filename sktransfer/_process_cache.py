"""Everything sktransfer keeps in memory between calls, in one place, with one bound.

A long-lived process (a notebook, a Dask worker, a grid search) reuses what
is costly to make: ONNX graphs of frozen parts, ONNX Runtime sessions and
OpenVINO compiled models of them, per-image arrays read from ``memory=``,
digests of image files, and estimators shipped to a Dask worker. Each kind has one
:class:`BoundedCache` here, and one rule bounds them all: when a cache holds
more than its byte budget, its least recently used entries are dropped. An
entry's size is the bytes it holds (an array's ``nbytes``, a graph's length);
a session or a compiled model counts as the size of its graph, a shipped
estimator as the size of its pickle.

Nothing here is part of an estimator: a fitted estimator pickles and
compares the same whatever these caches hold.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

_MiB = 1 << 20


class BoundedCache:
    """A least-recently-used mapping with a byte budget; thread-safe.

    Parameters
    ----------
    name : str
        What it holds (for messages).
    max_bytes : int
        Budget: after each :meth:`put`, the least recently used entries are
        dropped until the rest fit (the newest entry always stays).
    """

    def __init__(self, name: str, max_bytes: int):
        self.name = name
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict = OrderedDict()  # key -> (value, nbytes)
        self._bytes = 0
        self._lock = threading.RLock()

    def get(self, key, default=None):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key, value, nbytes: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, int(nbytes))
            self._bytes += int(nbytes)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size

    def get_or_put(self, key, make, size):
        """The entry of ``key``, made by ``make()`` (sized by ``size(value)``)
        if absent; ``make`` runs under the lock, so once per key."""
        with self._lock:
            value = self.get(key)
            if value is None:
                value = make()
                self.put(key, value, size(value))
            return value

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list:
        with self._lock:
            return list(self._entries)

    def __iter__(self):
        return iter(self.keys())

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


#: The caches of this process, by what they hold.
CACHES = {
    # frozen-part graph key -> serialised ONNX graph
    "graphs": BoundedCache("graphs", 256 * _MiB),
    # (graph key, threads) -> onnxruntime.InferenceSession
    "sessions": BoundedCache("sessions", 512 * _MiB),
    # (graph key, threads, precision) -> openvino.CompiledModel
    "compiled": BoundedCache("compiled", 512 * _MiB),
    # (store directory, entry key) -> ndarray read from or written to memory=
    "stored": BoundedCache("stored", 1024 * _MiB),
    # shipment token -> estimator unpickled on a Dask worker
    "received": BoundedCache("received", 2048 * _MiB),
    # (path, size, mtime, inode) -> SHA-256 of the file's bytes
    "digests": BoundedCache("digests", 64 * _MiB),
    # graph keys whose engine failed in this process (run by torch instead)
    "failed": BoundedCache("failed", 1 * _MiB),
}


def cache(name: str) -> BoundedCache:
    """The process cache ``name`` (one of :data:`CACHES`)."""
    return CACHES[name]


def clear(*names: str) -> None:
    """Empty the named caches (all of them without names): what a new process starts with."""
    for name in names or tuple(CACHES):
        CACHES[name].clear()
