"""Data sets ``sktransfer compare`` runs on, and their decoding for the classical models."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._inference import run
from .._inputs import Preprocess

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


class CompareError(ValueError):
    """A data set ``sktransfer compare`` cannot run on; the message says why."""


@dataclass
class ImageDataset:
    """Images (paths or arrays) with labels, and the strata the folds keep."""

    X: object
    y: np.ndarray
    strata: np.ndarray
    name: str


def load_image_folder(root) -> ImageDataset:
    """An ``ImageFolder`` layout: one subfolder per class, images inside."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for c in classes:
        for p in sorted((root / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(p))
                labels.append(c)
    if not paths:
        raise CompareError(
            f"{str(root)!r} holds no images in class subfolders: expected "
            f"{str(root)}/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}.")
    y = np.array(labels)
    return ImageDataset(np.array(paths), y, y, root.name)


def load_csv(path, path_column="path", label_column="label") -> ImageDataset:
    """A CSV with an image path column and a label column.

    Relative paths are taken relative to the CSV file's folder.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in (path_column, label_column) if c not in columns]
        if missing:
            raise CompareError(
                f"{str(path)!r} has no column {', '.join(map(repr, missing))}; its columns "
                f"are {columns}. Name them {path_column!r} and {label_column!r}, or pass "
                "--path-column / --label-column.")
        rows = list(reader)
    if not rows:
        raise CompareError(f"{str(path)!r} has no rows.")
    base = path.parent
    paths = np.array([str(base / r[path_column]) for r in rows])
    y = np.array([r[label_column] for r in rows])
    return ImageDataset(paths, y, y, path.stem)


def load_elpv_dataset() -> ImageDataset:
    """ELPV, binary: defective (probability > 0.5) or functional."""
    from ..datasets import load_elpv

    paths, probability, cell_type = load_elpv()
    y = np.where(probability > 0.5, "defective", "functional")
    return ImageDataset(paths, y, np.char.add(probability.astype(str), cell_type), "elpv")


def resolve_dataset(data, y=None, path_column="path", label_column="label") -> ImageDataset:
    """``data``: "elpv", a folder, a CSV file, or images with labels ``y``."""
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise CompareError(
                f"y has shape {y.shape}: compare takes one label per image. With several "
                "targets, compare each column on its own (compare(X, y[:, k])), or "
                "cross-validate TransferClassifier on the 2-D y (see the user guide's "
                "multi-task section).")
        return ImageDataset(data, y, y, "images")
    if isinstance(data, (str, os.PathLike)):
        if str(data) == "elpv" and not Path(data).exists():
            return load_elpv_dataset()
        p = Path(data)
        if p.is_dir():
            return load_image_folder(p)
        if p.is_file() and p.suffix.lower() == ".csv":
            return load_csv(p, path_column, label_column)
        if not p.exists():
            raise CompareError(f"{str(data)!r} does not exist; give an image folder (one "
                               "subfolder per class), a .csv file, or 'elpv'.")
        raise CompareError(f"{str(data)!r} is neither a folder nor a .csv file.")
    raise CompareError("Pass a folder, a CSV file or 'elpv', or images with their labels y.")


def check_classes(y, n_folds: int) -> None:
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise CompareError(f"Only one class ({labels[0]!r}) was found; a comparison of "
                           "classifiers needs at least two.")
    small = [(lab, c) for lab, c in zip(labels, counts) if c < n_folds]
    if small:
        listed = ", ".join(f"{lab!r} ({c} image{'s' if c != 1 else ''})" for lab, c in small)
        raise CompareError(
            f"Class{'es' if len(small) > 1 else ''} {listed} ha{'ve' if len(small) > 1 else 's'}"
            f" fewer images than the {n_folds} cross-validation folds; every class needs at "
            f"least {n_folds} images (add images, or lower --cv).")


# --------------------------------------------------------------------------
# Decoding, once for all classical models


def decode_all(source, size: int, n_jobs: int | None = None):
    """All images as a ``(n, 3, size, size)`` float tensor; unreadable ones listed.

    Returns the tensor of the readable images, their positions, and
    ``(index, item, reason)`` for each unreadable one. Decoded by the one
    inference path, without a network.
    """
    pre = Preprocess(size, (0, 0, 0), (1, 1, 1))  # resize only: values stay in [0, 1]
    good, batches, problems = [], [], []
    workers = n_jobs or min(4, os.cpu_count() or 1)
    for pos, (batch,) in run(source, range(len(source)), preprocess=pre, batch_size=64,
                             n_jobs=workers, skipped=problems):
        good.extend(pos.tolist())
        batches.append(batch)
    pixels = torch.cat(batches) if batches else torch.empty(0, 3, size, size)
    return pixels, np.array(good, dtype=int), problems
