"""``sktransfer compare``: transfer learning against classical baselines.

Every model is cross-validated on the same stratified folds and, for a
learning curve, on the same stratified subsets of each training fold. The
classical models see pixels or HOG features decoded once for all models; the
from-scratch CNN sees 32x32 pixels; the transfer models see the images.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.svm import SVC
from torch import nn

from ._inputs import ArrayLike, ImageInput, Preprocess, check_images, iter_batches

if TYPE_CHECKING:
    import pandas as pd

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")
PIXEL_SIZE = 64  # side of the raw-pixel and HOG inputs of the classical models
CNN_SIZE = 32    # the PyTorch tutorial CNN's input side


class CompareError(ValueError):
    """A data set ``sktransfer compare`` cannot run on; the message says why."""


# --------------------------------------------------------------------------
# Data sets


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
    from .datasets import load_elpv

    paths, probability, cell_type = load_elpv()
    y = np.where(probability > 0.5, "defective", "functional")
    return ImageDataset(paths, y, np.char.add(probability.astype(str), cell_type), "elpv")


def resolve_dataset(data, y=None, path_column="path", label_column="label") -> ImageDataset:
    """``data``: "elpv", a folder, a CSV file, or images with labels ``y``."""
    if y is not None:
        y = np.asarray(y)
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
    ``(index, item, reason)`` for each unreadable one.
    """
    pre = Preprocess(size, (0, 0, 0), (1, 1, 1))  # resize only: values stay in [0, 1]
    good, batches, problems = [], [], []
    workers = n_jobs or min(4, os.cpu_count() or 1)
    for pos, batch in iter_batches(source, range(len(source)), 64, pre, workers,
                                   skipped=problems):
        good.extend(pos.tolist())
        batches.append(batch)
    pixels = torch.cat(batches) if batches else torch.empty(0, 3, size, size)
    return pixels, np.array(good, dtype=int), problems


