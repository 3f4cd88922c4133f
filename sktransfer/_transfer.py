"""TransferClassifier and TransferRegressor: fine-tune a pretrained backbone.

The estimators hold the parameters, their validation, the docs and the
scikit-learn surface, and compose the parts of a fit: the target encoder
(:mod:`sktransfer._tasks`), the network (:mod:`sktransfer._network`), its
frozen part (:mod:`sktransfer._trunk`), the training data and the skorch net
(:mod:`sktransfer._training`). Predictions run the estimator's output
description (:mod:`sktransfer._outputs`), as ``explain``, ``export_onnx``
and :mod:`sktransfer.dask` do.
"""

from __future__ import annotations

import copy
import os
import sys
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from . import _device, _tasks
from . import _transfer_docs as docs
from ._base import BackboneEstimator
from ._device import worker_threads
from ._distributed import PickledAccelerator, check_accelerator
from ._images import ArrayLike, ImageInput, check_images
from ._inference import FLIPS
from ._network import TopNetwork
from ._outputs import Outputs
from ._persistence import check_input_columns, input_columns
from ._random import draw_seed, torch_generator, torch_rng
from ._training.data import check_shares
from ._trunk import FrozenPart

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

    def _fit_target_encoder(self, y: np.ndarray, weights: np.ndarray):
        """The target encoder fitted on ``y`` (:mod:`sktransfer._tasks`)."""
        raise NotImplementedError

    def _criterion(self, encoder, targets: np.ndarray, weights: np.ndarray):
        """The per-image loss, given the training part's targets and weights."""
        raise NotImplementedError

    def _stratify(self, encoder) -> np.ndarray | None:
        """The classes to stratify the validation split by, or ``None``."""
        return None

    # -- fit ----------------------------------------------------------------

    @worker_threads()
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ImageInput, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Fine-tune on images ``X`` with targets ``y``.

        A fit either succeeds or leaves the estimator as it was: an image
        that cannot be read, a NaN loss, an interruption, a split that
        cannot be made or a process of a distributed fit that fails raise,
        and an estimator fitted before still predicts as it did (an
        unfitted one stays unfitted).

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
        """Validate, compute in locals, then set every fitted attribute at once."""
        from . import _training

        owner = type(self).__name__
        continuing = self.warm_start and self.__sklearn_is_fitted__()

        # -- validate: nothing is computed yet, and nothing is set.
        if continuing:  # the columns of the first fit stay, as scikit-learn's warm starts keep them
            check_input_columns(self, X)
            self._check_continuation()
            columns = {k: getattr(self, k) for k in ("n_features_in_", "feature_names_in_")
                       if hasattr(self, k)}
        else:
            columns = input_columns(X)
        source = check_images(X)
        try:
            y = _tasks.check_targets(y, len(source))
        except ValueError as exc:
            raise ValueError(f"{owner} {exc}" if str(exc).startswith("requires") else str(exc)
                             ) from None
        weights = _check_sample_weight(sample_weight, np.empty(len(y)), dtype=np.float64,
                                       ensure_non_negative=True)
        if not (weights > 0).any():
            raise ValueError("Every sample weight is zero; at least one image must have a "
                             "positive weight.")
        encoder = self.target_encoder_ if continuing else self._fit_target_encoder(y, weights)
        targets = encoder.encode(y)
        _tasks.check_task_weights(self.task_weights, targets.shape[1])
        # Images of weight 0 (or without any label) take no part, as if left out.
        weights = weights * encoder.label_weights(targets)
        used = np.flatnonzero(weights > 0)
        if not len(used):
            raise ValueError("No image has both a positive sample weight and a label.")
        processes.check_same_data(source, targets, weights)
        # Every process draws what the main process draws (split, head, order).
        seed = processes.main_decides(lambda: draw_seed(self.random_state))
        checkpoint, resume, seed = self._checkpoint(source, targets, weights, seed, processes,
                                                    continuing)
        train_pos, valid_pos = _tasks.split(targets[used], self.validation_fraction, seed,
                                            classes=self._stratify(encoder))
        check_shares(processes.world, self.batch_size, len(train_pos), len(valid_pos))
        # The loss's statistics (task scales, balanced class weights) come
        # from the training part only.
        criterion = self._criterion(encoder, targets[used[train_pos]],
                                    weights[used[train_pos]])

        # -- compute: a new network, or a copy of the fitted one to continue.
        network, fitted = self._start_network(source, seed, encoder, continuing)
        cut, schedule = network.frozen_units(self.trainable_stages)
        network.freeze_before(cut)
        frozen = self._frozen_part(network, fitted, cut, schedule)
        feed = self._feed(fitted)
        # Dropout, stochastic depth and random augmentation draw from torch's
        # global generators: forked and seeded for the fit, restored after.
        with torch_rng(seed, fitted["device_"]):
            train_data, valid_data = self._training_data(
                source, used[train_pos], used[valid_pos], targets, weights, frozen, feed,
                processes)
            net = self._initialize_net(network, criterion, train_data, valid_data,
                                       fitted=fitted, schedule=schedule, seed=seed,
                                       checkpoint=checkpoint, processes=processes)
            run = _training.train(net, train_data, checkpoint=checkpoint, resume=resume,
                                  processes=processes, verbose=self.verbose)
        run.raise_if_stopped(owner)

        # -- set: the fit succeeded.
        trunk = frozen.trunk
        self._set_fitted({
            **columns, **fitted, **self._encoder_attributes(encoder),
            "target_encoder_": encoder,
            "model_": network.eval(),
            "trunk_": trunk,
            "engine_": "torch" if trunk is None else trunk.engine,
            "precision_": fitted["precision_"] if trunk is None else trunk.precision,
            "history_": run.history,
            "n_epochs_": run.n_epochs,
            "resumed_from_epoch_": run.resumed_from_epoch,
            "frozen_precomputed_": train_data.stored is not None,
        })
        return self

    def _encoder_attributes(self, encoder) -> dict:
        """The public fitted attributes that describe the targets."""
        raise NotImplementedError

    def _check_continuation(self) -> None:
        """A warm start continues the fitted network: refuse settings that
        would need another one (the targets are checked by their encoder)."""
        differs = []
        name = getattr(self.model_, "name", "") or self.backbone
        if self.backbone != name:
            differs.append(f"backbone={self.backbone!r}, but the network is {name!r}")
        if self.image_size != "auto":
            size = (getattr(self.model_, "input_size", None) if self.image_size is None
                    else int(self.image_size))
            if size is not None and size != self.image_size_:
                differs.append(f"image_size={self.image_size!r} means {size} px, but the "
                               f"network was fitted at {self.image_size_} px")
        if differs:
            raise ValueError(
                f"warm_start=True continues the fitted network, but {'; '.join(differs)}. "
                "Set them back, or fit with warm_start=False to start a new network.")

    def _checkpoint(self, source, targets, weights, seed, processes, continuing):
        """``(CheckpointDir or None, resume?, seed)``: an unfinished fit of the
        same data and parameters in ``checkpoint_dir`` resumes with its seed."""
        from . import __version__
        from ._training.checkpoint import CheckpointDir, fingerprint

        if self.checkpoint_dir is None or continuing:
            return None, False, seed
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("verbose", "n_jobs", "memory", "checkpoint_dir",
                               "warm_start", "accelerator")}
        if processes.distributed:  # the batches depend on it
            params["processes"] = processes.world
        # A checkpoint means what the version that wrote it meant.
        params["sktransfer"] = __version__
        # Every process hashes (side by side, not waiting in a collective);
        # the main process decides and writes, the others follow.
        digest, unstable = fingerprint(params, map(source.content_key, range(len(source))),
                                       targets, weights)
        checkpoint = CheckpointDir(self.checkpoint_dir)
        resume, seed = processes.main_decides(lambda: checkpoint.prepare(
            digest, seed, unstable, type(self).__name__))
        return checkpoint, resume, seed

    def _start_network(self, source, seed, encoder, continuing):
        """The network this fit trains and its fitted attributes: a new one,
        or a copy of the fitted one (a failed continuation leaves it as it was)."""
        if not continuing:
            return self._build_network(source, seed, encoder.head_widths, self.dropout)
        network = copy.deepcopy(self.model_)
        for module in network.head.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = self.dropout
        fitted = {k: getattr(self, k) for k in ("device_", "stages_", "image_size_",
                                                "preprocess_", "weights_id_")}
        fitted["precision_"] = _device.dtype_name(
            _device.resolve_precision(self.precision, self.device_))
        return network, fitted

    def _frozen_part(self, network, fitted, cut, schedule) -> FrozenPart:
        """The frozen units as they run in this fit and in its predictions."""
        engine = self._resolve_engine(fitted["device_"])
        if schedule or cut == 0:
            # Nothing fixed to export or store (everything trains, or the
            # frozen part shrinks with gradual unfreezing): torch runs it.
            return FrozenPart(network, None, getattr(torch, fitted["precision_"]))
        # The frozen units as they are: a warm start may freeze units an
        # earlier fit trained, so the pretrained weights' identity no longer
        # describes them.
        return FrozenPart(network, self._frozen_trunk(
            network, fitted, engine=engine, cut=cut, pool=False,
            weights_id=network.weights_id(cut), kind="frozen"))

    def _training_data(self, source, train_idx, valid_idx, targets, weights, frozen, feed,
                       processes):
        """The training and validation parts (``None`` without validation),
        with the frozen part's outputs computed once where the views are
        fixed: in memory within scikit-learn's ``working_memory`` (both parts
        together), else in a mapped file (:mod:`sktransfer._training.frozen`)."""
        from ._store import memory_location
        from ._training import PRECOMPUTE_FROZEN_OUTPUTS, random_augmenter
        from ._training.data import TrainingData
        from ._training.frozen import FrozenOutputs, working_memory_bytes

        augment = random_augmenter(self.augment, feed.preprocess.size)
        precompute = (PRECOMPUTE_FROZEN_OUTPUTS and frozen.trunk is not None
                      and augment is None)
        budget = [working_memory_bytes()]

        def part(idx, views=("identity",), augment=None):
            stored = None
            if precompute:
                stored = FrozenOutputs.compute(
                    frozen, source, idx, views, feed, budget=budget[0],
                    directory=memory_location(self.memory), processes=processes,
                    verbose=self.verbose, owner=type(self).__name__)
                if stored is not None and stored.where == "memory":
                    budget[0] = max(0, budget[0] - stored.nbytes)
            return TrainingData(source, idx, targets[idx], weights[idx], views=views,
                                augment=augment, frozen=frozen, feed=feed, stored=stored)

        views = FLIPS if self.augment == "flips" else ("identity",)
        return (part(train_idx, views, augment),
                part(valid_idx) if len(valid_idx) else None)

    def _initialize_net(self, network, criterion, train_data, valid_data, *, fitted, schedule,
                        seed, checkpoint, processes):
        """The configured skorch net that trains ``network`` from its cut point
        on, with :meth:`_get_default_callbacks` (as skorch's
        ``initialize_*`` methods build a net's parts)."""
        from skorch.helper import predefined_split

        from ._training.data import EpochBatches
        from ._training.net import TransferNet

        device = fitted["device_"]
        # Two parameter groups: the trained backbone units, then the new head.
        trains_backbone = network.cut < network.n_units or bool(schedule)
        backbone_lr = self.lr * self.backbone_lr_mult
        groups = [("network.backbone.*", {"lr": backbone_lr})] if trains_backbone else []
        steps = self.max_epochs * len(EpochBatches(train_data, self.batch_size,
                                                   processes=processes))
        generator = torch_generator(seed)
        callbacks = self._get_default_callbacks(
            max_lr=[backbone_lr] * trains_backbone + [self.lr], total_steps=steps,
            schedule=schedule, seed=seed, generator=generator, device=device,
            validation=valid_data is not None, checkpoint=checkpoint, processes=processes)
        accelerator = processes.accelerator
        if accelerator is None:
            net_class, placement = TransferNet, dict(
                device=str(device), autocast_dtype=_device.training_dtype(self.precision, device),
                unfreezes=bool(schedule))
        else:
            from ._training.accelerated import AcceleratedTransferNet

            # The accelerator places the module and runs autocast and loss
            # scaling; it prints on the main process only (skorch calls a
            # sink other than print whatever net.verbose says).
            net_class, placement = AcceleratedTransferNet, dict(
                accelerator=accelerator, device=None, unfreezes=bool(schedule),
                callbacks__print_log__sink=accelerator.print if self.verbose else _silent)
        return net_class(
            module=TopNetwork(network),
            criterion=criterion,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            optimizer__param_groups=groups,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train=EpochBatches,
            iterator_train__shuffle=True,
            iterator_train__generator=generator,
            iterator_train__processes=processes,
            iterator_valid=EpochBatches,
            iterator_valid__processes=processes,
            train_split=predefined_split(valid_data) if valid_data is not None else None,
            callbacks=callbacks,
            verbose=int(bool(self.verbose)),
            **placement,
        )

    def _get_default_callbacks(self, *, max_lr, total_steps, schedule, seed, generator, device,
                               validation, checkpoint, processes) -> list:
        """skorch callbacks of a fit, in the order they run: seeding, gradient
        clipping, validation scoring, reduction over processes, checkpoints,
        gradual unfreezing, the learning-rate schedule, early stopping and a
        progress bar."""
        from skorch.callbacks import EpochScoring, GradientNormClipping, ProgressBar

        from ._training import callbacks as cb

        classifier = is_classifier(self)
        rank = processes.rank if processes.distributed else None
        callbacks = [("seed_epoch", cb.SeedEpoch(seed, generator, device, rank)),
                     ("clip", GradientNormClipping(gradient_clip_value=self.max_grad_norm))]
        if validation and classifier:
            callbacks.append(("valid_acc", EpochScoring(
                cb.valid_accuracy, lower_is_better=False, name="valid_acc",
                target_extractor=cb.batch_targets)))
        if processes.distributed:
            scores = {"valid_acc": False} if validation and classifier else {}
            callbacks.append(("reduce", cb.ReduceAcrossProcesses(processes, validation, scores)))
        if checkpoint is not None:
            callbacks += checkpoint.callbacks(processes.is_main)
        if schedule:
            callbacks.append(("gradual_unfreeze", cb.GradualUnfreeze(schedule)))
        callbacks.append(("lr_schedule", cb.BatchOneCycle(max_lr=max_lr,
                                                          total_steps=total_steps)))
        speaks = self.verbose and processes.is_main
        if validation and self.patience is not None:
            # Classifiers stop on validation accuracy: under a one-cycle schedule
            # the validation loss of an over-confident model rises while its
            # accuracy still improves (seen on ELPV: best loss at epoch 1).
            monitor = "valid_acc" if classifier else "valid_loss"
            callbacks.append(("early_stopping", cb.ResumableEarlyStopping(
                monitor=monitor, lower_is_better=monitor == "valid_loss",
                patience=self.patience, load_best=True,
                best_params=checkpoint.file("best_params.pt") if checkpoint else None,
                is_main=processes.is_main, sink=print if speaks else _silent)))
        if speaks and sys.stderr.isatty():
            callbacks.append(("progress", ProgressBar()))
        return callbacks

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

    def __setstate__(self, state):
        state = dict(state)
        # A model pickled by sktransfer 0.2 kept how y was encoded in _tasks,
        # or in _y_1d, y_mean_ and y_scale_.
        if "model_" in state and "target_encoder_" not in state:
            if "_tasks" in state:
                state["target_encoder_"] = state.pop("_tasks")
            else:
                state["target_encoder_"] = _tasks.TargetScaler(
                    state["y_mean_"], state["y_scale_"], state.pop("_y_1d", True))
            state["frozen_precomputed_"] = state.pop("frozen_cached_", False)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

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

    def __sktransfer_outputs__(self) -> Outputs:
        """What this fitted estimator computes (see :mod:`sktransfer._outputs`):
        the frozen part as it ran in training, then the trained top at its
        training precision, averaged over the test-time views."""
        check_is_fitted(self)
        network = self.model_
        frozen = FrozenPart(network, self.trunk_,
                            getattr(torch, self.precision_))
        kind = "classes" if is_classifier(self) else "targets"
        return Outputs(kind, network, frozen, self._feed(),
                       views=FLIPS if self._use_tta() else ("identity",),
                       top_dtype=_device.training_dtype(self.precision, self.device_),
                       encoder=self.target_encoder_, width=self.target_encoder_.n_logits)

    def _raw_predict(self, X) -> np.ndarray:
        """Network outputs, averaged over the four flips with test-time augmentation."""
        check_is_fitted(self)
        check_input_columns(self, X)
        return self.__sktransfer_outputs__().raw(check_images(X))


