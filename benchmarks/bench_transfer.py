"""Fine-tuning on ELPV with the protocol of Deitsch et al. (Solar Energy, 2019).

Binary target: defect probability > 0.5. One 75/25 split stratified by
probability x cell type (random_state=0). Every model is fitted on the same
training part and scored on the same test part; nothing is tuned on the test
part (the settings were chosen by inner cross-validation inside the training
part, ``select_transfer_defaults.py``; the logistic regression's C is picked
by 5-fold CV inside the training part).

The configurations scored, in the order of the page, are data:
``test_runs`` in ``transfer_candidates.json``, each with its label, the seeds
it ran with, and how to fit it again (parameters over today's defaults, or
the decision whose choice it is). Runs kept from before the fine-tuning core
was rewritten (``before_core``, ``first_cv_defaults``, ``previous_defaults``,
``freeze_*``) are results, not re-runnable: the parameter was then ``freeze``
(``freeze=2`` trained the last two of 7 block groups, the same layers as
``trainable_stages=1`` now) and an epoch with ``augment="flips"`` showed all
four flips of every image.

The split's test images have been scored many times: :func:`test_part_fits`
lists every fit of a fine-tuned network scored on them, from the results
files, so that each reported figure says how many came before it.

Run: ``python benchmarks/bench_transfer.py [RUN ...]`` (needs the ``bench``
extra), e.g. ``defaults_seed_0``. Each result goes to
``benchmarks/results/transfer/<run>.json`` and all of them are rendered into
``benchmarks/results/transfer.md``.
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from _elpv import aux_target, paper_split
from _machine import describe_machine, machine_kind, machines_section, require_reference_cpu
from _selection import DATA, chosen, decision, round_of

from sktransfer import PretrainedFeatureExtractor, TransferClassifier

RESULTS = Path(__file__).parent / "results"
TRANSFER = RESULTS / "transfer"
PAPER = {"VGG-19 fine-tuned (Deitsch et al. 2019)": (0.8842, 0.9442),
         "SVM, KAZE/VGG features (Deitsch et al. 2019)": (0.8244, 0.8851)}
#: The test run of ``TransferClassifier()`` as it is now.
CURRENT_DEFAULTS = "defaults"
AUX_TARGET = {None: "", "type": " with y = (defect, cell type)",
              "level": " with y = (defect, defect probability level)"}


def test_runs() -> dict:
    """name -> test run of ``transfer_candidates.json``, in the page's order."""
    return {run["name"]: run for run in DATA["test_runs"]}


def run_files(run) -> list:
    """The result names of a test run: one per seed, or its own name."""
    if "seeds" not in run:
        return [run["name"]]
    return [f"{run['name']}_seed_{k}" for k in run["seeds"]]


def _refits_choice(run) -> bool:
    """Whether ``run`` is fitted as its decision's choice: no parameters of its
    own, and a decision among candidates with today's parameters."""
    return ("params" not in run and "chosen_by" in run
            and all(round_of(n)["parameters"] == "today"
                    for n in decision(run["chosen_by"])["rounds"]))


def _args(params) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def configuration(name) -> str:
    """How a user writes test run ``name``'s model, without its seed."""
    run = test_runs()[name]
    if _refits_choice(run):
        pick = chosen(run["chosen_by"])
        if pick is None:
            return f"{decision(run['chosen_by'])['sets']} (not decided yet)"
        _, tta, params, aux = pick
        return f"TransferClassifier({_args({**params, 'tta': tta})}){AUX_TARGET[aux]}"
    if "params" in run:
        return f"TransferClassifier({_args(run['params'])})"
    return run["label"].format(seed=0)


def _label(run, seed):
    if "label" in run or not _refits_choice(run):
        return run["label"].format(seed=seed)
    d = decision(run["chosen_by"])
    pick = chosen(run["chosen_by"])
    if pick is None:
        return f"{d['sets']}, seed {seed}: not decided yet"
    name, tta, params, aux = pick
    rounds = d["rounds"]
    return (f"TransferClassifier({_args({'random_state': seed, **params, 'tta': tta})})"
            f"{AUX_TARGET[aux]}: {d['sets']}, chosen by inner CV over rounds "
            f"{rounds[0]}-{rounds[-1]} ({name}), engine='auto'")


def _frozen_lr():
    return make_pipeline(PretrainedFeatureExtractor(), StandardScaler(),
                         GridSearchCV(LogisticRegression(max_iter=3000),
                                      {"C": np.logspace(-4, 0, 10)}, cv=5))


