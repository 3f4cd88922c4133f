"""The ELPV splits the benchmarks share.

Deitsch et al.'s (2019) protocol: one 75/25 split stratified by defect
probability x cell type (``random_state=0``), binary target defect
probability > 0.5. Settings are chosen inside its training part only
(``inner_split``, ``inner_folds``: ``random_state=1``).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from sktransfer.datasets import load_elpv


def paper_split(random_state=0):
    """``X_train, y_train, X_test, y_test`` (paths and 0/1 defect labels)."""
    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    strata = np.char.add(probability.astype(str), cell_type)
    train, test = train_test_split(np.arange(len(paths)), test_size=0.25, stratify=strata,
                                   random_state=random_state)
    return paths[train], y[train], paths[test], y[test]


def training_part():
    """The paper split's training part and each image's stratum."""
    X_train, y_train, _, _ = paper_split()
    paths, probability, cell_type = load_elpv()
    strata_of = dict(zip(paths, np.char.add(probability.astype(str), cell_type)))
    return X_train, y_train, np.array([strata_of[p] for p in X_train])


def inner_split():
    """One 75/25 split of the training part, stratified (``random_state=1``)."""
    X_train, y_train, strata = training_part()
    a, b = train_test_split(np.arange(len(X_train)), test_size=0.25, stratify=strata,
                            random_state=1)
    return X_train[a], y_train[a], X_train[b], y_train[b]


def inner_folds(n_splits=3):
    """Stratified folds of the training part (``random_state=1``): fit on the
    others, score on one."""
    X_train, y_train, strata = training_part()
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=1)
    for a, b in cv.split(X_train, strata):
        yield X_train[a], y_train[a], X_train[b], y_train[b]


def aux_target(kind, X):
    """An auxiliary column for the images ``X``: ``"type"`` (mono / poly) or
    ``"level"`` (the defect probability, four levels)."""
    paths, probability, cell_type = load_elpv()
    of = dict(zip(paths, cell_type if kind == "type" else probability.astype(str)))
    return np.array([of[p] for p in X])
