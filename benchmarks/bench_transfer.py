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
``default_seed_1`` .. ``default_seed_4`` (the same with other seeds),
``first_cv_defaults``, ``previous_defaults``, ``freeze_backbone``, ``freeze_3``, ``freeze_none``.
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
from _machine import describe_machine, machine_markdown  # noqa: E402

from sktransfer import PretrainedFeatureExtractor, TransferClassifier  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PAPER = {"VGG-19 fine-tuned (Deitsch et al. 2019)": (0.8842, 0.9442),
         "SVM, KAZE/VGG features (Deitsch et al. 2019)": (0.8244, 0.8851)}


def _defaults():
    p = TransferClassifier().get_params()
    return ", ".join(f"{k}={p[k]!r}" for k in
                     ("freeze", "image_size", "augment", "tta", "max_epochs",
                      "validation_fraction"))


def _tta_used(params):
    """'on'/'off' from a result's stored parameters (none stored: the old default, off)."""
    if not params:
        return "off"
    kw = {k: ast.literal_eval(params[k]) for k in ("tta", "augment")}
    return "on" if TransferClassifier(**kw)._use_tta() else "off"


def models():
    return {
        "frozen_lr": ("PretrainedFeatureExtractor + StandardScaler + LogisticRegression "
                      "(C by 5-fold CV in the training part)",
                      lambda: make_pipeline(
                          PretrainedFeatureExtractor(), StandardScaler(),
                          GridSearchCV(LogisticRegression(max_iter=3000),
                                       {"C": np.logspace(-4, 0, 10)}, cv=5))),
        "default": (f"TransferClassifier() with default settings ({_defaults()})",
                    lambda: TransferClassifier(random_state=0, verbose=1)),
        # The defaults again with other seeds (head initialisation, shuffling,
        # dropout): how much of a difference between rows one seed explains.
        **{f"default_seed_{k}": (f"TransferClassifier(random_state={k}) with default settings",
                                 lambda k=k: TransferClassifier(random_state=k, verbose=1))
           for k in (1, 2, 3, 4)},
        "first_cv_defaults": ("TransferClassifier(max_epochs=6, validation_fraction=0.1, "
                              "tta='auto'): the defaults the first inner CV chose",
                              lambda: TransferClassifier(max_epochs=6, validation_fraction=0.1,
                                                         tta="auto", random_state=0,
                                                         verbose=1)),
        "previous_defaults": ("TransferClassifier(image_size=None, max_epochs=12, tta=False): "
                              "the defaults until inner CV chose new ones",
                              lambda: TransferClassifier(image_size=None, max_epochs=12,
                                                         tta=False, random_state=0, verbose=1)),
        "freeze_backbone": ("TransferClassifier(freeze='backbone')",
                            lambda: TransferClassifier(freeze="backbone", random_state=0,
                                                       verbose=1)),
        "freeze_3": ("TransferClassifier(freeze=3)",
                     lambda: TransferClassifier(freeze=3, random_state=0, verbose=1)),
        "freeze_none": ("TransferClassifier(freeze='none', max_epochs=3, lr=3e-4)",
                        lambda: TransferClassifier(freeze="none", max_epochs=3, lr=3e-4,
                                                   random_state=0, verbose=1)),
    }


def paper_split():
    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    strata = np.char.add(probability.astype(str), cell_type)
    train, test = train_test_split(np.arange(len(paths)), test_size=0.25, stratify=strata,
                                   random_state=0)
    return paths[train], y[train], paths[test], y[test]


def default_seed_results():
    """Results of the default settings: random_state 0, then the other seeds."""
    return [json.loads(p.read_text()) for p in
            [RESULTS / "transfer" / "default.json",
             *sorted((RESULTS / "transfer").glob("default_seed_*.json"))] if p.exists()]


