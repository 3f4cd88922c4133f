"""Choose TransferClassifier's settings inside the training data only.

Every candidate, the round it belongs to and the rules that chose among them
are data: ``transfer_candidates.json``. This script fits a candidate the way
its round says and renders the history, ``results/transfer_selection.md``.
The test part of Deitsch et al.'s split is never touched here
(``bench_transfer.py`` scores the chosen configurations on it).

- Round 0 (``inner_split``): one 75/25 split of the training part (1,968
  images), stratified by probability x cell type (``random_state=1``):
  fitted on 1,476 images, scored on 492.
- Later rounds (``inner_folds``): 3 stratified folds of the same training part
  (``random_state=1``), fitted on two (1,312 images) and scored on the third
  (656), each fitted model scored without and with the four flip views
  averaged (TTA, a predict-time setting).

Candidates of rounds 0-2 ran before the fine-tuning core was rewritten, with
the parameter names and the epoch of the time: ``freeze=k`` trained the last
k of EfficientNet-Lite0's 7 block groups, and an epoch with
``augment="flips"`` showed all four flips of every image. Their parameters are
listed over the defaults of the time (``before_core_defaults`` in the data);
:func:`_today` translates them to today's parameters where that is the same
training (``freeze=2`` is ``trainable_stages=1``; k epochs of four flips are
4k epochs of one random flip), so a re-run fits the same models; ``freeze=1``
and ``freeze=3`` cut inside a stage of timm's ``feature_info`` and cannot be
re-run. Candidates of rounds 3 on list what differs from today's defaults;
``aux`` adds an auxiliary target as a second column of ``y`` (scored on the
defect column).

Run: ``python benchmarks/select_transfer_defaults.py [CANDIDATE ...]`` fits
each candidate named (``results/transfer_selection/<candidate>.json``, written
after every fold), then renders the page from every saved result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from _elpv import aux_target, inner_folds, inner_split
from _machine import (
    describe_machine,
    machine_kind,
    machines_section,
    require_reference_cpu,
)
from _selection import (
    BUDGET_S,
    DATA,
    N_FIT,
    N_TRAIN,
    candidates,
    decide,
    decision,
    projected_s,
    result,
    round_of,
)

from sktransfer import TransferClassifier

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "transfer_selection"


def _today(params: dict) -> dict:
    """A candidate's parameters of before the core rewrite as today's (see the
    module docstring)."""
    params = dict(params)
    freeze = params.pop("freeze", 2)
    if freeze != 2:
        raise SystemExit(f"freeze={freeze} trained part of a stage: it has no "
                         "trainable_stages equivalent; its results are kept as they are.")
    params["trainable_stages"] = 1
    if params.get("augment", "flips") == "flips":
        params["max_epochs"] = 4 * params["max_epochs"]
    return params


def _fit(name, X_fit, y_fit):
    """Candidate ``name`` fitted on ``X_fit``, its fit time and its model."""
    cand = candidates()[name]
    params = dict(cand["params"])
    aux = params.pop("aux", None)
    if round_of(cand["round"])["parameters"] == "before_core":
        params = _today({**DATA["before_core_defaults"]["params"], **params})
    target = y_fit if aux is None else np.column_stack([y_fit, aux_target(aux, X_fit)])
    model = TransferClassifier(random_state=0, verbose=1, **params)
    t = time.perf_counter()
    model.fit(X_fit, target)
    return model, time.perf_counter() - t


def _score(model, X_val, y_val):
    t = time.perf_counter()
    proba = model.predict_proba(X_val)
    proba = (proba[0] if isinstance(proba, list) else proba)[:, 1]  # aux: the defect column
    return {"accuracy": accuracy_score(y_val, proba >= 0.5),
            "roc_auc": roc_auc_score(y_val, proba), "predict_s": time.perf_counter() - t}


def _history(model):
    return [{k: v for k, v in row.items() if isinstance(v, (int, float, bool, str))}
            for row in model.history_]


def run(name):
    """Fit candidate ``name`` as its round says and save its result."""
    if name not in candidates():
        raise SystemExit(f"{name!r} is not a candidate of transfer_candidates.json; "
                         f"candidates: {', '.join(candidates())}.")
    cand = candidates()[name]
    require_reference_cpu(name)  # its fit times feed the 20-minute projection
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{name}.json"
    params = {k: repr(v) for k, v in cand["params"].items()}
    if round_of(cand["round"])["protocol"] == "inner_split":
        X_fit, y_fit, X_val, y_val = inner_split()
        print(f"== {name}: {cand['params']}", file=sys.stderr, flush=True)
        model, fit_s = _fit(name, X_fit, y_fit)
        scores = _score(model, X_val, y_val)
        out.write_text(json.dumps({
            "candidate": name, "params": params, "n_fit": len(y_fit),
            "n_inner_valid": len(y_val), "accuracy": scores["accuracy"],
            "roc_auc": scores["roc_auc"], "fit_s": fit_s, "epochs_run": model.n_epochs_,
            "history": _history(model), "machine": describe_machine()}, indent=2) + "\n")
        print(f"   inner accuracy {scores['accuracy']:.4f}  ROC AUC {scores['roc_auc']:.4f}  "
              f"fit {fit_s:.0f} s", file=sys.stderr, flush=True)
        return
    folds = []
    for k, (X_fit, y_fit, X_val, y_val) in enumerate(inner_folds()):
        print(f"== {name} {cand['params']} fold {k}: fit on {len(y_fit)}, score on "
              f"{len(y_val)}", file=sys.stderr, flush=True)
        model, fit_s = _fit(name, X_fit, y_fit)
        fold = {"fold": k, "n_fit": len(y_fit), "n_inner_valid": len(y_val),
                "fit_s": fit_s, "epochs_run": model.n_epochs_}
        for tta in (False, True):
            fold[f"tta_{tta}"] = _score(model.set_params(tta=tta), X_val, y_val)
        folds.append(fold)
        print(f"   without TTA {fold['tta_False']['accuracy']:.4f}, with flip TTA "
              f"{fold['tta_True']['accuracy']:.4f}", file=sys.stderr, flush=True)
        over = k == 0 and fit_s * N_TRAIN / N_FIT > BUDGET_S
        # written after every fold, so a long run can be inspected while it goes
        out.write_text(json.dumps({"candidate": name, "params": params, "folds": folds,
                                   "over_budget": over, "machine": describe_machine()},
                                  indent=2) + "\n")
        if over:
            print(f"   over budget: {fit_s * N_TRAIN / N_FIT / 60:.1f} min projected; "
                  "stopped", file=sys.stderr, flush=True)
            break


# -- rendering ----------------------------------------------------------------

HEADER = (
    "| candidate | parameters | folds | accuracy per fold | mean | ROC AUC "
    "| accuracy per fold, TTA | mean, TTA | ROC AUC, TTA | fit per fold "
    "| projected fit on 1,968 |\n" + "|---" * 11 + "|")


def _ran(rounds):
    """name -> saved result of the candidates of ``rounds`` that have run."""
    return {n: r for n in candidates(rounds) if (r := result(n)) is not None}


def _ran_on(results) -> str:
    """One line naming the machine of a table's rows (one kind per table)."""
    if not results:
        return ""
    kinds = {}
    for name, r in results.items():
        kinds.setdefault(machine_kind(r["machine"]), []).append(
            f"{name} ({r['machine'].get('date', '')[:10]})")
    if len(kinds) == 1:
        return f"\nRan on: {next(iter(kinds))}.\n"
    return "\nRan on: " + "; ".join(f"{', '.join(v)} on {k}" for k, v in kinds.items()) + ".\n"


