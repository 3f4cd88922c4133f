"""Training machinery of the fine-tuned estimators, in skorch's layout.

- :mod:`.net`: the skorch ``NeuralNet`` subclass (weighted loss, autocast,
  NaN guard, resuming up to ``max_epochs``);
- :mod:`.callbacks`: learning-rate schedule, gradual unfreezing, scoring and
  early stopping, recovery;
- :mod:`.checkpoint`: checkpoint directories and resuming;
- :mod:`.data`: the one training data pipeline;
- :mod:`sktransfer._distributed`: the processes of a fit with an accelerator.

:func:`fit_top` puts them together for one fit of a
:class:`~sktransfer._network.BackboneNetwork` whose frozen part is already set.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from .. import _device
from .._distributed import ONE_PROCESS, Processes
from .._images import ImageSource
from .._inference import FLIPS
from .._inputs import Preprocess
from .._network import BackboneNetwork, TopNetwork
from .._random import torch_generator
from . import callbacks as cb
from .checkpoint import CheckpointDir
from .data import EpochBatches, TrainingData
from .net import AcceleratedTransferNet, NonFiniteLoss, TransferNet

#: Compute the frozen part's outputs once per fit where the views allow it
#: (off only to check that both ways train the same).
CACHE_FROZEN_OUTPUTS = True


@dataclass
class TrainingRun:
    """What a fit reports: skorch's history and how it ran or stopped."""

    history: list
    resumed_from_epoch: int
    frozen_cached: bool
    checkpoint: CheckpointDir | None = None
    interrupted: bool = False
    nan_epoch: int | None = None

    @property
    def n_epochs(self) -> int:
        return len(self.history)

    def raise_if_stopped(self, owner: str) -> None:
        """``FloatingPointError`` after a NaN loss (the last good weights
        kept), ``KeyboardInterrupt`` after an interruption."""
        if self.nan_epoch is not None:
            raise FloatingPointError(
                f"The training loss became NaN or infinite in epoch {self.nan_epoch}; "
                "training stopped and the weights of the last completed epoch were kept "
                "(the model can still predict). Lower lr, or use precision='float32'.")
        if self.interrupted:
            where = (f" Epochs 1..{self.n_epochs - 1} are saved in {self.checkpoint.path!r}: "
                     "fit again with the same data and parameters to resume."
                     if self.checkpoint else "")
            print(f"{owner}: training interrupted in epoch {self.n_epochs}.{where}",
                  file=sys.stderr)
            raise KeyboardInterrupt


def random_augmenter(augment, size: int):
    """The per-image random augmentation of ``augment`` (None for fixed views)."""
    from torchvision.transforms import v2

    if isinstance(augment, (bool, np.bool_)):
        augment = bool(augment)
    if augment is True:
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ])
    if callable(augment):
        return augment
    return None