def five_seed_bar_met(seeds):
    """The bar over seeds 0-4: mean accuracy >= 88.5 %, every fit <= 20 min.

    Fixed after seeds 0-2 had run (88.62 % on average) and before seeds 3-4 ran.
    """
    return (len(seeds) == 5 and np.mean([r["accuracy"] for r in seeds]) >= 0.885
            and max(r["fit_s"] for r in seeds) <= 20 * 60)


def run(name):
    label, make = models()[name]
    X_train, y_train, X_test, y_test = paper_split()
    model = make()
    print(f"== {name}: {label}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    proba = model.predict_proba(X_test)[:, 1]
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
        result["fast_path"] = model.fast_path_
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


def render():
    rows, machine = [], None
    for name in models():
        path = RESULTS / "transfer" / f"{name}.json"
        if path.exists():
            r = json.loads(path.read_text())
            machine = r["machine"]
            label = models()[name][0]  # what the name means now, e.g. after a rename
            # Results from before the params were stored ran under the
            # defaults of their day: 224 px, 12 epochs at most, no TTA.
            size = r.get("image_size", 224)
            tta = _tta_used(r.get("params")) if "epochs_run" in r else ""
            rows.append(
                f"| {label} | {size} | {tta} | {r['accuracy']:.2%} | {r['f1']:.3f} "
                f"| {r['roc_auc']:.4f} | {r['fit_s'] / 60:.1f} min | {r['predict_s']:.0f} s "
                f"| {r.get('epochs_run', '')} |")
    seeds = default_seed_results()
    spread = ""
    if len(seeds) > 1:
        acc = np.array([r["accuracy"] for r in seeds])
        seeds_met = five_seed_bar_met(seeds)
        spread = (f"\nDefault settings over {len(seeds)} seeds (random_state 0 and the "
                  f"default_seed rows): accuracy {acc.mean():.2%} ± {acc.std(ddof=1):.2%} "
                  f"(min {acc.min():.2%}, max {acc.max():.2%}), ROC AUC "
                  f"{np.mean([r['roc_auc'] for r in seeds]):.4f}, fit "
                  f"{np.mean([r['fit_s'] for r in seeds]) / 60:.1f} min on average. One seed's "
                  "test accuracy has a standard error of about 1.3 points on 656 images "
                  "(shared by all seeds: the same test images).\n"
                  "\nBar over seeds 0-4 (mean >= 88.5 %, every fit <= 20 min; this rule "
                  "was fixed after seeds 0-2 and before seeds 3-4 ran): "
                  + ("**met**" if seeds_met else "**not met**"
                     if len(seeds) == 5 else "not all five seeds have run") + ".\n")
    paper = "\n".join(f"| {k} | | | {a:.2%} | | {auc:.4f} | | | |"
                      for k, (a, auc) in PAPER.items())
    bar = ""
    default = RESULTS / "transfer" / "default.json"
    if default.exists():
        d = json.loads(default.read_text())
        met = d["accuracy"] >= 0.885 and d["fit_s"] <= 20 * 60
        bar = (f"\nBar on random_state=0 (default settings >= 88.5 % in <= 20 min): "
               f"**{'met' if met else 'NOT met'}**"
               f" ({d['accuracy']:.2%} in {d['fit_s'] / 60:.1f} min).\n")
    text = f"""# Fine-tuning on ELPV (Deitsch et al. 2019 protocol)

Generated by `benchmarks/bench_transfer.py` from `transfer/*.json`.
Binary target defect probability > 0.5; one 75/25 split stratified by
probability x cell type (random_state=0): 1,968 training and 656 test images.
Backbone: EfficientNet-Lite0 (ImageNet) at the input size given. Times on the
machine below. The freeze rows were run when the defaults were 224 px, 12
epochs at most, validation_fraction=0.1 and no TTA; their labels give what
differed then. The two rows of earlier defaults are kept for comparison.

| model | input px | TTA | accuracy | F1 | ROC AUC | fit | predict | epochs |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{paper}
{bar}{spread}
## Machine

{machine_markdown(machine) if machine else ''}
"""
    (RESULTS / "transfer.md").write_text(text)
    print(text)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        run(name)
    render()
