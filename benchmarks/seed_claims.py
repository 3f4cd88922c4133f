"""The seed's claims for transfer learning, measured on real data.

One section per claim, every model on the same splits (the models are those
of ``sktransfer compare``, built by the same code):

- ``curves``: less data. ELPV learning curves, 3-fold CV stratified by
  probability x cell type, each training fold subsampled (stratified) to n in
  {25, 50, 100, 200, 500, 1000, all}: mean and std over the 3 folds of every
  model (each fold its own training and test images and seed: the spread is
  not one over seeds on fixed data).
- ``scratch``: what the pretrained weights themselves are worth: the same
  network as compare's ``fine_tuned`` from random weights, every layer
  trained (compare's ``scratch_same``), on the folds, subsets and seeds of
  ``curves`` with the training budget of its fine-tuned row (12 epochs at
  224 px, ``SCRATCH_BUDGET``); its rows join the learning curves.
- ``cross_type``: generalization. Train on monocrystalline cells, test on
  polycrystalline ones, and the reverse.
- ``paper``: the Deitsch et al. (2019) protocol, next to the paper's numbers
  (TransferClassifier's configurations come from ``bench_transfer.py``).
- ``digits``: where ImageNet features fit badly: scikit-learn's 8x8 digits
  with few labels, frozen features vs an SVC on pixels, and what helps.

The sections ``curves``, ``cross_type``, ``paper`` and ``digits`` last ran
before the fine-tuning core was rewritten (224 px, compare's fine-tuned model
then trained 12 epochs; it now trains 6 at the images' own size,
``FINE_TUNE_PARAMS``): ``results/provenance.json`` names the commit of each,
and the pages say it next to them.

Run: ``python benchmarks/seed_claims.py [SECTION ...]`` (bench extra; each
section saves ``results/seed_claims/<section>.json``), then without
arguments it renders ``results/seed_claims.md``, the plot and the README's
headline from the saved results (and ``transfer/``, ``multitask/``,
``readme_main_job/`` and ``fresh_splits/``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _elpv import paper_split  # noqa: E402
from _machine import (  # noqa: E402
    describe_machine,
    machine_kind,
    machines_section,
    provenance_note,
)

from sktransfer import compare  # noqa: E402
from sktransfer._testing import (  # noqa: E402
    CLASSICAL_MODELS,
    DEFAULT_MODELS,
    MODELS,
    PIXEL_SIZE,
    TRANSFER_MODELS,
    check_images,
    decode_all,
    fit_and_score,
    load_elpv_dataset,
    plot_learning_curve,
    prepare_inputs,
)

HERE = Path(__file__).parent
RESULTS = HERE / "results"
OUT = RESULTS / "seed_claims"
README = HERE.parent / "README.md"
RESULTS_PAGE = HERE.parent / "docs" / "results.md"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "sktransfer")
SIZES = [25, 50, 100, 200, 500, 1000, 1.0]
SETTINGS = {"quick": False, "image_size": None, "memory": CACHE}
# The training budget of the curves' fine-tuned row (compare's fine_tuned
# before the core rewrite: TransferClassifier's 12 epochs then, at the
# backbone's 224 px, image_size=None), which the from-random-weights row
# trains with too: only the starting weights differ.
SCRATCH_BUDGET = {"max_epochs": 12, "image_size": None}
CV = 3  # the curves' folds


def _save(section, payload):
    OUT.mkdir(parents=True, exist_ok=True)
    payload["machine"] = describe_machine()
    (OUT / f"{section}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")


def _load(section):
    path = OUT / f"{section}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _elpv_inputs(models):
    data = load_elpv_dataset()
    pixels, good, problems = decode_all(check_images(data.X), PIXEL_SIZE)
    assert not problems and len(good) == len(data.X)
    y = (data.y == "defective").astype(int)
    return data, prepare_inputs(pixels, data.X, models), y


# -- sections -----------------------------------------------------------------


def run_curves():
    t = time.perf_counter()
    res = compare("elpv", train_sizes=SIZES, cv=CV, random_state=0, memory=CACHE,
                  image_size=None)
    _save("curves", {"rows": json.loads(res.to_json(orient="records")),
                     "wall_s": time.perf_counter() - t})


def run_scratch():
    """The same network from random weights, every layer trained:
    compare's folds, subsets and seeds of ``curves`` and the training budget
    of its fine-tuned row (``SCRATCH_BUDGET``), so its rows join them.

    Hours on 2 cores, so each fold of each training size is saved as it
    finishes, with the machine it ran on; run again, it runs only the folds
    missing. A fold's split and subset do not depend on the other sizes or
    folds asked for (compare draws each from the fold, the size and the
    seed). Parts saved with another budget are dropped, not mixed in.
    """
    saved = _load("scratch")
    if not saved or saved.get("budget") != SCRATCH_BUDGET:
        saved = {"rows": [], "parts": [], "budget": SCRATCH_BUDGET}
    done = _scratch_done(saved)
    for size in SIZES:
        for fold in range(CV):
            if (size, fold) in done:
                continue
            t = time.perf_counter()
            # compare's scratch_same trains with FINE_TUNE_PARAMS, today's
            # 6 epochs; the curves' fine-tuned row had 12.
            res = compare("elpv", models=["scratch_same"], train_sizes=[size], cv=CV,
                          folds=[fold], random_state=0, memory=CACHE,
                          image_size=SCRATCH_BUDGET["image_size"],
                          model_params={"scratch_same": {
                              "max_epochs": SCRATCH_BUDGET["max_epochs"]}})
            wall_s = time.perf_counter() - t
            saved["rows"] += json.loads(res.to_json(orient="records"))
            saved["parts"].append({"size": size, "fold": fold, "wall_s": wall_s,
                                   "machine": describe_machine()})
            _save("scratch", saved)
            print(f"scratch_same n={size} fold {fold}: done in {wall_s:.0f} s",
                  file=sys.stderr, flush=True)


def _scratch_done(scratch) -> set:
    """The (size, fold) pairs run; a part without a fold ran every fold."""
    return {(part["size"], fold) for part in scratch["parts"]
            for fold in ([part["fold"]] if "fold" in part else range(CV))}


def _scratch_complete(scratch) -> dict:
    """``scratch`` with only the rows of training sizes whose every fold has
    run: a mean over some of the folds would not compare with the others."""
    folds = {}
    for r in scratch["rows"]:
        folds.setdefault(r["train_size"], set()).add(r["fold"])
    whole = {n for n, f in folds.items() if f == set(range(CV))}
    return {**scratch, "rows": [r for r in scratch["rows"] if r["train_size"] in whole]}


def run_cross_type():
    models = list(DEFAULT_MODELS)
    data, inputs, y = _elpv_inputs(models)
    cell_type = np.array([s[-4:] for s in data.strata])
    rows = []
    for train_type, test_type in [("mono", "poly"), ("poly", "mono")]:
        train = np.flatnonzero(cell_type == train_type)
        test = np.flatnonzero(cell_type == test_type)
        for name in models:
            row = {"model": name, "train": train_type, "test": test_type,
                   "n_train": len(train), "n_test": len(test)}
            row.update(fit_and_score(name, inputs, y, train, test, 0, SETTINGS, 2))
            print(f"{train_type}->{test_type} {name}: {row['accuracy']:.3f}",
                  file=sys.stderr, flush=True)
            rows.append(row)
    _save("cross_type", {"rows": rows})


def run_paper(models=None):
    """Every compare model on the paper split (``fine_tuned`` is compare's
    setting; TransferClassifier's defaults come from ``bench_transfer.py``)."""
    models = list(DEFAULT_MODELS) if models is None else models
    data, inputs, y = _elpv_inputs(models)
    X_train, _, X_test, _ = paper_split()
    pos = {p: i for i, p in enumerate(data.X)}
    train = np.array([pos[p] for p in X_train])
    test = np.array([pos[p] for p in X_test])
    old = _load("paper") or {"rows": []}
    rows = [r for r in old["rows"] if r["model"] not in models]
    for name in models:
        row = {"model": name}
        row.update(fit_and_score(name, inputs, y, train, test, 0, SETTINGS, 2))
        print(f"paper split {name}: {row['accuracy']:.4f}", file=sys.stderr, flush=True)
        rows.append(row)
    rows.sort(key=lambda r: list(MODELS).index(r["model"]))
    _save("paper", {"rows": rows, "n_train": len(train), "n_test": len(test)})


def run_digits():
    """8x8 digits: few labels per class, a fixed test set of 797 images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    from sktransfer import TransferClassifier
    from sktransfer._testing import frozen_lr as _frozen_lr
    from sktransfer._testing import metrics

    digits = load_digits()
    X, y = digits.images / 16, digits.target
    pool, test = train_test_split(np.arange(len(y)), test_size=797, stratify=y,
                                  random_state=0)
    variants = {
        "SVC(gamma=0.001), 8x8 pixels": ("pixels", lambda s, yt: SVC(gamma=0.001)),
        "frozen Lite0 features (224) + LR": ("images", lambda s, yt: _frozen_lr(
            yt, s, SETTINGS)),
        "frozen Lite0 features (64) + LR": ("images", lambda s, yt: _frozen_lr(
            yt, s, {**SETTINGS, "image_size": 64})),
        "TransferClassifier fine-tuned (64)": ("images", lambda s, yt: TransferClassifier(
            image_size=64, validation_fraction=None, random_state=s)),
    }
    rows = []
    for per_class in (3, 10, 30, 90):  # the pool has at least 90 of each digit
        for seed in range(3):
            rng = np.random.default_rng(seed)
            train = np.concatenate([rng.choice(pool[y[pool] == c], per_class, replace=False)
                                    for c in range(10)])
            for label, (kind, make) in variants.items():
                Xk = X.reshape(len(X), -1) if kind == "pixels" else X
                model = make(seed, y[train])
                t = time.perf_counter()
                model.fit(Xk[train], y[train])
                fit_s = time.perf_counter() - t
                pred = model.predict(Xk[test])
                row = {"model": label, "per_class": per_class, "seed": seed, "fit_s": fit_s}
                row.update(metrics(y[test], pred, None, 10))
                print(f"digits {per_class}/class seed {seed} {label}: "
                      f"{row['accuracy']:.3f}", file=sys.stderr, flush=True)
                rows.append(row)
    _save("digits", {"rows": rows, "n_test": len(test)})


# -- rendering ----------------------------------------------------------------


def _majority_rates():
    """Accuracy of always predicting the majority class: all of ELPV and per cell type."""
    data = load_elpv_dataset()
    defective = data.y == "defective"
    cell_type = np.array([s[-4:] for s in data.strata])
    rates = {"all": defective}
    rates.update({t: defective[cell_type == t] for t in ("mono", "poly")})
    return {k: max(v.mean(), 1 - v.mean()) for k, v in rates.items()}


def _fmt(mean, std):
    return f"{mean:.1%} ± {std:.1%}"


def _label(name):
    return MODELS[name].label if name in MODELS else name


def _scratch_note(scratch, curves_machine):
    """What the from-random-weights rows are, where they ran, what is missing."""
    if not scratch:
        return ""
    done = _scratch_done(scratch)

    def name(size):
        return "all" if size == 1.0 else str(size)

    missing = [name(n) for n in SIZES if not any((n, f) in done for f in range(CV))]
    partial = [f"{name(n)} (fold{'s' if len(fs) > 1 else ''} {', '.join(map(str, fs))} of "
               f"0-{CV - 1})" for n in SIZES
               if 0 < len(fs := [f for f in range(CV) if (n, f) in done]) < CV]
    kinds = "; ".join(sorted({machine_kind(part["machine"]) for part in scratch["parts"]}))
    # accuracy alone hides a network that answers one class for every image
    rows = pd.DataFrame(_scratch_complete(scratch)["rows"])
    by_size = rows[rows["status"] == "ok"].groupby("train_size")
    balanced, fit_s = by_size["balanced_accuracy"].mean(), by_size["fit_s"].mean()
    budget = scratch["budget"]
    return (f"\nRow \"{_label('scratch_same')}\": compare's `scratch_same`, the "
            "fine-tuned row's architecture from random weights with every layer trained, "
            f"with that row's budget: {budget['max_epochs']} epochs at "
            f"{_budget_size(budget)}, the same folds, subsets and seeds (its other settings: "
            "compare's `fine_tuned` today, run by today's code). Its balanced "
            "accuracy (50 % for a model that answers one class for every image): "
            + ", ".join(f"{b:.1%} at {n}" for n, b in balanced.items())
            + ". Its mean fit per fold: "
            + ", ".join(f"{t:.0f} s at {n}" for n, t in fit_s.items())
            + f". Ran on: {kinds} (the other rows: {machine_kind(curves_machine)}; "
            "fit times compare only on one kind of machine)."
            + (f" Not run yet: {', '.join(missing)} training images." if missing else "")
            + (f" Partly run, left out of the table and plot until every fold has: "
               f"{', '.join(partial)}." if partial else "")
            + "\n")


def _budget_size(budget):
    import timm

    from sktransfer._testing import BUILTIN, DEFAULT_BACKBONE

    size = budget["image_size"]
    if size is None:  # the default backbone's own input size, from timm's config (no build)
        side = timm.get_pretrained_cfg(BUILTIN[DEFAULT_BACKBONE].arch).input_size[-1]
        return f"the backbone's {side} px"
    return f"image_size={size!r}"


def _part_size(part, sizes):
    """A scratch part's training size as the rows count it (1.0: every image)."""
    return sizes[-1] if part["size"] == 1.0 else part["size"]


class _Curves:
    """The learning curves, with the from-random-weights rows that have every fold."""

    def __init__(self, curves, scratch_parts):
        self.curves, self.scratch_parts = curves, scratch_parts
        self.scratch = _scratch_complete(scratch_parts) if scratch_parts else None
        res = pd.DataFrame(curves["rows"] + (self.scratch["rows"] if self.scratch else []))
        self.ok = res[res["status"] == "ok"]
        self.stats = self.ok.groupby(["model", "train_size"])["accuracy"].agg(["mean", "std"])
        self.fit_s = self.ok.groupby(["model", "train_size"])["fit_s"].mean()
        self.sizes = sorted(self.ok["train_size"].unique())

    def mean(self, name, size):
        return self.stats.loc[(name, size)]["mean"]

    def machine(self, name, size):
        """The kind(s) of machine model ``name`` ran on at ``size``."""
        if name != "scratch_same":
            return machine_kind(self.curves["machine"])
        return "; ".join(sorted({machine_kind(p["machine"]) for p in self.scratch_parts["parts"]
                                 if _part_size(p, self.sizes) == size}))

    def best(self, names, size):
        """The model of ``names`` with the best mean accuracy at ``size``."""
        at = self.stats.xs(size, level="train_size")["mean"]
        return max((m for m in names if m in at.index), key=lambda m: at[m])


def _paper_rows():
    """The paper split's rows of the TransferClassifier configurations
    reported: (label, test run, its seeds' results)."""
    from bench_transfer import CURRENT_DEFAULTS, configuration, seed_results, test_runs

    out = []
    for name, run in test_runs().items():
        if name != CURRENT_DEFAULTS and run.get("chosen_by") not in ("best", "best_second_look"):
            continue
        seeds = seed_results(name)
        if seeds:
            out.append((configuration(name), name, seeds))
    return out


def _kinds(results) -> str:
    return "; ".join(dict.fromkeys(machine_kind(r["machine"]) for r in results))


def render(write=True):
    """Render the results; returns ``(markdown, results headline block, README
    summary block)``.

    With ``write=False`` nothing is written (the docs test uses it to check
    that the pages and the README's summary are the ones the results give).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench_transfer import PAPER

    parts, runs = [], []
    majority = _majority_rates()
    curves = _load("curves")
    c = _Curves(curves, _load("scratch")) if curves else None
    if c:
        runs.append(("curves", curves["machine"]))
        runs += [(f"scratch {part['size']}" + (f" fold {part['fold']}" if "fold" in part else ""),
                  part["machine"]) for part in (c.scratch_parts or {"parts": []})["parts"]]
        ok, stats, sizes = c.ok, c.stats, c.sizes
        lines = ["| model | " + " | ".join(str(n) for n in sizes) + " |",
                 "|---|" + "---|" * len(sizes)]
        for name in MODELS:
            if name in stats.index.get_level_values(0):
                cells = [_fmt(*stats.loc[(name, n)]) if (name, n) in stats.index else ""
                         for n in sizes]
                lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
        small_best = stats.xs(sizes[0], level="train_size")["mean"].max()
        best_t, best_c = c.best(TRANSFER_MODELS, 100), c.best(CLASSICAL_MODELS, 100)
        gap = c.mean(best_t, 100) - c.mean(best_c, 100)
        full = ok[ok["train_size"] == sizes[-1]]
        spread = full.groupby("model").agg(
            acc_mean=("accuracy", "mean"), acc_std=("accuracy", "std"),
            acc_range=("accuracy", lambda a: a.max() - a.min()),
            params=("trainable_parameters", "mean"), fit_s=("fit_s", "mean"))
        robust = ["| model | accuracy (n = all) | std over the 3 folds | max - min | trainable "
                  "parameters | fit | machine |", "|---|---|---|---|---|---|---|"]
        for name in MODELS:
            if name in spread.index:
                r = spread.loc[name]
                robust.append(f"| {_label(name)} | {r.acc_mean:.1%} | {r.acc_std:.1%} | "
                              f"{r.acc_range:.1%} | {int(r.params):,} | {r.fit_s:.0f} s "
                              f"| {c.machine(name, sizes[-1])} |")
        parts.append(f"""## Less data: learning curves on ELPV

Test accuracy, mean ± std over 3 folds (each fold a different training
subset and seed; 3-fold CV stratified by probability x cell type, every
model on the same subsets). Columns: training images. Ran on
{machine_kind(curves["machine"])} unless said otherwise.
{provenance_note("seed_claims/curves.json")}

{chr(10).join(lines)}
{_scratch_note(c.scratch_parts, curves["machine"])}
Always predicting the majority class ("functional") scores {majority['all']:.1%}; with
{sizes[0]} training images the best model scores {small_best:.1%}
({(small_best - majority['all']) * 100:+.1f} points).

![learning curves](seed_claims/learning_curve.png)

Bar: at n = 100 the best transfer model ({_label(best_t)}, {c.mean(best_t, 100):.1%}) beats
the best classical one ({_label(best_c)}, {c.mean(best_c, 100):.1%}) by {gap * 100:.1f}
points: **{'met' if gap >= 0.05 else 'NOT met'}** (>= 5 points).

## Spread over the folds, and what is trained

On the full training folds (n = {sizes[-1]}). The spread is over the 3
cross-validation folds, each with its own training and test images and seed:
it is not a spread over seeds on fixed data, and it does not show one model
to be more robust than another. Trainable parameters: the
coefficients of the linear models, support vectors x features for the SVC,
tree nodes for the forest, weights with gradients for the networks (the
frozen model trains only its logistic regression). Fit: mean seconds per
fold, on the machine given (fit times compare only within one kind).

{chr(10).join(robust)}
""")
        if write:
            ax = plot_learning_curve(ok)
            ax.set_title("ELPV: test accuracy vs training images (3 folds)")
            ax.figure.tight_layout()
            ax.figure.savefig(OUT / "learning_curve.png", dpi=120)
            plt.close(ax.figure)
    cross = _load("cross_type")
    if cross:
        runs.append(("cross_type", cross["machine"]))
        df = pd.DataFrame(cross["rows"])
        lines = ["| model | mono → poly | poly → mono |", "|---|---|---|"]
        for name in MODELS:
            g = df[df["model"] == name].set_index("train")
            if len(g):
                lines.append(f"| {_label(name)} | {g.loc['mono', 'accuracy']:.1%} "
                             f"(AUC {g.loc['mono', 'roc_auc']:.3f}) | "
                             f"{g.loc['poly', 'accuracy']:.1%} "
                             f"(AUC {g.loc['poly', 'roc_auc']:.3f}) |")
        n = df.groupby("train")[["n_train", "n_test"]].first()
        lines.append(f"| always the majority class of the test type | "
                     f"{majority['poly']:.1%} | {majority['mono']:.1%} |")
        best = {t: df[df["train"] == t].sort_values("accuracy").iloc[-1] for t in n.index}
        parts.append(f"""## Generalization: across cell types

Trained on one cell type, tested on the other (mono: {n.loc['mono', 'n_train']} images,
poly: {n.loc['poly', 'n_train']}). One fit per model, seed 0; accuracy at the 0.5
threshold, and ROC AUC (threshold-free). Ran on {machine_kind(cross["machine"])}.
{provenance_note("seed_claims/cross_type.json")}

{chr(10).join(lines)}

Best accuracy, mono → poly: {_label(best['mono']['model'])} ({best['mono']['accuracy']:.1%});
poly → mono: {_label(best['poly']['model'])} ({best['poly']['accuracy']:.1%}). Where an
accuracy falls below the majority-class rate, the model calls most cells of the
unseen type defective: its 0.5 threshold does not carry over to the other
texture, even where its ROC AUC shows that it still ranks defective cells
higher. {_cross_type_verdict(df)}
""")
    paper = _load("paper")
    if paper:
        runs.append(("paper", paper["machine"]))
        kind = machine_kind(paper["machine"])
        lines = ["| model | accuracy | ROC AUC | fit | machine |", "|---|---|---|---|---|"]
        for r in paper["rows"]:
            label = _label(r["model"]) + (" (compare's setting of the time, 12 epochs at 224 "
                                          "px)" if r["model"] == "fine_tuned" else "")
            lines.append(f"| {label} | {r['accuracy']:.2%} | {r['roc_auc']:.4f} "
                         f"| {r['fit_s']:.0f} s | {kind} |")
        for label, name, seeds in _paper_rows():
            by_kind = {}
            for k, r in enumerate(seeds):
                by_kind.setdefault(machine_kind(r["machine"]), []).append((k, r["machine"]))
            runs += [(f"{name} (seeds {', '.join(str(k) for k, _ in on)})",
                      max((m for _, m in on), key=lambda m: m["date"]))
                     for on in by_kind.values()]
            lines.append(f"| {label} (`bench_transfer.py {name}`), mean of {len(seeds)} seeds "
                         f"| {np.mean([r['accuracy'] for r in seeds]):.2%} "
                         f"| {np.mean([r['roc_auc'] for r in seeds]):.4f} "
                         f"| {np.mean([r['fit_s'] for r in seeds]):.0f} s | {_kinds(seeds)} |")
        for k, (acc, auc) in PAPER.items():
            lines.append(f"| {k} | {acc:.2%} | {auc:.4f} | | |")
        parts.append(f"""## The paper's table: Deitsch et al. (2019) protocol

75/25 split stratified by probability x cell type ({paper['n_train']} / {paper['n_test']}
images); every model fitted on the same training part. The compare models
ran once (seed 0); the TransferClassifier configurations are those of
`transfer.md`, where every seed is listed and the number of times these test
images have been scored is counted.
{provenance_note("seed_claims/paper.json")}

{chr(10).join(lines)}
""")
    digits = _load("digits")
    if digits:
        runs.append(("digits", digits["machine"]))
        d = _digits(digits)
        lines = ["| model | " + " | ".join(f"{p}/class" for p in d["per"]) + " |",
                 "|---|" + "---|" * len(d["per"])]
        for name in d["df"]["model"].unique():
            lines.append(f"| {name} | " + " | ".join(
                _fmt(*d["stats"].loc[(name, p)]) for p in d["per"]) + " |")
        per, stats = d["per"], d["stats"]
        winners = "; ".join(
            f"{p}/class: {stats.xs(p, level='per_class')['mean'].idxmax()} "
            f"({stats.xs(p, level='per_class')['mean'].max():.1%})" for p in per)
        parts.append(f"""## Where it does not help: 8x8 digits

scikit-learn's digits, a fixed test set of {digits['n_test']} images; training sets
of k images per class drawn from the rest (3 seeds, mean ± std). Ran on
{machine_kind(digits["machine"])}.
{provenance_note("seed_claims/digits.json")}

{chr(10).join(lines)}

With {per[0]} labels per class the SVC on raw pixels reaches {d['svc']:.1%}; the best
pretrained variant ({d['best']}) {d['best_mean']:.1%}. Best
model at each size: {winners}. Smaller inputs (64 instead of 224: an 8x8 digit
blown up to 224 is mostly interpolation) helped the frozen features when labels
were few and made no difference at 90 per class; fine-tuning helped more, and
overtook the SVC from 30 labels per class on.
""")
    text = ("# The seed's claims, measured\n\nGenerated by `benchmarks/seed_claims.py` from "
            "`seed_claims/*.json` and `transfer/*.json`; nothing here is typed by hand.\n\n"
            + "\n".join(parts) + "\n" + machines_section(runs, what="Ran here"))
    block = headline(c, cross, paper)
    short = summary(c, cross)
    if write:
        (RESULTS / "seed_claims.md").write_text(text)
        README.write_text(readme_with_summary(README.read_text(), short))
        RESULTS_PAGE.write_text(results_page(RESULTS_PAGE.read_text(), block))
    return text, block, short


def _digits(digits):
    df = pd.DataFrame(digits["rows"])
    stats = df.groupby(["model", "per_class"], sort=False)["accuracy"].agg(["mean", "std"])
    per = sorted(df["per_class"].unique())
    best = max((m for m in df["model"].unique() if not m.startswith("SVC")),
               key=lambda m: stats.loc[(m, per[0])]["mean"])
    return {"df": df, "stats": stats, "per": per, "best": best,
            "best_mean": stats.loc[(best, per[0])]["mean"],
            "svc": stats.xs("SVC(gamma=0.001), 8x8 pixels")["mean"][per[0]]}


def _cross_type_wins(df):
    """(train type, metric) -> whether the best transfer model beats the best
    classical one."""
    def best_of(t, names, metric):
        return df[(df["train"] == t) & df["model"].isin(names)][metric].max()

    return {(t, m): best_of(t, TRANSFER_MODELS, m) > best_of(t, CLASSICAL_MODELS, m)
            for t in sorted(df["train"].unique()) for m in ("accuracy", "roc_auc")}


def _direction(t):
    return "mono → poly" if t == "mono" else "poly → mono"


def _cross_type_verdict(df) -> str:
    wins = _cross_type_wins(df)
    if all(wins.values()):
        return ("Transfer models beat the classical ones in both directions, in accuracy and "
                "AUC: the claim holds here.")
    return ("The claim that transfer learning generalizes better is not supported across "
            "cell types: the best transfer model loses to the best classical one in "
            + ", ".join(f"{_direction(t)} {m}" for (t, m), won in wins.items() if not won)
            + ".")


# -- the README's headline ------------------------------------------------------

HEADLINE_SIZES = (25, 100, 500)  # and every training image
SHORT = {"logistic_regression": "logistic regression", "random_forest": "random forest",
         "hog_svc": "HOG + SVC", "small_cnn": "small CNN"}  # compare's labels, shortened


def _verdict(means, transfer, others):
    """Best transfer minus best other model, in points, naming every model
    that beats transfer learning."""
    best_t = max(means[m] for m in transfer)
    gap = best_t - max(means[m] for m in others)
    beaten_by = [SHORT[m] for m in others if means[m] > best_t]
    return f"{gap * 100:+.1f} points" + (f": loses to {', '.join(beaten_by)}"
                                         if beaten_by else "")


def _points(x):
    return f"{x * 100:+.1f} points"


def _less_data(c) -> list:
    """The README's table of what transfer learning does at a few training sizes."""
    sizes = [n for n in HEADLINE_SIZES if n in c.sizes] + [c.sizes[-1]]
    others = [m for m in MODELS if m in SHORT]
    rows = []
    for n in sizes:
        means = {m: c.mean(m, n) for m in [*TRANSFER_MODELS, *others]}
        classical = max(CLASSICAL_MODELS, key=means.get)
        rows.append((f"{n:,}", means["fine_tuned"], means["frozen_lr"],
                     f"{means[classical]:.1%} ({SHORT[classical]})", f"{means['small_cnn']:.1%}",
                     _verdict(means, TRANSFER_MODELS, others),
                     f"{c.fit_s[('fine_tuned', n)]:.0f} s", machine_kind(c.curves["machine"])))
    today = _readme_main_job()
    if today is not None:
        res, timing = today
        ok = res[res["status"] == "ok"]
        n = ok["train_size"].max()
        at = ok[ok["train_size"] == n].groupby("model")[["accuracy", "fit_s"]].mean()
        means = at["accuracy"].to_dict()
        classical = max(CLASSICAL_MODELS, key=means.get)
        rows.append((f"{n:,}, today's `sktransfer compare` (commit {timing['commit'][:7]})",
                     means["fine_tuned"], means["frozen_lr"],
                     f"{means[classical]:.1%} ({SHORT[classical]})", f"{means['small_cnn']:.1%}",
                     _verdict(means, TRANSFER_MODELS, others),
                     f"{at.loc['fine_tuned', 'fit_s']:.0f} s", machine_kind(timing["machine"])))
    kinds = dict.fromkeys(r[-1] for r in rows)
    one = len(kinds) == 1
    lines = ["| training images | fine-tuned TransferClassifier | frozen features + logistic "
             "regression | best classical model | small CNN from scratch | transfer learning "
             "minus the best other | fine-tuned fit per fold" + ("" if one else " | machine")
             + " |", "|---|---|---|---|---|---|---|" + ("" if one else "---|")]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]:.1%} | {r[2]:.1%} | {r[3]} | {r[4]} | {r[5]} | {r[6]}"
                     + ("" if one else f" | {r[7]}") + " |")
    where = f" All on {next(iter(kinds))}." if one else ""
    return [
        "**Less data.** ELPV solar-cell images, defective or not: test accuracy, mean "
        "over 3 cross-validation folds, every model on the same training subsets "
        f"([seed_claims.md](benchmarks/results/seed_claims.md)).{where}", "",
        *lines, "",
        f"The first {len(sizes)} rows: {provenance_note('seed_claims/curves.json')} "
        + ("The last: the README's main command run in a fresh clone "
           "([readme_main_job.md](benchmarks/results/readme_main_job.md))."
           if today is not None else ""), ""]