def _factory(run, seed):
    """A function that builds (model, auxiliary target kind), or None for a
    result kept from before the core rewrite."""
    if run.get("pipeline") == "frozen_lr":
        return lambda: (_frozen_lr(), None)
    if "params" in run:
        return lambda: (TransferClassifier(random_state=seed, verbose=1, **run["params"]), None)
    if _refits_choice(run):
        def make():
            pick = chosen(run["chosen_by"])
            if pick is None:
                raise SystemExit(f"{run['name']}: decision {run['chosen_by']!r} not taken "
                                 "yet; run its candidates with select_transfer_defaults.py.")
            _, tta, params, aux = pick
            return TransferClassifier(random_state=seed, verbose=1, tta=tta, **params), aux
        return make
    return None


def models():
    """result name -> (label, factory); factory None: a result kept as it is."""
    out = {}
    for run in test_runs().values():
        for k, name in zip(run.get("seeds", [0]), run_files(run)):
            out[name] = (_label(run, k), _factory(run, k))
    return out


def load(name):
    path = TRANSFER / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def seed_results(name) -> list:
    """The saved results of test run ``name``, seed by seed (those that ran)."""
    return [r for f in run_files(test_runs()[name]) if (r := load(f)) is not None]


def bar_met(seeds, bar) -> bool:
    """Whether five seeds meet the rule ``bar`` of ``transfer_candidates.json``."""
    b = DATA["bars"][bar]
    return (len(seeds) == 5 and np.mean([r["accuracy"] for r in seeds]) >= b["accuracy"]
            and np.mean([r["roc_auc"] for r in seeds]) >= b.get("roc_auc", 0)
            and max(r["fit_s"] for r in seeds) <= b["fit_s"])


def run(name):
    label, make = models()[name]
    if make is None:
        raise SystemExit(f"{name}: a result kept from before the core rewrite, not "
                         "re-runnable with today's parameters.")
    if name != "frozen_lr":
        require_reference_cpu(name)  # the fine-tuning rows' rules include fit <= 20 min
    X_train, y_train, X_test, y_test = paper_split()
    model, aux = make()
    print(f"== {name}: {label}", file=sys.stderr, flush=True)
    target = (y_train if aux is None
              else np.column_stack([y_train, aux_target(aux, X_train)]))
    t = time.perf_counter()
    model.fit(X_train, target)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    proba = model.predict_proba(X_test)
    proba = (proba[0] if isinstance(proba, list) else proba)[:, 1]  # aux: the defect column
    predict_s = time.perf_counter() - t
    pred = (proba >= 0.5).astype(int)
    result = {
        "model": name,
        "label": label,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "accuracy": accuracy_score(y_test, pred),
        "f1": f1_score(y_test, pred),
        "roc_auc": roc_auc_score(y_test, proba),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "machine": describe_machine(),
    }
    if isinstance(model, TransferClassifier):
        result["params"] = {k: repr(v) for k, v in model.get_params().items()
                            if k not in ("verbose", "random_state")}
        result["image_size"] = model.image_size_
        result["epochs_run"] = model.n_epochs_
        result["frozen_precomputed"] = model.frozen_precomputed_
        result["history"] = [{k: v for k, v in row.items()
                              if isinstance(v, (int, float, bool, str))}
                             for row in model.history_]
        result["trainable_parameters"] = sum(
            p.numel() for p in model.model_.parameters() if p.requires_grad)
        # kept outside the repository, to re-score without refitting
        import joblib
        joblib.dump(model, f"/tmp/sktransfer-bench-{name}.joblib")
    else:
        result["image_size"] = model[0].image_size_  # the extractor's
    TRANSFER.mkdir(parents=True, exist_ok=True)
    (TRANSFER / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"   accuracy {result['accuracy']:.4f}  ROC AUC {result['roc_auc']:.4f}  "
          f"fit {fit_s:.0f} s", file=sys.stderr, flush=True)


# -- how often the test part has been scored ------------------------------------


def test_part_fits() -> list:
    """Every fit of a fine-tuned network scored on the paper split's test part,
    as ``(date, configuration, result)`` sorted by date.

    Counted from the results files: the fine-tuned rows of ``transfer/``
    (the seeds of one test run are one configuration), compare's fine-tuned
    model in ``seed_claims/paper.json``, and ``multitask/`` (one configuration
    per column set and training size). Frozen features with a linear model,
    and re-scorings of a fitted model (ONNX export), are not counted.
    """
    fits = []
    for run in test_runs().values():
        if run.get("pipeline") or run["name"].endswith("frozen_lr"):
            continue
        for name in run_files(run):
            r = load(name)
            if r is not None:
                fits.append((r["machine"]["date"], run["name"], name))
    paper = RESULTS / "seed_claims" / "paper.json"
    if paper.exists():
        p = json.loads(paper.read_text())
        fits += [(p["machine"]["date"], "compare fine_tuned", "seed_claims/paper.json")
                 for r in p["rows"] if r["model"] == "fine_tuned"]
    for path in sorted((RESULTS / "multitask").glob("*.json")):
        r = json.loads(path.read_text())
        fits.append((r["machine"]["date"], f"multitask {r['config']} {r['size']}",
                     f"multitask/{path.stem}"))
    return sorted(fits)


