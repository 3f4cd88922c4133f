"""Counting what sktransfer does, for tests and benchmarks only.

The library calls :func:`record` at a few places whose count a test or a
benchmark checks (an entry read from ``memory``, a graph exported, a model
unpickled on a Dask worker). Nothing is counted unless a :func:`recording`
is open, so the library keeps no counters of its own.

This is the one private module that tests and benchmarks may import: its
counters, and :data:`FOR_BENCHMARKS`, the internals a benchmark may use
(``from sktransfer._testing import check_images``). Its names may change
with any release.

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


# -- the internals benchmarks may use ------------------------------------------------

#: Names the benchmarks (``benchmarks/``) take from sktransfer's internals,
#: loaded on first use: what describes the machine, the pieces a plain
#: baseline loop is built from, and ``compare``'s building blocks. Anything
#: not listed here or in ``sktransfer.__all__`` is free to change.
FOR_BENCHMARKS = {
    # the machine
    "cpu_has_amx": ("._device", "cpu_has_amx"),
    "cpu_has_native_bf16": ("._device", "cpu_has_native_bf16"),
    "resolve_engine": ("._engines", "resolve"),
    "training_dtype": ("._device", "training_dtype"),
    "dtype_name": ("._device", "dtype_name"),
    "clear_process_caches": ("._process_cache", "clear"),
    # a plain loop beside the estimators: the same decoding and weights
    "check_images": ("._images", "check_images"),
    "Preprocess": ("._inputs", "Preprocess"),
    "iter_batches": ("._inputs", "iter_batches"),
    "to_device": ("._inference", "to_device"),
    "load_backbone": ("._backbones", "load_backbone"),
    "drop_head": ("._backbones", "drop_head"),
    "BUILTIN": ("._backbones", "BUILTIN"),
    "DEFAULT_BACKBONE": ("._backbones", "DEFAULT_BACKBONE"),
    "float32_reference": ("._onnx", "float32_reference"),
    # compare's models, data and report
    "CLASSICAL_MODELS": ("._compare", "CLASSICAL_MODELS"),
    "MODELS": ("._compare", "MODELS"),
    "PIXEL_SIZE": ("._compare", "PIXEL_SIZE"),
    "TRANSFER_MODELS": ("._compare", "TRANSFER_MODELS"),
    "DEFAULT_MODELS": ("._compare._models", "DEFAULT_MODELS"),
    "frozen_lr": ("._compare._models", "_frozen_lr"),
    "decode_all": ("._compare", "decode_all"),
    "fit_and_score": ("._compare", "fit_and_score"),
    "load_elpv_dataset": ("._compare", "load_elpv_dataset"),
    "plot_learning_curve": ("._compare", "plot_learning_curve"),
    "prepare_inputs": ("._compare", "prepare_inputs"),
    "format_table": ("._compare", "format_table"),
    "metrics": ("._compare", "metrics"),
}


def __getattr__(name):
    if name in FOR_BENCHMARKS:
        import importlib

        module, attr = FOR_BENCHMARKS[name]
        return getattr(importlib.import_module(module, "sktransfer"), attr)
    raise AttributeError(f"module 'sktransfer._testing' has no attribute {name!r}")
