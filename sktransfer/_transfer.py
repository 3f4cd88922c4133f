"""TransferClassifier and TransferRegressor: fine-tune a pretrained backbone.

The estimators hold the parameters, their validation, the docs and the
scikit-learn surface. Training is skorch's, in :mod:`sktransfer._training`;
predictions go through the one inference path (:mod:`sktransfer._inference`).
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from . import _device, _tasks
from ._base import BackboneEstimator
from ._device import worker_threads
from ._distributed import PickledAccelerator, check_accelerator
from ._images import ArrayLike, ImageInput, check_images
from ._inference import FLIPS
from ._inputs import Preprocess
from ._network import TopNetwork
from ._persistence import check_input_columns
from ._random import draw_seed, torch_rng
from ._trunk import as_top_input

AUGMENT_OPTIONS = ("flips",)


class _TransferBase(BackboneEstimator):
    """Parameters, fitting and prediction shared by the two fine-tuned estimators."""

    _parameter_constraints = {
        **BackboneEstimator._parameter_constraints,
        "trainable_stages": [StrOptions({"all", "gradual"}),
                             Interval(Integral, 0, None, closed="left")],
        "augment": ["boolean", StrOptions(set(AUGMENT_OPTIONS)), callable],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_mult": [Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "tta": ["boolean", StrOptions({"auto"})],
        "task_weights": ["array-like", None],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "accelerator": [HasMethods(["prepare", "wait_for_everyone"]), PickledAccelerator, None],
    }

    def __init__(
        self,
        *,
        backbone="efficientnet_lite0",
        weights="DEFAULT",
        trainable_stages=1,
        image_size="auto",
        augment="flips",
        max_epochs=20,
        batch_size=32,
        lr=1e-3,
        backbone_lr_mult=1.0,
        weight_decay=0.01,
        max_grad_norm=1.0,
        dropout=0.2,
        validation_fraction=None,
        patience=5,
        device="auto",
        precision="auto",
        engine="auto",
        n_jobs=None,
        memory=None,
        tta=False,
        task_weights=None,
        warm_start=False,
        checkpoint_dir=None,
        accelerator=None,
        verbose=0,
        random_state=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.trainable_stages = trainable_stages
        self.image_size = image_size
        self.augment = augment
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.backbone_lr_mult = backbone_lr_mult
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.dropout = dropout
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.precision = precision
        self.engine = engine
        self.n_jobs = n_jobs
        self.memory = memory
        self.tta = tta
        self.task_weights = task_weights
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.accelerator = accelerator
        self.verbose = verbose
        self.random_state = random_state

    # -- hooks for the subclasses -------------------------------------------

    def _encode_targets(self, y, weights, reset):
        """``y`` as the network's targets; ``weights`` (of the images used)
        for statistics such as the regressor's scaling."""
        raise NotImplementedError

    def _target_weights(self, targets) -> np.ndarray | float:
        """Per-image weights that come from the targets themselves (0 for an
        image without any label)."""
        return 1.0

    def _criterion(self, targets, weights):
        """The per-image loss, given the training part's targets and weights."""
        raise NotImplementedError

    def _split(self, targets, seed):
        raise NotImplementedError

    @property
    def _n_outputs(self) -> int:
        """Width of the network's output (all tasks' logits)."""
        raise NotImplementedError

    @property
    def _head_outputs(self):
        """The new head: its width, or one width per task (several heads)."""
        return self._n_outputs

    # -- fit ----------------------------------------------------------------

    @worker_threads()
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ImageInput, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Fine-tune on images ``X`` with targets ``y``.

        Parameters
        ----------
        X : images
            Paths, PIL images or arrays, in any form the feature extractor takes.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Class labels (strings or numbers; each column of one type) for
            :class:`TransferClassifier`, one column or several (one head
            each, ``None`` or NaN for a missing label), numbers for
            :class:`TransferRegressor` (one or several targets).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-image weights of the loss, as in scikit-learn: the loss is
            the weighted mean over the training images (scaling all weights
            changes nothing), and an image of weight 0 is the same as no
            image.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        # One process group trains one model at a time.
        with check_accelerator(self.accelerator, type(self).__name__) as processes:
            try:
                return self._fit(X, y, sample_weight, processes)
            except RuntimeError as exc:
                if not processes.distributed:
                    raise
                raise RuntimeError(
                    f"{type(self).__name__}: the fit stopped in the process of rank "
                    f"{processes.rank} (of {processes.world}): {exc}\nIf another process of "
                    "the fit died, the launcher's summary names its rank (torchrun: 'Root "
                    "Cause'). With checkpoint_dir, launching the same script again resumes "
                    "after the last finished epoch.") from exc

    def _fit(self, X, y, sample_weight, processes):
        from . import _training
        from ._training.checkpoint import CheckpointDir, fingerprint

        continuing = self.warm_start and hasattr(self, "model_")
        check_input_columns(self, X, reset=not continuing)
        source = check_images(X)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        try:
            y = np.asarray(y)
        except ValueError:  # numpy refuses rows of different lengths
            raise ValueError("y is ragged: its rows have different lengths. Give one "
                             "target per image, or the same number of target columns "
                             "for every image (None or NaN for a missing label).") from None
        if y.ndim > 2:
            raise ValueError(f"y must be 1-D or 2-D (n_samples, n_targets), got shape "
                             f"{y.shape}.")
        if len(y) != len(source):
            raise ValueError(
                f"X has {len(source)} images but y has {len(y)} targets; they must "
                "have the same length.")
        weights = _check_sample_weight(sample_weight, np.empty(len(y)), dtype=np.float64,
                                       ensure_non_negative=True)
        if not (weights > 0).any():
            raise ValueError("Every sample weight is zero; at least one image must have a "
                             "positive weight.")
        targets = self._encode_targets(y, weights, reset=not continuing)
        weights = weights * self._target_weights(targets)
        # Images of weight 0 take no part in training, as if they were left out.
        used = np.flatnonzero(weights > 0)
        if not len(used):
            raise ValueError("No image has both a positive sample weight and a label.")
        processes.check_same_data(len(source), targets, weights)
        # Every process draws what the main process draws (split, head, order).
        seed = processes.main_decides(lambda: draw_seed(self.random_state))
        checkpoint, resume = None, False
        if self.checkpoint_dir is not None and not continuing:
            params = {k: v for k, v in self.get_params(deep=False).items()
                      if k not in ("verbose", "n_jobs", "memory", "checkpoint_dir",
                                   "warm_start", "accelerator")}
            if processes.distributed:  # the batches depend on it
                params["processes"] = processes.world
            # Every process hashes (side by side, not waiting in a collective);
            # the main process decides and writes, the others follow.
            digest, unstable = fingerprint(params, map(source.content_key, range(len(source))),
                                           targets, weights)
            checkpoint = CheckpointDir(self.checkpoint_dir)
            resume, seed = processes.main_decides(lambda: checkpoint.prepare(
                digest, seed, unstable, type(self).__name__))

        train_pos, valid_pos = self._split(targets[used], seed)
        if processes.distributed:
            _check_shares(processes.world, self.batch_size, len(train_pos), len(valid_pos))
        # The loss's statistics (task scales, balanced class weights) come
        # from the training part only.
        criterion = self._criterion(targets[used[train_pos]], weights[used[train_pos]])
        # The network becomes model_ only once trained: a fit that fails
        # leaves no half-fitted estimator behind (see __sklearn_is_fitted__).
        if continuing:
            network = self.model_
            self.precision_ = _device.dtype_name(
                _device.resolve_precision(self.precision, self.device_))
        else:
            network = self._build_network(source, seed, self._head_outputs, self.dropout)
        n_frozen, schedule = network.frozen_units(self.trainable_stages, self.backbone)
        network.freeze_first(n_frozen)
        self._resolve_engine()
        if schedule or n_frozen == 0:
            # Nothing fixed to export or store (everything trains, or the
            # frozen part shrinks with gradual unfreezing): torch runs it.
            self.engine_, trunk = "torch", None
        else:
            # The frozen units as they are: a warm start may freeze units an
            # earlier fit trained, so the pretrained weights' identity no
            # longer describes them.
            trunk = self._make_trunk(network, stop=n_frozen, pool=False,
                                     units_id=network.units_digest(n_frozen), kind="frozen")
        # Dropout, stochastic depth and random augmentation draw from torch's
        # global generators: forked and seeded for the fit, restored after.
        with torch_rng(seed, self.device_):
            run = _training.fit_top(
                self, network, source, used[train_pos], used[valid_pos], targets, weights,
                schedule=schedule, criterion=criterion,
                classifier=is_classifier(self), seed=seed,
                checkpoint=checkpoint, resume=resume, trunk=trunk, processes=processes)
        self.model_ = network.eval()
        self.trunk_ = trunk
        self.history_ = run.history
        self.n_epochs_ = run.n_epochs
        self.resumed_from_epoch_ = run.resumed_from_epoch
        self.frozen_cached_ = run.frozen_cached
        run.raise_if_stopped(type(self).__name__)
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def __sklearn_clone__(self):
        # The clone shares the accelerator: there is one per launched process
        # (clone would deep-copy it, with every model it prepared).
        accelerator = self.accelerator
        self.accelerator = None
        try:
            new = super().__sklearn_clone__()
        finally:
            self.accelerator = accelerator
        new.accelerator = accelerator
        return new

    def __getstate__(self):
        state = dict(super().__getstate__())
        # An accelerator belongs to the processes launched with it; the
        # fitted model is the same without it, and loads anywhere.
        if state.get("accelerator") is not None:
            state["accelerator"] = PickledAccelerator()
        return state

    def _resolve_device(self) -> torch.device:
        if self.accelerator is None:
            return super()._resolve_device()
        device = torch.device(self.accelerator.device)
        if device.type == "cpu":
            device = torch.device("cpu")
        if self.device != "auto" and torch.device(self.device) != device:
            raise ValueError(
                f"device={self.device!r}, but the accelerator places this process on "
                f"{device}: with an accelerator, leave device='auto'.")
        return device

    def _use_tta(self):
        if isinstance(self.tta, str):
            return self.tta == "auto" and self.augment == "flips"
        return bool(self.tta)

    # -- predict --------------------------------------------------------------

    @property
    def _top_dtype(self) -> torch.dtype:
        """The trained top's precision: the one it was trained at."""
        return _device.training_dtype(self.precision, self.device_)

    def _raw_predict(self, X) -> np.ndarray:
        """Network outputs, averaged over the four flips with test-time augmentation.

        The frozen trunk's outputs (computed, or read from ``memory``) feed
        the trained top, which runs at :attr:`_top_dtype` either way: the
        same fitted model gives the same outputs with and without a store.
        """
        check_is_fitted(self)
        check_input_columns(self, X, reset=False)
        source = check_images(X)
        n = len(source)
        model, trunk = self.model_, self.trunk_
        views = FLIPS if self._use_tta() else ("identity",)
        # Without a trunk, the images go through the whole network.
        top = TopNetwork(model, start=0 if trunk is None else None)
        out = np.empty((n, self._n_outputs), dtype=np.float32)

        def run_top(x):
            with _device.autocast(self.device_, self._top_dtype):
                return top(x).float()

        if trunk is None:
            for pos, outputs in self._run(source, range(n), views=views,
                                          fn=lambda x, _: run_top(x)):
                out[pos] = torch.stack(outputs).mean(0).cpu().numpy()
            return out
        # Chunks of several batches: decoding runs ahead within a chunk, and
        # the trunk's outputs of one chunk are held at a time.
        chunk = self.batch_size * 8
        preprocess = Preprocess(**self.preprocess_)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            frozen = trunk.outputs(model, source, np.arange(start, stop), views,
                                   preprocess=preprocess, batch_size=self.batch_size,
                                   n_jobs=self.n_jobs)
            with torch.inference_mode():
                for s in range(0, stop - start, self.batch_size):
                    outputs = [run_top(as_top_input(view[s:s + self.batch_size])
                                       .to(self.device_)) for view in frozen]
                    out[start + s:start + s + len(outputs[0])] = (
                        torch.stack(outputs).mean(0).cpu().numpy())
        return out


