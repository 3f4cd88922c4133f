"""Fresh test splits: the frozen configurations scored on splits no choice has seen.

Deitsch et al.'s protocol (75/25, stratified by defect probability x cell
type) with split seeds never used to choose anything; each frozen
configuration is fitted once per split, with the split seed as its
``random_state``. One JSON per (configuration, split seed) in
``results/fresh_splits/``, with at least the keys of :data:`REQUIRED`
(``configuration``: a test run name of ``transfer_candidates.json`` such as
``defaults`` or ``lite2_tta``, or a configuration written out; ``machine``:
``_machine.describe_machine()``).

This module reads and summarises them: the README's headline shows them next
to the published result once they exist, and shows nothing for them before.
"""

from __future__ import annotations

import json
from pathlib import Path

from _machine import machine_kind

FOLDER = Path(__file__).parent / "results" / "fresh_splits"
REQUIRED = ("configuration", "split_seed", "accuracy", "roc_auc", "fit_s", "machine")


def load(folder=None) -> list:
    """Every result in ``folder`` (default :data:`FOLDER`); a file missing a key
    stops with its name."""
    out = []
    for path in sorted(Path(folder or FOLDER).glob("*.json")):
        r = json.loads(path.read_text())
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)}; each fresh-split result "
                             f"needs {', '.join(REQUIRED)}.")
        out.append(r)
    return out


def summary(folder=None) -> list:
    """One dict per configuration, in the order of their names: its split seeds,
    and per split its accuracy, ROC AUC, fit time and kind of machine
    (``split_machines``); ``machines``: the kinds, each once."""
    by = {}
    for r in sorted(load(folder), key=lambda r: (r["configuration"], r["split_seed"])):
        s = by.setdefault(r["configuration"], {
            "configuration": r["configuration"], "split_seeds": [], "accuracy": [],
            "roc_auc": [], "fit_s": [], "split_machines": [], "machines": []})
        s["split_seeds"].append(r["split_seed"])
        for key in ("accuracy", "roc_auc", "fit_s"):
            s[key].append(r[key])
        kind = machine_kind(r["machine"])
        s["split_machines"].append(kind)
        if kind not in s["machines"]:
            s["machines"].append(kind)
    return list(by.values())


def render(folder=None) -> str:
    """The fresh-splits page: per configuration, mean ± sd and each split."""
    import numpy as np
    from _machine import machine_markdown

    results = load(folder)
    lines = [
        "# Fresh test splits", "",
        "Written by `benchmarks/fresh_splits.py` from `fresh_splits/*.json`.", "",
        "Deitsch et al.'s protocol on ELPV (75/25, stratified by defect probability x "
        "cell type; defective: probability > 0.5) with split seeds 1-5, which no choice of "
        "settings has seen: the configurations were frozen before these splits were drawn. "
        "Each configuration is fitted once per split, with the split seed as its "
        "`random_state`, and scored on that split's test images.", ""]
    if not results:
        return "\n".join(lines + ["No results yet.", ""])
    lines += ["| configuration | split seeds | accuracy, mean ± sd | ROC AUC, mean ± sd "
              "| fit (s), mean | machine |", "|---|---|---|---|---|---|"]
    def sd(v):
        return np.std(v, ddof=1) if len(v) > 1 else 0.0

    for s in summary(folder):
        lines.append(
            f"| `{s['configuration']}` | {', '.join(map(str, s['split_seeds']))} "
            f"| {np.mean(s['accuracy']):.2%} ± {sd(s['accuracy']):.2%} "
            f"| {np.mean(s['roc_auc']):.4f} ± {sd(s['roc_auc']):.4f} "
            f"| {np.mean(s['fit_s']):.0f} | {'; '.join(s['machines'])} |")
    lines += ["", "Each split:", "",
              "| configuration | model | split seed | accuracy | ROC AUC | fit (s) | epochs "
              "| device | machine |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["configuration"], r["split_seed"])):
        lines.append(
            f"| `{r['configuration']}` | `{r.get('model', '')}` | {r['split_seed']} "
            f"| {r['accuracy']:.2%} | {r['roc_auc']:.4f} | {r['fit_s']:.0f} "
            f"| {r.get('epochs_run', '')} | {r.get('device', '')}, {r.get('precision', '')} "
            f"| {machine_kind(r['machine'])} |")
    kinds = {}
    for r in results:
        kinds.setdefault(machine_kind(r["machine"]), r["machine"])
    for kind, machine in kinds.items():
        lines += ["", f"## Machine: {kind}", "", machine_markdown(machine)]
    return "\n".join(lines) + "\n"


def split(split_seed: int):
    """``X_train, y_train, X_test, y_test`` of fresh split ``split_seed``: the
    paper's protocol with another seed."""
    from _elpv import paper_split

    if split_seed == 0:
        raise SystemExit("split seed 0 is the paper split, scored many times: not fresh.")
    return paper_split(random_state=split_seed)


def run(configuration: str, split_seed: int, folder=None) -> dict:
    """Fit ``configuration`` (a test run of ``transfer_candidates.json``) on
    fresh split ``split_seed`` with ``random_state=split_seed``, score it on
    that split's test part, and write its JSON."""
    import time

    import bench_transfer
    from _machine import describe_machine
    from sklearn.metrics import accuracy_score, roc_auc_score

    runs = bench_transfer.test_runs()
    if configuration not in runs:
        raise SystemExit(f"unknown configuration {configuration!r}; one of {sorted(runs)}")
    make = bench_transfer._factory(runs[configuration], split_seed)
    if make is None:
        raise SystemExit(f"{configuration}: a result kept from before the core rewrite, "
                         "not re-runnable.")
    model, aux = make()
    if aux is not None:
        raise SystemExit(f"{configuration}: fits an auxiliary target; not a fresh-split "
                         "configuration.")
    X_train, y_train, X_test, y_test = split(split_seed)
    t = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - t
    proba = model.predict_proba(X_test)[:, 1]
    result = {
        "configuration": configuration,
        "model": bench_transfer.configuration(configuration),
        "split_seed": split_seed,
        "random_state": split_seed,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "accuracy": accuracy_score(y_test, (proba >= 0.5).astype(int)),
        "roc_auc": roc_auc_score(y_test, proba),
        "fit_s": fit_s,
        "epochs_run": getattr(model, "n_epochs_", None),
        "engine": getattr(model, "engine_", None),
        "device": str(getattr(model, "device_", "")),
        "precision": getattr(model, "precision_", None),
        "machine": describe_machine(),
    }
    out = Path(folder or FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{configuration}_split_{split_seed}.json").write_text(
        json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(
        description="Fit frozen configurations on fresh ELPV splits (one JSON each).")
    parser.add_argument("configurations", nargs="+", help="e.g. defaults lite2_tta")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=FOLDER)
    args = parser.parse_args()
    for seed in args.seeds:
        for name in args.configurations:
            r = run(name, seed, args.out)
            print(f"{name} split {seed}: accuracy {r['accuracy']:.4f}  ROC AUC "
                  f"{r['roc_auc']:.4f}  fit {r['fit_s']:.0f} s", file=sys.stderr, flush=True)
