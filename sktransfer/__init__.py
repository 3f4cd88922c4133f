"""scikit-learn estimators backed by pretrained deep CNNs."""

from ._backbones import list_backbones
from ._explain import plot_explanations
from ._extractor import PretrainedFeatureExtractor
from ._inputs import ImageError, ImageWarning
from ._persistence import InconsistentVersionWarning
from ._transfer import TransferClassifier, TransferRegressor

__version__ = "0.1.0"

__all__ = [
    "CompareError",
    "ImageError",
    "ImageWarning",
    "InconsistentVersionWarning",
    "PretrainedFeatureExtractor",
    "TransferClassifier",
    "TransferRegressor",
    "compare",
    "list_backbones",
    "plot_explanations",
    "__version__",
]

# compare pulls in pandas, matplotlib and scikit-image: loaded on first use.
_LAZY = {"compare", "CompareError"}


def __getattr__(name):
    if name in _LAZY:
        from . import _compare

        return getattr(_compare, name)
    raise AttributeError(f"module 'sktransfer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)