_SHARED_PARAMETERS = """
    backbone : str, default="efficientnet_lite0"
        Name of the pretrained network, see :func:`sktransfer.list_backbones`.
    weights : "DEFAULT", None or path, default="DEFAULT"
        As in :class:`PretrainedFeatureExtractor`; ``None`` trains from a
        random initialisation (no transfer).
    trainable_stages : int, "all" or "gradual", default=1
        How many of the backbone's stages train (``stages_``: the backbone
        library's own, the same as the extractor's ``layer="stage<k>"``). An
        int k: the last k stages, what follows them (EfficientNet's
        ``conv_head``) and the new head; the stages before stay frozen. ``0``:
        the new head only. ``"all"``: everything. ``"gradual"``: the head in
        the first epoch, then one more stage per epoch, deepest first.
        Frozen parts keep ``requires_grad=False`` and stay in eval mode, so
        their BatchNorm statistics never change. For EfficientNet-Lite0 the
        last stage is ``blocks.5`` and ``blocks.6`` (after the stride-16
        feature map, see the user guide).
    image_size : int, "auto" or None, default="auto"
        Side of the square network input. ``None``: the backbone's (224 for
        EfficientNet-Lite0). ``"auto"``: the training images' own shorter
        side (median), kept between the backbone's size and 1.5 times it, so
        that larger images keep fine detail (ELPV's 300x300 cells: 300,
        which raised inner cross-validated accuracy from 87.2 % to 89.1 %,
        ``benchmarks/results/transfer_selection.md``) at up to 2.25 times
        the compute; smaller images are upsampled to the backbone's size; a
        backbone that only runs at its own size (a ViT) gets that. Images
        are resized whole with the backbone's own interpolation (no crop).
        The size used is ``image_size_``.
    augment : bool, "flips" or callable, default="flips"
        Training-time augmentation: each epoch shows each image once, as one
        random view. ``"flips"``: one of its four horizontal/vertical flips.
        ``True``: random resized crop, horizontal flip, rotation up to 10
        degrees, brightness/contrast jitter. A callable maps a ``(3, H, W)``
        float tensor in [0, 1] to another. ``False``: the image itself. With
        ``"flips"`` or ``False`` and a fixed frozen part, the frozen part's
        output is computed once per image and view and reused every epoch
        (``frozen_cached_``); the training is the same, only faster.
    max_epochs : int, default=20
        Passes over the training images; each pass shows every image once.
        20 epochs of one random flip each are as much training as the 5
        epochs of all four flips that inner cross-validation chose on ELPV
        (``benchmarks/results/transfer_selection.md``).
    batch_size : int, default=32
        Images per training and prediction batch.
    lr : float, default=1e-3
        Peak learning rate of the head (one-cycle schedule, 15 % warm-up).
    backbone_lr_mult : float, default=1.0
        The trained backbone stages use ``lr * backbone_lr_mult``
        (discriminative learning rates).
    weight_decay : float, default=0.01
        AdamW weight decay.
    max_grad_norm : float, default=1.0
        Gradient-norm clipping.
"""