def _hog_features(pixels: torch.Tensor) -> np.ndarray:
    from skimage.feature import hog

    gray = pixels.mean(1).numpy()
    return np.stack([hog(g, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
                     for g in gray]).astype(np.float32)


# --------------------------------------------------------------------------
# Models


class TutorialCNN(nn.Module):
    """The small CNN of PyTorch's "Training a classifier" tutorial (32x32 input).

    Two 5x5 convolutions with max pooling, then three linear layers.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def _tuned(estimator, grid, y):
    """Tune by an inner stratified CV when each class has 2+ images, else as is."""
    inner = min(3, int(np.bincount(y).min()))
    return GridSearchCV(estimator, grid, cv=inner) if inner >= 2 else estimator


@dataclass
class ModelSpec:
    label: str
    inputs: str  # "pixels", "hog", "cnn", "images"
    build: object  # (y_train, seed, settings) -> estimator


def _logreg(y, seed, s):
    return make_pipeline(StandardScaler(), _tuned(
        LogisticRegression(max_iter=2000), {"C": [1e-3, 1e-2, 1e-1]}, y))


def _forest(y, seed, s):
    return RandomForestClassifier(300, n_jobs=-1, random_state=seed)


def _hog_svc(y, seed, s):
    return make_pipeline(StandardScaler(), _tuned(SVC(), {"C": [1, 10]}, y))


def _small_cnn(y, seed, s):
    from skorch import NeuralNetClassifier

    return NeuralNetClassifier(
        TutorialCNN, module__n_classes=int(y.max()) + 1, criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam, lr=1e-3, max_epochs=5 if s["quick"] else 30,
        batch_size=32, train_split=None, iterator_train__shuffle=True, verbose=0,
        device="cpu")


def _frozen_lr(y, seed, s):
    from ._extractor import PretrainedFeatureExtractor

    return make_pipeline(
        PretrainedFeatureExtractor(image_size=s["image_size"], memory=s["cache"]),
        StandardScaler(),
        _tuned(LogisticRegression(max_iter=3000), {"C": [1e-3, 1e-2, 1e-1]}, y))


def _fine_tuned(y, seed, s):
    from ._transfer import TransferClassifier

    if s["quick"]:
        return TransferClassifier(image_size=s["image_size"], max_epochs=2,
                                  validation_fraction=None, random_state=seed)
    return TransferClassifier(image_size=s["image_size"], **FINE_TUNE_PARAMS,
                              random_state=seed)


# TransferClassifier's settings in the comparison (fits a 30-minute budget
# for 3 folds of ELPV on a 2-core CPU; see the docstring of compare()). Set
# in full, not left to TransferClassifier's defaults, so that the measured
# comparison does not move when those change; the input size is compare's
# own image_size (None: the backbone's).
FINE_TUNE_PARAMS = {"augment": False, "validation_fraction": None, "max_epochs": 12}

MODELS = {
    "logistic_regression": ModelSpec("LogisticRegression, 64x64 pixels", "pixels", _logreg),
    "random_forest": ModelSpec("RandomForest (300 trees), 64x64 pixels", "pixels", _forest),
    "hog_svc": ModelSpec("HOG + SVC (RBF)", "hog", _hog_svc),
    "small_cnn": ModelSpec("small CNN from scratch (PyTorch tutorial, 32x32)", "cnn",
                           _small_cnn),
    "frozen_lr": ModelSpec("pretrained features (frozen) + LogisticRegression", "images",
                           _frozen_lr),
    "fine_tuned": ModelSpec("TransferClassifier (fine-tuned)", "images", _fine_tuned),
}
TRANSFER_MODELS = ("frozen_lr", "fine_tuned")
CLASSICAL_MODELS = ("logistic_regression", "random_forest", "hog_svc")


def n_parameters(model) -> int:
    """Trainable parameters of a fitted model (tree nodes for a forest)."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return sum(n_parameters(step) for _, step in model.steps)
    if isinstance(model, GridSearchCV):
        return n_parameters(model.best_estimator_)
    if hasattr(model, "module_"):  # skorch
        return sum(p.numel() for p in model.module_.parameters() if p.requires_grad)
    if hasattr(model, "model_") and hasattr(model, "classes_"):  # TransferClassifier
        return sum(p.numel() for p in model.model_.parameters() if p.requires_grad)
    if hasattr(model, "estimators_"):
        return sum(t.tree_.node_count for t in model.estimators_)
    if hasattr(model, "support_vectors_"):
        return int(model.support_vectors_.size + model.dual_coef_.size + model.intercept_.size)
    if hasattr(model, "coef_"):
        return int(model.coef_.size + np.size(model.intercept_))
    return 0


# --------------------------------------------------------------------------
# Running


def _train_sizes(sizes, n_train: int) -> list[int]:
    out = []
    for s in sizes:
        n = int(round(s * n_train)) if isinstance(s, float) and s <= 1 else int(s)
        out.append(min(n, n_train))
    return sorted(set(out))


def _subset(train_idx, y, n, seed):
    """A stratified subset of ``n`` of ``train_idx`` with every class present."""
    if n >= len(train_idx):
        return train_idx
    n_classes = len(np.unique(y[train_idx]))
    if n < 2 * n_classes:
        raise CompareError(f"train size {n} is too small for {n_classes} classes; use at "
                           f"least {2 * n_classes}.")
    if len(train_idx) - n < n_classes:  # too few left out to stratify them
        sub = np.random.default_rng(seed).choice(train_idx, n, replace=False)
    else:
        sub, _ = train_test_split(train_idx, train_size=n, stratify=y[train_idx],
                                  random_state=seed)
    return np.sort(sub)


def _scores(model, X):
    if hasattr(model, "predict_proba"):
        try:
            return model.predict_proba(X)
        except AttributeError:  # SVC(probability=False) behind a pipeline
            pass
    return model.decision_function(X)


def _metrics(y_true, pred, scores, n_classes):
    out = {
        "accuracy": accuracy_score(y_true, pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, pred),
        "f1_macro": f1_score(y_true, pred, average="macro"),
        "roc_auc": float("nan"),
    }
    if n_classes == 2 and len(np.unique(y_true)) == 2:
        s = scores[:, 1] if np.ndim(scores) == 2 else scores
        out["roc_auc"] = roc_auc_score(y_true, s)
    return out


def prepare_inputs(pixels: torch.Tensor, images, models) -> dict:
    """What each kind of model is fitted on, computed once for all folds."""
    inputs = {}
    gray = bool((pixels[:, :1] == pixels).all())
    needs = {MODELS[m].inputs for m in models}
    if "pixels" in needs:
        inputs["pixels"] = (pixels[:, :1] if gray else pixels).flatten(1).numpy()
    if "hog" in needs:
        inputs["hog"] = _hog_features(pixels)
    if "cnn" in needs:
        small = torch.nn.functional.interpolate(pixels, size=(CNN_SIZE, CNN_SIZE),
                                                mode="bilinear", antialias=True)
        inputs["cnn"] = ((small - 0.5) / 0.5).numpy().astype(np.float32)
    if "images" in needs:
        inputs["images"] = images
    return inputs


def fit_and_score(name, inputs, y, train, test, seed, settings, n_classes) -> dict:
    """Fit model ``name`` on ``train`` and score it on ``test``."""
    spec = MODELS[name]
    X = inputs[spec.inputs]
    model = spec.build(y[train], seed, settings)
    torch.manual_seed(seed)
    t = time.perf_counter()
    model.fit(_take(X, train), y[train])
    row = {"fit_s": time.perf_counter() - t}
    t = time.perf_counter()
    scores = _scores(model, _take(X, test))
    row["predict_s"] = time.perf_counter() - t
    pred = np.argmax(scores, 1) if np.ndim(scores) == 2 else (scores > 0).astype(int)
    row.update(_metrics(y[test], pred, scores, n_classes))
    row["trainable_parameters"] = n_parameters(model)
    return row


def _log(msg, verbose):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def compare(data: str | os.PathLike | ImageInput, y: ArrayLike | None = None, *,
            models: list[str] | None = None,
            train_sizes: Sequence[int | float] = (0.1, 0.3, 1.0), cv: int = 3,
            image_size: int | None = None, max_minutes: float | None = None,
            quick: bool = False, out: str | os.PathLike | None = None, seed: int = 0,
            cache: str | os.PathLike | None = None, path_column: str = "path",
            label_column: str = "label", verbose: bool = True) -> pd.DataFrame:
    """Cross-validate transfer learning against classical baselines.

    Every model is fitted on the same stratified folds and, for each train
    size, on the same stratified subset of each training fold, and scored on
    the whole test fold.

    Models (``models`` takes their names):

    - ``logistic_regression``, ``random_forest``: on 64x64 raw pixels;
    - ``hog_svc``: HOG features (scikit-image) + RBF SVC;
    - ``small_cnn``: the two-convolution CNN of PyTorch's classifier
      tutorial, trained from scratch with skorch on 32x32 pixels (Adam,
      30 epochs);
    - ``frozen_lr``: :class:`PretrainedFeatureExtractor` + logistic
      regression;
    - ``fine_tuned``: :class:`TransferClassifier` with ``augment=False``,
      ``validation_fraction=None``, ``max_epochs=12`` at ``image_size`` (so
      that 3 folds of ELPV fit in 30 minutes on a 2-core CPU; its own
      defaults add flip augmentation and TTA, early stopping and the images'
      own resolution, see ``benchmarks/results/transfer.md``).

    The regularisation of the linear models and the SVC is chosen by an
    inner 3-fold CV on each training subset. Unreadable images are skipped,
    counted and listed (``attrs["skipped_images"]`` of the result, and the
    JSON file).

    Parameters
    ----------
    data : "elpv", str or path, or images
        ``"elpv"`` (the ELPV solar cells, binary defect probability > 0.5,
        folds stratified by probability x cell type; needs the ``bench``
        extra), a folder with one subfolder per class, a CSV file with a
        path and a label column, or images in any form the estimators take,
        with ``y``.
    y : array-like, default=None
        Labels, when ``data`` holds images.
    models : list of str, default=None
        Names from the list above; ``None`` runs all of them.
    train_sizes : sequence of int or float, default=(0.1, 0.3, 1.0)
        Training-set sizes of the learning curve: fractions (float <= 1) of
        a training fold, or numbers of images.
    cv : int, default=3
        Number of stratified folds.
    image_size : int, default=None
        Input side of the pretrained models (``None``: the backbone's).
    max_minutes : float, default=None
        Time budget. A fit whose expected time (from the same model's
        previous fits) would overrun it is skipped and reported as skipped.
    quick : bool, default=False
        A smoke test: a stratified subset of at most 120 images, 2 folds, 2
        fine-tuning epochs and 5 CNN epochs.
    out : str or path, default=None
        Folder for ``results.csv``, ``results.json`` and
        ``learning_curve.png``, written only when the whole run succeeded.
    seed : int, default=0
        Seeds the folds, the subsets and every model.
    cache : str or path, default=None
        Embedding cache of the frozen model (``memory`` of the extractor);
        ``None`` disables it.
    path_column, label_column : str
        Columns of a CSV ``data``.
    verbose : bool, default=True
        Progress on stderr.

    Returns
    -------
    results : pandas.DataFrame
        One row per model, train size and fold: accuracy, balanced
        accuracy, macro F1, ROC AUC (binary), fit and predict seconds,
        trainable parameters (tree nodes for the forest), and ``status``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktransfer import compare
    >>> digits = load_digits()
    >>> X, y = digits.images[:60] / 16, digits.target[:60] % 2
    >>> res = compare(X, y, models=["logistic_regression", "hog_svc"], cv=2,
    ...               train_sizes=[1.0], verbose=False)
    >>> sorted(res["model"].unique())
    ['hog_svc', 'logistic_regression']
    """
    import pandas as pd

    t_start = time.perf_counter()
    models = list(MODELS) if models is None else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise CompareError(f"Unknown model(s) {unknown}; choose from {list(MODELS)}.")
    if int(cv) < 2:
        raise CompareError(f"cv={cv}: cross-validation needs at least 2 folds.")
    if not len(train_sizes) or any(s <= 0 for s in train_sizes):
        raise CompareError(f"train_sizes={list(train_sizes)}: give positive fractions "
                           "(<= 1.0) or image counts.")
    dataset = resolve_dataset(data, y, path_column, label_column)
    if quick:
        cv = 2
        train_sizes = (0.5, 1.0)
    n_images = len(dataset.X)
    if n_images != len(dataset.y):
        raise CompareError(f"{n_images} images but {len(dataset.y)} labels.")
    check_classes(dataset.y, cv)
    rng_idx = np.arange(n_images)
    if quick and n_images > 120:
        rng_idx, _ = train_test_split(rng_idx, train_size=120, stratify=dataset.strata,
                                      random_state=seed)
        rng_idx = np.sort(rng_idx)

    _log(f"Decoding {len(rng_idx)} images ({dataset.name})...", verbose)
    # Bad items found by the checks fail again, with their reason, when decoded.
    sub_source = check_images(_take(dataset.X, rng_idx), skipped=[])
    pixels, good, problems = decode_all(sub_source, PIXEL_SIZE)
    skipped = [{"index": int(rng_idx[i]), "item": item, "reason": reason}
               for i, item, reason in problems]
    if skipped:
        _log(f"Skipping {len(skipped)} unreadable image(s):", verbose)
        for s in skipped[:20]:
            _log(f"  X[{s['index']}] {s['item']}: {s['reason']}", verbose)
    idx = rng_idx[good]
    if len(idx) == 0:
        raise CompareError("None of the images could be read.")
    labels = dataset.y[idx]
    strata = dataset.strata[idx]
    check_classes(labels, cv)
    encoder = LabelEncoder().fit(labels)
    y_all = encoder.transform(labels)
    n_classes = len(encoder.classes_)

    inputs = prepare_inputs(pixels, _take(dataset.X, idx), models)

    folds = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(idx, strata))
    sizes = _train_sizes(train_sizes, min(len(tr) for tr, _ in folds))
    settings = {"quick": quick, "image_size": image_size, "cache": cache}
    budget = None if max_minutes is None else 60.0 * max_minutes
    rows, last_fit = [], {}
    n_runs = len(sizes) * len(folds) * len(models)
    k = 0
    for n in sizes:
        for f, (train, test) in enumerate(folds):
            sub = _subset(train, y_all, n, seed + f)
            for name in models:
                k += 1
                spec = MODELS[name]
                row = {"model": name, "label": spec.label, "train_size": len(sub),
                       "fold": f, "status": "ok"}
                elapsed = time.perf_counter() - t_start
                if budget is not None and name in last_fit:
                    n_prev, secs = last_fit[name]
                    expected = secs * len(sub) / n_prev
                    if elapsed + expected > budget:
                        row["status"] = "skipped: time budget"
                        rows.append(row)
                        _log(f"[{k}/{n_runs}] {name} n={len(sub)} fold {f + 1}: skipped "
                             f"(expected {expected:.0f} s, {budget - elapsed:.0f} s left)",
                             verbose)
                        continue
                row.update(fit_and_score(name, inputs, y_all, sub, test, seed + f,
                                         settings, n_classes))
                last_fit[name] = (len(sub), row["fit_s"])
                rows.append(row)
                _log(f"[{k}/{n_runs}] {name} n={len(sub)} fold {f + 1}/{len(folds)}: "
                     f"accuracy {row['accuracy']:.3f}, fit {row['fit_s']:.1f} s", verbose)
    results = pd.DataFrame(rows)
    results.attrs.update({
        "dataset": dataset.name, "n_images": int(len(idx)), "classes": encoder.classes_.tolist(),
        "cv": cv, "train_sizes": sizes, "seed": seed, "quick": quick,
        "skipped_images": skipped, "wall_s": time.perf_counter() - t_start,
    })
    if out is not None:
        write_results(results, out)
    return results


