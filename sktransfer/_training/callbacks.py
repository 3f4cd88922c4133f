"""skorch callbacks of a fine-tuning run, grouped by concern as in skorch.

Learning rate: :class:`BatchOneCycle`. Freezing: :class:`GradualUnfreeze`.
Scoring and stopping: :func:`valid_accuracy`, :class:`ResumableEarlyStopping`.
Recovery: :class:`KeepLastGood`, :class:`Resume`.
"""

from __future__ import annotations

import copy
import os
import sys

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping, LoadInitState, LRScheduler

# -- learning rate ---------------------------------------------------------------


class BatchOneCycle(LRScheduler):
    """skorch's ``LRScheduler`` with a one-cycle schedule stepped every batch.

    skorch restores the batch count from the history when a fit resumes
    (``batch_idx_``); the scheduler is built to continue from that step
    (skorch passes it epochs in ``last_epoch``, a per-batch schedule counts
    batches).
    """

    def __init__(self, max_lr, total_steps, **kwargs):
        super().__init__(policy=torch.optim.lr_scheduler.OneCycleLR, max_lr=max_lr,
                         total_steps=max(int(total_steps), 1), pct_start=0.15,
                         anneal_strategy="cos", div_factor=25.0, step_every="batch",
                         **kwargs)

    def _get_scheduler(self, net, policy, **kwargs):
        kwargs["last_epoch"] = self.batch_idx_ - 1
        return policy(net.optimizer_, **kwargs)


# -- freezing ----------------------------------------------------------------------


class GradualUnfreeze(Callback):
    """The head in the first epoch, then one more stage per epoch, deepest first.

    Parameters
    ----------
    schedule : list of int
        Frozen units from the second epoch on (see
        :meth:`~sktransfer._network.BackboneNetwork.frozen_units`).
    """

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history)  # already includes this epoch's row
        k = min(epoch - 1, len(self.schedule))
        if k > 0:
            net.module_.network.freeze_first(self.schedule[k - 1])


# -- scoring and stopping -----------------------------------------------------------


def valid_accuracy(net, X, y) -> float:
    """Accuracy on the validation part (scored by skorch's ``EpochScoring``)."""
    preds = torch.cat([yp.argmax(1).cpu() for yp in net.forward_iter(X, training=False)])
    return float((preds.numpy() == np.asarray(y)).mean())


def batch_targets(targets_and_weights):
    """The targets of a batch's ``(targets, weights)``."""
    return targets_and_weights[0].numpy()


class ResumableEarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping``, carried on from a resumed history.

    Parameters
    ----------
    best_params : str or None
        File where a :class:`skorch.callbacks.Checkpoint` keeps the best
        epoch's weights; read back when a fit resumes.
    **kwargs
        As :class:`skorch.callbacks.EarlyStopping`.
    """

    def __init__(self, best_params=None, **kwargs):
        super().__init__(**kwargs)
        self.best_params = best_params

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        for row in net.history:  # non-empty only when resuming
            if self._is_score_improved(row[self.monitor]):
                self.misses_ = 0
                self.dynamic_threshold_ = self._calc_new_threshold(row[self.monitor])
                self.best_epoch_ = row["epoch"]
            else:
                self.misses_ += 1
        if len(net.history) and self.best_params and os.path.exists(self.best_params):
            self.best_model_weights_ = torch.load(self.best_params, weights_only=True)

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            net.early_stopped_ = True
            raise


# -- recovery ------------------------------------------------------------------------


class KeepLastGood(Callback):
    """A copy of the weights after each finished epoch, to fall back on after a NaN loss."""

    def on_train_begin(self, net, **kwargs):
        self.state_ = copy.deepcopy(net.module_.state_dict())

    def on_epoch_end(self, net, **kwargs):
        self.state_ = copy.deepcopy(net.module_.state_dict())


class Resume(LoadInitState):
    """skorch's ``LoadInitState``, recording how many epochs it loaded (``epochs_``)."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self.epochs_ = len(net.history)
        if self.epochs_ and net.verbose:
            print(f"Resuming after epoch {self.epochs_} from {self.checkpoint.dirname!r}.",
                  file=sys.stderr)