_SHARED_PARAMETERS_MID = """    validation_fraction : float or None, default=None
        Fraction of the training data held out for early stopping.
        ``None``: train on everything for ``max_epochs`` epochs, the whole
        one-cycle schedule. On ELPV that beat holding out 0.1 for early
        stopping in inner cross-validation (89.4 % against 89.1 %,
        ``benchmarks/results/transfer_selection.md``): a tenth more images,
        and no early stop on a noisy small validation set.
    patience : int or None, default=5
        With ``validation_fraction`` set: epochs without a better validation
        score before stopping; the best epoch's weights are restored.
        ``None`` disables early stopping.
"""

_SHARED_PARAMETERS_END = """
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        ``"auto"`` uses CUDA when it is available.
    precision : {"auto", "float32", "bfloat16"}, default="auto"
        ``"auto"``: bf16 autocast where the hardware computes bf16 natively
        for inference (predictions, and the frozen part, with the same
        policy as :class:`PretrainedFeatureExtractor`: stem and first stage
        in float32) and, on CUDA, training; training steps on the CPU stay
        float32 (measured no faster in bf16). ``"bfloat16"`` forces bf16
        (inference still keeps the first stage in float32), ``"float32"``
        disables it.
    engine : {"auto", "torch", "onnxruntime", "openvino"}, default="auto"
        What runs the frozen part of the network (before the first trained
        stage), in training and in :meth:`predict`: as in
        :class:`PretrainedFeatureExtractor` (ONNX Runtime at float32,
        OpenVINO at ``precision``, or torch), from a graph of the pretrained
        frozen units exported once per backbone, weights, cut point and size
        and reused by every fit of the process (a grid search exports it
        once) and, under ``memory``, across processes. The trained part
        always runs in torch. ``trainable_stages="all"`` or ``"gradual"``
        leave nothing fixed to export: torch. ``engine_`` says which ran.
    n_jobs : int or None, default=None
        Threads decoding image files (``-1``: one per CPU; ``None``: 1).
    memory : str, path, joblib.Memory or None, default=None
        Directory keeping the frozen part's output per image and view, and
        the engine's graph of the frozen part. Entries are keyed by the
        image's content and by everything the output depends on (backbone,
        the frozen units' weights, cut point, input size, normalisation,
        engine, precision), so every later fit or prediction with the same
        settings reads them: a grid search over ``lr``, ``max_epochs``,
        ``dropout``, ``weight_decay`` or ``label_smoothing`` runs each
        image's frozen part once for the whole search, folds included, and
        a re-run after a failure runs it only for the images not yet done.
        Used where the output is computed once per fit (``frozen_cached_``):
        ``augment=True`` or a callable, and ``trainable_stages="all"`` or
        ``"gradual"``, compute it per batch and bypass it. Written
        atomically, so processes may share the directory. Size per image and
        view: the frozen part's output (EfficientNet-Lite0, 300 px,
        ``trainable_stages=1``: 112 x 19 x 19 in bf16, 81 kB).
    tta : bool or "auto", default=@TTA_DEFAULT@
        Test-time augmentation: predictions average the logits of the four
        flips of each image (four times the prediction cost). ``"auto"``:
        when ``augment="flips"``.@TTA_WHY@
    task_weights : array-like of shape (n_targets,) or None, default=None
        With several target columns (a 2-D ``y``): relative weights of the
        columns' losses, normalised to sum 1; the loss is their weighted
        mean (``None``: equal weights). Weighting is not masking: a weight
        of 0 trains nothing for that column. With one column it must be
        ``None`` or one weight (which changes nothing).
    warm_start : bool, default=False
        If True, ``fit`` continues training the fitted network for
        ``max_epochs`` more epochs instead of starting again.
    checkpoint_dir : str, path or None, default=None
        If set, training is checkpointed there after every epoch (skorch's
        ``Checkpoint``: weights, optimizer state and history, plus the best
        epoch's weights). If a fit is interrupted (Ctrl-C, which re-raises
        ``KeyboardInterrupt``, or a killed process), fitting again with the
        same data and parameters resumes after the last completed epoch,
        with the same validation split, learning-rate schedule and early
        stopping state. A directory holding an unfinished fit of other data
        or parameters is refused; a finished fit's files are replaced. A
        parameter that cannot be fingerprinted (a lambda, an object whose
        repr is a memory address) is named in a warning when resuming.
    accelerator : accelerate.Accelerator or None, default=None
        Train one model in several processes (devices, or machines), as
        skorch's ``AccelerateMixin`` does: run the same script in every
        process with ``accelerate launch`` or ``torchrun``
        (``Accelerator(cpu=True)`` for processes on CPUs). Every process
        draws the same order and views, trains on its share of each batch
        of ``batch_size`` images (gradients all-reduced: the step of the
        whole batch), computes its share of the frozen part's outputs, and
        ends with the same weights; validation scores and early stopping
        are decided over all processes; with ``checkpoint_dir`` (on a file
        system all processes share) the main process writes and every
        process resumes. Mixed precision of the training steps is the
        accelerator's (``mixed_precision="bf16"`` or ``"fp16"``, with loss
        scaling); ``precision`` still sets the frozen part and predictions.
        ``device`` must be ``"auto"``. The accelerator is not pickled with
        the fitted estimator, which loads and predicts in any process.
        A search or cross-validation over the estimator must use
        ``n_jobs=1``. See the scaling page of the docs.
    verbose : int, default=0
        If > 0, print skorch's per-epoch table (and a progress bar in a
        terminal).
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the head's initialisation, shuffling, augmentation
        and dropout: the same int gives identical predictions on CPU, and a
        fit resumed from ``checkpoint_dir`` continues the same draws. With
        an int, the global random generators of numpy, Python and torch are
        left as they were.
"""