def _take(X, idx):
    if isinstance(X, np.ndarray):
        return X[idx]
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    return [X[i] for i in idx]


METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "fit_s", "predict_s",
           "trainable_parameters")


def summarize(results):
    """Mean and standard deviation over folds, per model and train size."""
    ok = results[results["status"] == "ok"]
    cols = [c for c in METRICS if c in ok]
    return ok.groupby(["model", "train_size"], sort=False)[cols].agg(["mean", "std"])


def format_table(results) -> str:
    """The largest train size's scores, one line per model."""
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return "No model finished."
    n = ok["train_size"].max()
    lines = [f"{'model':<20} {'accuracy':>15} {'bal. acc.':>9} {'F1 macro':>8} "
             f"{'ROC AUC':>8} {'fit s':>8} {'pred. s':>7} {'parameters':>11}"]
    for name, g in ok[ok["train_size"] == n].groupby("model", sort=False):
        lines.append(
            f"{name:<20} {g['accuracy'].mean():>8.3f} ± {g['accuracy'].std(ddof=0):.3f} "
            f"{g['balanced_accuracy'].mean():>9.3f} {g['f1_macro'].mean():>8.3f} "
            f"{g['roc_auc'].mean():>8.3f} {g['fit_s'].mean():>8.1f} "
            f"{g['predict_s'].mean():>7.1f} {int(g['trainable_parameters'].mean()):>11,}")
    skipped = results[results["status"] != "ok"]
    if len(skipped):
        lines.append(f"({len(skipped)} fit(s) skipped for the time budget.)")
    return f"Train size {n} (mean ± std over folds):\n" + "\n".join(lines)


