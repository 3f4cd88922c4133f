"""TransferClassifier and TransferRegressor: fine-tune a pretrained backbone.

Training runs in skorch (:class:`skorch.NeuralNet`): optimizer, learning-rate
schedule, gradient clipping, early stopping with best-weights restore and the
per-epoch log all come from skorch callbacks. This module decides what to
train (freezing), on what (images, or cached outputs of the frozen part) and
how to predict (batched inference, as in the feature extractor).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import _device
from ._backbones import DEFAULT_BACKBONE, load_backbone
from ._inputs import ArrayLike, ImageInput, Preprocess, check_images, iter_batches
from ._network import TopNetwork, TransferNetwork
from ._persistence import TorchModelPickleMixin, check_input_columns

FREEZE_OPTIONS = ("backbone", "none", "gradual")
AUGMENT_OPTIONS = ("flips",)


# --------------------------------------------------------------------------
# Data


def _augmenter(augment, size: int):
    """Per-image random augmentation of a ``(3, size, size)`` tensor in [0, 1]."""
    from torchvision.transforms import v2

    if augment is True:
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ])
    if augment == "flips":
        return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])
    if callable(augment):
        return augment
    return None


class _ImageDataset(Dataset):
    """Images of ``source`` at ``indices``, decoded, resized, augmented, normalised."""

    def __init__(self, source, indices, targets, weights, preprocess, augment=None):
        self.source = source
        self.indices = np.asarray(indices)
        self.targets = targets
        self.weights = weights
        self.preprocess = preprocess
        self.augment = augment

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        x = self.preprocess.resize([self.source.load(j, self.preprocess.size)])
        if self.augment is not None:
            x = self.augment(x[0])[None].clamp_(0, 1)
        x = self.preprocess.normalize(x)[0]
        return x, (self.targets[i], self.weights[i])


class _TensorPairs(Dataset):
    def __init__(self, X, targets, weights):
        self.X, self.targets, self.weights = X, targets, weights

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i].float(), (self.targets[i], self.weights[i])


# --------------------------------------------------------------------------
# skorch


def _skorch_net_class():
    from skorch import NeuralNet

    class _Trainer(NeuralNet):
        """skorch NeuralNet with sample weights, autocast and a NaN guard."""

        def __init__(self, *args, autocast_dtype=torch.float32, **kwargs):
            super().__init__(*args, **kwargs)
            self.autocast_dtype = autocast_dtype

        def get_all_learnable_params(self):
            # Every parameter, frozen or not: gradual unfreezing turns
            # requires_grad on during training, and the optimizer must
            # already hold those parameters. AdamW skips parameters without
            # gradients, so frozen ones are neither updated nor decayed.
            yield from self.module_.named_parameters()

        def infer(self, x, **fit_params):
            with _device.autocast_from(self.module_, None, torch.device(self.device),
                                       self.autocast_dtype):
                return super().infer(x, **fit_params).float()

        def fit_loop(self, X, y=None, epochs=None, **fit_params):
            # skorch ends training on KeyboardInterrupt, early stopping's
            # included; remember which one it was.
            try:
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
            except KeyboardInterrupt:
                if not getattr(self, "early_stopped_", False):
                    self.interrupted_ = True
                raise

        def get_loss(self, y_pred, y_true, X=None, training=False):
            y, w = y_true
            y = y.to(y_pred.device)
            w = w.to(y_pred.device, dtype=y_pred.dtype)
            losses = self.criterion_(y_pred, y)
            if losses.ndim > 1:  # regression: mean over targets
                losses = losses.mean(dim=1)
            loss = (losses * w).sum() / w.sum()
            if training and not torch.isfinite(loss):
                raise _NonFiniteLoss(len(self.history))
            return loss

    return _Trainer


class _NonFiniteLoss(Exception):
    def __init__(self, epoch):
        super().__init__(epoch)
        self.epoch = epoch


def _callbacks(est, group_lrs, n_train_steps, has_valid, gradual_units, network, last_good,
               checkpoint_dir=None):
    from skorch.callbacks import (
        Callback,
        Checkpoint,
        EarlyStopping,
        EpochScoring,
        GradientNormClipping,
        LRScheduler,
        ProgressBar,
    )

    class KeepLastGood(Callback):
        """Copy of the weights after each finished epoch, for NaN recovery."""

        def on_epoch_end(self, net, **kwargs):
            last_good["state"] = copy.deepcopy(network.state_dict())

    class GradualUnfreeze(Callback):
        """Head first, then one more stage per epoch, deepest first."""

        def on_epoch_begin(self, net, **kwargs):
            epoch = len(net.history)  # already includes this epoch's row
            k = min(epoch - 1, len(gradual_units))
            if k > 0:
                network.freeze_first(gradual_units[-k])

    class BatchLRScheduler(LRScheduler):
        """A per-batch schedule that also resumes at the right step."""

        def _get_scheduler(self, net, policy, **kwargs):
            # skorch counts epochs in last_epoch; a per-batch schedule counts batches
            kwargs["last_epoch"] = self.batch_idx_ - 1
            return policy(net.optimizer_, **kwargs)

    class ResumableEarlyStopping(EarlyStopping):
        """skorch's EarlyStopping, carried on from a resumed history."""

        def on_train_begin(self, net, **kwargs):
            super().on_train_begin(net, **kwargs)
            for row in net.history:  # non-empty only when resuming
                if self._is_score_improved(row[self.monitor]):
                    self.misses_ = 0
                    self.dynamic_threshold_ = self._calc_new_threshold(row[self.monitor])
                    self.best_epoch_ = row["epoch"]
                else:
                    self.misses_ += 1
            best = os.path.join(checkpoint_dir or "", "best_params.pt")
            if len(net.history) and checkpoint_dir and os.path.exists(best):
                self.best_model_weights_ = torch.load(best, weights_only=True)

        def on_epoch_end(self, net, **kwargs):
            try:
                super().on_epoch_end(net, **kwargs)
            except KeyboardInterrupt:
                net.early_stopped_ = True
                raise
            finally:
                if (checkpoint_dir and self.load_best
                        and self.best_epoch_ == net.history[-1, "epoch"]):
                    _atomic_torch_save(self.best_model_weights_,
                                       os.path.join(checkpoint_dir, "best_params.pt"))

    callbacks = [
        ("clip", GradientNormClipping(gradient_clip_value=est.max_grad_norm)),
        ("keep_last_good", KeepLastGood()),
    ]
    if gradual_units:
        callbacks.append(("gradual_unfreeze", GradualUnfreeze()))
    callbacks.append(("lr_schedule", BatchLRScheduler(
        policy=torch.optim.lr_scheduler.OneCycleLR, max_lr=group_lrs,
        total_steps=max(n_train_steps, 1),
        pct_start=0.15, anneal_strategy="cos", div_factor=25.0, step_every="batch",
    )))
    if has_valid and est._is_classifier:
        callbacks.append(("valid_acc", EpochScoring(
            _valid_accuracy, lower_is_better=False, name="valid_acc",
            target_extractor=lambda yw: yw[0].numpy())))
    if checkpoint_dir:
        # Every epoch, before early stopping can end it.
        callbacks.append(("checkpoint", Checkpoint(
            monitor=None, dirname=checkpoint_dir, f_params="params.pt",
            f_optimizer="optimizer.pt", f_criterion=None, f_history="history.json",
            load_best=False)))
    if has_valid and est.patience is not None:
        # Classifiers stop on validation accuracy: under a one-cycle schedule
        # the validation loss of an over-confident model rises while its
        # accuracy still improves (seen on ELPV: best loss at epoch 1).
        monitor = "valid_acc" if est._is_classifier else "valid_loss"
        callbacks.append(("early_stopping", ResumableEarlyStopping(
            monitor=monitor, lower_is_better=monitor == "valid_loss",
            patience=est.patience, load_best=True,
            sink=print if est.verbose else (lambda *a, **k: None))))
    if est.verbose and sys.stderr.isatty():
        callbacks.append(("progress", ProgressBar()))
    return callbacks