#: The parameters in the order of ``__init__``, for the docstrings.
_REGRESSOR_PARAMETERS = [
    "backbone", "weights", "trainable_stages", "image_size", "augment", "max_epochs",
    "batch_size", "lr", "backbone_lr_mult", "weight_decay", "max_grad_norm", "dropout",
    "validation_fraction", "patience", "device", "precision", "engine", "n_jobs", "memory",
    "tta", "task_weights", "warm_start", "checkpoint_dir", "accelerator", "verbose",
    "random_state"]
_CLASSIFIER_PARAMETERS = (_REGRESSOR_PARAMETERS[:14] + ["class_weight", "label_smoothing"]
                          + _REGRESSOR_PARAMETERS[14:])


class TransferClassifier(ClassifierMixin, _TransferBase):
    __doc__ = docs.docstring(
        """Fine-tune a pretrained CNN as a scikit-learn classifier.

    A new linear head on the backbone's pooled features, trained with skorch:
    AdamW, a one-cycle (warm-up then cosine) learning-rate schedule, gradient
    clipping, and (with ``validation_fraction`` set) early stopping on an
    internal stratified validation split that restores the best weights
    (on validation accuracy). A fit either succeeds or leaves the estimator
    as it was.

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
""",
        _CLASSIFIER_PARAMETERS, {"tta": docs.CLASSIFIER_TTA},
        {"classes_": """\
    classes_ : ndarray or list of ndarray
        The class labels, as given in ``y``; with a 2-D ``y``, one array per
        column.
""", "n_outputs_": """\
    n_outputs_ : int
        Columns of ``y`` (targets, or tasks): 1 for a 1-D ``y``.
""", "target_encoder_": docs.TARGET_ENCODER.format(
            "sktransfer._tasks.Tasks", "the classes of each column of ``y``")},
        """
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
""")

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


    def _fit_target_encoder(self, y, weights):
        return _tasks.Tasks.fit(y)

    def _encoder_attributes(self, encoder):
        return {"classes_": encoder.classes_, "n_outputs_": encoder.n_outputs}

    def _criterion(self, encoder, targets, weights):
        return _tasks.classification_loss(
            encoder, targets, weights, class_weight=self.class_weight,
            task_weights=self.task_weights, label_smoothing=self.label_smoothing)

    def _stratify(self, encoder):
        # No stratification over several columns: a random split.
        return encoder.classes[0] if encoder.n_outputs == 1 else None

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

        check_is_fitted(self)
        check_input_columns(self, X)
        return explain(self.__sktransfer_outputs__(), check_images(X), target, task=task)

    @worker_threads()
    def predict_proba(self, X: ImageInput) -> np.ndarray | list[np.ndarray]:
        """Class probabilities, rows summing to 1, columns in ``classes_`` order.

        With a 2-D ``y``: a list with one such array per column of ``y``
        (for a multilabel indicator, each ``(n_samples, 2)``: the
        probabilities of 0 and 1), as scikit-learn's forests return them.
        """
        raw = self._raw_predict(X)
        proba = self.target_encoder_.probabilities(raw)
        return proba[0] if self.n_outputs_ == 1 else proba

    @worker_threads()
    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted class labels; with a 2-D ``y``, of shape ``(n_samples, n_outputs_)``."""
        raw = self._raw_predict(X)
        return self.target_encoder_.labels(self.target_encoder_.probabilities(raw))

    def score(self, X: ImageInput, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Mean accuracy; with a 2-D ``y``, subset accuracy (every column right).

        For a 2-D ``y``, as :class:`~sklearn.multioutput.MultiOutputClassifier`
        scores: an image counts as right when all its labelled columns are
        (missing labels are not compared).
        """
        check_is_fitted(self)
        if self.n_outputs_ == 1:
            return super().score(X, y, sample_weight=sample_weight)
        encoder = self.target_encoder_
        codes = encoder.encode(np.asarray(y))
        predicted = encoder.encode(self.predict(X))
        right = ((codes == predicted) | (codes == _tasks.MISSING)).all(axis=1)
        return float(np.average(right, weights=sample_weight))