def plot_learning_curve(results, ax=None):
    """Accuracy against training-set size, mean ± std over folds, per model."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    ok = results[results["status"] == "ok"]
    for name, g in ok.groupby("model", sort=False):
        stats = g.groupby("train_size")["accuracy"].agg(["mean", "std"]).fillna(0)
        ax.plot(stats.index, stats["mean"], marker="o", label=MODELS[name].label
                if name in MODELS else name)
        ax.fill_between(stats.index, stats["mean"] - stats["std"],
                        stats["mean"] + stats["std"], alpha=0.15)
    ax.set_xscale("log")
    sizes = sorted(ok["train_size"].unique())
    ax.set_xticks(sizes, [str(int(n)) for n in sizes])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def write_results(results, out) -> None:
    """``results.csv``, ``results.json`` and ``learning_curve.png`` in ``out``.

    Written to a temporary folder first and moved in at the end, so a failed
    run never leaves files that look like a success.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as tmp:
        tmp = Path(tmp)
        results.to_csv(tmp / "results.csv", index=False)
        payload = {
            **dict(results.attrs.items()),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "torch": torch.__version__},
            "rows": json.loads(results.to_json(orient="records")),
        }
        (tmp / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        ax = plot_learning_curve(results)
        ax.set_title(f"{results.attrs.get('dataset', '')}: accuracy vs training images")
        ax.figure.tight_layout()
        ax.figure.savefig(tmp / "learning_curve.png", dpi=120)
        plt.close(ax.figure)
        for name in ("results.csv", "results.json", "learning_curve.png"):
            os.replace(tmp / name, out / name)
