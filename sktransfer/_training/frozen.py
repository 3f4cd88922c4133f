"""The frozen part's outputs of a fit, computed once, within a memory budget.

When the frozen part of a fine-tuned network stays fixed and the views are
a fixed set (flips, or none), its output for every training image and view
is computed once before training and each epoch draws from it. How much
RAM that takes is bounded by scikit-learn's ``working_memory``
(``sklearn.set_config(working_memory=MiB)``, the ecosystem's one knob for
this, 1024 MiB by default):

- within the budget, the outputs are held in memory (on the training GPU
  when they take at most a quarter of its free memory);
- beyond it, they are written, as they are computed, to one memory-mapped
  file (in ``memory=`` when given, else the temporary directory), read
  batch by batch, one batch ahead. The file has no name on disk once it is
  open: nothing is left behind, whether the fit ends, fails, or is killed;
- when the disk cannot hold them either, ``compute`` returns ``None`` and
  the frozen part runs batch by batch, every epoch, with a warning that
  names the sizes.

The three give the same training: the same outputs, drawn in the same
order. Over several processes, each computes its share; within the budget
every process receives all of them, beyond it the processes on one machine
share one file (several machines need ``memory=`` on a file system they
share, else the frozen part runs batch by batch).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .._distributed import ONE_PROCESS, Processes
from .._images import ImageSource
from .._inference import Feed
from .._trunk import FrozenPart

#: Free space kept on the disk beyond the file itself.
DISK_MARGIN = 256 << 20


def working_memory_bytes() -> int:
    """scikit-learn's ``working_memory``, in bytes."""
    from sklearn import get_config

    return int(get_config()["working_memory"] * 2**20)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    # numpy has no bfloat16: its bits are kept as int16
    if dtype == torch.bfloat16:
        return np.dtype(np.int16)
    return torch.empty(0, dtype=dtype).numpy().dtype


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


