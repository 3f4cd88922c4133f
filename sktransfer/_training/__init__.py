"""Training machinery of the fine-tuned estimators, in skorch's layout.

- :mod:`.net`: the skorch ``NeuralNet`` subclass (weighted loss, autocast,
  NaN guard, resuming up to ``max_epochs``);
- :mod:`.accelerated`: the same trained with an accelerator (the one place
  that uses skorch's and Accelerate's private API);
- :mod:`.callbacks`: learning-rate schedule, gradual unfreezing, scoring and
  early stopping, recovery;
- :mod:`.checkpoint`: checkpoint directories and resuming;
- :mod:`.data`: the one training data pipeline, and the frozen part's
  outputs computed once;
- :mod:`sktransfer._distributed`: the processes of a fit with an accelerator.

The estimators configure the net (``_initialize_net``, with skorch's
callbacks from ``_get_default_callbacks``); :func:`train` runs it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .._distributed import ONE_PROCESS, Processes
from .checkpoint import CheckpointDir
from .net import NonFiniteLoss

#: Compute the frozen part's outputs once per fit where the views allow it
#: (off only to check that both ways train the same).
PRECOMPUTE_FROZEN_OUTPUTS = True


@dataclass
class TrainingRun:
    """What a training run reports: skorch's history and how it ran or stopped."""

    history: list
    resumed_from_epoch: int
    checkpoint: CheckpointDir | None = None
    interrupted: bool = False
    nan_epoch: int | None = None

    @property
    def n_epochs(self) -> int:
        return len(self.history)

    def raise_if_stopped(self, owner: str) -> None:
        """``FloatingPointError`` after a NaN loss, ``KeyboardInterrupt``
        after an interruption; the estimator is then left as it was."""
        if self.nan_epoch is not None:
            raise FloatingPointError(
                f"The training loss became NaN or infinite in epoch {self.nan_epoch}; "
                f"training stopped and {owner} is left as it was before this fit. Lower "
                "lr, or use precision='float32'.")
        if self.interrupted:
            where = (f" Epochs 1..{self.n_epochs - 1} are saved in {self.checkpoint.path!r}: "
                     "fit again with the same data and parameters to resume."
                     if self.checkpoint else "")
            print(f"{owner}: training interrupted in epoch {self.n_epochs}; the estimator is "
                  f"left as it was before this fit.{where}", file=sys.stderr)
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


def train(net, train_data, *, checkpoint: CheckpointDir | None = None, resume: bool = False,
          processes: Processes = ONE_PROCESS, verbose: int = 0) -> TrainingRun:
    """Run the configured skorch ``net`` on ``train_data`` (its validation
    part, callbacks and schedule are the net's own), resuming from
    ``checkpoint`` when ``resume``.

    Must run inside :func:`sktransfer._random.torch_rng`: each epoch reseeds
    torch's (forked) global generators. A NaN loss or an interruption ends
    the run early; :meth:`TrainingRun.raise_if_stopped` reports it.
    """
    net.initialize()
    nan_epoch = None
    try:
        resumed = checkpoint.load(net) if resume else 0
        if resumed and verbose and processes.is_main:
            print(f"Resuming after epoch {resumed} from {checkpoint.path!r}.",
                  file=sys.stderr)
        net.partial_fit(train_data, None)
    except NonFiniteLoss as exc:
        if processes.accelerator is not None:  # training ended without on_train_end
            net.unwrap_module()
        nan_epoch = exc.epoch
    finally:
        if processes.accelerator is not None:
            net.release_accelerator()
    # The last step's gradients are of no use to a fitted model.
    net.module_.zero_grad(set_to_none=True)
    history = [{k: v for k, v in row.items() if k != "batches"} for row in net.history]
    run = TrainingRun(history, resumed, checkpoint, getattr(net, "interrupted_", False),
                      nan_epoch)
    if checkpoint is not None and not run.interrupted:
        if processes.is_main:
            checkpoint.mark_complete("nan" if nan_epoch is not None else "done")
        processes.barrier()
    return run

