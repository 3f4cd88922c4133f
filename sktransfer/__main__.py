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


def _add_compare(sub):
    from ._compare import MODELS

    cmp = sub.add_parser(
        "compare",
        help="Cross-validate transfer learning against classical baselines on your images.",
        description=(
            "Cross-validates, on the same stratified folds, logistic regression and a "
            "random forest on raw pixels, HOG + SVC, a small CNN trained from scratch, "
            "frozen pretrained features + logistic regression, and a fine-tuned "
            "TransferClassifier; prints a table and writes results.csv, results.json "
            "and learning_curve.png into --out. Unreadable images are skipped and "
            "listed; a data set that cannot be compared (empty, one class, a class "
            "with fewer images than folds, a CSV without the columns) exits with "
            "status 1 and writes nothing."),
    )
    cmp.add_argument("data", nargs="?", default="elpv",
                     help="'elpv' (default), a folder with one subfolder per class, or a "
                          "CSV with path and label columns")
    cmp.add_argument("--models", type=lambda s: s.split(","), default=None,
                     help=f"comma-separated subset of: {','.join(MODELS)}")
    cmp.add_argument("--train-sizes", type=_sizes, default=[0.1, 0.3, 1.0],
                     help="learning-curve sizes: fractions of a training fold or image "
                          "counts (default 0.1,0.3,1.0)")
    cmp.add_argument("--cv", type=int, default=3, help="number of folds (default 3)")
    cmp.add_argument("--image-size", type=int, default=None,
                     help="input side of the pretrained models (default: the backbone's)")
    cmp.add_argument("--max-minutes", type=float, default=30.0,
                     help="time budget; fits that would overrun it are skipped and "
                          "reported (default 30)")
    cmp.add_argument("--quick", action="store_true",
                     help="smoke test: 120 images, 2 folds, few epochs")
    cmp.add_argument("--out", default="sktransfer-compare",
                     help="results folder (default ./sktransfer-compare)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--cache", default=None,
                     help="embedding cache directory (default: ~/.cache/sktransfer)")
    cmp.add_argument("--path-column", default="path")
    cmp.add_argument("--label-column", default="label")


def _run_compare(args) -> int:
    import os

    from ._compare import CompareError, compare, format_table
    from ._inputs import ImageError

    cache = args.cache or os.path.join(os.path.expanduser("~"), ".cache", "sktransfer")
    try:
        results = compare(
            args.data, models=args.models, train_sizes=args.train_sizes, cv=args.cv,
            image_size=args.image_size, max_minutes=args.max_minutes, quick=args.quick,
            out=args.out, seed=args.seed, cache=cache, path_column=args.path_column,
            label_column=args.label_column)
    except (CompareError, ImageError, ImportError) as exc:
        print(f"sktransfer compare: error: {exc}", file=sys.stderr)
        return 1
    print(format_table(results))
    print(f"\nResults: {os.path.join(args.out, 'results.csv')}, results.json, "
          "learning_curve.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
