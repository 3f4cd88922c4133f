"""The network every estimator runs: a backbone cut into units, and an optional new head.

Units are the backbone's top-level modules in forward order, with the
containers of its stages split into their children (EfficientNet's
``blocks`` into ``blocks.0`` .. ``blocks.6``). Run in sequence they must
reproduce the backbone's own pooled output at the input size used; this is
checked when the network is built. Then the frozen part of a fine-tuned
network is a prefix of units, whose output can be computed once and reused.
A backbone whose ``forward`` is not such a chain (a ViT adds its position
embeddings between modules) stays a single unit: it fine-tunes whole, or
not at all.

Stages are the backbone library's own (timm's ``feature_info``), each ending
at a module; "stage k" means the same in the extractor's ``layer`` and in
``trainable_stages``. Frozen units have ``requires_grad=False`` *and* stay in
eval mode, so their BatchNorm running statistics never change, whatever
skorch's training loop does with ``train()``.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ._backbones import Backbone, drop_head


class InputSizeError(ValueError):
    """The backbone cannot run on inputs of the requested size."""


def _units(model: nn.Module, stages: list[str]) -> list[str]:
    """Top-level children in order, with the containers of stages split."""
    containers = {s.rpartition(".")[0] for s in stages if "." in s}
    units = []
    for name, child in model.named_children():
        if name in containers:
            units += [f"{name}.{n}" for n, _ in child.named_children()]
        else:
            units.append(name)
    return units


class BackboneNetwork(nn.Module):
    """Backbone units run in sequence, then (optionally) ``Flatten -> Dropout -> Linear``.

    Parameters
    ----------
    backbone : nn.Module
        The backbone with its classification head removed: its output is
        the pooled penultimate features.
    unit_names : list of str
        Qualified names of the units in forward order; ``[""]`` when the
        backbone is one unit.
    stages : list of str
        Module names of the ends of the stages, shallowest first.
    n_features : int
        Width of the pooled features.
    head_widths : int, tuple of int or None
        Width of the new head; a tuple: one linear head per task, of these
        widths, their logits concatenated; ``None`` for no head (feature
        extraction).
    dropout : float
        Dropout before the new linear layer.
    layouts : dict of str to str, default=None
        Layout of each module's output (``"NCHW"``, ``"NHWC"``, ``"NLC"``,
        ``"NC"``) by qualified name: :attr:`Backbone.layouts`.
    name : str, default=""
        The backbone's registry name.
    input_size : int or None, default=None
        The input size the backbone's weights were trained at.
    """

    def __init__(self, backbone: nn.Module, unit_names: list[str], stages: list[str],
                 n_features: int, head_widths=None, dropout: float = 0.0, layouts=None,
                 name: str = "", input_size: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.unit_names = list(unit_names)
        self.stages = list(stages)
        self.layouts = dict(layouts or {})
        self.n_features = int(n_features)
        #: The backbone's registry name, and the input size its weights were trained at.
        self.name = name
        self.input_size = input_size
        if head_widths is None:
            self.head = None
        elif isinstance(head_widths, int):
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                      nn.Linear(self.n_features, head_widths))
        else:  # one head per task (sktransfer._tasks)
            from ._tasks import MultiLinear

            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                      MultiLinear(self.n_features, head_widths))
        #: The cut point: the units before it are frozen.
        self.cut = 0

    @classmethod
    def from_backbone(cls, backbone: Backbone, size: int,
                      head_widths: int | tuple[int, ...] | None = None,
                      dropout: float = 0.0) -> BackboneNetwork:
        """Build from a loaded backbone, checking it at ``size`` x ``size`` inputs.

        Raises :class:`InputSizeError` if the backbone cannot run at that
        size (a ViT's patch embedding accepts only its own). If running the
        units in sequence does not give the backbone's own pooled output, the
        whole backbone becomes a single unit.
        """
        model = drop_head(backbone).eval()
        probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            try:
                expected = model(probe).flatten(1)
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else ""
                raise InputSizeError(
                    f"{backbone.name} cannot run on {size}x{size} inputs "
                    f"({type(exc).__name__}: {reason}); it may accept only its own input "
                    f"size, {backbone.input_size}: use image_size=None or "
                    f"{backbone.input_size}.") from None
            units = _units(model, backbone.stages)
            try:
                got = probe
                for name in units:
                    got = model.get_submodule(name)(got)
                got = got.flatten(1)
                chain = got.shape == expected.shape and torch.allclose(
                    got, expected, atol=1e-4, rtol=1e-4)
            except Exception:  # a forward that is not a chain of its children
                chain = False
        return cls(model, units if chain else [""], backbone.stages, expected.shape[1],
                   head_widths, dropout, layouts=backbone.layouts, name=backbone.name,
                   input_size=backbone.input_size)

    def __setstate__(self, state):
        # A network pickled by sktransfer 0.2 called its cut point n_frozen,
        # and knew neither its backbone's name nor its input size.
        if "n_frozen" in state:
            state["cut"] = state.pop("n_frozen")
        state.setdefault("name", "")
        state.setdefault("input_size", None)
        super().__setstate__(state)

    # -- structure ------------------------------------------------------------

    @property
    def n_units(self) -> int:
        return len(self.unit_names)

    def unit(self, i: int) -> nn.Module:
        return self.backbone.get_submodule(self.unit_names[i])

    def layout_of(self, module_name: str) -> str | None:
        """Layout of the output of the backbone's module ``module_name``
        (``None``: unknown), for :func:`sktransfer._layout.global_pool`."""
        # a network pickled before layouts were kept knows none
        return getattr(self, "layouts", {}).get(module_name)

    @property
    def stage_layouts(self) -> list[str | None]:
        """Layout of each stage's output, shallowest first."""
        return [self.layout_of(s) for s in self.stages]

    def stage_ends(self) -> list[int | None]:
        """For each stage, the number of units up to and including its end
        (``None`` where the stage does not end at a unit)."""
        return [self.unit_names.index(s) + 1 if s in self.unit_names else None
                for s in self.stages]

    @property
    def autocast_unit(self) -> int | None:
        """The first unit the precision policy may run in bf16: where the
        second stage starts; ``None`` where no unit starts there (the whole
        network then runs in float32). See :mod:`sktransfer._device`."""
        ends = self.stage_ends()
        if len(ends) < 2 or ends[0] is None or ends[0] >= self.n_units:
            return None
        return ends[0]

    def frozen_units(self, trainable_stages) -> tuple[int, list[int]]:
        """The cut point for ``trainable_stages`` (the units before it are
        frozen), and the gradual schedule.

        ``k``: the last k stages train, with what follows them (the neck) and
        the head; ``0``: the head only; ``"all"``: everything; ``"gradual"``:
        the head first, then one more stage per epoch, deepest first. The
        schedule lists the cut point from the second epoch on.
        """
        n = len(self.stages)
        if trainable_stages == "all" or (trainable_stages == n and n > 0):
            return 0, []
        if trainable_stages == 0:
            return self.n_units, []
        ends = self.stage_ends()
        if not ends or None in ends:
            raise ValueError(
                f"trainable_stages={trainable_stages!r}: {self.name} cannot be cut between its "
                "stages (its forward is not a chain of its modules); use trainable_stages=0 "
                "(the head only) or 'all'.")
        if trainable_stages == "gradual":
            return self.n_units, [ends[k] for k in range(n - 2, -1, -1)] + [0]
        if trainable_stages > n:
            raise ValueError(
                f"trainable_stages={trainable_stages}: {self.name} has {n} stages; use an int "
                f"in 0..{n}, 'all' or 'gradual'.")
        return ends[n - trainable_stages - 1], []

    def weights_id(self, cut: int) -> str:
        """SHA-256 of the weights and buffers of the units before ``cut``.

        The identity of a frozen part's weights as they are now: after a fit
        trained a unit, the pretrained weights' identity no longer describes
        it.
        """
        h = hashlib.sha256()
        for i in range(cut):
            for name, t in self.unit(i).state_dict().items():
                t = t.detach().cpu().contiguous().reshape(-1)
                h.update(f"{i}:{name}:{t.dtype}:{t.numel()}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    # -- freezing -------------------------------------------------------------

    def freeze_before(self, cut: int) -> None:
        """Freeze the units before ``cut``; everything after trains."""
        self.cut = int(cut)
        for i in range(self.n_units):
            self.unit(i).requires_grad_(i >= self.cut)
        if self.head is not None:
            self.head.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for i in range(self.cut):
            self.unit(i).eval()  # frozen BatchNorm keeps its running statistics
        return self

    # -- forward --------------------------------------------------------------

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int | None = None,
                      dtype: torch.dtype = torch.float32):
        """Units ``start`` to ``stop`` (exclusive) applied to ``x``, under the
        precision policy for ``dtype``: units before :attr:`autocast_unit` in
        float32, the rest under ``dtype`` autocast."""
        stop = self.n_units if stop is None else stop
        split = self.autocast_unit
        if dtype == torch.float32 or split is None or split >= stop:
            split = stop
        split = max(split, start)
        for i in range(start, split):
            x = self.unit(i)(x)
        if split < stop:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                for i in range(split, stop):
                    x = self.unit(i)(x)
        return x

    def forward(self, x):
        features = self.forward_units(x).flatten(1)
        return features if self.head is None else self.head(features)


class TopNetwork(nn.Module):
    """What a training step updates: the network from its cut point on.

    Its input is the output of the frozen units (the units before
    ``network.cut``), which the training data pipeline computes (once per
    fit, or per batch) and prediction computes the same way.
    """

    def __init__(self, network: BackboneNetwork):
        super().__init__()
        self.network = network
        self.training = network.training  # the mode its trained units are in

    def train(self, mode: bool = True):
        # The units before the cut stay in eval mode whatever the training
        # loop asks (BackboneNetwork.train); switching only the trained units
        # and the head spares walking the frozen ones at every batch (skorch
        # asks at every training step).
        if self.training == mode:
            return self
        self.training = mode
        net = self.network
        net.training = mode
        for i in range(net.cut, net.n_units):
            net.unit(i).train(mode)
        if net.head is not None:
            net.head.train(mode)
        return self

    def forward(self, x):
        net = self.network
        return net.head(net.forward_units(x, net.cut).flatten(1))