def _readme_main_job():
    store = RESULTS / "readme_main_job"
    if not (store / "results.json").exists():
        return None
    res = json.loads((store / "results.json").read_text())
    return pd.DataFrame(res["rows"]), json.loads((store / "timing.json").read_text())


def _test_part(name):
    """'N fits (M configurations)' scored on the paper split's test part up to
    test run ``name``'s last fit."""
    from bench_transfer import scored_up_to

    configs, fits = scored_up_to(name)
    return f"{fits} fits ({configs} configurations)"


def _mean_sd(values, fmt) -> str:
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):{fmt}} ± {sd:{fmt}}"


def against_published() -> list:
    """The README's table: the frozen configurations against the published VGG-19."""
    import fresh_splits
    from bench_transfer import PAPER, configuration, seed_results, test_runs

    vgg = next(k for k in PAPER if k.startswith("VGG-19"))
    rows = ["| configuration | test data | accuracy | ROC AUC | fit on 1,968 images | machine "
            "| its test images scored by, up to this result |", "|---|---|---|---|---|---|---|"]
    for s in fresh_splits.summary():
        label = (configuration(s["configuration"]) if s["configuration"] in test_runs()
                 else s["configuration"])
        mixed = len(s["machines"]) > 1  # then each split names its machine
        each = " / ".join(f"{a:.1%}" + (f" ({m})" if mixed else "")
                          for a, m in zip(s["accuracy"], s["split_machines"]))
        rows.append(
            f"| `{label}` | {len(s['split_seeds'])} fresh splits (split seeds "
            f"{', '.join(map(str, s['split_seeds']))}) | {_mean_sd(s['accuracy'], '.2%')} "
            f"(each: {each}) | {_mean_sd(s['roc_auc'], '.3f')} "
            f"| {np.mean(s['fit_s']) / 60:.1f} min "
            f"| {'see each split' if mixed else s['machines'][0]} "
            "| this fit only: no choice was made on them |")
    looks = [(name, run) for name, run in test_runs().items()
             if name == "defaults" or run.get("chosen_by") in ("best", "best_second_look")]
    for name, run in looks:
        seeds = seed_results(name)
        if len(seeds) < 5:
            continue
        what = ("the defaults" if name == "defaults" else
                "best configuration found, a second look taken after the first was scored"
                if run.get("chosen_by") == "best_second_look" else
                "best configuration found, first look")
        rows.append(
            f"| `{configuration(name)}`: {what} | Deitsch et al.'s split, seeds 0-4 "
            f"| {np.mean([r['accuracy'] for r in seeds]):.2%} "
            f"| {np.mean([r['roc_auc'] for r in seeds]):.3f} "
            f"| {np.mean([r['fit_s'] for r in seeds]) / 60:.1f} min | {_kinds(seeds)} "
            f"| {_test_part(name)} |")
    acc, auc = PAPER[vgg]
    rows.append(f"| {vgg}, as published | Deitsch et al.'s split | {acc:.2%} | {auc:.3f} "
                "| | | |")
    fresh = fresh_splits.summary()
    fresh_text = (
        " The rows on fresh test splits are the figure to trust: the same protocol with "
        "split seeds no choice has seen, the configurations frozen before they were drawn "
        "([fresh_splits.md](benchmarks/results/fresh_splits.md)). A row's machine matters: "
        "the same configuration and seed trains a different model on another kind of CPU or "
        "on a GPU ([reproducibility.md](benchmarks/results/reproducibility.md))."
        if fresh else "")
    return [
        "**Against the published result.** Deitsch et al.'s (2019) split of ELPV: "
        "1,968 training and 656 test images "
        "([transfer.md](benchmarks/results/transfer.md)). Every setting was chosen by "
        "cross-validation inside the training images, but each new search started after "
        "the previous choice had been scored on the same test images, so figures on that "
        "split are optimistic; the last column counts the fits of a fine-tuned network "
        "scored on those test images (from the results files, by date), and each "
        "configuration's seeds count once among the configurations." + fresh_text, "",
        *rows, ""]


