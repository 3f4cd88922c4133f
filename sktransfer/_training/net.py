"""The skorch ``NeuralNet`` that trains the top of a fine-tuned network."""

from __future__ import annotations

import torch
from skorch import NeuralNet
from skorch.dataset import unpack_data
from skorch.hf import AccelerateMixin

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
    **kwargs
        As :class:`skorch.NeuralNet`.
    """

    def __init__(self, *args, autocast_dtype=torch.float32, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast_dtype = autocast_dtype

    def initialize(self):
        super().initialize()
        # fp16's narrow range needs loss scaling; bf16 and float32 do not.
        self.grad_scaler_ = (_grad_scaler(torch.device(self.device).type)
                             if self.autocast_dtype == torch.float16 else None)
        return self

    def train_step_single(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        # Gradient clipping (on_grad_computed) must see the true gradients.
        for name in self._optimizers:
            self.grad_scaler_.unscale_(getattr(self, name + "_"))
        return {"loss": loss, "y_pred": y_pred}

    def _step_optimizer(self, step_fn):
        if self.grad_scaler_ is None:
            return super()._step_optimizer(step_fn)
        # GradScaler takes no closure: compute the gradients, then step.
        step_fn()
        for name in self._optimizers:
            self.grad_scaler_.step(getattr(self, name + "_"))
        self.grad_scaler_.update()

    def get_all_learnable_params(self):
        # Every parameter, frozen or not: gradual unfreezing turns
        # requires_grad on during training, and the optimizer must already
        # hold those parameters. AdamW skips parameters without gradients,
        # so frozen ones are neither updated nor decayed.
        yield from self.module_.named_parameters()

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


class AcceleratedTransferNet(AccelerateMixin, TransferNet):
    """:class:`TransferNet` trained with an ``accelerate.Accelerator``
    (skorch's ``AccelerateMixin``): the module wrapped for the process group
    (``DistributedDataParallel``: gradients all-reduced in ``backward``),
    the accelerator's autocast and loss scaling, checkpoints written by the
    main process and read by all, the module unwrapped after training.

    Differences from the mixin: the batches are not a ``DataLoader`` but
    :class:`~sktransfer._training.data.EpochBatches`, which shard each
    global batch themselves (so nothing is prepared or gathered here, and
    the epoch's scores are reduced by the ``ReduceAcrossProcesses``
    callback); gradients are unscaled before gradient clipping; a NaN loss
    on any process stops every process at the same step.
    """

    def initialize(self):
        super().initialize()
        self.grad_scaler_ = None  # the accelerator scales fp16 losses
        return self

    def _initialize_accelerator(self):
        # The module and the optimizer; the loss has no parameters (and
        # accelerate would wrap it for the process group all the same), but
        # its buffers (class and task weights) go to the device.
        if self._wrapped_with_accelerator:
            return self
        self.criterion_ = self.criterion_.to(self.accelerator.device)
        module = self.module_
        # Prepared again after an unwrap (checkpoints, gradual unfreezing):
        # forget the old wrapper, and let accelerate wrap the module anew.
        self._release(module)
        if hasattr(module, "_is_accelerate_prepared"):
            del module._is_accelerate_prepared
        with self._current_init_context("module"):
            self.module_ = self.accelerator.prepare(module)
        with self._current_init_context("optimizer"):
            self.optimizer_ = self.accelerator.prepare(self.optimizer_)
        self._wrapped_with_accelerator = True
        return self

    def _release(self, module, optimizer=None):
        """Drop ``module`` (and its wrappers) and ``optimizer`` from the
        accelerator's lists, which would keep them alive after the fit."""
        acc = self.accelerator
        acc._models = [m for m in acc._models
                       if m is not module and getattr(m, "module", None) is not module]
        if optimizer is not None:
            acc._optimizers = [o for o in acc._optimizers if o is not optimizer]

    def release_accelerator(self):
        """After training: unwrapped, and nothing of this fit left in the accelerator."""
        self._unwrap_accelerator()
        self._release(self.module_, self.optimizer_)

    def rewrap_module(self):
        """Wrap the module again after parameters were unfrozen: the
        gradient all-reduce covers the parameters that trained when it was
        wrapped."""
        if self._wrapped_with_accelerator:
            self._unwrap_accelerator()
            self._initialize_accelerator()

    def train_step(self, batch, **fit_params):
        step = super().train_step(batch, **fit_params)
        self._average_buffers()
        return step

    def _average_buffers(self):
        """BatchNorm's running statistics averaged over the processes, after
        every step.

        Each process updated them from its share of the batch; their mean
        follows the mean of the shares' statistics (the whole batch's mean;
        the variance leaves out the spread between the shares' means), and
        validation, checkpoints and the fitted model see the same network on
        every process. (``DistributedDataParallel`` would copy the main
        process's to the others at the next forward pass.)
        """
        if self.accelerator.num_processes == 1:
            return
        buffers = [b for b in self.module_.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
        flat = self.accelerator.reduce(flat, reduction="mean")
        start = 0
        for b in buffers:
            b.copy_(flat[start:start + b.numel()].reshape(b.shape))
            start += b.numel()

    def get_iterator(self, dataset, training=False):
        return TransferNet.get_iterator(self, dataset, training=training)

    def evaluation_step(self, batch, training=False):
        return TransferNet.evaluation_step(self, batch, training=training)

    def train_step_single(self, batch, **fit_params):
        step = super().train_step_single(batch, **fit_params)
        if self.accelerator.scaler is not None:
            # Gradient clipping (on_grad_computed) must see the true
            # gradients; only this fit's optimizer's (a warm start's
            # parameters are also in the earlier fit's optimizer).
            self.accelerator.unscale_gradients(optimizer=self.optimizer_)
        return step

    def _all_finite(self, loss) -> bool:
        # Decided together: a process that stopped alone would leave the
        # others waiting in the gradient all-reduce.
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        return bool(self.accelerator.reduce(finite, reduction="sum").item()
                    == self.accelerator.num_processes)


def _grad_scaler(device_type: str):
    """A loss scaler for float16 training on ``device_type``."""
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device_type)
    return torch.cuda.amp.GradScaler(enabled=device_type == "cuda")
