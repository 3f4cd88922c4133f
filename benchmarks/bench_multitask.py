"""Does multi-task learning help the defect label on ELPV, and what does it cost?

Deitsch et al.'s split (``_elpv.paper_split``: 75/25, stratified by
probability x cell type). Target of interest: defect (probability > 0.5).
Auxiliary columns of a 2-D ``y`` for ``TransferClassifier()`` (defaults
otherwise):

- ``defect``: the defect label alone (1-D ``y``);
- ``defect+type``: and the cell type (mono / poly);
- ``defect+level``: and the four-level defect probability (0, 1/3, 2/3, 1)
  as a class column;
- ``all``: the three columns.

Training sizes 100, 300 and all 1,968 training images; seeds 0-4. For a size
below all, seed s draws one subsample of the training part (stratified by
probability x cell type, ``random_state=s``) that every configuration of that
seed trains on (paired), with ``random_state=s``. Scored on the whole test
part: the defect column's accuracy and ROC AUC.

The claim rule, fixed here before any result exists: for each auxiliary
configuration and size, the mean over the five seeds of (configuration -
``defect``) in accuracy and in ROC AUC, with a paired 95 % t interval
(4 degrees of freedom). It "helps" only where the interval's lower end is
above zero; otherwise the results say it does not. Cost: the mean over seeds
of each configuration's fit time over ``defect``'s (bar <= 1.15x).

Run: ``python benchmarks/bench_multitask.py [--sizes 100 300 all] [--seeds 0 1 2 3 4]
[--configs ...]``. Each fit writes ``results/multitask/<config>_<size>_<seed>.json``
(a finished one is not run again) and ``results/multitask.md`` is rendered
from all of them. Run alone on an idle machine: the fit times are compared.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
from _elpv import paper_split  # noqa: E402
from _machine import describe_machine, machine_kind, machine_markdown  # noqa: E402

from sktransfer import TransferClassifier  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "multitask"
GUIDE = Path(__file__).parents[1] / "docs" / "user_guide.md"
CONFIGS = {"defect": (), "defect+type": ("type",), "defect+level": ("level",),
           "all": ("type", "level")}
AUX_NAMES = {"defect+type": "cell type", "defect+level": "defect level",
             "all": "cell type + defect level"}  # how the guide and the README name them
SIZES = ("100", "300", "all")
SEEDS = (0, 1, 2, 3, 4)  # a verdict needs every one of them, paired


def _columns(paths):
    """The defect label and the auxiliary columns of each image of ``paths``."""
    all_paths, probability, cell_type = load_elpv()
    pos = {p: i for i, p in enumerate(all_paths)}
    idx = np.array([pos[p] for p in paths])
    return {"defect": (probability[idx] > 0.5).astype(int),
            "type": cell_type[idx].astype(object),
            "level": np.round(probability[idx] * 3).astype(int),
            "strata": np.char.add(probability[idx].astype(str), cell_type[idx])}


def _subsample(n_train, size, seed, strata):
    if size == "all":
        return np.arange(n_train)
    keep, _ = train_test_split(np.arange(n_train), train_size=int(size), stratify=strata,
                               random_state=seed)
    return np.sort(keep)


def run(config, size, seed):
    path = OUT / f"{config}_{size}_{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    X_train, _, X_test, _ = paper_split()
    train, test = _columns(X_train), _columns(X_test)
    keep = _subsample(len(X_train), size, seed, train["strata"])
    names = ("defect", *CONFIGS[config])
    y = (train["defect"][keep] if len(names) == 1 else
         np.column_stack([train[c][keep].astype(object) for c in names]))
    clf = TransferClassifier(random_state=seed)
    t = time.perf_counter()
    clf.fit(X_train[keep], y)
    fit_s = time.perf_counter() - t
    proba = clf.predict_proba(X_test)
    if len(names) > 1:
        proba = proba[0]  # the defect column's head
    classes = clf.classes_[0] if len(names) > 1 else clf.classes_
    p_defect = proba[:, list(classes).index(1)]
    pred = np.asarray(classes)[proba.argmax(axis=1)].astype(int)
    result = {"config": config, "size": size, "seed": seed, "n_train": int(len(keep)),
              "columns": list(names), "fit_s": fit_s,
              "accuracy": accuracy_score(test["defect"], pred),
              "roc_auc": roc_auc_score(test["defect"], p_defect),
              "machine": describe_machine()}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"{config} n={size} seed {seed}: accuracy {result['accuracy']:.4f}, "
          f"ROC AUC {result['roc_auc']:.4f}, fit {fit_s:.0f} s", file=sys.stderr, flush=True)
    return result


def paired_interval(diffs):
    """Mean and paired 95 % t interval of per-seed differences."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def _results():
    return {(r["config"], r["size"], r["seed"]): r
            for r in (json.loads(p.read_text()) for p in sorted(OUT.glob("*.json")))}