def _atomic_torch_save(obj, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _valid_accuracy(net, X, y):
    preds = torch.cat([yp.argmax(1).cpu() for yp in net.forward_iter(X, training=False)])
    return float((preds.numpy() == np.asarray(y)).mean())


# --------------------------------------------------------------------------
# Estimators


class _TransferBase(TorchModelPickleMixin, BaseEstimator):
    _is_classifier = False

    _parameter_constraints = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "freeze": [StrOptions(set(FREEZE_OPTIONS)), Interval(Integral, 0, None, closed="left")],
        "image_size": [Interval(Integral, 8, None, closed="left"), StrOptions({"auto"}), None],
        "augment": ["boolean", StrOptions(set(AUGMENT_OPTIONS)), callable],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_mult": [Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "precision": [StrOptions(set(_device.PRECISION_OPTIONS))],
        "n_jobs": [Integral, None],
        "tta": ["boolean", StrOptions({"auto"})],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        backbone=DEFAULT_BACKBONE,
        weights="DEFAULT",
        freeze=2,
        image_size="auto",
        augment="flips",
        max_epochs=5,
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
        n_jobs=None,
        tta=False,
        warm_start=False,
        checkpoint_dir=None,
        verbose=0,
        random_state=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.freeze = freeze
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
        self.n_jobs = n_jobs
        self.tta = tta
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.verbose = verbose
        self.random_state = random_state

    # -- hooks for the subclasses -------------------------------------------

    def _encode_targets(self, y, reset):
        raise NotImplementedError

    def _criterion(self):
        raise NotImplementedError

    def _split(self, y_enc, seed):
        raise NotImplementedError

    # -- fit ----------------------------------------------------------------

    def _fit(self, X, y, sample_weight=None):
        check_input_columns(self, X, reset=not self._continuing())
        source = check_images(X)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but y is None.")
        y = np.asarray(y)
        if len(y) != len(source):
            raise ValueError(
                f"X has {len(source)} images but y has {len(y)} targets; they must "
                "have the same length."
            )
        continuing = self._continuing()
        targets = self._encode_targets(y, reset=not continuing)
        weights = _check_sample_weight(sample_weight, np.empty(len(y)), dtype=np.float64)
        if self._is_classifier and self.class_weight is not None:
            weights = weights * compute_sample_weight(self.class_weight, targets)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        checkpoint = self._checkpoint(source, targets, weights)
        if checkpoint is not None:
            ckpt_dir, resume, info = checkpoint
            seed = info.setdefault("seed", seed)  # a resumed fit keeps its split
            self._write_checkpoint_info(ckpt_dir, info)

        self.device_ = _device.resolve_device(self.device)
        self.precision_ = _device.dtype_name(
            _device.resolve_precision(self.precision, self.device_))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if not continuing:
                backbone = load_backbone(self.backbone, self.weights, seed=seed)
                self.stages_ = list(backbone.stages)
                self.preprocess_ = {
                    "size": self._input_size(source, backbone.input_size),
                    "mean": backbone.mean, "std": backbone.std,
                    "interpolation": backbone.interpolation,
                }
                self.image_size_ = self.preprocess_["size"]
                self.model_ = TransferNetwork.from_backbone(
                    backbone, self._n_outputs, dropout=self.dropout)
            network = self.model_
            stage_units = network.stage_unit_indices(self.stages_)
            n_frozen, gradual_units = self._frozen_units(network, stage_units)
            network.freeze_first(n_frozen)
            network.to(self.device_, memory_format=torch.channels_last)

            train_idx, valid_idx = self._split(targets, seed)
            preprocess = Preprocess(**self.preprocess_)
            fast = (not gradual_units and n_frozen > 0
                    and (self.augment is False or self.augment == "flips"))
            self.fast_path_ = bool(fast)
            if fast:
                module = TopNetwork(network)
                train_ds = self._cached_dataset(
                    network, source, train_idx, targets, weights, preprocess,
                    views=_FLIP_VIEWS if self.augment == "flips" else _FLIP_VIEWS[:1])
                valid_ds = (self._cached_dataset(network, source, valid_idx, targets, weights,
                                                 preprocess, views=_FLIP_VIEWS[:1])
                            if len(valid_idx) else None)
            else:
                module = network
                aug = _augmenter(self.augment, preprocess.size)
                train_ds = _ImageDataset(source, train_idx, targets[train_idx],
                                         weights[train_idx], preprocess, aug)
                valid_ds = (_ImageDataset(source, valid_idx, targets[valid_idx],
                                          weights[valid_idx], preprocess)
                            if len(valid_idx) else None)
            self._train(module, network, train_ds, valid_ds, gradual_units, checkpoint)
        self.model_.eval()
        return self

    def _input_size(self, source, backbone_size: int) -> int:
        """The network's input side: ``image_size``, or for ``"auto"`` the
        images' own (median shorter side of up to 256 of them), kept within
        [backbone size, 1.5 x backbone size]."""
        if self.image_size is None:
            return int(backbone_size)
        if self.image_size != "auto":
            return int(self.image_size)
        probe = np.unique(np.linspace(0, len(source) - 1, min(len(source), 256)).astype(int))
        sides = [s for s in map(source.shorter_side, probe) if s is not None]
        side = int(np.median(sides)) if sides else backbone_size
        return int(min(max(side, backbone_size), round(1.5 * backbone_size)))

    def _use_tta(self):
        return self.tta is True or (self.tta == "auto" and self.augment == "flips")

    def _training_dtype(self):
        """bf16 autocast for training on CUDA; float32 on the CPU.

        On a CPU with AMX/AVX512-BF16, bf16 doubles inference speed (used for
        the frozen part) but measured no faster than float32 for a training
        step of EfficientNet-Lite0's top stages, so training keeps float32.
        """
        dtype = getattr(torch, self.precision_)
        if self.device_.type == "cpu" and self.precision == "auto":
            return torch.float32
        return dtype

    def _continuing(self):
        return self.warm_start and hasattr(self, "model_")

    def _frozen_units(self, network, stage_units):
        """Number of leading units to freeze, and the gradual schedule."""
        n_units = len(network.body)
        freeze = self.freeze
        if freeze == "none":
            return 0, []
        if freeze == "backbone" or freeze == 0:
            return n_units, []
        if freeze == "gradual":
            if not stage_units:
                raise ValueError(
                    f"freeze='gradual' needs the stages of {self.backbone!r}, which "
                    "sktransfer cannot split; use freeze='backbone' or 'none'.")
            return n_units, stage_units
        if not stage_units or freeze > len(stage_units):
            raise ValueError(
                f"freeze={freeze}: {self.backbone!r} has {len(stage_units)} stages that "
                f"can be trained separately; use an int in 1..{len(stage_units)}, "
                "'backbone', 'none' or 'gradual'.")
        return stage_units[-freeze], []

    def _cached_dataset(self, network, source, idx, targets, weights, preprocess, views):
        """Outputs of the frozen units, computed once per view (the fast path)."""
        trunk = network.body[: network.n_frozen].eval()
        dtype = getattr(torch, self.precision_)
        # Stored in bf16 under bf16 autocast: half the memory.
        store = torch.float32 if dtype == torch.float32 else torch.bfloat16
        chunks = [[] for _ in views]
        bar = tqdm(total=len(idx), unit="img", disable=not self.verbose,
                   desc="frozen part, once", file=sys.stderr)
        with bar:
            for _, batch in iter_batches(source, idx, self.batch_size, preprocess,
                                         self.n_jobs):
                for v, view in enumerate(views):  # decode once, every view
                    out = _device.infer(trunk, view(batch), self.device_, dtype)
                    chunks[v].append(out.to("cpu", dtype=store))
                bar.update(len(batch))
        n_views = len(views)
        X = torch.cat([torch.cat(c) for c in chunks])
        if X.ndim == 4:
            X = X.contiguous(memory_format=torch.channels_last)
        rep = np.tile(np.asarray(idx), n_views)
        return _TensorPairs(X, targets[rep], weights[rep])

    def _checkpoint(self, source, targets, weights):
        """``(dir, resume, seed)`` for ``checkpoint_dir``, or None.

        A fit is resumed only if the directory holds an unfinished fit with
        the same parameters and data (fingerprint of both); it then reuses
        that fit's seed, hence the same validation split.
        """
        if self.checkpoint_dir is None or self._continuing():
            return None
        path = os.fspath(self.checkpoint_dir)
        os.makedirs(path, exist_ok=True)
        h = hashlib.sha256()
        params = {k: repr(v) for k, v in sorted(self.get_params(deep=False).items())
                  if k not in ("verbose", "n_jobs", "checkpoint_dir", "warm_start")}
        h.update(json.dumps(params).encode())
        for i in range(len(source)):
            h.update(source.content_key(i).encode())
        h.update(np.ascontiguousarray(targets).tobytes())
        h.update(np.ascontiguousarray(weights).tobytes())
        fingerprint = h.hexdigest()
        info_path = os.path.join(path, "fit.json")
        info = {}
        if os.path.exists(info_path):
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
        unfinished = not info.get("complete", True) and os.path.exists(
            os.path.join(path, "params.pt"))
        if unfinished and info.get("fingerprint") != fingerprint:
            raise ValueError(
                f"checkpoint_dir={path!r} holds an unfinished fit of other data or "
                "other parameters; use another directory, or delete it to start over.")
        if not unfinished:
            for name in _CHECKPOINT_FILES:
                if os.path.exists(os.path.join(path, name)):
                    os.remove(os.path.join(path, name))
            info = {"fingerprint": fingerprint, "complete": False}
        return path, unfinished, info

    def _write_checkpoint_info(self, path, info):
        tmp = os.path.join(path, f".fit.json.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(path, "fit.json"))

    def _train(self, module, network, train_ds, valid_ds, gradual_units, checkpoint=None):
        from skorch.helper import predefined_split

        # Two parameter groups: trained backbone units, then the new head.
        body = "top" if isinstance(module, TopNetwork) else "body"
        has_body = any(n.startswith(body + ".") for n, _ in module.named_parameters())
        groups = [(f"{body}.*", {"lr": self.lr * self.backbone_lr_mult})] if has_body else []
        group_lrs = [self.lr * self.backbone_lr_mult] * bool(has_body) + [self.lr]
        steps = self.max_epochs * int(np.ceil(len(train_ds) / self.batch_size))
        last_good = {"state": copy.deepcopy(network.state_dict())}
        ckpt_dir, resume, info = checkpoint or (None, False, None)
        Trainer = _skorch_net_class()
        net = Trainer(
            module=module,
            criterion=self._criterion(),
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            optimizer__param_groups=groups,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            train_split=predefined_split(valid_ds) if valid_ds is not None else None,
            callbacks=_callbacks(self, group_lrs, steps, valid_ds is not None, gradual_units,
                                 network, last_good, ckpt_dir),
            device=str(self.device_),
            verbose=int(bool(self.verbose)),
            autocast_dtype=self._training_dtype(),
        )
        net.initialize()
        self.resumed_from_epoch_ = 0
        if resume:
            net.load_params(f_params=os.path.join(ckpt_dir, "params.pt"),
                            f_optimizer=os.path.join(ckpt_dir, "optimizer.pt"),
                            f_history=os.path.join(ckpt_dir, "history.json"))
            self.resumed_from_epoch_ = len(net.history)
            if self.verbose:
                print(f"Resuming from the checkpoint of epoch {len(net.history)} in "
                      f"{ckpt_dir!r}.", file=sys.stderr)
        try:
            net.partial_fit(train_ds, None,
                            epochs=max(self.max_epochs - self.resumed_from_epoch_, 0))
        except _NonFiniteLoss as exc:
            network.load_state_dict(last_good["state"])
            self.history_ = list(net.history)
            raise FloatingPointError(
                f"The training loss became NaN or infinite in epoch {exc.epoch}; "
                "training stopped and the weights of the last completed epoch were "
                "kept (the model can still predict). Lower lr, or use "
                "precision='float32'."
            ) from None
        self.history_ = [dict(row) for row in net.history]
        for row in self.history_:
            row.pop("batches", None)
        self.n_epochs_ = len(self.history_)
        if getattr(net, "interrupted_", False):
            where = (f" Epochs 1..{self.n_epochs_ - 1} are saved in {ckpt_dir!r}: fit again "
                     "with the same data and parameters to resume." if ckpt_dir else "")
            print(f"{type(self).__name__}: training interrupted in epoch "
                  f"{self.n_epochs_}.{where}", file=sys.stderr)
            raise KeyboardInterrupt
        if ckpt_dir:
            self._write_checkpoint_info(ckpt_dir, {**info, "complete": True})

    # -- predict --------------------------------------------------------------

    def _raw_predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        check_input_columns(self, X, reset=False)
        source = check_images(X)
        preprocess = Preprocess(**self.preprocess_)
        dtype = getattr(torch, self.precision_)
        out = np.empty((len(source), self._n_outputs), dtype=np.float32)
        self.model_.eval()
        views = _FLIP_VIEWS if self._use_tta() else _FLIP_VIEWS[:1]
        for pos, batch in iter_batches(source, range(len(source)), self.batch_size,
                                       preprocess, self.n_jobs):
            logits = [_device.infer(self.model_, view(batch), self.device_, dtype).cpu()
                      for view in views]
            out[pos] = torch.stack(logits).mean(0).numpy()
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.input_tags.positive_only = True
        tags.non_deterministic = torch.cuda.is_available() and self.device != "cpu"
        return tags


_CHECKPOINT_FILES = ("params.pt", "optimizer.pt", "history.json", "best_params.pt")

_FLIP_VIEWS = [
    lambda x: x,
    lambda x: x.flip(-1),
    lambda x: x.flip(-2),
    lambda x: x.flip(-1).flip(-2),
]


class TransferClassifier(ClassifierMixin, _TransferBase):
    """Fine-tune a pretrained CNN as a scikit-learn classifier.

    A new linear head on the backbone's pooled features, trained with skorch:
    AdamW, a one-cycle (warm-up then cosine) learning-rate schedule, gradient
    clipping, and (with ``validation_fraction`` set) early stopping on an
    internal stratified validation split that restores the best weights.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Name of the pretrained network, see :func:`sktransfer.list_backbones`.
    weights : "DEFAULT", None or path, default="DEFAULT"
        As in :class:`PretrainedFeatureExtractor`; ``None`` trains from a
        random initialisation (no transfer).
    freeze : int, "backbone", "none" or "gradual", default=2
        What stays frozen. An int k trains the last k stages (plus what
        follows them and the head); ``"backbone"`` (or 0) trains the head
        only; ``"none"`` trains everything; ``"gradual"`` trains the head in
        the first epoch, then unfreezes one more stage per epoch, deepest
        first. Frozen parts keep ``requires_grad=False`` and stay in eval mode,
        so their BatchNorm statistics never change.
    image_size : int, "auto" or None, default="auto"
        Side of the square network input. ``None``: the backbone's (224 for
        EfficientNet-Lite0). ``"auto"``: the training images' own shorter
        side (median), kept between the backbone's size and 1.5 times it, so
        that larger images keep fine detail (ELPV's 300x300 cells: 300,
        which raised inner cross-validated accuracy from 87.2 % to 89.1 %,
        ``benchmarks/results/transfer_selection.md``) at up to 2.25 times
        the compute; smaller images are upsampled to the backbone's size.
        The size used is ``image_size_``.
    augment : bool, "flips" or callable, default="flips"
        Training-time augmentation. ``"flips"``: the four horizontal/vertical
        flips of each image. ``True``: random resized crop, horizontal flip,
        rotation up to 10 degrees, brightness/contrast jitter. A callable
        maps a ``(3, H, W)`` float tensor in [0, 1] to another. ``False``:
        none. With a frozen part and ``False`` or ``"flips"``, the frozen
        part's output is computed once per fit (once per flip) and only the
        top is trained on it, instead of recomputing the frozen trunk every
        epoch (``fast_path_``).
    max_epochs : int, default=5
        Maximum number of passes over the training data (with
        ``augment="flips"``, each pass shows every image four times).
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
    dropout : float, default=0.2
        Dropout before the new linear head.
    validation_fraction : float or None, default=None
        Fraction of the training data held out (stratified) for early
        stopping. ``None``: train on everything for ``max_epochs`` epochs,
        the whole one-cycle schedule. On ELPV that beat holding out 0.1 for
        early stopping in inner cross-validation (89.4 % against 89.1 %,
        ``benchmarks/results/transfer_selection.md``): a tenth more images,
        and no early stop on a noisy small validation set.
    patience : int or None, default=5
        With ``validation_fraction`` set: epochs without a better validation
        accuracy before stopping; the best epoch's weights are restored.
        ``None`` disables early stopping.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, as in scikit-learn.
    label_smoothing : float, default=0.1
        Label smoothing of the cross-entropy loss.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        ``"auto"`` uses CUDA when it is available.
    precision : {"auto", "float32", "bfloat16"}, default="auto"
        ``"auto"``: bf16 autocast where the hardware computes bf16 natively
        for inference (the frozen part, predictions) and, on CUDA, training;
        training steps on the CPU stay float32 (measured no faster in bf16).
        ``"bfloat16"`` forces bf16 everywhere, ``"float32"`` nowhere.
    n_jobs : int or None, default=None
        Threads decoding image files.
    tta : bool or "auto", default=False
        Test-time augmentation: predictions average the logits of the four
        flips of each image (four times the prediction cost). ``"auto"``:
        when ``augment="flips"``, the views the model was trained on. On
        ELPV, with the default training, it did not raise inner
        cross-validated accuracy (89.38 % against 89.43 % without; ROC AUC
        0.934 against 0.930), so it is off by default
        (``benchmarks/results/transfer_selection.md``).
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
        or parameters is refused; a finished fit's files are replaced.
    verbose : int, default=0
        If > 0, print skorch's per-epoch table (and a progress bar in a
        terminal).
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the head's initialisation, shuffling, augmentation
        and dropout: the same int gives identical predictions on CPU.

    Attributes
    ----------
    classes_ : ndarray
        The class labels, as given in ``y``.
    model_ : sktransfer._network.TransferNetwork
        The fine-tuned network, in eval mode.
    history_ : list of dict
        skorch's per-epoch history (losses, validation accuracy, timings).
    n_epochs_ : int
        Epochs run.
    image_size_ : int
        Side of the network input used (see ``image_size``).
    fast_path_ : bool
        Whether the frozen part's output was computed once and reused.
    resumed_from_epoch_ : int
        Epochs taken from a checkpoint (0 when training started afresh).
    stages_ : list of str
        The backbone's stages, shallowest first.
    device_, precision_ :
        Where and at which precision it ran.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import TransferClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 60, size=(20, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["ok", "defect"] * 10)
    >>> X[y == "defect", 8:24, 8:24] = 255
    >>> clf = TransferClassifier(image_size=32, max_epochs=3, random_state=0).fit(X, y)
    >>> clf.predict(X[:2]).tolist()
    ['ok', 'defect']
    """

    _is_classifier = True
    _parameter_constraints = {
        **_TransferBase._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(self, *, backbone=DEFAULT_BACKBONE, weights="DEFAULT", freeze=2,
                 image_size="auto", augment="flips", max_epochs=5, batch_size=32, lr=1e-3,
                 backbone_lr_mult=1.0, weight_decay=0.01, max_grad_norm=1.0, dropout=0.2,
                 validation_fraction=None, patience=5, class_weight=None,
                 label_smoothing=0.1, device="auto", precision="auto", n_jobs=None,
                 tta=False, warm_start=False, checkpoint_dir=None, verbose=0,
                 random_state=None):
        super().__init__(
            backbone=backbone, weights=weights, freeze=freeze, image_size=image_size,
            augment=augment, max_epochs=max_epochs, batch_size=batch_size, lr=lr,
            backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay,
            max_grad_norm=max_grad_norm, dropout=dropout,
            validation_fraction=validation_fraction, patience=patience, device=device,
            precision=precision, n_jobs=n_jobs, tta=tta, warm_start=warm_start,
            checkpoint_dir=checkpoint_dir, verbose=verbose, random_state=random_state)
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ImageInput, y: ArrayLike,
            sample_weight: ArrayLike | None = None) -> TransferClassifier:
        """Fine-tune on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : images
            Paths, PIL images or arrays, in any form the feature extractor takes.
        y : array-like of shape (n_samples,)
            Class labels (any hashable, e.g. strings).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-image weights of the loss.

        Returns
        -------
        self : TransferClassifier
        """
        return self._fit(X, y, sample_weight)

    @property
    def _n_outputs(self):
        return len(self.classes_)

    def _encode_targets(self, y, reset):
        if y.ndim != 1:
            y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
            if y.ndim != 1:
                raise ValueError(f"y must be 1-D for a classifier, got shape {y.shape}.")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; every image needs a label.")
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: y is {kind!r}; expected class labels.")
        if reset:
            encoder = LabelEncoder().fit(y)
            if len(encoder.classes_) < 2:
                raise ValueError(
                    f"y has a single class ({encoder.classes_[0]!r}); a classifier needs "
                    "at least two.")
            self.classes_ = encoder.classes_
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(f"y has labels {unknown.tolist()} not seen in the first fit.")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _criterion(self):
        return torch.nn.CrossEntropyLoss(reduction="none",
                                         label_smoothing=self.label_smoothing)

    def _split(self, y_enc, seed):
        n = len(y_enc)
        if self.validation_fraction is None:
            return np.arange(n), np.array([], dtype=int)
        counts = np.bincount(y_enc, minlength=len(self.classes_))
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
        return next(splitter.split(np.zeros(n), y_enc))

    def explain(self, X: ImageInput, target: ArrayLike | None = None) -> np.ndarray:
        """Grad-CAM heatmaps: where in each image the evidence for a class lies.

        Parameters
        ----------
        X : images
            In any accepted form.
        target : label, array-like of labels, or None, default=None
            The class to explain for each image (one label for all, or one
            per image); ``None`` explains the predicted class.

        Returns
        -------
        heatmaps : ndarray of shape (n_samples, size, size)
            float32 in [0, 1], aligned with ``X``, at the network's input
            resolution (``size = image_size_``; the whole image, resized). Plot them over the images
            with :func:`sktransfer.plot_explanations`.

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

        return explain(self, X, target)

    def predict_proba(self, X: ImageInput) -> np.ndarray:
        """Class probabilities, rows summing to 1, columns in ``classes_`` order."""
        logits = torch.from_numpy(self._raw_predict(X))
        return logits.softmax(dim=1).numpy()

    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted class labels."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class TransferRegressor(RegressorMixin, _TransferBase):
    """Fine-tune a pretrained CNN as a scikit-learn regressor.

    Same parameters and training as :class:`TransferClassifier` (without
    ``class_weight``), with a mean-squared-error loss on standardised
    targets (internal target scaling, undone in :meth:`predict`). The
    internal validation split is random, not stratified.

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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ImageInput, y: ArrayLike,
            sample_weight: ArrayLike | None = None) -> TransferRegressor:
        """Fine-tune on images ``X`` with real-valued targets ``y``.

        Parameters
        ----------
        X : images
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : TransferRegressor
        """
        return self._fit(X, y, sample_weight)

    @property
    def _n_outputs(self):
        return self.n_targets_

    def _encode_targets(self, y, reset):
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("y must hold numbers for a regressor.") from None
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; every image needs a finite target.")
        if y.ndim > 2:
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}.")
        y2 = y.reshape(len(y), -1)
        if reset:
            self._y_1d = y.ndim == 1
            self.n_targets_ = y2.shape[1]
            self.y_mean_ = y2.mean(axis=0)
            self.y_scale_ = np.where(y2.std(axis=0) > 0, y2.std(axis=0), 1.0)
        return ((y2 - self.y_mean_) / self.y_scale_).astype(np.float32)

    def _criterion(self):
        return torch.nn.MSELoss(reduction="none")

    def _split(self, y_enc, seed):
        n = len(y_enc)
        if self.validation_fraction is None:
            return np.arange(n), np.array([], dtype=int)
        n_valid = int(np.ceil(self.validation_fraction * n))
        if n - n_valid < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no "
                             "training images.")
        return next(ShuffleSplit(1, test_size=n_valid, random_state=seed).split(y_enc))

    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted targets, in the units of ``y``."""
        out = self._raw_predict(X) * self.y_scale_ + self.y_mean_
        return out.ravel() if self._y_1d else out