def _end(tta_default: str, tta_why: str) -> str:
    return (_SHARED_PARAMETERS_END.replace("@TTA_DEFAULT@", tta_default)
            .replace("@TTA_WHY@", tta_why))


_CLASSIFIER_END = _end('"auto"', """ On ELPV, the fourth round of inner
        cross-validation chose flip TTA with ``dropout=0.2``: the best mean
        inner accuracy of every setting and TTA tried
        (``benchmarks/results/transfer_selection.md``).""")
_REGRESSOR_END = _end("False", "")


_SHARED_ATTRIBUTES = """
    model_ : sktransfer._network.BackboneNetwork
        The fine-tuned network, in eval mode.
    history_ : list of dict
        skorch's per-epoch history (losses, validation scores, timings).
    n_epochs_ : int
        Epochs run.
    image_size_ : int
        Side of the network input used (see ``image_size``).
    preprocess_ : dict
        Input size, normalisation and interpolation of the network input.
    frozen_cached_ : bool
        Whether the frozen part's output was computed once and reused.
    resumed_from_epoch_ : int
        Epochs taken from a checkpoint (0 when training started afresh).
    stages_ : list of str
        The backbone's stages (the modules that end them), shallowest first.
    device_, precision_ : torch.device, str
        Where it runs, and the frozen part's precision from the backbone's
        second stage on (``"float32"`` with ONNX Runtime); the trained top
        runs at its training precision.
    engine_ : str
        ``"openvino"``, ``"onnxruntime"`` or ``"torch"``: what runs the frozen part.
    trunk_ : FrozenTrunk or None
        The frozen units as they run: engine, precision, cut point and the
        ``memory`` store of their outputs; ``None`` when nothing stays frozen
        (``trainable_stages="all"`` or ``"gradual"``). Decided in :meth:`fit`.
    weights_id_ : str
        SHA-256 of the backbone's initial weights.
"""


