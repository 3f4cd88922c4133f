"""PretrainedFeatureExtractor: images in, frozen pretrained embeddings out."""

from __future__ import annotations

import difflib
import warnings

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._base import BackboneEstimator
from ._device import worker_threads
from ._images import ImageError, ImageInput, ImageWarning, check_images
from ._inputs import Preprocess, iter_batches
from ._outputs import Outputs
from ._persistence import check_input_columns, input_columns
from ._random import draw_seed
from ._trunk import FrozenPart


class PretrainedFeatureExtractor(ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                                 BackboneEstimator):
    """Embed images with a frozen pretrained CNN.

    A scikit-learn transformer: images in, a float32 matrix of pretrained
    embeddings out, one row per image. Put a linear model or a random forest
    after it in a :class:`~sklearn.pipeline.Pipeline` and cross-validate or
    grid-search it like any other pipeline.

    The backbone runs in eval mode under :func:`torch.inference_mode`, in
    batches of ``batch_size`` images (memory is bounded by the batch size, not
    by the number of images), with bf16 autocast where the hardware computes
    bf16 natively.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Name of the pretrained network, see :func:`sktransfer.list_backbones`.
        ``"efficientnet_lite0"`` uses ImageNet weights shipped in a package and
        works offline; ``"torchvision/<name>"`` and ``"timm/<name>"`` use those
        libraries' weights (cached, or downloaded where a network exists).
    weights : "DEFAULT", None or path, default="DEFAULT"
        ``"DEFAULT"``: the backbone's pretrained weights. ``None``: random
        initialisation (seeded by ``random_state``), a baseline without
        transfer. A path: a local ``.pth``/``.pt``/``.safetensors`` state dict
        for the same architecture, loaded without unpickling code.
    layer : str, default="pooled"
        Where to take the features. ``"pooled"``: the globally pooled
        penultimate features (the input of the classification head).
        ``"stage<k>"`` (1-based: the k-th of ``stages_``, the backbone
        library's own stages, the same as in ``TransferClassifier``'s
        ``trainable_stages``) or any module name of the network: that
        module's output, globally average-pooled. Earlier layers are more
        generic, later ones more ImageNet-specific.
    image_size : int, "auto" or None, default="auto"
        Side of the square network input. ``"auto"``: the images' own shorter
        side (median over up to 256 images of ``X`` in :meth:`fit`), kept
        between the backbone's input size and 1.5 times it; ``None``: the
        size the weights were trained at (224 for EfficientNet-Lite0). Images
        are resized to it whole (the backbone's own interpolation, bicubic
        for the default; aspect ratio not kept, nothing cropped). The size
        used is ``image_size_``.
    batch_size : int, default=32
        Images per forward pass.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        ``"auto"`` uses CUDA when it is available, else the CPU.
    precision : {"auto", "float32", "bfloat16"}, default="auto"
        ``"auto"``: bf16 autocast where the hardware has native bf16 (CUDA, or
        a CPU with AMX/AVX512-BF16), else float32. ``"float32"`` forces fp32.
        Under bf16 the stem and first stage still run in float32: they cost
        most of the accuracy and little of the time.
    engine : {"auto", "torch", "onnxruntime", "openvino"}, default="auto"
        What runs the network. ``"onnxruntime"``: ONNX Runtime at float32
        (equal to torch's float32 features within about 1e-6);
        ``"openvino"``: OpenVINO at ``precision`` (bf16 where the CPU
        computes it natively); both from an ONNX graph exported once per
        backbone, weights, layer and size (a few seconds for
        EfficientNet-Lite0, then reused in the process, and stored under
        ``memory``), on the CPU. ``"torch"``: torch, with ``precision``.
        ``"auto"``: on the CPU, OpenVINO where the CPU has AMX, else ONNX
        Runtime, when installed and the network exports (``layer="pooled"``
        or a stage); else torch. The measurements behind the rule:
        ``benchmarks/results/engines.md``. ``engine_`` says which ran.
    n_jobs : int or None, default=None
        Threads decoding image files in parallel (``-1``: one per CPU).
        ``None`` means 1.
    memory : str, path, joblib.Memory or None, default=None
        Directory where the features are stored. Each image is then embedded once
        per set of settings, keyed by the hash of its content, so a grid
        search over the downstream model never embeds an image twice. The
        exported ONNX graph is kept there too.
    on_error : {"raise", "nan"}, default="raise"
        What an image that cannot be read or decoded (missing, empty,
        truncated or not an image file, a refused decompression bomb, a bad
        item in a list) does. ``"raise"``: one :class:`ImageError` listing
        every bad item with its index and reason, and no output. ``"nan"``:
        its row of features is NaN, and an :class:`ImageWarning` lists the
        bad items, so rows stay aligned with ``y`` and a ``SimpleImputer``
        or ``HistGradientBoostingClassifier`` downstream can cope. A
        numeric array stack with NaN or out-of-range pixels always raises.
    verbose : int, default=0
        Show a progress bar while transforming when > 0.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisation when ``weights=None``.

    Attributes
    ----------
    model_ : torch.nn.Module
        The network in eval mode, on ``device_``.
    n_features_out_ : int
        Number of features per image.
    stages_ : list of str
        Module names of the network's stages, shallowest first; ``"stage<k>"``
        in ``layer`` refers to ``stages_[k - 1]``.
    layer_module_ : str or None
        Module whose output is used, or ``None`` for the pooled features.
    image_size_ : int
        Side of the square network input.
    device_ : torch.device
        Device the network runs on.
    precision_ : str
        ``"bfloat16"`` or ``"float32"``: the network's precision from its
        second stage on, whichever engine runs it (``"float32"`` with ONNX
        Runtime); see the user guide's precision policy.
    engine_ : str
        ``"openvino"``, ``"onnxruntime"`` or ``"torch"``: what runs the network.
    trunk_ : FrozenTrunk
        The network up to ``layer`` as it runs: engine, precision, cut point,
        and where its features are stored (``memory``). Decided in :meth:`fit`.
    weights_id_ : str
        SHA-256 of the network's weights.
    n_features_in_ : int
        Number of columns of ``X`` when it was 2-D (flattened images or a
        DataFrame); absent otherwise.
    feature_names_in_ : ndarray of str
        Column names when ``X`` was a DataFrame.

    See Also
    --------
    sktransfer.list_backbones : Names accepted by ``backbone``.

    Notes
    -----
    Weights are loaded in :meth:`fit`, never in ``__init__``, so cloning is
    cheap. A pickle holds the weights themselves (moved to the CPU), so it
    loads on a machine without the weights package or a GPU.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedFeatureExtractor
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    >>> extractor = PretrainedFeatureExtractor(image_size=64).fit(images)
    >>> extractor.transform(images).shape
    (4, 1280)
    >>> extractor.get_feature_names_out()[:2].tolist()
    ['pretrainedfeatureextractor0', 'pretrainedfeatureextractor1']
    """

    _parameter_constraints = {
        **BackboneEstimator._parameter_constraints,
        "layer": [str],
        "on_error": [StrOptions({"raise", "nan"})],
    }

    def __init__(
        self,
        *,
        backbone="efficientnet_lite0",
        weights="DEFAULT",
        layer="pooled",
        image_size="auto",
        batch_size=32,
        device="auto",
        precision="auto",
        engine="auto",
        n_jobs=None,
        memory=None,
        on_error="raise",
        verbose=0,
        random_state=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.engine = engine
        self.n_jobs = n_jobs
        self.memory = memory
        self.on_error = on_error
        self.verbose = verbose
        self.random_state = random_state

    @worker_threads()
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ImageInput, y: None = None) -> PretrainedFeatureExtractor:
        """Load the backbone and check ``X``.

        Nothing is learned from ``X`` but its image size (with
        ``image_size="auto"``): the backbone stays frozen. ``X`` is
        validated (forms, shapes, readable paths) so that errors show early.

        Parameters
        ----------
        X : images
            Paths, PIL images or arrays; see the user guide for every form.
        y : None
            Ignored.

        Returns
        -------
        self : PretrainedFeatureExtractor
            The fitted extractor.
        """
        columns = input_columns(X)
        source = check_images(X, skipped=[] if self.on_error == "nan" else None)
        network, fitted = self._build_network(source, draw_seed(self.random_state))
        network.requires_grad_(False).eval()
        layer_module = self._resolve_layer(network.backbone, fitted["stages_"])
        engine = self._resolve_engine(fitted["device_"])
        # The units the features need (None: all, the pooled features).
        names = network.unit_names
        cut = None if layer_module is None else (
            names.index(layer_module) + 1 if layer_module in names else None)
        inside = layer_module is not None and cut is None  # a layer inside a unit
        if inside and engine != "torch":
            if self.engine != "auto":
                raise ValueError(
                    f"layer={self.layer!r} is inside a unit of {self.backbone}, which cannot "
                    f"be exported to ONNX for engine={self.engine!r}; use engine='torch', "
                    "layer='pooled' or a stage.")
            engine = "torch"
        trunk = self._frozen_trunk(
            network, fitted, engine=engine, cut=cut, pool=cut is not None,
            weights_id=fitted["weights_id_"], kind="embeddings",
            layer_module=layer_module if inside else None)
        probe = torch.zeros(1, 3, fitted["image_size_"], fitted["image_size_"],
                            device=fitted["device_"])
        with torch.inference_mode():
            n_features = int(trunk(network, probe).shape[1])
        self._set_fitted({**columns, **fitted, "model_": network, "layer_module_": layer_module,
                          "trunk_": trunk, "engine_": trunk.engine,
                          "precision_": trunk.precision, "n_features_out_": n_features})
        return self

    def _resolve_layer(self, model: torch.nn.Module, stages: list[str]) -> str | None:
        if self.layer == "pooled":
            return None
        n = len(stages)
        if self.layer.startswith("stage") and self.layer[5:].isdigit():
            k = int(self.layer[5:])
            if not 1 <= k <= n:
                raise ValueError(
                    f"layer={self.layer!r}: {self.backbone} has {n} stages "
                    f"(stage1..stage{n}: {stages}).")
            return stages[k - 1]
        names = dict(model.named_modules())
        if self.layer in names and self.layer:
            return self.layer
        close = difflib.get_close_matches(self.layer, list(names), n=5)
        raise ValueError(
            f"layer={self.layer!r} is not 'pooled', 'stage<k>' (k in 1..{n}) or a module "
            f"of {self.backbone}." + (f" Close module names: {close}." if close else ""))

    @property
    def _n_features_out(self):
        return self.n_features_out_

    @worker_threads()
    def transform(self, X: ImageInput) -> np.ndarray:
        """Embed each image of ``X``.

        Parameters
        ----------
        X : images
            Paths, PIL images or arrays, in any form accepted by :meth:`fit`.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features), float32
            One row per image, in the order of ``X``; ``n_features`` is
            ``n_features_out_``. With ``on_error="nan"``, NaN rows for the
            images that could not be read.
        """
        check_is_fitted(self)
        check_input_columns(self, X)
        problems = []
        source = check_images(X, skipped=problems)
        n = len(source)
        if problems and self.on_error == "raise":
            # No output will be returned: decode the rest only to list every bad item.
            for _ in iter_batches(source, range(n), self.batch_size,
                                  Preprocess(**self.preprocess_), self.n_jobs):
                pass
        out = np.empty((n, self.n_features_out_), dtype=np.float32)
        bad = {i for i, _, _ in problems}
        todo = [i for i in range(n) if i not in bad]
        store = self.trunk_.store(self.n_features_out_, np.float32)
        if store is not None:
            keys = {i: source.content_key(i) for i in todo}
            missing = []
            for i in todo:
                vec = store.get(keys[i])
                if vec is None:
                    missing.append(i)
                else:
                    out[i] = vec
            todo = missing
        unreadable = [] if self.on_error == "nan" else None
        bar = tqdm(total=len(todo), unit="img", disable=not self.verbose or not todo,
                   desc=type(self).__name__)
        outputs = self.__sktransfer_outputs__()
        with bar:
            for pos, (feats,) in outputs.feed.run(source, todo,
                                                   fn=lambda x, _: outputs.frozen(x),
                                                   skipped=unreadable, progress=bar):
                rows = [todo[p] for p in pos]
                feats = feats.float().cpu().numpy()
                out[rows] = feats
                if store is not None:
                    for i, vec in zip(rows, feats):
                        store.put(keys[i], vec)
        problems = sorted(problems + (unreadable or []))
        if problems:
            out[[i for i, _, _ in problems]] = np.nan
            warnings.warn(ImageWarning(
                f"{ImageError(problems)}\nTheir rows are NaN (on_error='nan').", problems),
                stacklevel=2)
        return out

    def __sktransfer_outputs__(self) -> Outputs:
        """What this fitted extractor computes (see :mod:`sktransfer._outputs`):
        the features of the network up to ``layer``, as :meth:`transform` runs it."""
        check_is_fitted(self)
        return Outputs("features", self.model_, FrozenPart(self.model_, self.trunk_),
                       self._feed(), width=self.n_features_out_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

