"""The skorch ``NeuralNet`` that trains the top of a fine-tuned network."""

from __future__ import annotations

import torch
from skorch import NeuralNet
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

from .. import _device


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite in ``epoch``."""

    def __init__(self, epoch: int):
        super().__init__(epoch)
        self.epoch = epoch


class TransferNet(NeuralNet):
    """skorch's ``NeuralNet`` with sample weights, autocast, a NaN guard and resuming.

    Batches are ``(x, (targets, weights))`` from
    :class:`~sktransfer._training.data.EpochBatches`. The weights of a
    training part are scaled to mean 1, so a batch's loss, the mean of
    ``weight * loss``, estimates the weighted mean loss over the whole
    part, as scikit-learn means sample weights: a sample's pull does not
    depend on its batch-mates, and a batch of zero weights gives 0, not NaN.

    Parameters
    ----------
    autocast_dtype : torch.dtype, default=torch.float32
        Autocast dtype of the training forward passes. Under float16 (CUDA
        without bf16) the loss is scaled by a :class:`torch.amp.GradScaler`,
        gradients are unscaled before clipping, and a step whose gradients
        overflowed is skipped.
    unfreezes : bool, default=False
        Whether parameters frozen when training starts unfreeze during it
        (gradual unfreezing): the optimizer then holds them from the start.
    **kwargs
        As :class:`skorch.NeuralNet`.
    """

    def __init__(self, *args, autocast_dtype=torch.float32, unfreezes=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast_dtype = autocast_dtype
        self.unfreezes = unfreezes

    def initialize(self):
        super().initialize()
        # fp16's narrow range needs loss scaling; bf16 and float32 do not.
        self.grad_scaler_ = (_grad_scaler(torch.device(self.device).type)
                             if self.autocast_dtype == torch.float16 else None)
        return self

    def train_step_single(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step_single(batch, **fit_params)
        self.module_.train()
        self.criterion_.train()
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        # Gradient clipping (on_grad_computed) must see the true gradients.
        self.grad_scaler_.unscale_(self.optimizer_)
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step(batch, **fit_params)
        # skorch's step with a loss scaler, which takes no closure: the
        # gradients, the callbacks that read them, then the scaler's step.
        self.optimizer_.zero_grad()
        step = self.train_step_single(batch, **fit_params)
        self.notify("on_grad_computed",
                    named_parameters=TeeGenerator(self.get_all_learnable_params()), batch=batch)
        self.grad_scaler_.step(self.optimizer_)
        self.grad_scaler_.update()
        return step

    def initialize_module(self):
        super().initialize_module()
        self.learnable_params_ = None
        return self

    def get_all_learnable_params(self):
        # The parameters that train. With gradual unfreezing, every one:
        # requires_grad turns on during training, and the optimizer must
        # already hold them (AdamW skips parameters without gradients, so
        # frozen ones are neither updated nor decayed). Otherwise only the
        # trained ones. Listed once (the set does not change during a fit):
        # clipping asks for them at every step, and walking the whole
        # network's modules each time cost more than the head's step.
        if getattr(self, "learnable_params_", None) is None:
            self.learnable_params_ = [(name, param)
                                      for name, param in self.module_.named_parameters()
                                      if self.unfreezes or param.requires_grad]
        yield from self.learnable_params_

    def infer(self, x, **fit_params):
        with _device.autocast(self.device, self.autocast_dtype):
            return super().infer(x, **fit_params).float()

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        # Up to max_epochs in all: a fit resumed from a checkpoint has the
        # finished epochs in its history already.
        if epochs is None:
            epochs = max(self.max_epochs - len(self.history), 0)
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
        if losses.ndim > 1:  # several regression targets: mean over targets
            losses = losses.mean(dim=1)
        loss = (losses * w).mean()
        if training and not self._all_finite(loss):
            raise NonFiniteLoss(len(self.history))
        return loss

    def _all_finite(self, loss) -> bool:
        return bool(torch.isfinite(loss))


def _grad_scaler(device_type: str):
    """A loss scaler for float16 training on ``device_type``."""
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device_type)
    return torch.cuda.amp.GradScaler(enabled=device_type == "cuda")