def _not_supported(c, cross) -> list:
    lines = ["**What these data do not support:**", ""]
    if c:
        n = c.sizes[-1]
        std = c.stats.xs(n, level="train_size")["std"]
        others = [m for m in MODELS if m not in TRANSFER_MODELS and m in std.index
                  and m != "scratch_same"]
        lines.append(
            f"- *Transfer learning is more robust*: the only spread measured is over the 3 "
            "cross-validation folds, each with its own training and test images and seed, "
            f"not over seeds on fixed data. At {n:,} images its standard deviation is "
            f"{std['fine_tuned'] * 100:.1f} points for the fine-tuned model, "
            f"{std['frozen_lr'] * 100:.1f} for frozen features and {min(std[others]) * 100:.1f} "
            f"to {max(std[others]) * 100:.1f} for the others: no evidence either way.")
    if cross:
        df = pd.DataFrame(cross["rows"])
        wins = _cross_type_wins(df)
        lost = {m: [t for (t, m2), won in wins.items() if m2 == m and not won]
                for m in ("accuracy", "roc_auc")}

        def best(t, names):
            return df[(df["train"] == t) & df["model"].isin(names)]["accuracy"].max()

        where = [f"{m.replace('roc_auc', 'ROC AUC')} "
                 + ("both ways" if len(ts) == 2 else _direction(ts[0]))
                 for m, ts in lost.items() if ts]
        if where:
            lines.append(
                "- *Transfer learning generalizes better*: trained on one cell type and tested "
                "on the other, the best transfer model loses to the best classical one in "
                + " and ".join(where) + " (accuracy "
                + "; ".join(f"{_direction(t)}: {best(t, TRANSFER_MODELS):.1%} against "
                            f"{best(t, CLASSICAL_MODELS):.1%}" for t in ("mono", "poly"))
                + f"; compare's models of commit `{_commit('seed_claims/cross_type.json')}`).")
    digits = _load("digits")
    if digits:
        d = _digits(digits)
        lines.append(
            f"- *Pretrained features help on any images*: on 8x8 digits with {d['per'][0]} "
            f"labels per class an SVC on the pixels scores {d['svc']:.1%}, the best pretrained "
            f"model {d['best_mean']:.1%}.")
    lines += _multitask_lines()
    return lines + [""]


