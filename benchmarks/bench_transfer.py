"""Fine-tuning on ELPV with the protocol of Deitsch et al. (Solar Energy, 2019).

Binary target: defect probability > 0.5. One 75/25 split stratified by
probability x cell type (random_state=0). Every model is fitted on the same
training part and scored on the same test part; nothing is tuned on the test
part (TransferClassifier's early stopping uses its own validation split
inside the training part; the logistic regression's C is picked by 5-fold CV
inside the training part).

Run: ``python benchmarks/bench_transfer.py [MODEL ...]`` (needs the ``bench``
extra). Each model's result goes to ``benchmarks/results/transfer/<model>.json``
and all of them are rendered into ``benchmarks/results/transfer.md``.
Models: ``frozen_lr``, ``default`` (TransferClassifier() as shipped, random_state=0),
``default_seed_1`` .. ``default_seed_4`` (the same with other seeds).

Rows whose name starts with ``before_core`` and the rows ``first_cv_defaults``,
``previous_defaults``, ``freeze_backbone``, ``freeze_3`` and ``freeze_none``
ran before issue #12 rewrote the fine-tuning core: the parameter was then
``freeze`` (``freeze=2`` trained the last two of 7 block groups, the same
layers as ``trainable_stages=1`` now) and an epoch with ``augment="flips"``
showed all four flips of every image. They are kept as results, not re-run.

The rule for the defaults after #12, fixed (committed) before any of their
test scores existed: ``TransferClassifier()`` trains as much as before
(``max_epochs=20`` epochs of one random flip = the 5 epochs of all four flips
chosen by inner cross-validation, the same number of optimizer steps); the bar
is the one #12 keeps, mean accuracy over seeds 0-4 >= 88.5 % with every fit
<= 20 min. If it is not met, the defaults are chosen again by inner 3-fold
cross-validation inside the training part (``select_transfer_defaults.py``),
never on the test part.
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
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from _machine import (  # noqa: E402
    describe_machine,
    machine_kind,
    machine_markdown,
    require_reference_cpu,
)

from sktransfer import PretrainedFeatureExtractor, TransferClassifier  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PAPER = {"VGG-19 fine-tuned (Deitsch et al. 2019)": (0.8842, 0.9442),
         "SVM, KAZE/VGG features (Deitsch et al. 2019)": (0.8244, 0.8851)}


def _defaults():
    p = TransferClassifier().get_params()
    return ", ".join(f"{k}={p[k]!r}" for k in
                     ("trainable_stages", "image_size", "augment", "tta", "max_epochs",
                      "validation_fraction"))


def _tta_used(params):
    """'on'/'off' from a result's stored parameters (none stored: the old default, off)."""
    if not params:
        return "off"
    kw = {k: ast.literal_eval(params[k]) for k in ("tta", "augment")}
    return "on" if TransferClassifier(**kw)._use_tta() else "off"


BEFORE_CORE = ("before #12: freeze=2, 5 epochs x all four flips, validation_fraction=None, "
               "300 px")


def _round4(seed):
    from select_transfer_defaults import round4_defaults

    # the parameters below are round4_defaults()'s choice written out
    assert round4_defaults() == ("core_defaults", True), round4_defaults()
    return TransferClassifier(random_state=seed, verbose=1, dropout=0.2, tta="auto")


def _row_b_choice(second=False):
    """#14 row (b): ``round4_best()``'s candidate, TTA, its parameters and its
    auxiliary target's kind (None: the defect alone); None before it is decided.

    ``second``: the fifth round's second look, ``round5_best()``'s choice;
    None also when it is round 4's (row (b) then stands as scored).
    """
    from select_transfer_defaults import (
        CORE_CANDIDATES,
        ROUND4_CANDIDATES,
        ROUND5_CANDIDATES,
        round4_best,
        round5_best,
    )

    best = round4_best()
    if second:
        again = round5_best()
        best = None if again in (None, best) else again
    if best is None:
        return None
    name, tta = best
    params = dict({**CORE_CANDIDATES, **ROUND4_CANDIDATES, **ROUND5_CANDIDATES}[name])
    return name, tta, params, params.pop("aux", None)


