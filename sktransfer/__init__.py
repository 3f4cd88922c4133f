"""scikit-learn estimators backed by pretrained deep CNNs."""

import importlib

__version__ = "0.3.0.dev0"

# Everything is loaded on first use: ``import sktransfer`` stays cheap, and a
# service that only runs an exported ONNX graph (``sktransfer.serving``)
# needs neither torch nor scikit-learn. compare pulls in pandas, matplotlib
# and scikit-image.
_LAZY = {
    "CompareError": "._compare",
    "ExportError": "._onnx",
    "ExportReport": "._onnx",
    "ImageError": "._images",
    "ImageWarning": "._images",
    "InconsistentVersionWarning": "._persistence",
    "PretrainedFeatureExtractor": "._extractor",
    "TopLossesDisplay": "._display",
    "TransferClassifier": "._transfer",
    "TransferRegressor": "._transfer",
    "compare": "._compare",
    "export_onnx": "._onnx",
    "list_backbones": "._backbones",
    "onnx_inputs": ".serving",
    "plot_explanations": "._explain",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sktransfer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
