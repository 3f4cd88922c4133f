"""The one place that uses skorch's and Accelerate's private API.

A fit with ``accelerator=`` trains :class:`AcceleratedTransferNet`, skorch's
``AccelerateMixin`` over :class:`~sktransfer._training.net.TransferNet`.
Neither library has a public hook for what it needs beyond the mixin:
wrapping the module again after parameters were unfrozen (the gradient
all-reduce covers the parameters that trained when it was wrapped), and
forgetting a fit's wrappers and optimizer in the accelerator afterwards
(``Accelerator.free_memory`` would also drop what the user prepared with
the same accelerator). So this module, and only this module, uses:

- skorch's ``AccelerateMixin._initialize_accelerator`` (overridden),
  ``_unwrap_accelerator``, ``_wrapped_with_accelerator`` and
  ``NeuralNet._current_init_context``;
- Accelerate's ``Accelerator._models`` and ``Accelerator._optimizers`` (the
  lists of what it prepared) and the ``_is_accelerate_prepared`` mark on a
  prepared module.

Everything else calls the public methods :meth:`~AcceleratedTransferNet.rewrap_module`,
:meth:`~AcceleratedTransferNet.unwrap_module` and
:meth:`~AcceleratedTransferNet.release_accelerator`. The versions this is
tested against are bounded in ``pyproject.toml``; ``tests/test_private_api.py``
checks each assumption, and CI runs it, with the distributed tests, against
the lowest and the highest versions admitted.
"""

from __future__ import annotations

import torch
from skorch.hf import AccelerateMixin

from .net import TransferNet


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

    def unwrap_module(self):
        """The module without its process-group wrapper (training ended
        without skorch's ``on_train_end``: a NaN loss)."""
        self._unwrap_accelerator()

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