class TransferClassifier(ClassifierMixin, _TransferBase):
    __doc__ = f"""Fine-tune a pretrained CNN as a scikit-learn classifier.

    A new linear head on the backbone's pooled features, trained with skorch:
    AdamW, a one-cycle (warm-up then cosine) learning-rate schedule, gradient
    clipping, and (with ``validation_fraction`` set) early stopping on an
    internal stratified validation split that restores the best weights
    (on validation accuracy).

    Several targets from one backbone (multi-task): a 2-D ``y``, as
    scikit-learn's forests take it. Columns of class labels
    (``"multiclass-multioutput"``, labels of any type per column) get one
    softmax head each; columns of 0/1 (``"multilabel-indicator"``) one
    sigmoid each. The backbone and its frozen part are shared, so the frozen
    part runs once for all heads. A missing label (``None`` or NaN) leaves
    that column's loss out for that image only; each column's loss is the
    mean over the images labelled for it, and ``task_weights`` weighs the
    columns. ``predict`` then gives ``(n_samples, n_outputs_)`` labels,
    ``predict_proba`` a list of one array per column, ``score`` the subset
    accuracy. See the user guide's multi-task section.

    Parameters
    ----------{_SHARED_PARAMETERS}    dropout : float, default=0.2
        Dropout before the new linear head.
{_SHARED_PARAMETERS_MID}    class_weight : dict, list of dict, "balanced" or None, default=None
        Weights of the classes in the loss, as in scikit-learn: a dict maps
        the labels of ``y`` (as given, e.g. strings) to weights. With a 2-D
        ``y``, as scikit-learn's forests: one dict per column, or
        ``"balanced"``; an image's weight is the product over its labelled
        columns.
    label_smoothing : float, default=0.1
        Label smoothing of the cross-entropy loss.{_CLASSIFIER_END}
    Attributes
    ----------
    classes_ : ndarray or list of ndarray
        The class labels, as given in ``y``; with a 2-D ``y``, one array per
        column.
    n_outputs_ : int
        Columns of ``y`` (targets, or tasks): 1 for a 1-D ``y``.{_SHARED_ATTRIBUTES}
    See Also
    --------
    TransferRegressor : The same for real-valued targets.
    PretrainedFeatureExtractor : Frozen features for any scikit-learn model.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import TransferClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 60, size=(20, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["ok", "defect"] * 10)
    >>> X[y == "defect", 8:24, 8:24] = 255
    >>> clf = TransferClassifier(image_size=32, random_state=0).fit(X, y)
    >>> clf.predict(X[:2]).tolist()
    ['ok', 'defect']
    """

    _parameter_constraints = {
        **_TransferBase._parameter_constraints,
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(self, *, backbone="efficientnet_lite0", weights="DEFAULT", trainable_stages=1,
                 image_size="auto", augment="flips", max_epochs=20, batch_size=32, lr=1e-3,
                 backbone_lr_mult=1.0, weight_decay=0.01, max_grad_norm=1.0, dropout=0.2,
                 validation_fraction=None, patience=5, class_weight=None,
                 label_smoothing=0.1, device="auto", precision="auto", engine="auto",
                 n_jobs=None, memory=None, tta="auto", task_weights=None, warm_start=False,
                 checkpoint_dir=None, accelerator=None, verbose=0, random_state=None):
        super().__init__(
            backbone=backbone, weights=weights, trainable_stages=trainable_stages,
            image_size=image_size, augment=augment, max_epochs=max_epochs,
            batch_size=batch_size, lr=lr, backbone_lr_mult=backbone_lr_mult,
            weight_decay=weight_decay, max_grad_norm=max_grad_norm, dropout=dropout,
            validation_fraction=validation_fraction, patience=patience, device=device,
            precision=precision, engine=engine, n_jobs=n_jobs, memory=memory, tta=tta,
            task_weights=task_weights, warm_start=warm_start,
            checkpoint_dir=checkpoint_dir, accelerator=accelerator, verbose=verbose,
            random_state=random_state)
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing

    # One target path: a 1-D ``y`` is the one-column case of a 2-D ``y``
    # (as in scikit-learn's forests), unwrapped only at the outputs.

    @property
    def _n_outputs(self):
        return int(sum(self._tasks.widths))

    @property
    def _head_outputs(self):
        return self._tasks.widths

    def _target_weights(self, targets):
        # An image without any label takes no part, as one of weight 0.
        return (targets != _tasks.MISSING).any(axis=1).astype(np.float64)

    def _encode_targets(self, y, weights, reset):
        if y.ndim == 2 and y.shape[1] > 1:
            if not reset and self.n_outputs_ == 1:
                raise ValueError(f"y has {y.shape[1]} columns; this model was fitted on one.")
            tasks = _tasks.check_tasks(y) if reset else self._tasks
            codes = _tasks.encode(y, tasks)
        else:
            if not reset and self.n_outputs_ > 1:
                raise ValueError(f"y has one column; this model was fitted on "
                                 f"{self.n_outputs_}.")
            labels = _labels_1d(y)
            if reset:
                classes = np.unique(labels)
                if len(classes) < 2:
                    raise ValueError(
                        f"y has a single class ({classes[0]!r}); a classifier needs at "
                        "least two.")
                tasks = _tasks.Tasks("multiclass", (classes,))
            else:
                tasks = self._tasks
            unknown = np.setdiff1d(np.unique(labels), tasks.classes[0])
            if len(unknown):
                raise ValueError(f"y has labels {unknown.tolist()} not seen in the first fit.")
            codes = np.searchsorted(tasks.classes[0], labels).astype(np.int64)[:, None]
        _tasks.check_task_weights(self.task_weights, codes.shape[1])
        if reset:
            self._tasks = tasks
            self.n_outputs_ = len(tasks.classes)
            self.classes_ = tasks.classes[0] if self.n_outputs_ == 1 else list(tasks.classes)
        return codes

    def _class_weights(self, targets, weights):
        """Per task, the weight of each class (``class_weight``), or ``None``."""
        if self.class_weight is None:
            return None
        k = targets.shape[1]
        if isinstance(self.class_weight, dict) and k > 1:
            raise ValueError(
                f"class_weight is one dict, but y has {k} columns: give a list of one dict "
                "per column, or 'balanced' (as scikit-learn's forests).")
        if isinstance(self.class_weight, list) and k == 1:
            raise ValueError("class_weight is a list (one dict per column of a 2-D y), but "
                             "y has one column: give a dict or 'balanced'.")
        per_column = (self.class_weight if isinstance(self.class_weight, list)
                      else [self.class_weight] * k)
        if len(per_column) != k:
            raise ValueError(f"class_weight has {len(per_column)} dicts for the {k} columns "
                             "of y.")
        vectors = []
        for t, (cw, classes) in enumerate(zip(per_column, self._tasks.classes)):
            keep = (targets[:, t] != _tasks.MISSING) & (weights > 0)
            codes = targets[keep, t]
            vector = np.ones(len(classes))
            # Matched against the labels as given, as scikit-learn's forests do.
            vector[codes] = compute_sample_weight(cw, np.asarray(classes[codes].tolist()))
            vectors.append(vector)
        return vectors

    def _criterion(self, targets, weights):
        class_weights = self._class_weights(targets, weights)
        task_weights = _tasks.check_task_weights(self.task_weights, targets.shape[1])
        scales = _tasks.task_scales(targets, weights, task_weights, class_weights)
        return _tasks.TaskLoss(self._tasks.widths, self._tasks.multilabel, scales,
                               self.label_smoothing, class_weights)

    def _split(self, targets, seed):
        n = len(targets)
        if self.validation_fraction is None:
            return np.arange(n), np.array([], dtype=int)
        if self.n_outputs_ > 1:  # no stratification over several columns: a random split
            return _random_split(n, self.validation_fraction, seed)
        targets = targets[:, 0]
        counts = np.bincount(targets, minlength=len(self.classes_))
        n_valid = int(np.ceil(self.validation_fraction * n))
        if n_valid < len(self.classes_) or counts.min() < 2:
            short = self.classes_[int(np.argmin(counts))]
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves a class without "
                f"validation samples: {n_valid} validation images for "
                f"{len(self.classes_)} classes, and class {short!r} has {counts.min()} "
                "image(s). Use more images, a larger validation_fraction, or "
                "validation_fraction=None (no early stopping).")
        splitter = StratifiedShuffleSplit(1, test_size=n_valid, random_state=seed)
        return next(splitter.split(np.zeros(n), targets))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @worker_threads()
    def explain(self, X: ImageInput, target: ArrayLike | None = None, *,
                task: int | None = None) -> np.ndarray:
        """Grad-CAM heatmaps: where in each image the evidence for a class lies.

        Parameters
        ----------
        X : images
            In any accepted form.
        target : label, array-like of labels, or None, default=None
            The class to explain for each image (one label for all, or one
            per image); ``None`` explains the predicted class.
        task : int or None, default=None
            With a 2-D ``y``: the column whose head is explained (required);
            ``target`` then holds labels of that column. For a multilabel
            indicator, target 1 explains the evidence for the label, 0 the
            evidence against it.

        Returns
        -------
        heatmaps : ndarray of shape (n_samples, size, size)
            float32 in [0, 1], aligned with ``X``, at the network's input
            resolution (``size = image_size_``; the whole image, resized).
            Plot them over the images with :func:`sktransfer.plot_explanations`.

        Examples
        --------
        >>> import numpy as np
        >>> from sktransfer import TransferClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.integers(0, 60, size=(12, 32, 32), dtype=np.uint8)
        >>> y = np.array([0, 1] * 6)
        >>> X[y == 1, 4:12, 20:28] = 255
        >>> clf = TransferClassifier(image_size=32, max_epochs=2, random_state=0).fit(X, y)
        >>> clf.explain(X[:3]).shape
        (3, 32, 32)
        """
        from ._explain import explain

        return explain(self, X, target, task=task)

    @worker_threads()
    def predict_proba(self, X: ImageInput) -> np.ndarray | list[np.ndarray]:
        """Class probabilities, rows summing to 1, columns in ``classes_`` order.

        With a 2-D ``y``: a list with one such array per column of ``y``
        (for a multilabel indicator, each ``(n_samples, 2)``: the
        probabilities of 0 and 1), as scikit-learn's forests return them.
        """
        proba = _tasks.probabilities(self._raw_predict(X), self._tasks)
        return proba[0] if self.n_outputs_ == 1 else proba

    @worker_threads()
    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted class labels; with a 2-D ``y``, of shape ``(n_samples, n_outputs_)``."""
        proba = self.predict_proba(X)
        if self.n_outputs_ == 1:
            return self.classes_[proba.argmax(axis=1)]
        return _tasks.labels(proba, self._tasks)

    def score(self, X: ImageInput, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Mean accuracy; with a 2-D ``y``, subset accuracy (every column right).

        For a 2-D ``y``, as :class:`~sklearn.multioutput.MultiOutputClassifier`
        scores: an image counts as right when all its labelled columns are
        (missing labels are not compared).
        """
        if self.n_outputs_ == 1:
            return super().score(X, y, sample_weight=sample_weight)
        y = np.asarray(y)
        codes = _tasks.encode(y, self._tasks)
        predicted = _tasks.encode(self.predict(X), self._tasks)
        right = ((codes == predicted) | (codes == _tasks.MISSING)).all(axis=1)
        return float(np.average(right, weights=sample_weight))


