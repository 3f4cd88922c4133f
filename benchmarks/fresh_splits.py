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