def fit_top(est, network: BackboneNetwork, source: ImageSource, train_idx, valid_idx,
            targets: np.ndarray, weights: np.ndarray, *, schedule, criterion, classifier: bool,
            seed: int, checkpoint: CheckpointDir | None = None,
            resume: bool = False, trunk=None,
            processes: Processes = ONE_PROCESS) -> TrainingRun:
    """Train ``network`` from its first unfrozen unit on, with ``est``'s settings.

    Must run inside :func:`sktransfer._random.torch_rng`: each epoch reseeds
    torch's (forked) global generators.

    ``targets`` and ``weights`` are indexed by image; ``train_idx`` and
    ``valid_idx`` select the two parts. ``schedule``: gradual unfreezing
    (empty for a fixed frozen part). ``trunk``: the
    :class:`~sktransfer._trunk.FrozenTrunk` of the fixed frozen units, which
    computes (and, under ``memory=``, stores) their outputs; ``None`` when
    the frozen part changes during the fit or nothing is frozen.
    ``processes``: the fit's processes when ``est.accelerator`` is set
    (each trains on its share of every batch). A NaN loss or an interruption ends
    the run early; :meth:`TrainingRun.raise_if_stopped` reports it.
    """
    from skorch.callbacks import EpochScoring, GradientNormClipping, ProgressBar
    from skorch.helper import predefined_split

    preprocess = Preprocess(**est.preprocess_)
    augment = random_augmenter(est.augment, preprocess.size)
    views = FLIPS if est.augment == "flips" else ("identity",)
    cached = CACHE_FROZEN_OUTPUTS and trunk is not None and augment is None
    common = dict(network=network, preprocess=preprocess, device=est.device_,
                  dtype=getattr(torch, est.precision_), batch_size=est.batch_size,
                  n_jobs=est.n_jobs, verbose=est.verbose, cache=cached, trunk=trunk,
                  processes=processes)
    train_data = TrainingData(source, train_idx, targets[train_idx], weights[train_idx],
                              views=views, augment=augment, **common)
    valid_data = (TrainingData(source, valid_idx, targets[valid_idx], weights[valid_idx],
                               **common) if len(valid_idx) else None)

    # Two parameter groups: the trained backbone units, then the new head.
    trains_backbone = network.n_frozen < network.n_units or bool(schedule)
    backbone_lr = est.lr * est.backbone_lr_mult
    groups = [("network.backbone.*", {"lr": backbone_lr})] if trains_backbone else []
    max_lr = [backbone_lr] * trains_backbone + [est.lr]
    steps = est.max_epochs * len(EpochBatches(train_data, est.batch_size, processes=processes))

    generator = torch_generator(seed)
    rank = processes.rank if processes.distributed else None
    callbacks = [("seed_epoch", cb.SeedEpoch(seed, generator, est.device_, rank)),
                 ("clip", GradientNormClipping(gradient_clip_value=est.max_grad_norm))]
    has_valid = valid_data is not None
    if has_valid and classifier:
        callbacks.append(("valid_acc", EpochScoring(
            cb.valid_accuracy, lower_is_better=False, name="valid_acc",
            target_extractor=cb.batch_targets)))
    if processes.distributed:
        scores = {"valid_acc": False} if has_valid and classifier else {}
        callbacks.append(("reduce", cb.ReduceAcrossProcesses(processes, has_valid, scores)))
    if checkpoint is not None:
        callbacks.append(("checkpoint", checkpoint.checkpoint()))
    callbacks.append(("keep_last_good", cb.KeepLastGood()))
    if schedule:
        callbacks.append(("gradual_unfreeze", cb.GradualUnfreeze(schedule)))
    callbacks.append(("lr_schedule", cb.BatchOneCycle(max_lr=max_lr, total_steps=steps)))
    speaks = est.verbose and processes.is_main
    if has_valid and est.patience is not None:
        # Classifiers stop on validation accuracy: under a one-cycle schedule
        # the validation loss of an over-confident model rises while its
        # accuracy still improves (seen on ELPV: best loss at epoch 1).
        monitor = "valid_acc" if classifier else "valid_loss"
        callbacks.append(("early_stopping", cb.ResumableEarlyStopping(
            monitor=monitor, lower_is_better=monitor == "valid_loss",
            patience=est.patience, load_best=True,
            best_params=checkpoint.file("best_params.pt") if checkpoint else None,
            is_main=processes.is_main, sink=print if speaks else _silent)))
    if speaks and sys.stderr.isatty():
        callbacks.append(("progress", ProgressBar()))

    accelerator = processes.accelerator
    if accelerator is None:
        net_class, placement = TransferNet, dict(
            device=str(est.device_),
            autocast_dtype=_device.training_dtype(est.precision, est.device_))
    else:
        # The accelerator places the module and runs autocast and loss scaling.
        # The accelerator prints on the main process only; skorch calls a
        # sink other than print whatever net.verbose says.
        net_class, placement = AcceleratedTransferNet, dict(
            accelerator=accelerator, device=None,
            callbacks__print_log__sink=accelerator.print if est.verbose else _silent)
    net = net_class(
        module=TopNetwork(network),
        criterion=criterion,
        optimizer=torch.optim.AdamW,
        lr=est.lr,
        optimizer__weight_decay=est.weight_decay,
        optimizer__param_groups=groups,
        max_epochs=est.max_epochs,
        batch_size=est.batch_size,
        iterator_train=EpochBatches,
        iterator_train__shuffle=True,
        iterator_train__generator=generator,
        iterator_train__processes=processes,
        iterator_valid=EpochBatches,
        iterator_valid__processes=processes,
        train_split=predefined_split(valid_data) if has_valid else None,
        callbacks=callbacks,
        verbose=int(bool(est.verbose)),
        **placement,
    )
    net.initialize()
    nan_epoch = None
    try:
        resumed = checkpoint.load(net) if resume else 0
        if resumed and est.verbose and processes.is_main:
            print(f"Resuming after epoch {resumed} from {checkpoint.path!r}.",
                  file=sys.stderr)
        net.partial_fit(train_data, None)
    except NonFiniteLoss as exc:
        if accelerator is not None:  # training ended without on_train_end
            net._unwrap_accelerator()
        net.module_.load_state_dict(dict(net.callbacks_)["keep_last_good"].state_)
        nan_epoch = exc.epoch
    finally:
        if accelerator is not None:
            net.release_accelerator()
    # The last step's gradients are of no use to a fitted model.
    net.module_.zero_grad(set_to_none=True)
    history = [{k: v for k, v in row.items() if k != "batches"} for row in net.history]
    run = TrainingRun(history, resumed, cached, checkpoint,
                      getattr(net, "interrupted_", False), nan_epoch)
    if checkpoint is not None and not run.interrupted:
        if processes.is_main:
            checkpoint.mark_complete("nan" if nan_epoch is not None else "done")
        processes.barrier()
    return run


def _silent(*args, **kwargs):
    pass