def _commit(result):
    known = json.loads((RESULTS / "provenance.json").read_text())
    return known[result]["commit"]


def _multitask_lines() -> list:
    """Whether a second target column helps the defect label, at the sizes where
    every configuration has its five paired seeds (bench_multitask's rule)."""
    from bench_multitask import AUX_NAMES, CONFIGS, SEEDS, _delta, summary

    rows, said = summary(), {}
    for size in dict.fromkeys(r["size"] for r in rows):
        aux = [r for r in rows if r["size"] == size and r["config"] != "defect"]
        if len(aux) < len(CONFIGS) - 1 or any(len(r.get("paired", [])) < len(SEEDS) for r in aux):
            continue
        said[size] = [f"{AUX_NAMES[r['config']]} {r['verdict']} "
                      f"({_delta(r, 'accuracy' if 'accuracy' in r['verdict'] else 'roc_auc')})"
                      for r in aux if r["verdict"] != "does not help"]
    if said.get("all") != []:
        return []  # stated only where it fails: with every training image
    fewer = "; ".join(f"at {size}: " + ("; ".join(h) if h else "none helps")
                      for size, h in said.items() if size != "all")
    return ["- *A second target column (cell type, defect level) helps the defect label*: "
            "not with all 1,968 training images (paired over 5 seeds, no 95 % interval "
            "above zero)" + (f"; with fewer, {fewer}" if fewer else "") + " ([user guide]"
            "(docs/user_guide.md#several-targets-from-one-backbone-multi-task))."]