def _row_b(seed, second=False):
    """Row (b)'s model with seed ``seed``, and its auxiliary target's kind."""
    choice = _row_b_choice(second)
    if choice is None:
        raise SystemExit("row (b): " + (
            "the fifth round has not run, or it kept round 4's choice: no second look."
            if second else "not every round-4 candidate has run; run "
            "select_transfer_defaults.py with the ones missing first."))
    _, tta, params, aux = choice
    return TransferClassifier(random_state=seed, verbose=1, tta=tta, **params), aux


def _row_b_label(seed, second=False):
    rule = "round5_best()" if second else "round4_best()"
    choice = _row_b_choice(second)
    if choice is None:
        return f"#14 row (b), seed {seed}: {rule}'s choice (not decided yet)"
    name, tta, params, aux = choice
    args = ", ".join([f"random_state={seed}", *(f"{k}={v!r}" for k, v in params.items()),
                      f"tta={tta}"])
    target = {None: "", "type": " with y = (defect, cell type)",
              "level": " with y = (defect, defect probability level)"}[aux]
    look = ", a second look" if second else ""
    return (f"TransferClassifier({args}){target}: #14 row (b){look}, {rule}'s choice "
            f"({name}), engine='auto'")


def models():
    """name -> (label, factory); factory None: a result kept from before #12."""
    return {
        "frozen_lr": ("PretrainedFeatureExtractor() + StandardScaler + LogisticRegression "
                      "(C by 5-fold CV in the training part)",
                      lambda: make_pipeline(
                          PretrainedFeatureExtractor(), StandardScaler(),
                          GridSearchCV(LogisticRegression(max_iter=3000),
                                       {"C": np.logspace(-4, 0, 10)}, cv=5))),
        "default": (f"TransferClassifier() with default settings ({_defaults()})",
                    lambda: TransferClassifier(random_state=0, verbose=1)),
        # The defaults again with other seeds (head initialisation, shuffling,
        # views, dropout): how much of a difference between rows one seed explains.
        **{f"default_seed_{k}": (f"TransferClassifier(random_state={k}) with default settings",
                                 lambda k=k: TransferClassifier(random_state=k, verbose=1))
           for k in (1, 2, 3, 4)},
        # #15: the frozen part from an exported graph (engine="auto": OpenVINO
        # on a CPU with AMX, else ONNX Runtime). The default rows above ran
        # before engine= existed, with torch.
        "engine_auto_seed_0": ("TransferClassifier(random_state=0) with default settings, "
                               "engine='auto' (#15)",
                               lambda: TransferClassifier(random_state=0, verbose=1)),
        # The defaults the third round of inner CV chose (dropout 0.5,
        # select_transfer_defaults.py), engine="auto", seeds 0-4: the bar of
        # five_seed_bar_met, fixed before any of these ran.
        **{f"round3_seed_{k}": (f"TransferClassifier(random_state={k}) with the defaults "
                                "of the third inner-CV round (dropout=0.5), engine='auto'",
                                lambda k=k: TransferClassifier(random_state=k, verbose=1))
           for k in range(5)},
        # The defaults the fourth round chose (select_transfer_defaults.py,
        # round4_defaults(): the third round's core_defaults, i.e. dropout
        # 0.2, with flip TTA), engine="auto", seeds 0-4; they become the
        # defaults once all five have run, whatever they score.
        **{f"round4_seed_{k}": (f"TransferClassifier(random_state={k}, dropout=0.2, tta='auto'):"
                                " the fourth inner-CV round's choice, engine='auto'",
                                lambda k=k: _round4(k))
           for k in range(5)},
        # #14 row (b): sktransfer's best one-line configuration, chosen by
        # select_transfer_defaults.round4_best() on inner folds of the training
        # part (rule committed in 1c38841, before any of these ran); scored
        # once per seed, whatever they give. Bar: mean over seeds 0-4 >=
        # 89.5 % accuracy and ROC AUC >= 0.945, every fit <= 20 min.
        **{f"row_b_seed_{k}": (_row_b_label(k), lambda k=k: _row_b(k)) for k in range(5)},
        # #14 row (b), a second look: round5_best()'s choice if it is not round
        # 4's (rule committed before any fifth-round score, after the rows
        # above were scored), scored once per seed; the same bar.
        **{f"row_b2_seed_{k}": (_row_b_label(k, True), lambda k=k: _row_b(k, True))
           for k in range(5)},
        "before_core_frozen_lr": ("PretrainedFeatureExtractor() + StandardScaler + "
                                  "LogisticRegression, before #12 (224 px)", None),
        "before_core_default": (f"TransferClassifier(random_state=0), {BEFORE_CORE}", None),
        **{f"before_core_seed_{k}": (f"TransferClassifier(random_state={k}), {BEFORE_CORE}",
                                     None) for k in (1, 2, 3, 4)},
        "first_cv_defaults": ("TransferClassifier(max_epochs=6, validation_fraction=0.1, "
                              "tta='auto'): the defaults the first inner CV chose "
                              "(before #12)", None),
        "previous_defaults": ("TransferClassifier(image_size=None, max_epochs=12, tta=False): "
                              "the defaults until inner CV chose new ones (before #12)", None),
        "freeze_backbone": ("TransferClassifier(freeze='backbone') (before #12; now "
                            "trainable_stages=0)", None),
        "freeze_3": ("TransferClassifier(freeze=3) (before #12: the last three of 7 block "
                     "groups)", None),
        "freeze_none": ("TransferClassifier(freeze='none', max_epochs=3, lr=3e-4) (before #12; "
                        "now trainable_stages='all')", None),
    }


