"""skorch callbacks of a fine-tuning run, grouped by concern as in skorch.

Learning rate: :class:`BatchOneCycle`. Freezing: :class:`GradualUnfreeze`.
Scoring and stopping: :func:`valid_accuracy`, :class:`ResumableEarlyStopping`.
Randomness: :class:`SeedEpoch`. Several processes:
:class:`ReduceAcrossProcesses`.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping, LRScheduler

from .._io import atomic_write

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
        The cut point from the second epoch on (see
        :meth:`~sktransfer._network.BackboneNetwork.frozen_units`).
    """

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history)  # already includes this epoch's row
        k = min(epoch - 1, len(self.schedule))
        if k > 0:
            unwrapped_module(net).network.freeze_before(self.schedule[k - 1])
            if hasattr(net, "rewrap_module"):  # the gradient all-reduce must cover them
                net.rewrap_module()


# -- scoring and stopping -----------------------------------------------------------


def valid_accuracy(net, X, y) -> float:
    """Accuracy on the validation part (scored by skorch's ``EpochScoring``),
    as the classifier's ``score`` counts it: an image is right when every
    labelled column is (subset accuracy; one column: plain accuracy)."""
    preds = torch.cat([net.criterion_.codes(yp).cpu()
                       for yp in net.forward_iter(X, training=False)]).numpy()
    y = np.asarray(y).reshape(len(preds), -1)
    right = (preds == y) | (y == -1)  # sktransfer._tasks.MISSING
    return float(right.all(axis=1).mean())


def batch_targets(targets_and_weights):
    """The targets of a batch's ``(targets, weights)``."""
    return targets_and_weights[0].numpy()


class ResumableEarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping``, carried on from a resumed history.

    Its state comes back from the history (loaded before training begins),
    and the best epoch's weights from ``best_params``, which it writes itself
    whenever it records a better epoch: one source of truth for "best".

    Parameters
    ----------
    best_params : str or None
        File for the best epoch's weights (with ``checkpoint_dir``).
    **kwargs
        As :class:`skorch.callbacks.EarlyStopping`.
    """

    def __init__(self, best_params=None, is_main=True, **kwargs):
        super().__init__(**kwargs)
        self.best_params = best_params
        self.is_main = is_main

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
            # Under an accelerator net.device is None: not every process on GPU 0.
            self.best_model_weights_ = torch.load(self.best_params, weights_only=True,
                                                  map_location=net.device or "cpu")

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            net.early_stopped_ = True
            raise
        finally:
            if self.load_best and self.best_epoch_ == net.history[-1, "epoch"]:
                if unwrapped_module(net) is not net.module_:
                    # The weights as the unwrapped module names them (what is
                    # restored after training, when the wrapper is gone).
                    self.best_model_weights_ = copy.deepcopy(unwrapped_module(net).state_dict())
                if self.best_params and self.is_main:
                    atomic_torch_save(self.best_model_weights_, self.best_params)


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to a temporary file, renamed into place: never half written."""
    atomic_write(path, lambda f: torch.save(obj, f))


def unwrapped_module(net) -> torch.nn.Module:
    """``net.module_`` without the ``DistributedDataParallel`` wrapper of a
    fit over several processes."""
    module = net.module_
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.module
    return module


# -- several processes -----------------------------------------------------------------


class ReduceAcrossProcesses(Callback):
    """The epoch's losses and scores over all processes, as one process would
    record them, written into every process's history.

    Each process scored its share of the batches; early stopping, the
    checkpointed history and the printed table must see the whole epoch, the
    same on every process. ``train_loss``: the mean over the global batches
    (each the mean of the processes' losses, as the gradient all-reduce
    averages them), weighted by their size, as skorch weights batches;
    ``valid_loss``: the mean over all validation images; ``scores``
    (``EpochScoring`` means over a process's validation images): weighted by
    each process's number of validation images.

    Parameters
    ----------
    processes : Processes
    validation : bool
        Whether the fit has a validation part (every process has a share).
    scores : dict of str to bool
        The scores to reduce, and whether lower is better.
    """

    def __init__(self, processes, validation, scores):
        self.processes = processes
        self.validation = validation
        self.scores = scores

    def on_epoch_end(self, net, **kwargs):
        procs, row = self.processes, net.history[-1]
        train = [b for b in row["batches"] if "train_loss" in b]
        valid = [b for b in row["batches"] if "valid_loss" in b]
        losses = procs.sum([b["train_loss"] for b in train]) / procs.world
        sizes = procs.sum([b["train_batch_size"] for b in train])
        reduced = {"train_loss": (float((losses * sizes).sum() / sizes.sum()), True)}
        if self.validation:  # the same branch on every process: collectives inside
            n = sum(b["valid_batch_size"] for b in valid)
            local = [sum(b["valid_loss"] * b["valid_batch_size"] for b in valid), n]
            local += [row[name] * n for name in self.scores]
            total = procs.sum(local)
            reduced["valid_loss"] = (float(total[0] / total[1]), True)
            for name, value in zip(self.scores, total[2:]):
                reduced[name] = (float(value / total[1]), self.scores[name])
        for name, (value, lower_is_better) in reduced.items():
            net.history.record(name, value)
            if name + "_best" in row:
                earlier = [r[name] for r in list(net.history)[:-1] if name in r]
                best = min(earlier, default=np.inf) if lower_is_better else max(
                    earlier, default=-np.inf)
                net.history.record(name + "_best", bool(
                    value < best if lower_is_better else value > best))


class SeedEpoch(Callback):
    """Seed each epoch's random draws from the fit's seed and the epoch number.

    The order and views (``generator``) and what only torch's global
    generators serve (dropout, random augmentation; forked for the fit by
    :func:`sktransfer._random.torch_rng`, so the caller's state is restored)
    are reseeded at the start of every epoch. A fit resumed after epoch k
    then draws what an uninterrupted fit draws in epoch k + 1.

    Parameters
    ----------
    seed : int
    generator : torch.Generator
        The generator of the training batches (``EpochBatches``).
    device : torch.device
        The training device (its CUDA generator is reseeded too).
    rank : int or None
        In a fit over several processes, this process's rank: the order and
        views are the same on every process, dropout and random
        augmentation draw differently on each (each sees other images).
    """

    def __init__(self, seed, generator, device, rank=None):
        self.seed = seed
        self.generator = generator
        self.device = device
        self.rank = rank

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history)  # already includes this epoch's row
        seed = _seed(self.seed, epoch)
        self.generator.manual_seed(seed)
        if self.rank is not None:
            seed = _seed(self.seed, epoch, self.rank)
        torch.default_generator.manual_seed(seed)
        device = torch.device(self.device)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.default_generators[index].manual_seed(seed)


def _seed(*entropy) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])