def scored_up_to(name):
    """(configurations, fits) scored on the test part up to the last fit of test
    run ``name``, its own included; None before it has run."""
    seeds = seed_results(name)
    if not seeds:
        return None
    last = max(r["machine"]["date"] for r in seeds)
    before = [f for f in test_part_fits() if f[0] <= last]
    return len({f[1] for f in before}), len(before)


# -- rendering ----------------------------------------------------------------


def _tta_used(params):
    """'on'/'off' from a result's stored parameters (none stored: the old default,
    off). TransferClassifier's documented rule: tta=True, or tta='auto' with
    augment='flips'."""
    if not params:
        return "off"
    tta, augment = (ast.literal_eval(params[k]) for k in ("tta", "augment"))
    return "on" if tta is True or (tta == "auto" and augment == "flips") else "off"


def _summary(run) -> str:
    seeds = seed_results(run["name"])
    if "summary" not in run or len(seeds) < 2:
        return ""
    s = run["summary"]
    acc = np.array([r["accuracy"] for r in seeds])
    verdict = ("**met**" if bar_met(seeds, s["bar"]) else "**not met**"
               if len(seeds) == 5 else "not all five seeds have run")
    return (f"\n{s['title']}, {len(seeds)} seeds ({', '.join(f'{a:.2%}' for a in acc)}): "
            f"accuracy {acc.mean():.2%} ± {acc.std(ddof=1):.2%} (std), ROC AUC "
            f"{np.mean([r['roc_auc'] for r in seeds]):.4f}, fit "
            f"{np.mean([r['fit_s'] for r in seeds]) / 60:.1f} min on average (max "
            f"{max(r['fit_s'] for r in seeds) / 60:.1f}). Bar over seeds 0-4 "
            f"({DATA['bars'][s['bar']]['text']}; {s['when']}): {verdict}.\n")


def render(write=True) -> str:
    """``results/transfer.md`` from every saved result (``write=False``: returned only)."""
    rows, machines = [], []
    for name, (label, _) in models().items():
        r = load(name)
        if r is None:
            continue
        machines.append((name, r["machine"]))
        # Results from before the params were stored ran under the
        # defaults of their day: 224 px, 12 epochs at most, no TTA.
        size = r.get("image_size", 224)
        tta = _tta_used(r.get("params")) if "epochs_run" in r else ""
        rows.append(
            f"| {label} | {size} | {tta} | {r['accuracy']:.2%} | {r['f1']:.3f} "
            f"| {r['roc_auc']:.4f} | {r['fit_s'] / 60:.1f} min | {r['predict_s']:.0f} s "
            f"| {r.get('epochs_run', '')} | {machine_kind(r['machine'])} |")
    paper = "\n".join(f"| {k} | | | {a:.2%} | | {auc:.4f} | | | | |"
                      for k, (a, auc) in PAPER.items())
    spread = "".join(_summary(run) for run in test_runs().values())
    fits = test_part_fits()
    text = f"""# Fine-tuning on ELPV (Deitsch et al. 2019 protocol)

Generated by `benchmarks/bench_transfer.py` from `transfer/*.json`; the
configurations and their order from `transfer_candidates.json`.
Binary target defect probability > 0.5; one 75/25 split stratified by
probability x cell type (random_state=0): 1,968 training and 656 test images.
Backbone: EfficientNet-Lite0 (ImageNet) unless the row names another, at the
input size given. Each row names the kind of machine it ran on: fit times
compare only between rows of one kind. Rows marked "before the core rewrite"
ran before the fine-tuning core was rewritten (`freeze` became
`trainable_stages`, an epoch became one view per image); the freeze rows ran
when the defaults were 224 px, 12 epochs at most, validation_fraction=0.1
and no TTA; their labels give what differed then.

These test images have been scored by {len(fits)} fits of a fine-tuned network
({len({f[1] for f in fits})} configurations, the seeds of one counting once):
the fine-tuned rows below, compare's fine-tuned model
(`seed_claims/paper.json`) and the multi-task runs (`multitask/`), counted
from the results files. The settings were chosen inside the training part
(`transfer_selection.md`), but each new round of choosing started after the
last choice had been scored here.

| model | input px | TTA | accuracy | F1 | ROC AUC | fit | predict | epochs | machine |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{paper}
{spread}
{machines_section(machines, what=None)}"""
    if write:
        (RESULTS / "transfer.md").write_text(text)
    return text


if __name__ == "__main__":
    for name in sys.argv[1:]:
        run(name)
    print(render())
