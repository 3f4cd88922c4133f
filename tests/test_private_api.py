"""What sktransfer assumes of skorch's and Accelerate's private API.

All of it is used in one module, ``sktransfer/_training/accelerated.py``.
These tests check each assumption against the installed versions; CI runs
them, with the distributed tests, at the lowest and the highest versions
that ``pyproject.toml`` admits.
"""

import pytest
import torch

pytest.importorskip("accelerate")

from accelerate import Accelerator  # noqa: E402
from skorch.hf import AccelerateMixin  # noqa: E402

from sktransfer._training.accelerated import AcceleratedTransferNet  # noqa: E402


def test_the_mixin_has_what_is_overridden_and_called():
    for name in ("_initialize_accelerator", "_unwrap_accelerator"):
        assert callable(getattr(AccelerateMixin, name, None)), name


def _net(accelerator):
    module = torch.nn.Sequential(torch.nn.Linear(4, 2))
    net = AcceleratedTransferNet(module=module, criterion=torch.nn.CrossEntropyLoss,
                                 optimizer=torch.optim.AdamW, accelerator=accelerator,
                                 device=None, max_epochs=1, train_split=None)
    return net.initialize()


def test_a_prepared_module_is_marked_and_listed():
    """``_initialize_accelerator`` runs inside skorch's ``_current_init_context``,
    prepares the module, records ``_wrapped_with_accelerator``, and the
    accelerator lists the module and the optimizer it prepared."""
    accelerator = Accelerator(cpu=True)
    net = _net(accelerator)
    assert net._wrapped_with_accelerator is True
    assert any(m is net.module_ for m in accelerator._models)
    assert any(o is net.optimizer_ for o in accelerator._optimizers)
    assert getattr(net.module_, "_is_accelerate_prepared", False)


def test_rewrap_and_release_leave_nothing_of_the_fit_in_the_accelerator():
    accelerator = Accelerator(cpu=True)
    mine = accelerator.prepare(torch.nn.Linear(2, 2))  # what the user prepared stays
    net = _net(accelerator)
    module = net.module_
    net.rewrap_module()  # after unfreezing: wrapped anew
    assert net._wrapped_with_accelerator and net.module_ is module
    net.release_accelerator()
    assert not net._wrapped_with_accelerator
    assert all(m is not module and getattr(m, "module", None) is not module
               for m in accelerator._models)
    assert all(o is not net.optimizer_ for o in accelerator._optimizers)
    assert any(m is mine for m in accelerator._models)