def summary(by=None):
    """One dict per (size, configuration) that has results: means, paired
    differences to ``defect`` alone with their 95 % intervals, cost, verdict."""
    by = _results() if by is None else by
    out = []
    for size in SIZES:
        for config in CONFIGS:
            seeds = sorted(s for (c, z, s) in by if c == config and z == size)
            if not seeds:
                continue
            row = {"config": config, "size": size, "seeds": seeds,
                   "accuracy": np.mean([by[config, size, s]["accuracy"] for s in seeds]),
                   "roc_auc": np.mean([by[config, size, s]["roc_auc"] for s in seeds])}
            out.append(row)
            if config == "defect":
                continue
            paired = [s for s in seeds if ("defect", size, s) in by]
            # fit times compare only between fits on the same kind of machine
            timed = [s for s in paired if machine_kind(by[config, size, s]["machine"])
                     == machine_kind(by["defect", size, s]["machine"])]
            row["paired"] = paired
            row["cost"] = (np.mean([by[config, size, s]["fit_s"] / by["defect", size, s]["fit_s"]
                                    for s in timed]) if timed else float("nan"))
            if len(paired) >= 2:  # a t interval needs two differences
                for metric in ("accuracy", "roc_auc"):
                    row[f"delta_{metric}"] = paired_interval(
                        [by[config, size, s][metric] - by["defect", size, s][metric]
                         for s in paired])
            if len(paired) < len(SEEDS):
                # interim: with few seeds the t interval is too wide, or, when
                # the per-seed differences coincide (accuracy moves in steps of
                # one test image), degenerates to a point: no verdict yet
                row["verdict"] = f"pending ({len(paired)} of {len(SEEDS)} seeds)"
                continue
            helps = [row[f"delta_{m}"][1] > 0 for m in ("accuracy", "roc_auc")]
            hurts = [row[f"delta_{m}"][2] < 0 for m in ("accuracy", "roc_auc")]
            row["verdict"] = ("helps (accuracy and AUC)" if all(helps) else
                              "helps accuracy" if helps[0] else "helps AUC" if helps[1] else
                              "does not help")
            if any(hurts):  # an interval wholly below zero: say so
                row["verdict"] += ("; lowers " + " and ".join(
                    m for m, h in zip(("accuracy", "AUC"), hurts) if h))
    return out