def headline(c, cross, paper) -> str:
    """The README's headline block, from the results files."""
    lines = []
    if c:
        lines += _less_data(c)
    if paper:
        lines += against_published()
    lines += _not_supported(c, cross)
    if c and c.scratch and c.scratch["rows"]:
        n = max(r["train_size"] for r in c.scratch["rows"])
        acc = c.ok[(c.ok["train_size"] == n)].groupby("model")[
            ["accuracy", "balanced_accuracy"]].mean()
        lines += [
            "**What the pretrained weights are worth:** the fine-tuned network against the "
            f"same network from random weights, every layer trained for as many epochs, at "
            f"{n:,} training images: accuracy {acc.loc['fine_tuned', 'accuracy']:.1%} against "
            f"{acc.loc['scratch_same', 'accuracy']:.1%}, balanced accuracy "
            f"{acc.loc['fine_tuned', 'balanced_accuracy']:.1%} against "
            f"{acc.loc['scratch_same', 'balanced_accuracy']:.1%}.", ""]
    return "\n".join(lines)


def summary(c, cross) -> str:
    """The README's short account of the ELPV results, from the results files:
    the fresh-split figure against the published one, where transfer learning
    wins and where it loses, and a link to every table."""
    import fresh_splits
    from bench_transfer import CURRENT_DEFAULTS, PAPER

    lines = []
    fresh = {s["configuration"]: s for s in fresh_splits.summary()}
    vgg_name = next(k for k in PAPER if k.startswith("VGG-19"))
    if CURRENT_DEFAULTS in fresh:
        s = fresh[CURRENT_DEFAULTS]
        lines.append(
            f"On ELPV's 2,624 electroluminescence images of solar cells (defective or not), "
            f"`TransferClassifier()` with its defaults scored **{_mean_sd(s['accuracy'], '.1%')}** "
            f"accuracy on {len(s['accuracy'])} fresh test splits that no setting was chosen on "
            f"({' / '.join(s['machines'])}); the fine-tuned VGG-19 of Deitsch et al. (2019) "
            f"scored {PAPER[vgg_name][0]:.2%} on the paper's own split.")
    if c:
        others = [m for m in MODELS if m in SHORT]
        small, full = c.sizes[0], c.sizes[-1]
        at = {n: {m: c.mean(m, n) for m in [*TRANSFER_MODELS, *others]} for n in (small, full)}
        classical = max(CLASSICAL_MODELS, key=at[full].get)
        beaten = [m for m in others if at[small][m] > max(at[small][t] for t in TRANSFER_MODELS)]
        gap = (at[full]["fine_tuned"] - at[full][classical]) * 100
        text = (f"In 3-fold cross-validation ({machine_kind(c.curves['machine'])}), with "
                f"{full:,} training images fine-tuning {'beat' if gap > 0 else 'lost to'} "
                f"the best classical model ({SHORT[classical]}) by {abs(gap):.1f} points")
        if beaten:
            names = [f"the {SHORT[m]}" for m in beaten]
            listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
            text += (f"; with {small} it lost to {listed} "
                     f"({at[small]['fine_tuned']:.1%} against up to "
                     f"{max(at[small][m] for m in beaten):.1%})")
        lines.append(text + ".")
    losses = []
    if cross and not all(_cross_type_wins(pd.DataFrame(cross["rows"])).values()):
        losses.append("trained on one cell type and tested on the other, the best classical "
                      "model beat the best transfer model")
    digits = _load("digits")
    if digits:
        d = _digits(digits)
        if d["svc"] > d["best_mean"]:
            losses.append(f"on 8x8 digits with {d['per'][0]} labels per class, an SVC on the "
                          f"pixels scored {d['svc']:.1%}, the best pretrained model "
                          f"{d['best_mean']:.1%}")
    if losses:
        lines.append("Where it does not help: " + "; ".join(losses) + ".")
    lines.append("Every table, the machines the numbers came from, and what these data do "
                 "not support: [docs/results.md](docs/results.md).")
    return "\n\n".join(lines)


