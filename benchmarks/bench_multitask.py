"""Issue #14: does multi-task learning help the defect label on ELPV, and what does it cost?

Deitsch et al.'s split (``bench_transfer.paper_split``: 75/25, stratified by
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
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_kind, machine_markdown  # noqa: E402
from bench_transfer import paper_split  # noqa: E402

from sktransfer import TransferClassifier  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "multitask"
CONFIGS = {"defect": (), "defect+type": ("type",), "defect+level": ("level",),
           "all": ("type", "level")}
SIZES = ("100", "300", "all")


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


def render():
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    if not rows:
        return
    by = {(r["config"], r["size"], r["seed"]): r for r in rows}
    lines = ["# Multi-task transfer on ELPV (issue #14)", "",
             "Generated by `benchmarks/bench_multitask.py` from `multitask/*.json`. "
             "Defect accuracy and ROC AUC on the 656 test images of Deitsch et al.'s split; "
             "differences to the defect label alone, paired by seed (same subsample, same "
             "random_state), mean and 95 % t interval over the seeds. \"helps\" only where "
             "the interval is above zero.", "",
             "| configuration | training images | seeds | accuracy | Δ accuracy [95 % CI] "
             "| ROC AUC | Δ ROC AUC [95 % CI] | fit time vs defect alone | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in SIZES:
        for config in CONFIGS:
            seeds = sorted(s for (c, z, s) in by if c == config and z == size)
            if not seeds:
                continue
            acc = np.mean([by[config, size, s]["accuracy"] for s in seeds])
            auc = np.mean([by[config, size, s]["roc_auc"] for s in seeds])
            if config == "defect":
                lines.append(f"| {config} | {size} | {len(seeds)} | {acc:.2%} | | {auc:.4f} "
                             "| | 1.00x | |")
                continue
            paired = [s for s in seeds if ("defect", size, s) in by]
            cells, verdict = [], "fewer than 2 paired seeds"
            # fit times compare only between fits on the same kind of machine
            timed = [s for s in paired if machine_kind(by[config, size, s]["machine"])
                     == machine_kind(by["defect", size, s]["machine"])]
            ratio = np.mean([by[config, size, s]["fit_s"] / by["defect", size, s]["fit_s"]
                             for s in timed]) if timed else float("nan")
            if len(paired) >= 2:
                helps = []
                for metric, scale in (("accuracy", 100), ("roc_auc", 1)):
                    m, lo, hi = paired_interval(
                        [by[config, size, s][metric] - by["defect", size, s][metric]
                         for s in paired])
                    unit = " pt" if scale == 100 else ""
                    cells.append(f"{m * scale:+.2f}{unit} [{lo * scale:+.2f}, {hi * scale:+.2f}]")
                    helps.append(lo > 0)
                verdict = ("helps (accuracy and AUC)" if all(helps) else
                           "helps accuracy" if helps[0] else "helps AUC" if helps[1] else
                           "does not help")
            else:
                cells = ["", ""]
            lines.append(f"| {config} | {size} | {len(seeds)} | {acc:.2%} | {cells[0]} "
                         f"| {auc:.4f} | {cells[1]} | {ratio:.2f}x | {verdict} |")
    lines += ["", "Cost bar: a k-task fit <= 1.15x the single-task fit's time (the mean "
              "over seeds of each seed's ratio, both fits on the same kind of machine).", ""]
    kinds = {}
    for r in rows:
        kinds.setdefault(machine_kind(r["machine"]), []).append(r)
    lines += ["## Machines" if len(kinds) > 1 else "## Machine", ""]
    for kind, on in kinds.items():
        if len(kinds) > 1:
            runs = sorted({(r["size"], r["seed"]) for r in on},
                          key=lambda z: (SIZES.index(z[0]), z[1]))
            lines += [f"### {kind}", "", "Ran here (size, seed): "
                      + ", ".join(f"{z} / {s}" for z, s in runs), ""]
        lines += [machine_markdown(on[0]["machine"]), ""]
    (RESULTS / "multitask.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=SIZES)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    for size in args.sizes:
        for seed in args.seeds:
            for config in args.configs:
                run(config, size, seed)
    render()
