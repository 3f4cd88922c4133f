"""Running ``sktransfer compare``: folds, subsets, fits, scores, the time budget.

Every model is cross-validated on the same stratified folds and, for a
learning curve, on the same stratified subsets of each training fold. The
classical models see pixels or HOG features decoded once for all models; the
from-scratch CNN sees 32x32 pixels; the transfer models see the images.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import LabelEncoder

from .._images import ArrayLike, ImageInput, check_images
from .._random import draw_seed, torch_rng
from ._data import CompareError, check_classes, decode_all, resolve_dataset
from ._models import DEFAULT_MODELS, MODELS, PIXEL_SIZE, n_parameters, prepare_inputs
from ._report import write_results

if TYPE_CHECKING:
    import pandas as pd


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


def metrics(y_true, pred, scores, n_classes):
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


def fit_and_score(name, inputs, y, train, test, seed, settings, n_classes) -> dict:
    """Fit model ``name`` on ``train`` and score it on ``test``."""
    return _fit_and_score(name, inputs, y, train, test, seed, settings, n_classes)[0]


def _fit_and_score(name, inputs, y, train, test, seed, settings, n_classes):
    """:func:`fit_and_score`'s row, and the fitted model with its predictions
    and scores on ``test`` (for the report)."""
    spec = MODELS[name]
    X = inputs[spec.inputs]
    model = spec.build(y[train], seed, settings)
    params = settings.get("model_params", {}).get(name)
    if params:
        try:
            model.set_params(**params)
        except ValueError as exc:  # e.g. a tuned step that this small a subset lacks
            raise CompareError(f"model_params[{name!r}] on {len(train)} training images: "
                               f"{exc}") from None
    # The small CNN's initialisation, shuffling and data loading draw from
    # torch's global generators: forked and seeded for the model, restored after.
    with torch_rng(seed):
        t = time.perf_counter()
        model.fit(_take(X, train), y[train])
        row = {"fit_s": time.perf_counter() - t}
        t = time.perf_counter()
        scores = _scores(model, _take(X, test))
        row["predict_s"] = time.perf_counter() - t
    pred = np.argmax(scores, 1) if np.ndim(scores) == 2 else (scores > 0).astype(int)
    row.update(metrics(y[test], pred, scores, n_classes))
    row["trainable_parameters"] = n_parameters(model)
    return row, Prediction(model, pred, scores)


@dataclass
class Prediction:
    """One model's fit on one fold: the fitted model, its predicted class codes
    and scores (probabilities, or a decision function) on the test fold."""

    model: object
    pred: np.ndarray
    scores: np.ndarray


def _log(msg, verbose):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def compare(data: str | os.PathLike | ImageInput, y: ArrayLike | None = None, *,
            models: list[str] | None = None,
            train_sizes: Sequence[int | float] = (0.1, 0.3, 1.0), cv: int = 3,
            folds: Sequence[int] | None = None,
            model_params: dict[str, dict] | None = None,
            image_size: int | str | None = "auto", max_minutes: float | None = None,
            quick: bool = False, out: str | os.PathLike | None = None,
            random_state: int | np.random.RandomState | None = None,
            memory: str | os.PathLike | None = None, path_column: str = "path",
            label_column: str = "label", report: str | os.PathLike | None = None,
            verbose: bool = True) -> pd.DataFrame:
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
      ``validation_fraction=None``, ``max_epochs=6`` at ``image_size`` (so
      that 3 folds of ELPV fit in 30 minutes on a 2-core CPU; its own
      defaults add flip augmentation and train for 20 epochs, see
      ``benchmarks/results/transfer.md``);
    - ``scratch_same``: the same network and settings as ``fine_tuned``
      from random weights (``weights=None``), every layer trained
      (``trainable_stages="all"``): what the pretrained weights are worth,
      not only a small tutorial CNN. Not run by default: with nothing
      frozen whose outputs could be computed once, every epoch runs the whole network
      forward and backward (``benchmarks/results/seed_claims.md`` gives its
      fit times on ELPV).

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
        Names from the list above; ``None`` runs all but ``scratch_same``.
    train_sizes : sequence of int or float, default=(0.1, 0.3, 1.0)
        Training-set sizes of the learning curve: fractions (float <= 1) of
        a training fold, or numbers of images.
    cv : int, default=3
        Number of stratified folds.
    folds : sequence of int, default=None
        Run only these folds (numbered from 0, ``fold`` in the results) of
        the ``cv``; ``None`` runs them all. A fold's split, training subsets
        and seeds are those of a run of every fold, so a long run can be
        split across calls or machines and its results concatenated. A
        subset of the folds needs ``random_state``.
    model_params : dict of {model name: dict}, default=None
        Parameters set on a model before each of its fits, as its
        ``set_params`` takes them, e.g. ``{"fine_tuned": {"max_epochs":
        12}}`` (TransferClassifier's parameters for the transfer models; the
        step-prefixed names of ``get_params()`` for the pipelines). Checked
        before anything is fitted; recorded in ``attrs["model_params"]``.
    image_size : int, "auto" or None, default="auto"
        Input side of the pretrained models, as in the estimators:
        ``"auto"``, the images' own (within 1x-1.5x the backbone's);
        ``None``, the backbone's.
    max_minutes : float, default=None
        Time budget. A fit whose expected time (from the same model's
        previous fits) would overrun it is skipped and reported as skipped.
    quick : bool, default=False
        A smoke test: a stratified subset of at most 120 images, 2 folds, 2
        fine-tuning epochs and 5 CNN epochs.
    out : str or path, default=None
        Folder for ``results.csv``, ``results.json`` and
        ``learning_curve.png``, written only when the whole run succeeded.
    random_state : int, RandomState instance or None, default=None
        Seeds the folds, the subsets and every model, as in the estimators
        (``None``: one seed drawn from numpy's global generator). The seed
        used is ``attrs["random_state"]`` of the result.
    memory : str or path, default=None
        Where the frozen model's embeddings are kept between calls (the
        extractor's ``memory``); ``None`` keeps them only for this call, in
        a temporary folder, so that each image is embedded once per run.
    path_column, label_column : str
        Columns of a CSV ``data``.
    report : str or path, default=None
        Write a report a person opens in a browser to this ``.html`` file
        (one self-contained file, images included): the learning curves,
        the scores, each model's confusion matrix at the largest training
        size, the fine-tuned model's most confident mistakes with Grad-CAM
        heatmaps, the images where it and the best classical model disagree,
        the skipped images, the settings and the machine. Written only when
        the whole run succeeded. ``sktransfer compare`` writes
        ``report.html`` into ``--out``.
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
    seed = draw_seed(random_state)
    models = list(DEFAULT_MODELS) if models is None else list(models)
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
    folds = _check_folds(folds, cv)
    model_params = _check_model_params(model_params, models, quick, image_size)
    if len(folds) < cv and random_state is None:
        raise CompareError(
            f"folds={folds} without random_state: each call would draw its own split, so "
            "the parts would not add up to one run; give random_state (the same in every "
            "part).")
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

    splits = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(idx, strata))
    # Sizes from every fold, run or not, so that a fold's subsets do not
    # depend on which folds this call runs.
    sizes = _train_sizes(train_sizes, min(len(tr) for tr, _ in splits))
    with tempfile.TemporaryDirectory(prefix="sktransfer-compare-") as run_memory:
        settings = {"quick": quick, "image_size": image_size,
                    "memory": run_memory if memory is None else memory,
                    "model_params": model_params}
        rows, kept = _run_models(models, inputs, y_all, {f: splits[f] for f in folds}, cv,
                                 sizes, settings, seed, n_classes, max_minutes, t_start,
                                 verbose, keep=report is not None)
    results = pd.DataFrame(rows)
    results.attrs.update({
        "dataset": dataset.name, "n_images": int(len(idx)), "classes": encoder.classes_.tolist(),
        "cv": cv, "folds": folds, "model_params": model_params, "train_sizes": sizes,
        "random_state": seed, "quick": quick,
        "image_size": image_size, "skipped_images": skipped,
        "wall_s": time.perf_counter() - t_start,
    })
    if out is not None:
        write_results(results, out)
    if report is not None:
        from ._html import Evidence, write_report

        evidence = Evidence(images=_take(dataset.X, idx), y=y_all, classes=encoder.classes_,
                            tests={f: splits[f][1] for f in folds}, predictions=kept)
        write_report(report, results, evidence, verbose=verbose)
    return results


def _check_folds(folds, cv) -> list[int]:
    """The folds to run, as a sorted list of fold numbers in ``range(cv)``."""
    if folds is None:
        return list(range(cv))
    if isinstance(folds, (str, bytes)) or not hasattr(folds, "__iter__"):
        raise CompareError(f"folds={folds!r}: give a list of fold numbers, e.g. [0, 2].")
    folds = list(folds)
    bad = [f for f in folds if isinstance(f, bool) or not isinstance(f, (int, np.integer))
           or not 0 <= f < cv]
    if not folds:
        raise CompareError("folds=[]: give at least one fold number, or None for all.")
    if bad or len(set(folds)) != len(folds):
        why = (f"{bad} not among" if bad else "give each at most once, from")
        raise CompareError(f"folds={folds}: {why} the fold numbers of cv={cv}: "
                           f"{list(range(cv))}.")
    return sorted(int(f) for f in folds)


def _check_model_params(model_params, models, quick, image_size) -> dict:
    """``model_params``, checked against the models that will run."""
    if model_params is None:
        return {}
    if not isinstance(model_params, dict):
        raise CompareError(f"model_params={model_params!r}: give a dict of {{model name: "
                           "{parameter: value}}, e.g. {'fine_tuned': {'max_epochs': 12}}.")
    out = {}
    for name, params in model_params.items():
        if name not in models:
            raise CompareError(f"model_params[{name!r}]: {name!r} is not among the models "
                               f"of this run: {models}.")
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise CompareError(f"model_params[{name!r}]={params!r}: give a dict of "
                               "{parameter name: value}.")
        # A stand-in build: the parameter names of a model do not depend on
        # its training labels once each class has the images to tune it.
        settings = {"quick": quick, "image_size": image_size, "memory": None}
        model = MODELS[name].build(np.repeat([0, 1], 3), 0, settings)
        try:
            model.set_params(**params)
        except ValueError as exc:
            raise CompareError(f"model_params[{name!r}]: {exc}") from None
        out[name] = dict(params)
    return out


def _run_models(models, inputs, y_all, folds, cv, sizes, settings, seed, n_classes,
                max_minutes, t_start, verbose, keep=False):
    """Every model on every train size and fold (``{number: split}``), within
    the time budget: the rows of results, and with ``keep`` each model's
    :class:`Prediction` per fold at the largest train size
    (``{(model, fold): Prediction}``)."""
    budget = None if max_minutes is None else 60.0 * max_minutes
    rows, last_fit, kept = [], {}, {}
    n_runs = len(sizes) * len(folds) * len(models)
    k = 0
    for n in sizes:
        for f, (train, test) in folds.items():
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
                scored, prediction = _fit_and_score(name, inputs, y_all, sub, test, seed + f,
                                                    settings, n_classes)
                row.update(scored)
                if keep and n == sizes[-1]:
                    if name != "fine_tuned":  # the report explains the fine-tuned one only
                        prediction.model = None
                    kept[name, f] = prediction
                last_fit[name] = (len(sub), row["fit_s"])
                rows.append(row)
                _log(f"[{k}/{n_runs}] {name} n={len(sub)} fold {f + 1}/{cv}: "
                     f"accuracy {row['accuracy']:.3f}, fit {row['fit_s']:.1f} s", verbose)
    return rows, kept


def _take(X, idx):
    """Rows ``idx`` of images in any accepted form."""
    if isinstance(X, np.ndarray):
        return X[idx]
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    return [X[i] for i in idx]

