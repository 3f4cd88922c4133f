"""Command-line entry point: ``sktransfer <command>`` or ``python -m sktransfer``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sktransfer",
        description="scikit-learn estimators backed by pretrained deep CNNs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_compare(sub)
    args = parser.parse_args(argv)
    return _run_compare(args)


def _sizes(text):
    try:
        return [float(s) if "." in s else int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated fractions (0.1) or image counts (100)") from None


def _folds(text):
    try:
        return [int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated fold numbers, e.g. 0,2") from None


def _param(text):
    """``MODEL.PARAMETER=VALUE`` as ``(model, parameter, value)``; the value is
    a Python literal (12, 0.5, None, 'x', [1, 2]) or else the text itself."""
    import ast
    import contextlib

    key, sep, value = text.partition("=")
    model, dot, name = key.partition(".")
    if not (sep and dot and model and name):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give MODEL.PARAMETER=VALUE, e.g. fine_tuned.max_epochs=12")
    with contextlib.suppress(ValueError, SyntaxError):  # a bare word: efficientnet_lite1
        value = ast.literal_eval(value)
    return model, name, value


def _image_size(text):
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 'auto', 'none' or a number of pixels") from None


def _add_compare(sub):
    from ._compare import MODELS

    cmp = sub.add_parser(
        "compare",
        help="Cross-validate transfer learning against classical baselines on your images.",
        description=(
            "Cross-validates, on the same stratified folds, logistic regression and a "
            "random forest on raw pixels, HOG + SVC, a small CNN trained from scratch, "
            "frozen pretrained features + logistic regression, and a fine-tuned "
            "TransferClassifier; prints a table and writes results.csv, results.json, "
            "learning_curve.png and report.html (one page to open in a browser: curves, "
            "scores, confusion matrices, the fine-tuned model's mistakes with heatmaps) "
            "into --out. Unreadable images are skipped and "
            "listed; a data set that cannot be compared (empty, one class, a class "
            "with fewer images than folds, a CSV without the columns) exits with "
            "status 1 and writes nothing."),
    )
    cmp.add_argument("data", nargs="?", default="elpv",
                     help="'elpv' (default), a folder with one subfolder per class, or a "
                          "CSV with path and label columns")
    cmp.add_argument("--models", type=lambda s: s.split(","), default=None,
                     help=f"comma-separated subset of: {','.join(MODELS)} (default: all "
                          "but scratch_same, the pretrained network trained from random "
                          "weights, which costs several times fine_tuned)")
    cmp.add_argument("--train-sizes", type=_sizes, default=[0.1, 0.3, 1.0],
                     help="learning-curve sizes: fractions of a training fold or image "
                          "counts (default 0.1,0.3,1.0)")
    cmp.add_argument("--cv", type=int, default=3, help="number of folds (default 3)")
    cmp.add_argument("--folds", type=_folds, default=None,
                     help="run only these folds, numbered from 0, e.g. 0,2 (default: all); "
                          "a fold's split, subsets and seeds are those of a full run, so a "
                          "long run can be split across calls")
    cmp.add_argument("--param", type=_param, action="append", default=[],
                     metavar="MODEL.PARAMETER=VALUE",
                     help="set a parameter of one model, e.g. fine_tuned.max_epochs=12 "
                          "(repeat for more; VALUE a Python literal or a word)")
    cmp.add_argument("--image-size", type=_image_size, default="auto",
                     help="input side of the pretrained models: 'auto' (default: the "
                          "images' own, within 1x-1.5x the backbone's), 'none' (the "
                          "backbone's) or a number of pixels")
    cmp.add_argument("--max-minutes", type=float, default=30.0,
                     help="time budget; fits that would overrun it are skipped and "
                          "reported (default 30)")
    cmp.add_argument("--quick", action="store_true",
                     help="smoke test: 120 images, 2 folds, few epochs")
    cmp.add_argument("--out", default="sktransfer-compare",
                     help="results folder (default ./sktransfer-compare)")
    cmp.add_argument("--no-report", dest="report", action="store_false",
                     help="do not write report.html")
    cmp.add_argument("--random-state", type=int, default=None,
                     help="seed of the folds, subsets and models (default: drawn at random "
                          "and recorded in results.json)")
    cmp.add_argument("--memory", default=None,
                     help="folder that keeps the frozen model's embeddings between runs "
                          "(default: none kept after the run)")
    cmp.add_argument("--path-column", default="path")
    cmp.add_argument("--label-column", default="label")


def _model_params(params):
    out = {}
    for model, name, value in params:
        out.setdefault(model, {})[name] = value
    return out or None


def _run_compare(args) -> int:
    import os

    from ._compare import CompareError, compare, format_table
    from ._images import ImageError

    try:
        results = compare(
            args.data, models=args.models, train_sizes=args.train_sizes, cv=args.cv,
            folds=args.folds, model_params=_model_params(args.param),
            image_size=args.image_size, max_minutes=args.max_minutes, quick=args.quick,
            out=args.out, random_state=args.random_state, memory=args.memory,
            path_column=args.path_column, label_column=args.label_column,
            report=os.path.join(args.out, "report.html") if args.report else None)
    except (CompareError, ImageError, ImportError) as exc:
        print(f"sktransfer compare: error: {exc}", file=sys.stderr)
        return 1
    print(format_table(results))
    print(f"random_state={results.attrs['random_state']}", file=sys.stderr)
    written = "learning_curve.png" + (", report.html" if args.report else "")
    print(f"\nResults: {os.path.join(args.out, 'results.csv')}, results.json, {written}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
