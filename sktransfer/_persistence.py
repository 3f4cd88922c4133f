"""Pickling of estimators that hold torch modules, and input-column checks."""

from __future__ import annotations

import copy
import warnings

import torch
from sklearn.utils.validation import _check_feature_names


def check_input_columns(estimator, X, *, reset: bool) -> None:
    """Record or check ``n_features_in_`` / ``feature_names_in_``.

    Only 2-D inputs (a DataFrame, or an array of flattened images) have
    columns; lists of paths or stacks of images don't, and then
    ``n_features_in_`` is not set.
    """
    _check_feature_names(estimator, X, reset=reset)
    shape = getattr(X, "shape", None)
    n = int(shape[1]) if shape is not None and len(shape) == 2 else None
    if reset:
        if n is None:
            if hasattr(estimator, "n_features_in_"):
                del estimator.n_features_in_
        else:
            estimator.n_features_in_ = n
        return
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and n is not None and n != expected:
        raise ValueError(
            f"X has {n} features, but {type(estimator).__name__} is expecting "
            f"{expected} features as input."
        )


class TorchModelPickleMixin:
    """Pickle ``model_`` from the CPU and reload it where it can run.

    A pickle made on a GPU machine then loads on a CPU-only one: the weights
    are always stored as CPU tensors, and on load the model goes to the
    fitted device if it exists, else to the CPU with a warning.
    """

    def __getstate__(self):
        state = super().__getstate__()
        model = state.get("model_")
        if isinstance(model, torch.nn.Module) and any(
            p.device.type != "cpu" for p in model.parameters()
        ):
            state = dict(state)
            state["model_"] = copy.deepcopy(model).to("cpu")
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
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
        self.model_.to(self.device_)
