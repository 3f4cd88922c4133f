"""Pickling of estimators that hold torch modules, and input-column checks."""

from __future__ import annotations

import copy
import warnings

import torch
from sklearn.utils.validation import _check_feature_names

from . import _testing


def input_columns(X) -> dict:
    """The fitted attributes that record ``X``'s columns: ``n_features_in_``
    and ``feature_names_in_`` (scikit-learn's meaning), for a fit to set.

    Only 2-D inputs (a DataFrame, or an array of flattened images) have
    columns; lists of paths or stacks of images don't, and then the dict
    is empty (an earlier fit's attributes are removed with the rest).
    """
    holder = _Columns()
    _check_feature_names(holder, X, reset=True)
    columns = dict(vars(holder))
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2:
        columns["n_features_in_"] = int(shape[1])
    return columns


class _Columns:
    """What scikit-learn's feature-name check writes to, instead of an estimator."""


def check_input_columns(estimator, X) -> None:
    """Check ``X``'s columns against those ``estimator`` was fitted on."""
    _check_feature_names(estimator, X, reset=False)
    shape = getattr(X, "shape", None)
    n = int(shape[1]) if shape is not None and len(shape) == 2 else None
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and n is not None and n != expected:
        raise ValueError(
            f"X has {n} features, but {type(estimator).__name__} is expecting "
            f"{expected} features as input."
        )


class InconsistentVersionWarning(UserWarning):
    """An estimator is unpickled under another sktransfer version than it was saved with.

    Like scikit-learn's warning of the same name: the pickle may still load
    and predict, but nothing guarantees it; refit, or pin the version.

    Attributes
    ----------
    estimator_name : str
    current_version, original_version : str
    """

    def __init__(self, *, estimator_name, current_version, original_version):
        self.estimator_name = estimator_name
        self.current_version = current_version
        self.original_version = original_version

    def __str__(self):
        return (
            f"Trying to unpickle {self.estimator_name} from sktransfer "
            f"{self.original_version} when using version {self.current_version}. This "
            "might lead to breaking code or invalid results; refit the estimator, or "
            f"install sktransfer=={self.original_version}."
        )


class TorchModelPickleMixin:
    """Pickle ``model_`` from the CPU and reload it where it can run.

    A pickle holds the whole fitted network (weights included), not a
    reference to the registry: fine-tuned weights exist nowhere else, and a
    pickle must load on a machine without the original weights file or
    network access. The weights are always stored as CPU tensors, so a model
    fitted on a GPU loads on a CPU-only machine (on load it goes to the
    fitted device if there is one, else to the CPU with a warning). The
    sktransfer version is stored too, and a different one warns
    (:class:`InconsistentVersionWarning`).
    """

    def __getstate__(self):
        from . import __version__

        state = dict(super().__getstate__())
        model = state.get("model_")
        if isinstance(model, torch.nn.Module) and any(
            p.device.type != "cpu" for p in model.parameters()
        ):
            state["model_"] = copy.deepcopy(model).to("cpu")
        state["_sktransfer_version"] = __version__
        return state

    def __setstate__(self, state):
        from . import __version__

        state = dict(state)
        saved = state.pop("_sktransfer_version", "pre-0.1")
        if saved != __version__:
            warnings.warn(
                InconsistentVersionWarning(estimator_name=type(self).__name__,
                                           current_version=__version__,
                                           original_version=saved),
                stacklevel=2)
        super().__setstate__(state)
        # a Dask worker's count shows how often a model reached it
        _testing.record("unpickled", type(self).__name__)
        device = getattr(self, "device_", None)
        if device is None or not hasattr(self, "model_"):
            return
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"{type(self).__name__} was fitted on {device}, which this machine "
                "lacks; it will run on the CPU.",
                UserWarning,
                stacklevel=2,
            )
            self.device_ = torch.device("cpu")
            if getattr(self, "precision", None) == "auto":
                from ._device import dtype_name, resolve_precision

                self.precision_ = dtype_name(resolve_precision("auto", self.device_))
                if getattr(self, "trunk_", None) is not None:
                    self.trunk_ = self.trunk_.replace(precision=self.precision_)
        self.model_.to(self.device_)