def _check_shares(world: int, batch_size: int, n_train: int, n_valid: int) -> None:
    """Every process needs 2 images of each training batch and 1 validation image."""
    if min(batch_size, n_train) < 2 * world:
        raise ValueError(
            f"Each batch is split across the {world} processes of the accelerator, and "
            f"each process needs at least 2 images of it: batch_size={batch_size} and "
            f"{n_train} training images must both be at least {2 * world}.")
    if 0 < n_valid < world:
        raise ValueError(
            f"The validation part ({n_valid} images) is scored in shares by the {world} "
            "processes of the accelerator, and each needs at least one image: raise "
            "validation_fraction, or set it to None.")


def _random_split(n: int, fraction: float, seed: int):
    """Training and validation positions of a random (unstratified) split."""
    n_valid = int(np.ceil(fraction * n))
    if n - n_valid < 1:
        raise ValueError(f"validation_fraction={fraction} leaves no training images.")
    return next(ShuffleSplit(1, test_size=n_valid, random_state=seed).split(np.zeros(n)))


def _labels_1d(y: np.ndarray) -> np.ndarray:
    """Class labels as a 1-D array, refused with a reason if they are not."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D for a classifier, got shape {y.shape}.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; every image needs a label.")
    kind = type_of_target(y)
    if kind not in ("binary", "multiclass"):
        raise ValueError(f"Unknown label type: y is {kind!r}; expected class labels.")
    return y


class TransferRegressor(RegressorMixin, _TransferBase):
    __doc__ = f"""Fine-tune a pretrained CNN as a scikit-learn regressor.

    The same training as :class:`TransferClassifier` with a mean-squared
    error loss on standardised targets (internal target scaling, with the
    sample weights, undone in :meth:`predict`). The internal validation
    split is random, not stratified; early stopping watches the validation
    loss.

    Parameters
    ----------{_SHARED_PARAMETERS}    dropout : float, default=0.2
        Dropout before the new linear head.
{_SHARED_PARAMETERS_MID}{_REGRESSOR_END}
    Attributes
    ----------
    n_targets_ : int
        Number of regression targets.
    y_mean_, y_scale_ : ndarray
        The (weighted) mean and standard deviation of the targets.{_SHARED_ATTRIBUTES}
    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import TransferRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((16, 32, 32)).astype(np.float32)
    >>> y = X.mean(axis=(1, 2)) * 10
    >>> reg = TransferRegressor(image_size=32, max_epochs=2, random_state=0).fit(X, y)
    >>> reg.predict(X).shape
    (16,)
    """

    @property
    def _n_outputs(self):
        return self.n_targets_

    def _encode_targets(self, y, weights, reset):
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("y must hold numbers for a regressor.") from None
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; every image needs a finite target.")
        y2 = y.reshape(len(y), -1)
        _tasks.check_task_weights(self.task_weights, y2.shape[1])
        if reset:
            self._y_1d = y.ndim == 1
            self.n_targets_ = y2.shape[1]
            self.y_mean_ = np.average(y2, axis=0, weights=weights)
            std = np.sqrt(np.average((y2 - self.y_mean_) ** 2, axis=0, weights=weights))
            self.y_scale_ = np.where(std > 0, std, 1.0)
        return ((y2 - self.y_mean_) / self.y_scale_).astype(np.float32)

    def _criterion(self, targets, weights):
        if self.task_weights is None:
            return torch.nn.MSELoss(reduction="none")  # the mean over targets, in the loss
        return _tasks.TargetMSE(_tasks.check_task_weights(self.task_weights,
                                                          targets.shape[1]))

    def _split(self, targets, seed):
        n = len(targets)
        if self.validation_fraction is None:
            return np.arange(n), np.array([], dtype=int)
        return _random_split(n, self.validation_fraction, seed)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @worker_threads()
    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted targets, in the units of ``y``."""
        out = self._raw_predict(X) * self.y_scale_ + self.y_mean_
        return out.ravel() if self._y_1d else out
