"""Counting what sktransfer does, for tests and benchmarks only.

The library calls :func:`record` at a few places whose count a test or a
benchmark checks (an entry read from ``memory``, a graph exported, a model
unpickled on a Dask worker). Nothing is counted unless a :func:`recording`
is open, so the library keeps no counters of its own.

This is the one private module that tests and benchmarks may import; its
names may change with any release.

Events
------
``("embeddings" | "frozen", "read" | "written")``
    Entries taken from or written to a ``memory=`` store.
``("graph", "exported")``
    A frozen part exported to ONNX in this process.
``("unpickled", <class name>)``
    An estimator unpickled in this process.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

_LOCK = threading.Lock()
_OPEN: list[Counter] = []
_PROCESS: list[Counter] = []  # begin()'s counter, while open


def record(*event, n: int = 1) -> None:
    """Count ``event`` in every open :func:`recording` (nothing when none is open)."""
    if not _OPEN:
        return
    with _LOCK:
        for counter in _OPEN:
            counter[event] += n


def begin() -> Counter:
    """Start counting in this process until :func:`end` (for a Dask worker,
    through ``client.run``); returns the counter that :func:`counts` reads."""
    with _LOCK:
        if _PROCESS:
            return _PROCESS[0]
        counts: Counter = Counter()
        _PROCESS.append(counts)
        _OPEN.append(counts)
        return counts


def counts() -> Counter:
    """What this process counted since :func:`begin` (empty before it)."""
    with _LOCK:
        return Counter(_PROCESS[0]) if _PROCESS else Counter()


def end() -> None:
    """Stop the counting :func:`begin` started."""
    with _LOCK:
        if _PROCESS:
            _OPEN.remove(_PROCESS.pop())


@contextlib.contextmanager
def recording():
    """Count the events of the enclosed code.

    Yields
    ------
    counts : collections.Counter
        ``counts["frozen", "read"]``, ``counts["graph", "exported"]``...:
        how often each event happened in this process while it was open.

    Examples
    --------
    >>> from sktransfer._testing import record, recording
    >>> with recording() as counts:
    ...     record("frozen", "read", n=3)
    >>> counts["frozen", "read"]
    3
    """
    counts: Counter = Counter()
    with _LOCK:
        _OPEN.append(counts)
    try:
        yield counts
    finally:
        with _LOCK:
            _OPEN.remove(counts)
