"""The candidates of ``transfer_candidates.json`` and the rules that chose among them.

Reads the data file and the results in ``results/transfer_selection/``; runs
nothing. ``select_transfer_defaults.py`` fits the candidates,
``bench_transfer.py`` scores the chosen configurations on the test part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = json.loads((HERE / "transfer_candidates.json").read_text())
SELECTION = HERE / "results" / "transfer_selection"
BUDGET_S = 20 * 60  # every rule's fit budget on the 1,968 training images
N_TRAIN, N_FIT = 1968, 1312  # the training part, and what an inner fold fits on


def candidates(rounds=None) -> dict:
    """name -> candidate (``round``, ``params``...), in the file's order."""
    return {c["name"]: c for c in DATA["candidates"]
            if rounds is None or c["round"] in rounds}


def round_of(number) -> dict:
    return next(r for r in DATA["rounds"] if r["round"] == number)


def decision(name) -> dict:
    return next(d for d in DATA["decisions"] if d["name"] == name)


def result(name):
    """A candidate's saved result, or None before it has run."""
    path = SELECTION / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fold_time(how):
    """How a candidate's fold times are summarised for the budget projection."""
    return {"mean": np.mean, "min": np.min}[how]


def projected_s(res, how="mean") -> float:
    """Projected fit time on the whole training part from the inner folds."""
    return fold_time(how)([f["fit_s"] for f in res["folds"]]) * N_TRAIN / N_FIT


def _pairs(names, how):
    """(mean inner accuracy, mean inner ROC AUC, candidate, tta, within budget)
    of every 3-fold candidate of ``names`` that has run."""
    out = []
    for name in names:
        res = result(name)
        if res is None:
            continue
        if res.get("over_budget"):
            out.append((np.nan, np.nan, name, False, False))
            continue
        folds = res["folds"]
        if len(folds) != 3:
            continue
        within = projected_s(res, how) <= BUDGET_S
        for tta in (False, True):
            out.append((np.mean([f[f"tta_{tta}"]["accuracy"] for f in folds]),
                        np.mean([f[f"tta_{tta}"]["roc_auc"] for f in folds]),
                        name, tta, within))
    return out


def decide(name):
    """A decision's (candidate, tta) pair, or None while it cannot be taken.

    ``best_split`` (round 0, one inner split, no TTA scored): the best inner
    accuracy. ``winner_then_tta``: the best mean inner accuracy without TTA among the
    candidates within the budget, then flip TTA if it raises that candidate's
    mean. ``best_pair``: every (candidate, TTA off/on) pair ranked by mean
    inner accuracy among those within the budget; ties to the fewer changes
    from the defaults (candidates in the file's order, TTA off first) or to
    the higher mean inner ROC AUC. ``all_within``: no decision unless every
    candidate is within the budget.
    """
    d = decision(name)
    names = list(candidates(d["rounds"]))
    if d["rule"] == "best_split":
        ran = {n: r for n in names if (r := result(n)) is not None}
        if len(ran) != len(names):
            return None
        return max(ran, key=lambda n: ran[n]["accuracy"]), False
    pairs = _pairs(names, d["projection"])
    if {p[2] for p in pairs} != set(names):
        return None  # not every candidate has run its folds
    within = [p for p in pairs if p[4]]
    if d.get("all_within") and len(within) != len(pairs):
        return None
    if not within:
        return None
    if d["rule"] == "winner_then_tta":
        acc = {(p[2], p[3]): p[0] for p in within}
        best = max((p for p in within if not p[3]), key=lambda p: p[0])[2]
        return best, bool(acc[(best, True)] > acc[(best, False)])
    if d["tie"] == "fewer_changes":
        order = {n: k for k, n in enumerate(names)}
        best = max(within, key=lambda p: (p[0], -order[p[2]], not p[3]))
    else:
        best = max(within, key=lambda p: (p[0], p[1]))
    return best[2], best[3]


def chosen(name):
    """``decide(name)``'s candidate: (name, tta, params, auxiliary target kind)."""
    pair = decide(name)
    if pair is None:
        return None
    params = dict(candidates()[pair[0]]["params"])
    return pair[0], pair[1], params, params.pop("aux", None)
