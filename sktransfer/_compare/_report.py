"""Tables, learning curves and result files of ``sktransfer compare``."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from ._models import MODELS

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "fit_s", "predict_s",
           "trainable_parameters")


def summarize(results):
    """Mean and standard deviation over folds, per model and train size."""
    ok = results[results["status"] == "ok"]
    cols = [c for c in METRICS if c in ok]
    return ok.groupby(["model", "train_size"], sort=False)[cols].agg(["mean", "std"])


def format_table(results) -> str:
    """The largest train size's scores, one line per model."""
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return "No model finished."
    n = ok["train_size"].max()
    lines = [f"{'model':<20} {'accuracy':>15} {'bal. acc.':>9} {'F1 macro':>8} "
             f"{'ROC AUC':>8} {'fit s':>8} {'pred. s':>7} {'parameters':>11}"]
    for name, g in ok[ok["train_size"] == n].groupby("model", sort=False):
        lines.append(
            f"{name:<20} {g['accuracy'].mean():>8.3f} ± {g['accuracy'].std(ddof=0):.3f} "
            f"{g['balanced_accuracy'].mean():>9.3f} {g['f1_macro'].mean():>8.3f} "
            f"{g['roc_auc'].mean():>8.3f} {g['fit_s'].mean():>8.1f} "
            f"{g['predict_s'].mean():>7.1f} {int(g['trainable_parameters'].mean()):>11,}")
    skipped = results[results["status"] != "ok"]
    if len(skipped):
        lines.append(f"({len(skipped)} fit(s) skipped for the time budget.)")
    return f"Train size {n} (mean ± std over folds):\n" + "\n".join(lines)


def plot_learning_curve(results, ax=None, metric: str = "accuracy"):
    """``metric`` against training-set size, mean ± std over folds, per model."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    ok = results[results["status"] == "ok"]
    for name, g in ok.groupby("model", sort=False):
        stats = g.groupby("train_size")[metric].agg(["mean", "std"]).fillna(0)
        ax.plot(stats.index, stats["mean"], marker="o", label=MODELS[name].label
                if name in MODELS else name)
        ax.fill_between(stats.index, stats["mean"] - stats["std"],
                        stats["mean"] + stats["std"], alpha=0.15)
    ax.set_xscale("log")
    sizes = sorted(ok["train_size"].unique())
    ax.set_xticks(sizes, [str(int(n)) for n in sizes])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("training images")
    ax.set_ylabel(f"test {metric.replace('_', ' ')}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def write_results(results, out) -> None:
    """``results.csv``, ``results.json`` and ``learning_curve.png`` in ``out``.

    Written to a temporary folder first and moved in at the end, so a failed
    run never leaves files that look like a success.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as tmp:
        tmp = Path(tmp)
        results.to_csv(tmp / "results.csv", index=False)
        payload = {
            **dict(results.attrs.items()),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "torch": torch.__version__},
            "rows": json.loads(results.to_json(orient="records")),
        }
        # default=repr: a model parameter that is not JSON (a class, say) is
        # recorded as its repr rather than failing the run at its very end.
        (tmp / "results.json").write_text(json.dumps(payload, indent=2, default=repr) + "\n")
        ax = plot_learning_curve(results)
        ax.set_title(f"{results.attrs.get('dataset', '')}: accuracy vs training images")
        ax.figure.tight_layout()
        ax.figure.savefig(tmp / "learning_curve.png", dpi=120)
        plt.close(ax.figure)
        for name in ("results.csv", "results.json", "learning_curve.png"):
            os.replace(tmp / name, out / name)