def _split_table(results) -> str:
    rows = []
    for name, r in results.items():
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "(as before)"
        rows.append(f"| {name} | {params} | {r['accuracy']:.2%} | {r['roc_auc']:.4f} "
                    f"| {r['fit_s'] / 60:.1f} min | {r['epochs_run']} |")
    return ("| candidate | parameters | inner accuracy | inner ROC AUC | fit | epochs |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))


def _folds_table(results, how, default_params) -> str:
    rows = []
    for name, r in results.items():
        folds = r["folds"]
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or default_params
        acc = {t: [f[f"tta_{t}"]["accuracy"] for f in folds] for t in (False, True)}
        auc = {t: [f[f"tta_{t}"]["roc_auc"] for f in folds] for t in (False, True)}
        rows.append(
            f"| {name} | {params} | {len(folds)} | {' / '.join(f'{a:.1%}' for a in acc[False])} "
            f"| {np.mean(acc[False]):.2%} | {np.mean(auc[False]):.4f} "
            f"| {' / '.join(f'{a:.1%}' for a in acc[True])} | {np.mean(acc[True]):.2%} "
            f"| {np.mean(auc[True]):.4f} | {np.mean([f['fit_s'] for f in folds]) / 60:.1f} min "
            f"| {projected_s(r, how) / 60:.1f} min |")
    return HEADER + "\n" + "\n".join(rows)


def _winner_verdict(name) -> str:
    pair = decide(name)
    if pair is None:
        return "not every candidate has run its 3 folds yet: no decision."
    return (f"**{pair[0]}** has the best mean inner accuracy; flip TTA "
            + ("raises it, so `tta='auto'` becomes the default." if pair[1]
               else "does not raise it, so `tta=False` is the default."))


def _pair(name) -> str:
    pair = decide(name)
    return "none yet" if pair is None else f"**{pair[0]}**, TTA {'on' if pair[1] else 'off'}"


def _first_scored(run) -> str:
    """When a test run's first result was saved ("" before it has run)."""
    seeds = run.get("seeds")
    path = RESULTS / "transfer" / (f"{run['name']}_seed_{seeds[0]}.json" if seeds
                                   else f"{run['name']}.json")
    return json.loads(path.read_text())["machine"]["date"] if path.exists() else ""


def _scored_as() -> dict:
    """decision -> the test runs of ``bench_transfer.py`` that scored its choice,
    in the order they ran."""
    out = {}
    for run in sorted(DATA["test_runs"], key=_first_scored):
        if "chosen_by" in run:
            out.setdefault(run["chosen_by"], []).append(run["name"])
    return out


def _history_table() -> str:
    """One row per round: its candidates, what it decided, what was then scored
    on the test part."""
    scored = _scored_as()
    decided = {}
    for d in DATA["decisions"]:
        decided.setdefault(d["round"], []).append(d)
    lines = ["| round | how | candidates | chose | then scored on the test part as |",
             "|---|---|---|---|---|"]
    for rnd in DATA["rounds"]:
        n = rnd["round"]
        outcome = "; ".join(f"{d['sets']}: {_pair(d['name'])}" for d in decided.get(n, []))
        runs = ", ".join(f"`{r}`" for d in decided.get(n, []) for r in scored.get(d["name"], []))
        lines.append(f"| {n} | {rnd['what']} | {', '.join(candidates([n]))} | {outcome} "
                     f"| {runs} |")
    return "\n".join(lines)


INTRO = """# Choosing TransferClassifier's settings (inner validation)

Generated by `benchmarks/select_transfer_defaults.py` from
`transfer_candidates.json` (every candidate, its round and the rules) and
`transfer_selection/*.json`. Every candidate was fitted and scored inside the
*training* part of the Deitsch et al. split; the test part is never used
here. Each round's candidates and rule were committed before any of them
ran; each new round was started after the previous choice had been scored on
the test part (`transfer.md`), so the sequence of rounds was steered by that
split even though each choice was not.

{history}
"""

ROUND0 = """## Round 0: one inner split

Fitted on 1,476 images and scored on 492 held-out images of the training
part. Parameters other than those listed are the defaults of the time
(freeze=2, flips, 224 px, 12 epochs, no TTA, lr 1e-3, validation_fraction=0.1,
patience 5), random_state=0. The candidate with the best inner accuracy sets
the defaults; with 492 held-out images one standard error of an accuracy near
88 % is about 1.5 points, so differences of a point are not conclusive. This
single split kept the defaults of the time; it is superseded by the
three-fold comparison below. Fit times are indicative only: during the second
and third candidates the test suite ran on the same 2 cores.

{table}
{ran_on}"""

ROUNDS12 = """## Rounds 1 and 2: three inner folds

The training part of the paper split in 3 stratified inner folds
(random_state=1): each candidate (random_state=0) fitted on two folds (1,312
images) and scored on the third (656), without and with the four flip views
averaged at predict time (TTA). Parameters not listed are the defaults when
these ran (freeze=2, flips, 224 px, 12 epochs, validation_fraction=0.1,
patience 5). Rules fixed before the run: the best mean
inner accuracy sets the training defaults if its fit on all 1,968 training
images is projected within 20 minutes (projection: fit time x 1968/1312);
TTA becomes the default if it raises that candidate's mean inner accuracy.
Round 2 (cv_freeze1_300, cv_300_all_data) ran later on the same folds
under the same rule, over all candidates together, on an otherwise idle
machine.
Decision: {verdict}

{table}
{ran_on}"""

ROUND3 = """## Round 3, after the core rewrite

The same three inner folds, today's parameters: each candidate is today's
defaults (trainable_stages=1, 300 px, 20 epochs of one random flip,
validation_fraction=None) with the parameters listed. Fixed and committed
while the five seeds of the defaults after the core rewrite were running, to
be run only if their five-seed rule was not met; the same rule as above,
among these candidates (a tie keeps core_defaults). They ran with
`engine="auto"` (the frozen part in OpenVINO); during parts of the run the
test suite and CI ran on the same 2 cores, so their fit times are upper
bounds: core_dropout_05's first two folds took 30.1 and 42.9 min while CI ran
alongside, its third 9.8 min on an otherwise idle machine. The candidates
differ only in a dropout rate and a weight decay, which cost nothing, so the
projection here takes each candidate's fastest fold (the rule's timing check
was written for candidates of different cost on an idle machine; this change
was made after the fold times, and before the last candidate's accuracies,
were known). The five-seed runs of the chosen defaults measure every fit's
time directly.
Decision: {verdict}

{table}
{ran_on}"""

ROUND4 = """## Round 4: today's defaults and the best one-line configuration

Rules committed on {committed}, before any test score of their settings, after
round 3's inner results were known. (1) The defaults: every pair (round-3
candidate, flip TTA off/on) ranked by mean inner accuracy; the best within
the 20-minute projection becomes the defaults once its five test seeds
(`bench_transfer.py defaults`) have run, whatever they score.
Decision: {defaults}.
(2) The best one-line configuration: the same ranking over the candidates of
rounds 3 and 4 ({names}: auxiliary targets as columns of a 2-D y, scored on
the defect column; Lite1), ties to the higher inner ROC AUC; a candidate whose
first fold projects over 20 minutes stops there. Its five test seeds
(`bench_transfer.py aux_type_tta`) are scored once, whatever they give.
Decision: {best}.

{table}
{ran_on}"""

ROUND5 = """## Round 5: a second look

Rule committed on {committed}, before any score of its candidate, and after
round 4's best configuration was scored on the test part and missed the
accuracy it was held to: {names} (`backbone="efficientnet_lite2"`, the one
built-in backbone round 4 left out) joins the same ranking as rule (2) over
rounds 3-5. If round 4's choice still ranks first, it stands; if not, the new
choice's five test seeds run once (`bench_transfer.py lite2_tta`) and both
are reported, this one marked as chosen after the first's test scores were
known.
Decision: {verdict}

{table}
{ran_on}"""


def _second_look_verdict() -> str:
    first, again = decide("best"), decide("best_second_look")
    if again is None:
        return "not run yet."
    if again == first:
        return (f"round 4's choice (**{again[0]}**, TTA {'on' if again[1] else 'off'}) still "
                "ranks first: it stands as scored.")
    return (f"**{again[0]}**, TTA {'on' if again[1] else 'off'} ranks first: its five test "
            "seeds are the second look (`bench_transfer.py lite2_tta`).")


def render(write=True) -> str:
    """The page, from every saved result (``write=False``: returned only)."""
    ran = {n: _ran([n]) for n in range(6)}
    all_ran = {name: r for by_round in ran.values() for name, r in by_round.items()}
    folds12 = {**ran[1], **ran[2]}
    parts = [INTRO.format(history=_history_table()),
             ROUND0.format(table=_split_table(ran[0]), ran_on=_ran_on(ran[0]))]
    if folds12:
        parts.append(ROUNDS12.format(
            verdict=_winner_verdict("three_folds"), ran_on=_ran_on(folds12),
            table=_folds_table(folds12, decision("three_folds")["projection"],
                               "(the defaults then: image_size=None, max_epochs=12)")))
    if ran[3]:
        parts.append(ROUND3.format(
            verdict=_winner_verdict("core"), ran_on=_ran_on(ran[3]),
            table=_folds_table(ran[3], decision("core")["projection"], "(today's defaults)")))
    if ran[4] or decide("defaults"):
        parts.append(ROUND4.format(
            committed=round_of(4)["committed"], defaults=_pair("defaults"),
            names=", ".join(candidates([4])), ran_on=_ran_on(ran[4]),
            best=(_pair("best") if decide("best") else "not every round-4 candidate has "
                  f"run ({', '.join(ran[4]) or 'none'} so far)"),
            table=_folds_table(ran[4], decision("best")["projection"], "(today's defaults)")
            if ran[4] else ""))
    parts.append(ROUND5.format(
        committed=round_of(5)["committed"], names=", ".join(candidates([5])),
        verdict=_second_look_verdict(), ran_on=_ran_on(ran[5]),
        table=_folds_table(ran[5], decision("best_second_look")["projection"],
                           "(today's defaults)") if ran[5] else ""))
    text = "\n".join(parts) + "\n" + machines_section(
        [(name, r["machine"]) for name, r in all_ran.items()], what="Candidates") + "\n"
    if write:
        (RESULTS / "transfer_selection.md").write_text(text)
    return text


if __name__ == "__main__":
    for name in sys.argv[1:]:
        run(name)
    print(render())