def with_block(text: str, name: str, block: str) -> str:
    """``text`` with ``block`` between its ``<!-- name:start -->`` and
    ``<!-- name:end -->`` markers."""
    block = f"<!-- {name}:start -->\n" + (f"{block.strip()}\n" if block.strip() else "") \
        + f"<!-- {name}:end -->"
    return re.sub(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", lambda m: block, text,
                  flags=re.S)


def relinked(block: str, prefix: str) -> str:
    """``block``'s relative links, as seen from a page ``prefix`` deeper."""
    return re.sub(r"\]\((?!https?:|#|/)([^)]+)\)", lambda m: f"]({prefix}{m[1]})", block)


def readme_with_summary(readme: str, block: str) -> str:
    """``readme`` with ``block`` between the summary markers."""
    return with_block(readme, "summary", block)


def results_page(page: str, block: str) -> str:
    """``docs/results.md`` with the full headline ``block`` between its markers."""
    return with_block(page, "headline", relinked(block, "../"))


SECTIONS = {"curves": run_curves, "scratch": run_scratch, "cross_type": run_cross_type,
            "paper": run_paper,
            "paper_fine_tuned": lambda: run_paper(["fine_tuned"]), "digits": run_digits}

if __name__ == "__main__":
    for section in sys.argv[1:]:
        SECTIONS[section]()
    print(render()[0])
