"""scikit-learn estimators backed by pretrained deep CNNs."""

from ._backbones import list_backbones
from ._extractor import PretrainedFeatureExtractor
from ._inputs import ImageError
from ._transfer import TransferClassifier, TransferRegressor

__version__ = "0.1.0"

__all__ = [
    "ImageError",
    "PretrainedFeatureExtractor",
    "TransferClassifier",
    "TransferRegressor",
    "list_backbones",
    "__version__",
]
