"""Writing files so that a reader never sees half of one.

Every file sktransfer writes where another process may read it (stored
features and frozen outputs, ONNX graphs, checkpoints, exported models) goes
through :func:`atomic_write`: written to a temporary file in the same
directory, then renamed into place. A killed process leaves no corrupt
file behind, and processes sharing a directory (a grid search's workers, a
cluster's) can write the same entry at once: the last rename wins, and
every version is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` to ``path`` atomically, creating its directory.

    Parameters
    ----------
    path : str or path-like
        The file to write; replaced if it exists.
    data : bytes or callable
        The file's bytes, or a function that writes them to the binary file
        object it is given (``lambda f: np.save(f, array)``,
        ``lambda f: torch.save(obj, f)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
