"""The processes one fit runs in: one, or a group launched with an accelerator.

A fit given ``accelerator=`` (Hugging Face Accelerate, through skorch's
``AccelerateMixin``) runs in every process of a group that ``accelerate
launch`` or ``torchrun`` started: one process per device, gradients
all-reduced by torch's ``DistributedDataParallel``. :class:`Processes` is
what the rest of the training code asks about that group: this process's
rank, how many there are, and the few collective operations a fit needs
beyond the gradient all-reduce (agreeing on the seed and the checkpoint,
exchanging the frozen part's outputs, reducing the epoch's scores).
:data:`ONE_PROCESS` is the group of a plain fit, where each of them is the
identity.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Callable

import numpy as np
import torch

# One group per process, so one distributed fit at a time in it.
_FIT_LOCK = threading.Lock()
#: How to avoid the refusals of a copy of the estimator outside its processes.
_USE_ONE_JOB = ("A scikit-learn search or cross-validation over an estimator with an "
                "accelerator must use n_jobs=1: each launched process is already one "
                "worker of the fit.")


class Processes:
    """The process group of a fit, as ``rank`` of ``world``.

    Parameters
    ----------
    accelerator : accelerate.Accelerator or None
        ``None``: the fit runs in this process alone.
    """

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.rank = 0 if accelerator is None else int(accelerator.process_index)
        self.world = 1 if accelerator is None else int(accelerator.num_processes)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            self.accelerator.wait_for_everyone()

    def main_decides(self, decide: Callable):
        """``decide()`` run on the main process, its result (or the exception
        it raised) returned (raised) on every process."""
        result = error = None
        if self.is_main:
            try:
                result = (True, decide())
            except Exception as exc:  # raised on every process below
                error, result = exc, (False, _picklable(exc))
        if self.distributed:
            box = [result]
            torch.distributed.broadcast_object_list(box, src=0, device=self._comm_device)
            result = box[0]
        ok, value = result
        if error is not None:
            raise error  # the original, where it happened
        if not ok:
            raise value
        return value

    def check_same_data(self, source, targets, weights) -> None:
        """Raise on every process unless every process was given the same
        images (their contents, in order), targets and sample weights."""
        if not self.distributed:
            return
        h = hashlib.sha256()
        for key in map(source.content_key, range(len(source))):
            h.update(key.encode())
        for a in (targets, weights):
            h.update(pickle.dumps(np.asarray(a), protocol=4))
        digests = [None] * self.world
        torch.distributed.all_gather_object(digests, h.digest())
        other = [r for r, d in enumerate(digests) if d != digests[0]]
        if other:
            raise ValueError(
                f"The processes of this fit were given different data: ranks {other} "
                "differ from rank 0 in the images, the targets or the sample weights. "
                "Every process must call fit with the same images, targets and sample "
                "weights (each trains on its share of them).")

    def on_one_machine(self) -> bool:
        """Whether every process of the group runs on this machine."""
        if not self.distributed:
            return True
        import socket

        hosts = [None] * self.world
        torch.distributed.all_gather_object(hosts, socket.gethostname())
        return len(set(hosts)) == 1

    def sum(self, values) -> np.ndarray:
        """Element-wise sum over the processes (float64)."""
        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if self.distributed:
            t = t.to(self._comm_device)
            torch.distributed.all_reduce(t)
        return t.cpu().numpy()

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items (shares differ by at most one)."""
        return slice(*_bounds(n, self.world, self.rank))

    def gather_rows(self, local: torch.Tensor, n: int, dim: int = 1,
                    chunk_bytes: int = 256 << 20) -> torch.Tensor:
        """Every process's :meth:`shard` of ``n`` rows along ``dim``, concatenated
        in rank order on every process (on the CPU)."""
        if not self.distributed:
            return local
        shape = list(local.shape)
        shape[dim] = n
        out = torch.empty(shape, dtype=local.dtype)
        row_bytes = max(1, out.numel() // max(n, 1)) * out.element_size()
        # Broadcast in chunks of rows: a GPU need not hold them all at once.
        step = max(1, chunk_bytes // row_bytes)
        for src in range(self.world):
            start, stop = _bounds(n, self.world, src)
            for s in range(start, stop, step):
                e = min(stop, s + step)
                if src == self.rank:
                    buf = local.narrow(dim, s - start, e - s).contiguous()
                    buf = buf.to(self._comm_device)
                else:
                    shape[dim] = e - s
                    buf = torch.empty(shape, dtype=local.dtype, device=self._comm_device)
                torch.distributed.broadcast(buf, src=src)
                out.narrow(dim, s, e - s).copy_(buf.cpu())
        return out

    @property
    def _comm_device(self) -> torch.device:
        # NCCL exchanges CUDA tensors only; gloo CPU tensors.
        if torch.distributed.get_backend() == "nccl":
            return self.accelerator.device
        return torch.device("cpu")

    def __enter__(self):
        if self.distributed and not _FIT_LOCK.acquire(blocking=False):
            raise RuntimeError(
                "Another fit with an accelerator is running in this process. A process "
                f"group trains one model at a time. {_USE_ONE_JOB}")
        return self

    def __exit__(self, *exc):
        if self.distributed:
            _FIT_LOCK.release()
        return False


ONE_PROCESS = Processes(None)


def _bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """``rank``'s ``[start, stop)`` of ``n`` items split into ``world`` contiguous parts."""
    return n * rank // world, n * (rank + 1) // world


class PickledAccelerator:
    """What a pickled estimator keeps of its accelerator: that it had one.

    An accelerator belongs to the processes that were launched together; a
    pickle must load where accelerate is not even installed. Fitting with
    it is refused (:func:`check_accelerator`): that is how a scikit-learn
    search with ``n_jobs>1``, which pickles the estimator into worker
    processes, finds out.
    """

    def __repr__(self):
        return "PickledAccelerator()"

    def __eq__(self, other):
        return isinstance(other, PickledAccelerator)

    def __hash__(self):
        return hash(PickledAccelerator)


def check_accelerator(accelerator, owner: str) -> Processes:
    """The process group of ``accelerator``, refused where it cannot work.

    A copy of the estimator in another process (a joblib worker of a search
    with ``n_jobs>1``, or a loaded pickle) has no process group to join.
    """
    if accelerator is None:
        return ONE_PROCESS
    if isinstance(accelerator, PickledAccelerator):
        raise RuntimeError(
            f"{owner} was pickled with an accelerator, which stays with the processes "
            "that were launched with it (n_jobs>1 pickles the estimator into worker "
            f"processes). {_USE_ONE_JOB} To fit a loaded estimator again, set "
            "accelerator=None or a new Accelerator().")
    world = int(accelerator.num_processes)
    if world > 1 and not (torch.distributed.is_available()
                          and torch.distributed.is_initialized()):
        raise RuntimeError(
            f"{owner}: the accelerator describes {world} processes, but this process "
            "is not one of them (no torch.distributed process group here: n_jobs>1 "
            f"copies the estimator into worker processes). {_USE_ONE_JOB}")
    _check_settings(accelerator, owner)
    return Processes(accelerator)


def _picklable(exc: Exception) -> Exception:
    """``exc``, or a ``RuntimeError`` with its message where it does not pickle
    (it travels to the other processes)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


#: What :class:`Processes` supports: data parallelism, a whole model per process.
_DATA_PARALLEL = {"NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU",
                  "MULTI_MUSA", "MULTI_HPU", "MULTI_SDAA"}


def _check_settings(accelerator, owner: str) -> None:
    """Refuse what the fit's own batches, clipping and schedule do not support."""
    kind = getattr(accelerator, "distributed_type", None)
    kind = getattr(kind, "name", str(kind or "NO"))
    if kind not in _DATA_PARALLEL:
        raise ValueError(
            f"{owner}: the accelerator's distributed type is {kind}. sktransfer trains "
            "with data parallelism (DistributedDataParallel: a whole model per process, "
            "which its frozen part and stored outputs need); model-sharding set-ups "
            "(FSDP, DeepSpeed, Megatron) and TPUs are not supported.")
    steps = getattr(accelerator, "gradient_accumulation_steps", 1)
    if steps != 1:
        raise ValueError(
            f"{owner}: gradient_accumulation_steps={steps} is not supported (gradient "
            "clipping and the learning-rate schedule act on every batch). Raise "
            "batch_size instead: it is split across the processes.")
    dynamo = getattr(getattr(getattr(accelerator, "state", None), "dynamo_plugin", None),
                     "backend", None)
    if dynamo is not None and getattr(dynamo, "name", str(dynamo)) != "NO":
        raise ValueError(
            f"{owner}: torch.compile through the accelerator (dynamo_backend="
            f"{getattr(dynamo, 'name', dynamo)}) is not supported; launch without it.")

