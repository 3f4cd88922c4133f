"""What every sktransfer estimator shares.

Parameter constraints, tags, device and precision resolution, the backbone
and its input size, ``preprocess_`` and the batched inference path. The
estimators extend ``_parameter_constraints`` the way scikit-learn's forests
build theirs: ``{**BackboneEstimator._parameter_constraints, ...}``.
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from . import _device, _engines, _inference
from ._backbones import load_backbone
from ._images import ImageSource
from ._inputs import Preprocess
from ._network import BackboneNetwork, InputSizeError
from ._persistence import TorchModelPickleMixin
from ._random import torch_rng
from ._store import memory_location
from ._trunk import FrozenTrunk


class BackboneEstimator(TorchModelPickleMixin, BaseEstimator):
    """Base of the estimators that run a pretrained backbone on images.

    A fit validates, computes everything in locals and sets its fitted
    attributes at the end, all at once (:meth:`_set_fitted`): a fit that
    fails changes nothing. :meth:`_build_network` returns the network and
    its fitted attributes (``device_``, ``precision_``, ``stages_``,
    ``image_size_``, ``preprocess_``, ``weights_id_``); the subclass stores
    the network as ``model_``.
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 8, None, closed="left"), StrOptions({"auto"}), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions(set(_device.PRECISION_OPTIONS))],
        "engine": [StrOptions(set(_engines.ENGINES))],
        "n_jobs": [Integral, None],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def _build_network(self, source: ImageSource, seed: int, head_widths=None,
                       dropout: float = 0.0) -> tuple[BackboneNetwork, dict]:
        """Load the backbone and build the network for the images of ``source``.

        Resolves the device and the precision, picks the input size
        (``image_size``), and seeds every random initialisation with ``seed``
        without touching the global generators. Returns the network and the
        fitted attributes that describe it; sets nothing.
        """
        device = self._resolve_device()
        backbone = load_backbone(self.backbone, self.weights, seed=seed)
        size = self._input_size(source, backbone.input_size)
        with torch_rng(seed):  # the new head's initialisation
            try:
                network = BackboneNetwork.from_backbone(backbone, size, head_widths, dropout)
            except InputSizeError:
                if self.image_size != "auto" or size == backbone.input_size:
                    raise
                # A backbone that only takes its own input size (a ViT).
                size = backbone.input_size
                network = BackboneNetwork.from_backbone(backbone, size, head_widths, dropout)
        fitted = {
            "device_": device,
            "precision_": _device.dtype_name(_device.resolve_precision(self.precision, device)),
            "stages_": list(backbone.stages),
            "image_size_": int(size),
            "preprocess_": {
                "size": int(size),
                "mean": backbone.mean,
                "std": backbone.std,
                "interpolation": backbone.interpolation,
            },
            "weights_id_": backbone.weights_id,
        }
        return network.to(device, memory_format=torch.channels_last), fitted

    def _set_fitted(self, attributes: dict) -> None:
        """Set the fitted attributes of a fit that succeeded, all at once;
        those of an earlier fit that this one does not set are removed."""
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")
                     and k not in attributes]:
            delattr(self, name)
        vars(self).update(attributes)

    def _resolve_device(self) -> torch.device:
        return _device.resolve_device(self.device)

    def _input_size(self, source: ImageSource, backbone_size: int) -> int:
        """The network's input side: ``image_size``; ``None``: the backbone's;
        ``"auto"``: the images' own (median shorter side of up to 256 of
        them, read from file headers), kept within [backbone size, 1.5 x
        backbone size]."""
        if self.image_size is None:
            return int(backbone_size)
        if self.image_size != "auto":
            return int(self.image_size)
        probe = np.unique(np.linspace(0, len(source) - 1, min(len(source), 256)).astype(int))
        sides = [s for s in map(source.shorter_side, probe) if s is not None]
        side = int(np.median(sides)) if sides else backbone_size
        return int(min(max(side, backbone_size), round(1.5 * backbone_size)))

    def _resolve_engine(self, device: torch.device) -> str:
        return _engines.resolve(self.engine, device=device, owner=type(self).__name__)

    def _frozen_trunk(self, network: BackboneNetwork, fitted: dict, *, engine: str, cut,
                      pool: bool, weights_id: str, kind: str,
                      layer_module: str | None = None) -> FrozenTrunk:
        """The frozen trunk of ``network`` (the units before ``cut``) with
        this estimator's ``memory`` and ``engine`` (resolved to ``engine``),
        at the precision in ``fitted``, its engine made ready now (``fit``
        reports a failure). ``engine``, ``precision`` of the trunk returned
        are what runs it (ONNX Runtime computes float32 only)."""
        units = network.unit_names[:network.n_units if cut is None else cut]
        last = layer_module or units[-1]
        trunk = FrozenTrunk(
            backbone=self.backbone, weights_id=weights_id, cut=cut, pool=pool,
            size=fitted["image_size_"], n_units=network.n_units,
            layout=network.layout_of(last), engine=engine, requested=self.engine,
            precision=fitted["precision_"], kind=kind,
            settings={"units": units, "preprocess": fitted["preprocess_"],
                      "device_type": fitted["device_"].type},
            location=memory_location(self.memory), layer_module=layer_module)
        trunk = trunk.prepared(network, type(self).__name__)
        if trunk.engine == "onnxruntime":  # it computes float32 only
            trunk = trunk.replace(precision="float32")
        return trunk

    def _feed(self, fitted: dict | None = None) -> _inference.Feed:
        """How images reach the network: this estimator's preprocessing,
        batch size, decoding threads and device (of ``fitted``, a fit's
        attributes not yet set, or of the fitted estimator)."""
        fitted = vars(self) if fitted is None else fitted
        return _inference.Feed(Preprocess(**fitted["preprocess_"]), self.batch_size,
                               self.n_jobs, fitted["device_"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # rows of flattened square images
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True  # file paths
        tags.input_tags.allow_nan = False
        tags.input_tags.positive_only = True  # pixel intensities
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags
