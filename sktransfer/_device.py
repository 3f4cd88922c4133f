"""One place that decides where networks run and at which precision.

The precision policy, stated once:

- **The frozen trunk** (the extractor's network, the frozen units of a
  fine-tuned one) runs at ``precision_``: float32, or bf16 from the unit
  where the backbone's second stage starts, its stem and first stage in
  float32 (they cost most of bf16's error and little of the time). This
  holds on every engine and for every cut point: torch autocasts from that
  unit (:meth:`~sktransfer._network.BackboneNetwork.forward_units`), OpenVINO
  compiles the units before it at f32 and the rest at bf16, and a trunk
  that ends before it is float32 throughout. ONNX Runtime computes float32
  only, so an estimator whose engine is ONNX Runtime has
  ``precision_="float32"``. A backbone whose second stage does not start at
  a unit (a ViT, one unit) runs in float32.
- **The trained top** (the units a fit trains and the new head) runs as it
  was trained, at :func:`training_dtype`, whichever way its input arrived
  (computed now, or read from ``memory=``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading

import torch

PRECISION_OPTIONS = ("auto", "float32", "bfloat16")


@functools.cache
def _cpu_flags() -> frozenset:
    """The CPU's feature flags, read once from ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return frozenset()
    return frozenset(flag for line in text.splitlines() if line.startswith("flags")
                     for flag in line.partition(":")[2].split())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16).

    Without those instructions bf16 autocast is emulated and slower than fp32.
    """
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tile units for bf16 (Intel Xeon since Sapphire Rapids)."""
    return "amx_bf16" in _cpu_flags()


def describe_machine() -> dict:
    """What the numbers of a run depend on: the CPU and its bf16 support, the
    cores, torch's threads and the GPU."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "amx": cpu_has_amx(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn the ``device`` parameter into a :class:`torch.device`.

    ``"auto"`` picks CUDA when it is available, else the CPU. Asking for CUDA
    on a machine without it is an error, not a silent fallback.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='auto' or device='cpu'."
        )
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Turn the ``precision`` parameter into the autocast dtype of inference.

    ``"auto"`` means bf16 autocast where the hardware has native bf16 (CUDA
    with bf16 support, or a CPU with AMX/AVX512-BF16), else float32.
    """
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(
            f"precision={precision!r} is not one of {PRECISION_OPTIONS}."
        )
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of training steps.

    ``"auto"``: on CUDA, bf16 where the GPU supports it, else float16 (with
    loss scaling, :class:`~sktransfer._training.net.TransferNet`); float32
    on the CPU, where a bf16 training step of EfficientNet-Lite0's top stages
    measured no faster than float32 (AMX speeds up inference, not the
    backward pass here).
    """
    if precision == "auto" and device.type == "cpu":
        return torch.float32
    if precision == "auto" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return resolve_precision(precision, device)


def autocast(device: torch.device | str, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``'s type; nothing for float32.

    What the trained top of a network runs under, in training steps and in
    predictions alike (:func:`training_dtype`).
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


# One sktransfer computation at a time per Dask worker process, each with
# all the worker's threads (re-entrant: fit calls predict-like passes).
_WORKER_LOCK = threading.RLock()


def _dask_worker():
    if "distributed" not in sys.modules:  # never imports dask itself
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


@contextlib.contextmanager
def worker_threads():
    """Inside a Dask worker: torch gets the worker's threads for the duration.

    Dask workers start torch with one thread (``OMP_NUM_THREADS=1``); a
    network pass is faster with all the worker's threads than several passes
    side by side with one each, so sktransfer's tasks on a worker take turns,
    each with ``nthreads`` threads. Elsewhere this does nothing. Usable as a
    decorator.
    """
    worker = _dask_worker()
    if worker is None:
        yield
        return
    with _WORKER_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, int(worker.state.nthreads)))
        try:
            yield
        finally:
            torch.set_num_threads(before)
