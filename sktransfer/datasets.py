"""Real image data sets that ship inside PyPI packages."""

from __future__ import annotations

import os

import numpy as np


def load_elpv() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load the ELPV solar-cell data set as file paths and labels.

    2,624 electroluminescence images (300x300, 8-bit grayscale) of solar
    cells from the ``elpv-dataset`` package (CC BY-NC-SA 4.0; install it with
    ``pip install "sktransfer[bench]"``), each with the probability that the
    cell is defective (0, 1/3, 2/3 or 1) and its type (mono- or
    polycrystalline). Images are not loaded: the paths go straight into an
    estimator, which decodes them in batches.

    Returns
    -------
    paths : ndarray of str, shape (2624,)
        Absolute paths of the PNG files.
    probability : ndarray of float, shape (2624,)
        Defect probability. Deitsch et al. (2019) call a cell defective when
        it is > 0.5.
    cell_type : ndarray of str, shape (2624,)
        ``"mono"`` or ``"poly"``.

    References
    ----------
    Deitsch, S. et al. (2019). Automatic classification of defective
    photovoltaic module cells in electroluminescence images. Solar Energy,
    185, 455-468.

    Examples
    --------
    >>> from sktransfer.datasets import load_elpv
    >>> paths, probability, cell_type = load_elpv()
    >>> len(paths), sorted(set(cell_type.tolist()))
    (2624, ['mono', 'poly'])
    """
    try:
        import elpv_dataset
    except ImportError:
        raise ImportError(
            "The ELPV images ship in the package 'elpv-dataset'; install it with "
            '`pip install "sktransfer[bench]"` or `pip install elpv-dataset`.'
        ) from None
    root = os.path.join(os.path.dirname(elpv_dataset.__file__), "data")
    table = np.genfromtxt(
        os.path.join(root, "labels.csv"), dtype=["U32", "<f8", "U8"],
        names=["path", "probability", "type"], encoding="utf-8",
    )
    paths = np.array([os.path.join(root, p) for p in table["path"]])
    return paths, table["probability"].astype(float), table["type"]