def _delta(row, metric):
    if f"delta_{metric}" not in row:
        return ""
    if metric == "accuracy":
        m, lo, hi = (100 * v for v in row["delta_accuracy"])
        return f"{m:+.2f} pt [{lo:+.2f}, {hi:+.2f}]"
    m, lo, hi = row[f"delta_{metric}"]
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def guide_block(rows):
    """The user guide's table of measured answers (between its multitask markers)."""
    lines = ["| auxiliary columns | training images | seeds | Δ defect accuracy [95 % CI] "
             "| Δ defect ROC AUC [95 % CI] | fit time vs defect alone | answer |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["config"] != "defect":
            size = "1,968 (all)" if r["size"] == "all" else r["size"]
            lines.append(f"| {AUX_NAMES[r['config']]} | {size} | {len(r.get('paired', []))} "
                         f"| {_delta(r, 'accuracy')} | {_delta(r, 'roc_auc')} "
                         f"| {r['cost']:.2f}x | {r['verdict']} |")
    # a size counts as run once an auxiliary configuration has paired seeds
    # there (the defect-alone fits by themselves answer nothing)
    ran = [z for z in SIZES if any(r["size"] == z and r["config"] != "defect"
                                   and r.get("paired") for r in rows)]
    missing = [z for z in SIZES if z not in ran]
    note = (f"\nNot run yet: {', '.join(missing)} training images.\n" if missing else "")
    table = "\n".join(lines) + "\n" + note if len(lines) > 2 else "No results yet.\n"
    return "<!-- multitask:start -->\n" + table + "<!-- multitask:end -->"


def guide_with_block(text, block):
    return re.sub(r"<!-- multitask:start -->.*?<!-- multitask:end -->", lambda m: block,
                  text, flags=re.S)


def _row_machines(by, r) -> str:
    """The kind(s) of machine the seeds of summary row ``r`` ran on."""
    kinds = {}
    for s in r["seeds"]:
        kinds.setdefault(machine_kind(by[r["config"], r["size"], s]["machine"]), []).append(s)
    if len(kinds) == 1:
        return next(iter(kinds))
    return "; ".join(f"{k} (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, v))})"
                     for k, v in kinds.items())


def page(by=None) -> str:
    """``results/multitask.md``: every configuration and size, the machine of each row."""
    by = _results() if by is None else by
    rows = summary(by)
    lines = ["# Multi-task transfer on ELPV", "",
             "Generated by `benchmarks/bench_multitask.py` from `multitask/*.json`. "
             "Defect accuracy and ROC AUC on the 656 test images of Deitsch et al.'s split; "
             "differences to the defect label alone, paired by seed (same subsample, same "
             "random_state), mean and 95 % t interval over the seeds. \"helps\" only where "
             "the interval is above zero.", "",
             "| configuration | training images | seeds | accuracy | Δ accuracy [95 % CI] "
             "| ROC AUC | Δ ROC AUC [95 % CI] | fit time vs defect alone | verdict | machine |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["config"] == "defect":
            lines.append(f"| defect | {r['size']} | {len(r['seeds'])} | {r['accuracy']:.2%} "
                         f"| | {r['roc_auc']:.4f} | | 1.00x | | {_row_machines(by, r)} |")
        else:
            lines.append(f"| {r['config']} | {r['size']} | {len(r['seeds'])} "
                         f"| {r['accuracy']:.2%} | {_delta(r, 'accuracy')} | {r['roc_auc']:.4f} "
                         f"| {_delta(r, 'roc_auc')} | {r['cost']:.2f}x | {r['verdict']} "
                         f"| {_row_machines(by, r)} |")
    lines += ["", "Cost bar: a k-task fit <= 1.15x the single-task fit's time (the mean "
              "over seeds of each seed's ratio, both fits on the same kind of machine).", ""]
    kinds = {}
    for r in by.values():
        kinds.setdefault(machine_kind(r["machine"]), []).append(r)
    lines += ["## Machines" if len(kinds) > 1 else "## Machine", ""]
    for kind, on in kinds.items():
        if len(kinds) > 1:
            runs = sorted({(r["size"], r["seed"]) for r in on},
                          key=lambda z: (SIZES.index(z[0]), z[1]))
            lines += [f"### {kind}", "", "Ran here (size, seed): "
                      + ", ".join(f"{z} / {s}" for z, s in runs), ""]
        lines += [machine_markdown(on[0]["machine"]), ""]
    return "\n".join(lines)


def render(write=True):
    """Render ``results/multitask.md`` and the user guide's table; returns the
    guide's block (``write=False``: nothing written, for the docs test)."""
    by = _results()
    rows = summary(by)
    block = guide_block(rows)
    if write and GUIDE.exists():
        GUIDE.write_text(guide_with_block(GUIDE.read_text(), block))
    if write and rows:
        (RESULTS / "multitask.md").write_text(page(by))
    return block


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=SIZES)
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    for size in args.sizes:
        for seed in args.seeds:
            for config in args.configs:
                run(config, size, seed)
    print(render())
