"""``sktransfer quickstart``: pretrained features vs. classical baselines on ELPV."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    cross_validate,
    train_test_split,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._extractor import PretrainedFeatureExtractor
from .datasets import load_elpv


def _pixels(paths, size=64):
    out = np.empty((len(paths), size * size), dtype=np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = np.asarray(im.convert("L").resize((size, size), Image.BICUBIC)).ravel()
    return out / 255


def run_quickstart(cv=5, n_samples=None, cache=None, seed=0) -> int:
    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    strata = np.char.add(probability.astype(str), cell_type)
    if n_samples is not None and n_samples < len(paths):
        idx, _ = train_test_split(np.arange(len(paths)), train_size=n_samples,
                                  stratify=strata, random_state=seed)
        paths, y, strata = paths[idx], y[idx], strata[idx]
    cache = cache or os.path.join(os.path.expanduser("~"), ".cache", "sktransfer")
    folds = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(paths, strata))
    print(f"ELPV: {len(paths)} images, {y.mean():.1%} defective; {cv}-fold CV on "
          "the same folds for every model (stratified by probability x cell type).",
          file=sys.stderr)

    print("Loading 64x64 pixels for the classical baselines...", file=sys.stderr)
    pixels = _pixels(paths)
    models = {
        "logistic regression, 64x64 pixels": (
            make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000)),
            pixels),
        "random forest (300 trees), 64x64 pixels": (
            RandomForestClassifier(300, n_jobs=-1, random_state=seed), pixels),
        "EfficientNet-Lite0 features + logistic regression": (
            make_pipeline(
                PretrainedFeatureExtractor(memory=cache, verbose=1),
                StandardScaler(),
                # C chosen by an inner CV on each training fold, never on its test fold.
                GridSearchCV(LogisticRegression(max_iter=3000),
                             {"C": [0.001, 0.003, 0.01, 0.03, 0.1]}),
            ),
            paths),
    }
    rows = []
    for name, (model, X) in models.items():
        print(f"Cross-validating {name}...", file=sys.stderr)
        t = time.perf_counter()
        res = cross_validate(model, X, y, cv=folds, scoring=["accuracy", "roc_auc"])
        rows.append((name, res["test_accuracy"], res["test_roc_auc"], time.perf_counter() - t))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'model':<{width}}  accuracy         ROC AUC          time")
    for name, acc, auc, secs in rows:
        print(f"{name:<{width}}  {acc.mean():.3f} ± {acc.std():.3f}    "
              f"{auc.mean():.3f} ± {auc.std():.3f}    {secs:6.1f} s")
    return 0