def paper_split():
    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    strata = np.char.add(probability.astype(str), cell_type)
    train, test = train_test_split(np.arange(len(paths)), test_size=0.25, stratify=strata,
                                   random_state=0)
    return paths[train], y[train], paths[test], y[test]


#: The rows that describe ``TransferClassifier()`` as it is now (the README's
#: headline): the defaults the fourth inner-CV round chose (dropout 0.2, flip TTA).
CURRENT_DEFAULTS = "round4"


def default_seed_results(prefix="default"):
    """Results of the default settings: random_state 0, then the other seeds.

    ``prefix="before_core"``: the same from before issue #12;
    ``prefix="engine_auto"``: the rows ``engine_auto_seed_0`` .. ``_4``.
    """
    first = RESULTS / "transfer" / ("default.json" if prefix == "default"
                                    else f"{prefix}_default.json")
    seeds = sorted((RESULTS / "transfer").glob(f"{prefix}_seed_*.json"))
    return [json.loads(p.read_text()) for p in [first, *seeds] if p.exists()]


def five_seed_bar_met(seeds):
    """The bar over seeds 0-4: mean accuracy >= 88.5 %, every fit <= 20 min.

    Fixed after seeds 0-2 of the first defaults had run (88.62 % on average)
    and before their seeds 3-4 ran; kept by issue #12 for the defaults after it.
    """
    return (len(seeds) == 5 and np.mean([r["accuracy"] for r in seeds]) >= 0.885
            and max(r["fit_s"] for r in seeds) <= 20 * 60)


def row_b_results(second=False):
    """The five-seed results of #14's row (b), or fewer while they run.

    When ``round4_best()`` picks the fourth round's defaults with TTA, row (b)
    is the same model as the ``round4`` rows and those are its results.
    ``second``: the results of the fifth round's second look (``row_b2`` rows).
    """
    from select_transfer_defaults import round4_best

    if not second and round4_best() == ("core_defaults", True):
        return default_seed_results("round4")
    paths = sorted((RESULTS / "transfer").glob(f"row_b{'2' if second else ''}_seed_*.json"))
    return [json.loads(p.read_text()) for p in paths]


def row_b_bar_met(seeds):
    """#14's bar for row (b): over seeds 0-4, mean accuracy >= 89.5 % and mean
    ROC AUC >= 0.945, every fit <= 20 min."""
    return (len(seeds) == 5 and np.mean([r["accuracy"] for r in seeds]) >= 0.895
            and np.mean([r["roc_auc"] for r in seeds]) >= 0.945
            and max(r["fit_s"] for r in seeds) <= 20 * 60)