class TransferRegressor(RegressorMixin, _TransferBase):
    __doc__ = docs.docstring(
        """Fine-tune a pretrained CNN as a scikit-learn regressor.

    The same training as :class:`TransferClassifier` with a mean-squared
    error loss on standardised targets (internal target scaling, with the
    sample weights, undone in :meth:`predict`). The internal validation
    split is random, not stratified; early stopping watches the validation
    loss. A fit either succeeds or leaves the estimator as it was.
""",
        _REGRESSOR_PARAMETERS, {},
        {"n_targets_": """\
    n_targets_ : int
        Number of regression targets.
""", "y_mean_": """\
    y_mean_, y_scale_ : ndarray
        The (weighted) mean and standard deviation of the targets.
""", "target_encoder_": docs.TARGET_ENCODER.format(
            "sktransfer._tasks.TargetScaler", "the targets' scaling")},
        """
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
""")

    def _fit_target_encoder(self, y, weights):
        return _tasks.TargetScaler.fit(y, weights)

    def _encoder_attributes(self, encoder):
        return {"n_targets_": encoder.n_outputs, "y_mean_": encoder.mean,
                "y_scale_": encoder.scale}

    def _criterion(self, encoder, targets, weights):
        return _tasks.regression_loss(self.task_weights, encoder.n_outputs)

    @worker_threads()
    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted targets, in the units of ``y``."""
        raw = self._raw_predict(X)
        return self.target_encoder_.decode(raw)


def _silent(*args, **kwargs):
    pass
