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
from ._cache import memory_location
from ._images import ImageSource
from ._inputs import Preprocess
from ._network import BackboneNetwork, InputSizeError
from ._persistence import TorchModelPickleMixin
from ._random import torch_rng
from ._trunk import FrozenTrunk


class BackboneEstimator(TorchModelPickleMixin, BaseEstimator):
    """Base of the estimators that run a pretrained backbone on images.

    Fitted attributes set by :meth:`_build_network`: ``device_``,
    ``precision_``, ``stages_``, ``image_size_``, ``preprocess_`` and
    ``weights_id_``; the subclass stores the network as ``model_``.
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

    def _build_network(self, source: ImageSource, seed: int, n_outputs=None,
                       dropout: float = 0.0) -> BackboneNetwork:
        """Load the backbone and build the network for the images of ``source``.

        Resolves the device and the precision, picks the input size
        (``image_size``), and seeds every random initialisation with ``seed``
        without touching the global generators.
        """
        self.device_ = self._resolve_device()
        self.precision_ = _device.dtype_name(
            _device.resolve_precision(self.precision, self.device_))
        backbone = load_backbone(self.backbone, self.weights, seed=seed)
        size = self._input_size(source, backbone.input_size)
        with torch_rng(seed):  # the new head's initialisation
            try:
                network = BackboneNetwork.from_backbone(backbone, size, n_outputs, dropout)
            except InputSizeError:
                if self.image_size != "auto" or size == backbone.input_size:
                    raise
                # A backbone that only takes its own input size (a ViT).
                size = backbone.input_size
                network = BackboneNetwork.from_backbone(backbone, size, n_outputs, dropout)
        self.stages_ = list(backbone.stages)
        self.image_size_ = int(size)
        self.preprocess_ = {
            "size": int(size),
            "mean": backbone.mean,
            "std": backbone.std,
            "interpolation": backbone.interpolation,
        }
        self.weights_id_ = backbone.weights_id
        return network.to(self.device_, memory_format=torch.channels_last)

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

    def _resolve_engine(self) -> None:
        self.engine_ = _engines.resolve(self.engine, device=self.device_,
                                        owner=type(self).__name__)

    def _make_trunk(self, network: BackboneNetwork, *, stop, pool: bool, units_id: str,
                    kind: str, layer_module: str | None = None) -> FrozenTrunk:
        """The frozen trunk of ``network`` with this estimator's engine,
        precision and ``memory``, its engine made ready now (``fit`` reports
        a failure); sets ``engine_`` and ``precision_`` to what runs it."""
        units = network.unit_names[:network.n_units if stop is None else stop]
        trunk = FrozenTrunk(
            backbone=self.backbone, units_id=units_id, stop=stop, pool=pool,
            size=self.image_size_, n_units=network.n_units, engine=self.engine_,
            requested=self.engine, precision=self.precision_, kind=kind,
            settings={"units": units, "preprocess": self.preprocess_,
                      "device_type": self.device_.type},
            location=memory_location(self.memory), layer_module=layer_module)
        trunk = trunk.prepared(network, type(self).__name__)
        if trunk.engine == "onnxruntime":  # it computes float32 only
            trunk = trunk.replace(precision="float32")
        self.engine_, self.precision_ = trunk.engine, trunk.precision
        return trunk

    def _run(self, source: ImageSource, indices, **kwargs):
        """The one inference path with this estimator's preprocessing and device."""
        return _inference.run(
            source, indices, preprocess=Preprocess(**self.preprocess_),
            batch_size=self.batch_size, n_jobs=self.n_jobs, device=self.device_, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # rows of flattened square images
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True  # file paths
        tags.input_tags.allow_nan = False
        tags.input_tags.positive_only = True  # pixel intensities
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags
