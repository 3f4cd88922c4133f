"""``report.html`` of ``sktransfer compare``: one self-contained page a person opens.

Every picture is a PNG embedded in the page (``data:`` URLs); the page has
no script, and no style, font or image from anywhere else, so it opens
offline in any browser and can be mailed as one file. Its sections, in
order (:data:`SECTIONS`): the learning curves, the scores, the confusion
matrices, the fine-tuned model's most confident mistakes with Grad-CAM
heatmaps, the images where it and the best classical model disagree, the
images skipped, and the settings and machine.
"""

from __future__ import annotations

import base64
import html
import io
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._models import CLASSICAL_MODELS, MODELS

#: The report's sections: (anchor, title), in order.
SECTIONS = (
    ("curves", "Learning curves"),
    ("scores", "Scores"),
    ("confusion", "Confusion matrices"),
    ("mistakes", "The fine-tuned model's most confident mistakes"),
    ("disagreements", "Where the fine-tuned and the best classical model disagree"),
    ("skipped", "Images skipped"),
    ("settings", "Settings and machine"),
)
#: Packages whose versions the report records.
PACKAGES = ("sktransfer", "torch", "torchvision", "timm", "scikit-learn", "skorch", "numpy",
            "onnxruntime", "openvino", "scikit-image", "pandas", "matplotlib")
#: Images per grid of mistakes or disagreements.
N_SHOWN = 12
DPI = 90


@dataclass
class Evidence:
    """What the report shows beyond the results table.

    Attributes
    ----------
    images : images
        The images compared (in any accepted form), indexed as ``y``.
    y : ndarray of int
        Their class codes (``classes`` indexes them).
    classes : ndarray
        The class labels.
    tests : dict of int to ndarray
        Each fold's test positions.
    predictions : dict of (str, int) to Prediction
        Each model's fit on each fold at the largest training size.
    """

    images: object
    y: np.ndarray
    classes: np.ndarray
    tests: dict
    predictions: dict

    def folds_of(self, model: str) -> list[int]:
        return sorted(f for m, f in self.predictions if m == model)

    def pooled(self, model: str):
        """``(positions, predicted codes, scores)`` over every test fold the model ran."""
        folds = self.folds_of(model)
        if not folds:
            return None
        pos = np.concatenate([self.tests[f] for f in folds])
        pred = np.concatenate([self.predictions[model, f].pred for f in folds])
        scores = np.concatenate([self.predictions[model, f].scores for f in folds])
        return pos, pred, scores


def write_report(path, results, evidence: Evidence, *, verbose: bool = True) -> Path:
    """Write ``report.html`` of a ``compare`` run to ``path`` (atomically)."""
    from tqdm.auto import tqdm

    path = Path(path)
    parts = []
    steps = [_curves, _scores, _confusion, _mistakes, _disagreements, _skipped, _settings]
    with tqdm(total=len(steps), desc=f"writing {path.name}", unit="section",
              disable=not verbose, file=sys.stderr) as bar:
        for (anchor, title), step in zip(SECTIONS, steps):
            bar.set_postfix_str(title)
            try:
                body = step(results, evidence)
            except Exception as exc:  # one section must not cost the run its report
                body = (f'<p class="note">This section could not be drawn: '
                        f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>")
            parts.append(f'<section id="{anchor}">\n<h2>{html.escape(title)}</h2>\n'
                         f"{body}\n</section>")
            bar.update()
    page = _page(results, "\n".join(parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial", delete=False,
                                     encoding="utf-8") as f:
        f.write(page)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # as a file opened for writing would be
    os.replace(f.name, path)
    return path


# -- the page -------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .note { color: #555; font-size: .9em; }
nav a { margin-right: 1em; } code { background: #f3f3f3; padding: 0 .2em; }
"""


def _page(results, body: str) -> str:
    attrs = results.attrs
    name = html.escape(str(attrs.get("dataset", "")))
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in SECTIONS)
    summary = (f"{attrs.get('n_images', '?')} images, classes "
               f"{html.escape(', '.join(map(str, attrs.get('classes', []))))}; "
               f"{attrs.get('cv', '?')}-fold cross-validation at training sizes "
               f"{', '.join(map(str, attrs.get('train_sizes', [])))}; "
               f"random_state={attrs.get('random_state')}"
               + ("; quick run (a smoke test)" if attrs.get("quick") else ""))
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>sktransfer compare: {name}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n<h1>Does transfer learning help on {name}?</h1>\n"
            f"<p>{summary}.</p>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def _png(fig) -> str:
    """A figure as an embedded PNG (and closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="">'


def _label(model: str) -> str:
    return MODELS[model].label if model in MODELS else model


def _ok(results):
    return results[results["status"] == "ok"]


# -- the sections -----------------------------------------------------------------------


def _curves(results, evidence) -> str:
    import matplotlib.pyplot as plt

    from ._report import plot_learning_curve

    ok = _ok(results)
    if ok.empty:
        return "<p>No model finished.</p>"
    metrics = [m for m in ("accuracy", "balanced_accuracy", "roc_auc")
               if m in ok and ok[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        plot_learning_curve(results, ax=ax, metric=metric)
        ax.set_title(metric.replace("_", " "))
    fig.tight_layout()
    return (_png(fig) + '<p class="note">Mean over the test folds; the band is one '
            "standard deviation over folds. Every model is fitted on the same training "
            "subsets and scored on the same test folds.</p>")


def _scores(results, evidence) -> str:
    ok = _ok(results)
    if ok.empty:
        return "<p>No model finished.</p>"
    rows = []
    for (model, n), g in ok.groupby(["model", "train_size"], sort=False):
        cells = "".join(f"<td>{_mean_std(g, metric, digits)}</td>" for metric, digits in
                        [("accuracy", 3), ("balanced_accuracy", 3), ("roc_auc", 3),
                         ("fit_s", 1), ("predict_s", 2)])
        rows.append(f"<tr><td>{html.escape(_label(model))}</td><td>{int(n)}</td>{cells}</tr>")
    skipped = results[results["status"] != "ok"]
    note = (f'<p class="note">{len(skipped)} fit(s) skipped for the time budget.</p>'
            if len(skipped) else "")
    return ("<table><tr><th>model</th><th>training images</th><th>accuracy</th>"
            "<th>balanced accuracy</th><th>ROC AUC</th><th>fit (s)</th><th>predict (s)</th>"
            "</tr>\n" + "\n".join(rows) + "</table>" + note
            + '<p class="note">Mean ± standard deviation over the test folds.</p>')


def _mean_std(g, metric: str, digits: int) -> str:
    if metric not in g or g[metric].isna().all():
        return "–"
    return f"{g[metric].mean():.{digits}f} ± {g[metric].std(ddof=0):.{digits}f}"


def _largest(results) -> int | None:
    ok = _ok(results)
    return None if ok.empty else int(ok["train_size"].max())


def _confusion(results, evidence) -> str:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    models = [m for m in dict.fromkeys(results["model"]) if evidence.folds_of(m)]
    if not models:
        return "<p>No model finished at the largest training size.</p>"
    n_cols = min(3, len(models))
    n_rows = int(np.ceil(len(models) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.3 * n_cols, 3.9 * n_rows),
                             squeeze=False)
    labels = np.arange(len(evidence.classes))
    for ax, model in zip(axes.ravel(), models):
        pos, pred, _ = evidence.pooled(model)
        ConfusionMatrixDisplay.from_predictions(
            evidence.y[pos], pred, labels=labels, display_labels=evidence.classes, ax=ax,
            colorbar=False)
        ax.set_title(_label(model), fontsize=9)
    for ax in axes.ravel()[len(models):]:
        ax.set_axis_off()
    fig.tight_layout()
    return (_png(fig) + f'<p class="note">At {_largest(results)} training images, every '
            "test fold pooled: rows are the true classes, columns the predicted ones.</p>")


def _images(evidence, positions):
    from .._images import check_images

    source = check_images(evidence.images)
    return [source.items[int(i)] for i in positions]


def _mistakes(results, evidence) -> str:
    from .._display import TopLossesDisplay

    pooled = evidence.pooled("fine_tuned")
    if pooled is None:
        return "<p>The fine-tuned model was not run at the largest training size.</p>"
    pos, _, proba = pooled
    folds = np.concatenate([[f] * len(evidence.tests[f]) for f in evidence.folds_of("fine_tuned")])

    def heatmaps(positions, predicted):
        try:
            return fold_heatmaps(positions, predicted)
        except ValueError:  # a network without a spatial map to explain
            return None

    def fold_heatmaps(positions, predicted):
        # each image explained by the model of the fold it was tested in
        maps = [None] * len(positions)
        for f in np.unique(folds[positions]):
            mine = np.flatnonzero(folds[positions] == f)
            model = evidence.predictions["fine_tuned", f].model
            images = _images(evidence, pos[positions[mine]])
            targets = [model.classes_[list(evidence.classes).index(p)] for p in predicted[mine]]
            for k, m in zip(mine, model.explain(images, target=targets)):
                maps[k] = m
        return np.stack(maps)

    display = TopLossesDisplay.from_predictions(
        evidence.classes[evidence.y[pos]], proba, _images(evidence, pos),
        classes=evidence.classes, heatmaps=heatmaps, n=N_SHOWN, n_cols=4)
    display.figure_.tight_layout()
    n_wrong = int((proba.argmax(1) != evidence.y[pos]).sum())
    return (_png(display.figure_) + f'<p class="note">{n_wrong} of {len(pos)} test images '
            f"wrong at {_largest(results)} training images; shown: the {len(display.indices)} "
            "with the highest loss (the least probability given to the true class), the "
            "Grad-CAM heatmap of the predicted class over each (where the network found "
            "the evidence for its answer).</p>")


def _best_classical(results) -> str | None:
    ok = _ok(results)
    ok = ok[(ok["train_size"] == ok["train_size"].max()) & ok["model"].isin(CLASSICAL_MODELS)]
    if ok.empty:
        return None
    return str(ok.groupby("model")["accuracy"].mean().idxmax())


def _disagreements(results, evidence) -> str:
    from .._display import draw_images

    best = _best_classical(results)
    tuned, classical = evidence.pooled("fine_tuned"), best and evidence.pooled(best)
    if tuned is None or not classical:
        return ("<p>Needs the fine-tuned model and at least one classical model at the "
                "largest training size.</p>")
    # the test images both were scored on (a fold skipped for time has neither)
    pos, at_t, at_c = np.intersect1d(tuned[0], classical[0], return_indices=True)
    pred_t, pred_c = tuned[1][at_t], classical[1][at_c]
    differ = np.flatnonzero(pred_t != pred_c)
    truth = evidence.y[pos]
    right_t = int((pred_t[differ] == truth[differ]).sum())
    right_c = int((pred_c[differ] == truth[differ]).sum())
    text = (f'<p class="note">They disagree on {len(differ)} of {len(pos)} test images; '
            f"there the fine-tuned model is right {right_t} times, "
            f"{html.escape(_label(best))} {right_c} times.</p>")
    if not len(differ):
        return text
    shown = differ[:N_SHOWN]
    classes = evidence.classes
    titles = [f"fine-tuned: {classes[pred_t[i]]}\n{best}: {classes[pred_c[i]]}\n"
              f"true: {classes[truth[i]]}" for i in shown]
    axes = draw_images(_images(evidence, pos[shown]), titles=titles, n_cols=6, size=160)
    axes[0].figure.tight_layout()
    return _png(axes[0].figure) + text


def _skipped(results, evidence) -> str:
    skipped = results.attrs.get("skipped_images", [])
    if not skipped:
        return "<p>None: every image could be read.</p>"
    rows = "\n".join(f"<tr><td>{s['index']}</td><td>{html.escape(str(s['item']))}</td>"
                     f"<td>{html.escape(str(s['reason']))}</td></tr>" for s in skipped)
    return (f"<p>{len(skipped)} image(s) could not be read and took no part:</p>"
            f"<table><tr><th>index</th><th>item</th><th>reason</th></tr>\n{rows}</table>")


def _settings(results, evidence) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from .._device import describe_machine

    attrs = results.attrs
    settings = {k: attrs.get(k) for k in ("dataset", "n_images", "classes", "cv", "folds",
                                          "train_sizes", "image_size", "quick",
                                          "random_state", "model_params")}
    settings["models"] = list(dict.fromkeys(results["model"]))
    if attrs.get("wall_s") is not None:
        settings["wall time"] = f"{attrs['wall_s'] / 60:.1f} min"
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    machine = {"platform": platform.platform(), **describe_machine()}

    def table(d):
        return "<table>" + "".join(f"<tr><td>{html.escape(str(k))}</td>"
                                   f"<td>{html.escape(str(v))}</td></tr>"
                                   for k, v in d.items()) + "</table>"

    return ("<h3>Settings</h3>" + table(settings) + "<h3>Packages</h3>" + table(versions)
            + "<h3>Machine</h3>" + table(machine)
            + '<p class="note">The same settings and random_state give the same results on '
            "the same kind of machine; another CPU or a GPU trains other numbers.</p>")