class FrozenOutputs:
    """The frozen part's output of every image and view of one part of a fit.

    Parameters
    ----------
    data : torch.Tensor or numpy.memmap
        ``(n_views, n, ...)``: in memory, or mapped from a file.
    dtype : torch.dtype
        The outputs' dtype (a mapped file keeps bf16 as its int16 bits).

    Attributes
    ----------
    where : {"memory", "disk"}
    nbytes : int
    """

    def __init__(self, data, dtype: torch.dtype):
        self.data = data
        self.dtype = dtype
        self.where = "disk" if isinstance(data, np.memmap) else "memory"
        self.nbytes = (int(data.nbytes) if self.where == "disk"
                       else data.numel() * data.element_size())

    @classmethod
    def compute(cls, frozen: FrozenPart, source: ImageSource, indices, views, feed: Feed, *,
                budget: int, directory=None, processes: Processes = ONE_PROCESS,
                verbose: int = 0, owner: str = "") -> FrozenOutputs | None:
        """Run ``frozen`` once on every image of ``indices`` as each view,
        held in memory within ``budget`` bytes, else in a mapped file in
        ``directory`` (``None``: the temporary directory); ``None`` when the
        disk cannot hold them either (with a warning)."""
        indices = np.asarray(indices)
        n, n_views = len(indices), len(views)
        shape, dtype = frozen.output_shape(feed)
        itemsize = torch.empty(0, dtype=dtype).element_size()
        nbytes = n_views * n * math.prod(shape) * itemsize
        full = (n_views, n, *shape)
        share = processes.shard(n)
        bar = tqdm(total=share.stop - share.start, unit="img", file=sys.stderr,
                   disable=not verbose or not processes.is_main, desc="frozen part, once")
        if nbytes <= budget:
            local = torch.empty((n_views, share.stop - share.start, *shape), dtype=dtype)

            def write(v, positions, out):
                local[v, torch.as_tensor(positions)] = out.to(dtype)

            with bar:
                frozen.fill(source, indices[share], views, feed, write, progress=bar)
            return cls(_on_device(processes.gather_rows(local, n, dim=1), feed.device), dtype)
        data = _mapped(full, _numpy_dtype(dtype), nbytes, budget, directory, processes, owner)
        if data is None:
            return None

        def write(v, positions, out):
            # the dtype of the probe (an engine that falls back to torch
            # mid-fit may hand over another)
            out = out.to(dtype)
            out = out.view(torch.int16) if dtype == torch.bfloat16 else out
            data[v, share.start + np.asarray(positions)] = out.numpy()

        with bar:
            frozen.fill(source, indices[share], views, feed, write, progress=bar)
        processes.barrier()  # every share written before any process reads
        return cls(data, dtype)

    def batch(self, views: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        """The outputs of the images at ``positions`` of the part, each as its view."""
        if self.where == "disk":
            rows = np.asarray(self.data[np.asarray(views), np.asarray(positions)])
            out = torch.from_numpy(rows)
            return out.view(torch.bfloat16) if self.dtype == torch.bfloat16 else out
        at = self.data.device
        return self.data[torch.as_tensor(views).to(at), torch.as_tensor(positions).to(at)]


def _mapped(shape, dtype: np.dtype, nbytes: int, budget: int, directory, processes, owner):
    """A writable ``numpy.memmap`` of ``shape`` in a file that has no name on
    disk once every process has it open; ``None`` (and a warning) where the
    disk cannot hold it, or the processes share no file system."""
    if processes.distributed and not processes.on_one_machine():
        # a mapped file is not kept coherent between machines, even on a
        # shared file system
        _warn(owner, nbytes, budget, "and the processes of this fit run on several "
              "machines, which cannot share one mapped file")
        return None
    directory = os.fspath(directory) if directory is not None else tempfile.gettempdir()

    def check_space():
        os.makedirs(directory, exist_ok=True)
        free = shutil.disk_usage(directory).free
        return free >= nbytes + DISK_MARGIN, free

    fits, free = processes.main_decides(check_space)
    if not fits:
        _warn(owner, nbytes, budget, f"and the free space of {directory} ({_size(free)})")
        return None
    if not processes.distributed:
        with tempfile.TemporaryFile(dir=directory, prefix="sktransfer-fit-") as f:
            if not _allocate(f, nbytes):
                _warn(owner, nbytes, budget, f"and the free space of {directory}")
                return None
            # the mapping keeps the (nameless) file alive after it is closed
            return np.memmap(f, dtype=dtype, mode="r+", shape=shape)

    def create():
        fd, path = tempfile.mkstemp(dir=directory, prefix="sktransfer-fit-")
        with os.fdopen(fd, "wb") as f:
            if not _allocate(f, nbytes):
                os.remove(path)
                return None
        return path

    path = processes.main_decides(create)
    if path is None:
        _warn(owner, nbytes, budget, f"and the free space of {directory}")
        return None
    try:
        data = np.memmap(path, dtype=dtype, mode="r+", shape=shape)
    finally:
        processes.barrier()  # every process has it open (or failed to)
        if processes.is_main:
            os.remove(path)
    return data


def _allocate(f, nbytes: int) -> bool:
    """Reserve the file's blocks now: a disk that fills while the mapping is
    written would kill the process (SIGBUS) instead of raising."""
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(f.fileno(), 0, nbytes)
        else:
            f.truncate(nbytes)
    except OSError:
        return False
    return True


def _warn(owner: str, nbytes: int, budget: int, why: str) -> None:
    warnings.warn(
        f"{owner}: the frozen part's outputs of this fit take {_size(nbytes)}, more than "
        f"working_memory ({_size(budget)}) {why}; they are computed batch by batch in every "
        "epoch instead: the same training, slower. Raise sklearn.set_config(working_memory="
        "MiB), or free disk space.", UserWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of a warning raised here that points at the code
    which called the estimator (past sktransfer's, scikit-learn's and the
    standard library's frames)."""
    import sklearn

    import sktransfer

    inside = tuple(os.path.dirname(m.__file__) + os.sep for m in (sktransfer, sklearn, os))
    frame, level = sys._getframe(2), 2  # _warn's caller
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _on_device(outputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The frozen outputs on a GPU when they take at most a quarter of its
    free memory (each batch is then gathered there, with no copy), else
    where they are."""
    if device.type != "cuda":
        return outputs
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = outputs.numel() * outputs.element_size()
    return outputs.to(device) if nbytes <= free // 4 else outputs
