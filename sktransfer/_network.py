"""The fine-tuned network: a backbone cut into ordered units, and a new head.

Freezing works on units: the stem, each stage, and what follows the last
stage (the "neck", e.g. EfficientNet's ``conv_head``/``bn2`` and pooling).
Frozen units have ``requires_grad=False`` *and* stay in eval mode, so their
BatchNorm running statistics never change, whatever skorch's training loop
does with ``train()``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._backbones import Backbone, drop_head


def _units(model: nn.Module, stages: list[str]) -> list[tuple[str, nn.Module]]:
    """Top-level children in order, with the stage container split into stages."""
    containers = {s.rpartition(".")[0] for s in stages if "." in s}
    units = []
    for name, child in model.named_children():
        if name in containers:
            units += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            units.append((name, child))
    return units


class TransferNetwork(nn.Module):
    """Backbone units run in sequence, then ``Flatten -> Dropout -> Linear``.

    Parameters
    ----------
    units : list of (str, nn.Module)
        The backbone's units in forward order, with their original names.
    n_features : int
        Width of the backbone's pooled output.
    n_outputs : int
        Classes, or regression targets.
    dropout : float
        Dropout before the new linear layer.
    """

    def __init__(self, units, n_features: int, n_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.unit_names = [name for name, _ in units]
        self.body = nn.Sequential(*[module for _, module in units])
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(n_features, n_outputs))
        self.n_frozen = 0

    @classmethod
    def from_backbone(cls, backbone: Backbone, n_outputs: int, dropout: float = 0.0):
        """Build from a loaded backbone, checking that the units reproduce it.

        If running the units in sequence does not give the backbone's own
        pooled output (a model whose ``forward`` is not a plain chain), the
        whole backbone becomes a single unit: freezing is then all or
        nothing.
        """
        model = drop_head(backbone).eval()
        probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model(probe)
            units = _units(model, backbone.stages)
            try:
                got = nn.Sequential(*[m for _, m in units])(probe).flatten(1)
                chain_ok = got.shape == expected.flatten(1).shape and torch.allclose(
                    got, expected.flatten(1), atol=1e-4, rtol=1e-4)
            except Exception:  # a model whose forward is not a chain of its children
                chain_ok = False
        if not chain_ok:
            units = [("backbone", model)]
        return cls(units, int(expected.flatten(1).shape[1]), n_outputs, dropout)

    def stage_unit_indices(self, stages: list[str]) -> list[int]:
        return [self.unit_names.index(s) for s in stages if s in self.unit_names]

    def freeze_first(self, n_units: int) -> None:
        """Freeze the first ``n_units`` units; everything after trains."""
        self.n_frozen = int(n_units)
        for i, unit in enumerate(self.body):
            unit.requires_grad_(i >= self.n_frozen)
        self.head.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for unit in self.body[: self.n_frozen]:
            unit.eval()  # frozen BatchNorm keeps its running statistics
        return self

    def forward(self, x):
        return self.head(self.body(x))


class TopNetwork(nn.Module):
    """The trainable top of a :class:`TransferNetwork`, sharing its modules.

    Trained on cached outputs of the frozen units (the fast path).
    """

    def __init__(self, network: TransferNetwork):
        super().__init__()
        self.top = nn.Sequential(*network.body[network.n_frozen:])
        self.head = network.head

    def forward(self, x):
        return self.head(self.top(x))
