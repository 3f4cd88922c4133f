"""scikit-learn estimators backed by pretrained deep CNNs."""

from ._backbones import list_backbones
from ._compare import CompareError, compare
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
