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
    quick = sub.add_parser(
        "quickstart",
        help="Cross-validate pretrained features against classical baselines on ELPV.",
        description=(
            "Cross-validates, on the same stratified folds of the ELPV solar-cell "
            "images (defect probability > 0.5), a pipeline of frozen "
            "EfficientNet-Lite0 features + logistic regression next to logistic "
            "regression and a random forest on raw 64x64 pixels."
        ),
    )
    quick.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")
    quick.add_argument("--n-samples", type=int, default=None,
                       help="use a stratified subset of this many images (default: all 2,624)")
    quick.add_argument("--cache", default=None,
                       help="embedding cache directory (default: ~/.cache/sktransfer)")
    quick.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        from ._quickstart import run_quickstart

        return run_quickstart(args.cv, args.n_samples, args.cache, args.seed)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
