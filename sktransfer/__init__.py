"""scikit-learn estimators backed by pretrained deep CNNs."""

from ._backbones import list_backbones
from ._extractor import PretrainedFeatureExtractor
from ._inputs import ImageError

__version__ = "0.1.0"

__all__ = [
    "ImageError",
    "PretrainedFeatureExtractor",
    "list_backbones",
    "__version__",
]
