"""One place that decides where networks run and at which precision.

The precision policy, the same for every estimator and every pass that does
not train (features, predictions, the frozen part of a fine-tuned network):
with bf16, autocast starts at the backbone's second stage; its stem and first
stage run in float32. Training steps use :func:`training_dtype`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading

import torch

PRECISION_OPTIONS = ("auto", "float32", "bfloat16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16).

    Without those instructions bf16 autocast is emulated and slower than fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tile units for bf16 (Intel Xeon since Sapphire Rapids)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


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

    ``"auto"``: bf16 on CUDA where supported; float32 on the CPU, where a bf16
    training step of EfficientNet-Lite0's top stages measured no faster than
    float32 (AMX speeds up inference, not the backward pass here).
    """
    if precision == "auto" and device.type == "cpu":
        return torch.float32
    return resolve_precision(precision, device)


@contextlib.contextmanager
def autocast_from(model: torch.nn.Module, module_name: str | None,
                  device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` from module ``module_name`` of ``model`` on; before it, float32.

    bf16 rounding of the input image and of the first, full-resolution stage
    cost most of the difference to float32 features, while that stage costs
    little of the time: on EfficientNet-Lite0 / ELPV, keeping the stem and
    stage 1 in float32 raised the minimum cosine similarity to float32
    features from 0.990 to 0.996 at 4 % of the speed. ``module_name=None``
    autocasts the whole forward pass. The context covers one forward pass
    (once entered, autocast stays on until the context ends); a pass that
    never reaches ``module_name`` stays float32.
    """
    if dtype == torch.float32:
        yield
        return
    ctx = torch.autocast(device_type=device.type, dtype=dtype)
    if module_name is None:
        with ctx:
            yield
        return
    entered = []
    # The hook is on a module other threads may run at the same time; only
    # this thread's pass enters autocast (autocast state is per thread).
    owner = threading.get_ident()

    def enter(_module, _args):
        if not entered and threading.get_ident() == owner:
            ctx.__enter__()
            entered.append(True)

    handle = model.get_submodule(module_name).register_forward_pre_hook(enter)
    try:
        yield
    finally:
        handle.remove()
        if entered:
            ctx.__exit__(None, None, None)


def precision_policy(network, device: torch.device, dtype: torch.dtype):
    """The precision policy for a :class:`~sktransfer._network.BackboneNetwork`.

    bf16 from the backbone's second stage on (``network.autocast_start``),
    float32 before it; everything float32 when ``dtype`` is float32.
    """
    return autocast_from(network.backbone, network.autocast_start, device, dtype)


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