def _row_b_summary():
    from select_transfer_defaults import round4_best, round5_best

    best = round4_best()
    if best is None:
        return ("\n#14 row (b), sktransfer's best one-line configuration: not chosen yet "
                "(not every round-4 candidate of `select_transfer_defaults.py` has run).\n")
    text = _row_b_seeds_summary(
        row_b_results(), f"\n#14 row (b), sktransfer's best one-line configuration: "
        f"`round4_best()` chose {best[0]} with TTA {'on' if best[1] else 'off'} on the inner "
        "folds")
    second = round5_best()
    if second is not None and second != best:
        text += _row_b_seeds_summary(
            row_b_results(second=True), f"\n#14 row (b), a second look (fifth inner-CV round, "
            f"chosen after the first look's test scores were known): `round5_best()` chose "
            f"{second[0]} with TTA {'on' if second[1] else 'off'} on the inner folds")
    return text


def _row_b_seeds_summary(seeds, head):
    if not seeds:
        return head + "; its test seeds have not run.\n"
    acc = [r["accuracy"] for r in seeds]
    verdict = ("**met**" if row_b_bar_met(seeds) else "**not met**" if len(seeds) == 5
               else "not all five seeds have run")
    return (f"{head}. Test seeds ({', '.join(f'{a:.2%}' for a in acc)}): accuracy "
            f"{np.mean(acc):.2%}, ROC AUC {np.mean([r['roc_auc'] for r in seeds]):.4f}, fit "
            f"{max(r['fit_s'] for r in seeds) / 60:.1f} min at most. Bar (mean over seeds 0-4 "
            f">= 89.5 % and ROC AUC >= 0.945, every fit <= 20 min): {verdict}.\n")


def run(name):
    label, make = models()[name]
    if make is None:
        raise SystemExit(f"{name}: a result kept from before issue #12, not re-runnable "
                         "with today's parameters.")
    if name != "frozen_lr":
        require_reference_cpu(name)  # the fine-tuning rows' bars include fit <= 20 min
    X_train, y_train, X_test, y_test = paper_split()
    model, aux = made if isinstance(made := make(), tuple) else (made, None)
    print(f"== {name}: {label}", file=sys.stderr, flush=True)
    target = y_train
    if aux is not None:
        from select_transfer_defaults import _aux_target

        target = np.column_stack([y_train, _aux_target(aux, X_train)])
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
    if not isinstance(model, TransferClassifier):
        result["image_size"] = model[0].image_size_  # the extractor's
    if isinstance(model, TransferClassifier):
        result["params"] = {k: repr(v) for k, v in model.get_params().items()
                            if k not in ("verbose", "random_state")}
        result["image_size"] = model.image_size_
        result["epochs_run"] = model.n_epochs_
        result["frozen_cached"] = model.frozen_cached_
        result["history"] = [{k: v for k, v in row.items()
                              if isinstance(v, (int, float, bool, str))}
                             for row in model.history_]
        result["trainable_parameters"] = sum(
            p.numel() for p in model.model_.parameters() if p.requires_grad)
    if isinstance(model, TransferClassifier):
        # kept outside the repository, to re-score without refitting
        import joblib
        joblib.dump(model, f"/tmp/sktransfer-bench-{name}.joblib")
    (RESULTS / "transfer").mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"   accuracy {result['accuracy']:.4f}  ROC AUC {result['roc_auc']:.4f}  "
          f"fit {fit_s:.0f} s", file=sys.stderr, flush=True)


