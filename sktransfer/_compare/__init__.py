"""``sktransfer compare``: transfer learning against classical baselines.

A subpackage of its own, imported only when used (``sktransfer.compare``
and the command line load it lazily): it pulls in pandas, matplotlib and
scikit-image, which the estimators do not need.

- :mod:`._data`: data sets (ELPV, an image folder, a CSV) and decoding;
- :mod:`._models`: the compared models and what each is fitted on;
- :mod:`._run`: folds, subsets, fits, scores and the time budget;
- :mod:`._report`: the table, the learning curve and the result files.
"""

from ._data import CompareError, ImageDataset, decode_all, load_elpv_dataset, resolve_dataset
from ._models import (
    CLASSICAL_MODELS,
    FINE_TUNE_PARAMS,
    MODELS,
    PIXEL_SIZE,
    TRANSFER_MODELS,
    TutorialCNN,
    n_parameters,
    prepare_inputs,
)
from ._report import format_table, plot_learning_curve, summarize, write_results
from ._run import compare, fit_and_score, metrics

__all__ = [
    "CLASSICAL_MODELS",
    "FINE_TUNE_PARAMS",
    "MODELS",
    "PIXEL_SIZE",
    "TRANSFER_MODELS",
    "CompareError",
    "ImageDataset",
    "TutorialCNN",
    "compare",
    "decode_all",
    "fit_and_score",
    "format_table",
    "load_elpv_dataset",
    "metrics",
    "n_parameters",
    "plot_learning_curve",
    "prepare_inputs",
    "resolve_dataset",
    "summarize",
    "write_results",
]
