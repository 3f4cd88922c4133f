"""Checkpoints of a fine-tuning run, and resuming an interrupted one.

The files are skorch's (``Checkpoint`` after every epoch: weights, optimizer,
history; the early stopping callback keeps the best epoch's weights) and
skorch loads them back (``load_params``, as ``LoadInitState`` does). This module decides
*whether* a directory may be resumed: only an unfinished fit of the same
data and parameters, recognised by a fingerprint of both, is.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from numbers import Number

import numpy as np
import torch
from skorch.callbacks import Callback, Checkpoint

from .._io import atomic_write

CHECKPOINT_FILES = ("params.pt", "optimizer.pt", "history.json", "best_params.pt",
                    "loss_scaler.pt")


def stable_value(value):
    """A JSON-able description of a parameter value that survives a restart.

    Returns ``(description, stable)``. ``stable`` is False for a value whose
    only description is a memory address (an object with the default repr):
    it cannot be told apart from another object of its type.
    """
    if value is None or isinstance(value, (bool, str)):
        return value, True
    if isinstance(value, Number):
        return float(value) if isinstance(value, (float, np.floating)) else int(value), True
    if isinstance(value, (os.PathLike, torch.device)):
        return str(value), True
    if isinstance(value, np.random.RandomState):
        # Its state advances with every use; the fit's seed is stored in the
        # checkpoint and reused on resume, so only the type counts.
        return "numpy.random.RandomState", True
    if isinstance(value, (list, tuple)):
        parts = [stable_value(v) for v in value]
        return [p for p, _ in parts], all(ok for _, ok in parts)
    if isinstance(value, dict):
        parts = {str(k): stable_value(v) for k, v in sorted(value.items(), key=str)}
        return {k: p for k, (p, _) in parts.items()}, all(ok for _, ok in parts.values())
    qualname = getattr(value, "__qualname__", None)
    module = getattr(value, "__module__", None)
    if qualname and module and "<" not in qualname:  # a module-level function or class
        return f"{module}.{qualname}", True
    text = repr(value)
    if " at 0x" in text:  # the default repr: a memory address
        return f"{type(value).__module__}.{type(value).__qualname__}", False
    return f"{type(value).__module__}.{type(value).__qualname__}:{text}", True


def fingerprint(params: dict, data_keys, targets: np.ndarray, weights: np.ndarray):
    """``(hex digest, names of parameters that could not be fingerprinted)``."""
    h = hashlib.sha256()
    described, unstable = {}, []
    for name, value in sorted(params.items()):
        described[name], ok = stable_value(value)
        if not ok:
            unstable.append(name)
    h.update(json.dumps(described, sort_keys=True).encode())
    for key in data_keys:
        h.update(key.encode())
    h.update(np.ascontiguousarray(targets).tobytes())
    h.update(np.ascontiguousarray(weights).tobytes())
    return h.hexdigest(), unstable


class CheckpointDir:
    """The checkpoint directory of one fit.

    Parameters
    ----------
    path : str or path-like
        The directory (created if missing).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.info_path = os.path.join(self.path, "fit.json")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def prepare(self, digest: str, seed: int, unstable: list[str], owner: str):
        """Decide between resuming and starting afresh; returns ``(resume, seed)``.

        An unfinished fit with the same fingerprint is resumed with its own
        seed (hence the same validation split); an unfinished fit of other
        data or parameters is refused; a finished fit's files are replaced.
        """
        os.makedirs(self.path, exist_ok=True)
        info = {}
        if os.path.exists(self.info_path):
            with open(self.info_path, encoding="utf-8") as f:
                info = json.load(f)
        unfinished = not info.get("complete", True) and os.path.exists(self.file("params.pt"))
        if unfinished and info.get("fingerprint") != digest:
            raise ValueError(
                f"checkpoint_dir={self.path!r} holds an unfinished fit of other data or "
                "other parameters; use another directory, or delete it to start over.")
        if unfinished:
            if unstable:
                warnings.warn(
                    f"{owner}: resuming the fit in checkpoint_dir={self.path!r}, but "
                    f"parameter(s) {unstable} could not be fingerprinted (objects without "
                    "a stable description, e.g. a lambda or an object with the default "
                    "repr): they are assumed unchanged. Use a module-level function or "
                    "an object with a repr of its settings to have them checked.",
                    UserWarning, stacklevel=3)
            return True, int(info["seed"])
        for name in CHECKPOINT_FILES:
            if os.path.exists(self.file(name)):
                os.remove(self.file(name))
        self._write({"fingerprint": digest, "seed": int(seed), "complete": False})
        return False, int(seed)

    def checkpoint(self) -> Checkpoint:
        """skorch's ``Checkpoint`` after every epoch: weights, optimizer, history.

        The best epoch's weights (``best_params.pt``) are written by the
        early stopping callback, which decides what "best" is.
        """
        return Checkpoint(
            monitor=None, dirname=self.path, f_params="params.pt",
            f_optimizer="optimizer.pt", f_criterion=None, f_history="history.json",
            load_best=False)

    def callbacks(self, is_main: bool = True) -> list:
        """What checkpoints a fit after every epoch: skorch's ``Checkpoint``,
        then the fp16 loss scaler's state (which skorch's does not know)."""
        return [("checkpoint", self.checkpoint()),
                ("loss_scaler", LossScalerCheckpoint(self.file("loss_scaler.pt"), is_main))]

    def load(self, net) -> int:
        """Load the checkpoint into an initialised ``net`` (skorch's
        ``load_params``, what ``LoadInitState`` calls) before training starts,
        so that every callback sees the history from its ``on_train_begin``;
        returns the number of epochs loaded. A float16 fit's loss scale
        continues where it was, as an uninterrupted fit's does."""
        net.load_params(checkpoint=self.checkpoint())
        epochs = len(net.history)
        scaler = loss_scaler(net)
        if scaler is not None and os.path.exists(self.file("loss_scaler.pt")):
            saved = torch.load(self.file("loss_scaler.pt"), weights_only=True)
            # written after the epoch's checkpoint: a process killed between
            # the two leaves the scale of the epoch before, which is not used
            if saved["epoch"] == epochs:
                scaler.load_state_dict(saved["state"])
        return epochs

    def mark_complete(self, ended: str = "done") -> None:
        """The fit ended (``"done"``, or ``"nan"`` after a NaN loss): the next
        fit starts afresh."""
        with open(self.info_path, encoding="utf-8") as f:
            info = json.load(f)
        self._write({**info, "complete": True, "ended": ended})

    def _write(self, info: dict) -> None:
        atomic_write(self.info_path, json.dumps(info).encode())


def loss_scaler(net):
    """The fp16 loss scaler of ``net`` (its own, or its accelerator's), or ``None``."""
    scaler = getattr(net, "grad_scaler_", None)
    if scaler is None:
        scaler = getattr(getattr(net, "accelerator", None), "scaler", None)
    return scaler


class LossScalerCheckpoint(Callback):
    """The fp16 loss scaler's state after every epoch, with the epoch it
    belongs to, written by the main process."""

    def __init__(self, path: str, is_main: bool = True):
        self.path = path
        self.is_main = is_main

    def on_epoch_end(self, net, **kwargs):
        scaler = loss_scaler(net)
        if scaler is not None and self.is_main:
            saved = {"epoch": len(net.history), "state": scaler.state_dict()}
            atomic_write(self.path, lambda f: torch.save(saved, f))