def _five_seed_summary(prefix, title, when):
    seeds = default_seed_results(prefix)
    if len(seeds) < 2:
        return ""
    acc = np.array([r["accuracy"] for r in seeds])
    verdict = ("**met**" if five_seed_bar_met(seeds) else "**not met**"
               if len(seeds) == 5 else "not all five seeds have run")
    return (f"\n{title}, default settings over {len(seeds)} seeds "
            f"({', '.join(f'{a:.2%}' for a in acc)}): accuracy {acc.mean():.2%} ± "
            f"{acc.std(ddof=1):.2%} (std), ROC AUC "
            f"{np.mean([r['roc_auc'] for r in seeds]):.4f}, fit "
            f"{np.mean([r['fit_s'] for r in seeds]) / 60:.1f} min on average (max "
            f"{max(r['fit_s'] for r in seeds) / 60:.1f}). Bar over seeds 0-4 (mean >= 88.5 %, "
            f"every fit <= 20 min; {when}): {verdict}.\n")


def _machines(kinds) -> str:
    """Each kind of machine with the rows that ran on it (the latest one's details)."""
    parts = ["## Machines" if len(kinds) > 1 else "## Machine", ""]
    for kind, ran in kinds.items():
        if len(kinds) > 1:
            parts += [f"### {kind}", "", "Rows: " + ", ".join(n for n, _ in ran), ""]
        latest = max((m for _, m in ran), key=lambda m: m.get("date", ""))
        parts += [machine_markdown(latest), ""]
    return "\n".join(parts)


def render():
    rows, kinds = [], {}
    # each models() call reads the selection rounds' results for the row-(b) labels
    labels = {name: label for name, (label, _) in models().items()}
    for name, label in labels.items():  # what each name means now, e.g. after a rename
        path = RESULTS / "transfer" / f"{name}.json"
        if path.exists():
            r = json.loads(path.read_text())
            kinds.setdefault(machine_kind(r["machine"]), []).append((name, r["machine"]))
            # Results from before the params were stored ran under the
            # defaults of their day: 224 px, 12 epochs at most, no TTA.
            size = r.get("image_size", 224)
            tta = _tta_used(r.get("params")) if "epochs_run" in r else ""
            rows.append(
                f"| {label} | {size} | {tta} | {r['accuracy']:.2%} | {r['f1']:.3f} "
                f"| {r['roc_auc']:.4f} | {r['fit_s'] / 60:.1f} min | {r['predict_s']:.0f} s "
                f"| {r.get('epochs_run', '')} |")
    spread = "".join(_five_seed_summary(*args) for args in [
        ("before_core", "Before #12 (before_core rows)",
         "this rule was fixed after seeds 0-2 and before seeds 3-4 ran"),
        ("default", "After #12 (default rows)",
         "the same rule, committed before any of these seeds ran"),
        ("engine_auto", "After #15, engine='auto' (engine_auto rows, dropout 0.2)",
         "the same rule"),
        ("round3", "Defaults of the third inner-CV round (round3 rows, dropout 0.5)",
         "the same rule, committed before any of these seeds ran"),
        ("round4", "The fourth inner-CV round's choice (round4 rows, dropout 0.2, flip TTA)",
         "the same rule, committed before any of these seeds ran")]) + _row_b_summary()
    paper = "\n".join(f"| {k} | | | {a:.2%} | | {auc:.4f} | | | |"
                      for k, (a, auc) in PAPER.items())
    text = f"""# Fine-tuning on ELPV (Deitsch et al. 2019 protocol)

Generated by `benchmarks/bench_transfer.py` from `transfer/*.json`.
Binary target defect probability > 0.5; one 75/25 split stratified by
probability x cell type (random_state=0): 1,968 training and 656 test images.
Backbone: EfficientNet-Lite0 (ImageNet) unless the row names another, at the
input size given. Times on the machines below (each lists the rows that ran
on it: fit times compare only within one). Rows marked "before #12" ran
before the fine-tuning core was rewritten (issue #12: `freeze` became
`trainable_stages`, an epoch became one view per image); the freeze rows ran
when the defaults were 224 px, 12 epochs at most, validation_fraction=0.1
and no TTA; their labels give what differed then.

| model | input px | TTA | accuracy | F1 | ROC AUC | fit | predict | epochs |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{paper}
{spread}
{_machines(kinds)}"""
    (RESULTS / "transfer.md").write_text(text)
    print(text)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        run(name)
    render()
