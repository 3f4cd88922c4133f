"""The frozen trunk: the part of a network whose weights a fit does not change.

For :class:`~sktransfer.PretrainedFeatureExtractor` it is the whole network
up to ``layer``; for the fine-tuned estimators, the units before the first
trained one. It computes the same output for an image every time, so it can
be exported once to an inference engine, and its outputs computed once and
stored. :class:`FrozenTrunk` is the one object that runs it, everywhere:
``transform``, ``fit`` and ``predict``, ``explain``, ``export_onnx``'s check,
``compare`` and :mod:`sktransfer.dask`. It is decided in ``fit`` (the
``trunk_`` attribute) from

- the cut point: the units before ``cut``, pooled with ``pool``, or up to a
  module inside a unit (``layer_module``, torch only);
- the engine that runs it (``"torch"``, ``"onnxruntime"`` or
  ``"openvino"``) and the one asked for (``"auto"`` may fall back to torch);
- its precision, by the policy of :mod:`sktransfer._device`;
- the identity of its weights (a digest of the frozen units, hashed in
  ``fit``: a warm start may have trained units it now freezes);
- the store of its outputs under ``memory=`` (one entry per image and view)
  and where its exported graph is kept, both named after one description of
  it, :meth:`FrozenTrunk.identity` (:mod:`sktransfer._store`).

It holds no tensors and no sessions: graphs, sessions and compiled models
live in the process caches (:mod:`sktransfer._process_cache`), so a fitted
estimator pickles the same before and after a prediction.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

import numpy as np
import torch
from torch import nn

from . import _engines, _inference, _store
from ._layout import global_pool
from ._process_cache import cache


class TrunkModule(nn.Module):
    """Units ``start`` to ``stop`` of a network as one module (what is exported).

    ``stop=None``: to the end, flattened (the pooled features); ``pool``:
    the output globally average-pooled in its own layout (a stage's
    features, channels first or last). ``dtype``: the precision policy's
    autocast (float32 for export).
    """

    def __init__(self, network, stop: int | None = None, pool: bool = False, start: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.network = network
        self.start = start
        self.stop = stop
        self.pool = pool
        self.dtype = dtype

    def forward(self, x):
        out = self.network.forward_units(x, self.start, self.stop, self.dtype)
        if self.pool:
            last = self.network.unit_names[(self.stop or self.network.n_units) - 1]
            return global_pool(out, self.network.layout_of(last))
        return out.flatten(1) if self.stop is None else out


class _StopForward(Exception):
    """Raised by a forward hook once the requested module has run."""


def _run_until(network, module_name: str, x: torch.Tensor, dtype: torch.dtype):
    """The output of ``module_name`` (inside a unit) on ``x``; later layers never run."""
    captured = {}
    owner = threading.get_ident()  # another thread's pass through the module runs on

    def hook(_module, _inputs, output):
        if threading.get_ident() != owner:
            return
        captured["out"] = output
        raise _StopForward

    handle = network.backbone.get_submodule(module_name).register_forward_hook(hook)
    try:
        network.forward_units(x, 0, None, dtype)
    except _StopForward:
        pass
    finally:
        handle.remove()
    out = captured["out"]
    return out[0] if isinstance(out, (tuple, list)) else out


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: its bits are stored as int16, which no trunk
    # produces itself.
    t = t.contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(a))
    return t.view(torch.bfloat16) if a.dtype == np.int16 else t


@dataclasses.dataclass(frozen=True)
class FrozenTrunk:
    """The frozen part of a network, how it runs and where its outputs are kept.

    Parameters
    ----------
    backbone : str
        The backbone's name (part of every key).
    weights_id : str
        Identity of the trunk's weights: the digest of its units
        (:meth:`~sktransfer._network.BackboneNetwork.weights_id`), or the
        weights' SHA-256 for an untouched pretrained network.
    cut : int or None
        The cut point: the units before it run; ``None``: all of them,
        flattened (the pooled features).
    pool : bool
        Globally average-pool the output.
    size : int
        The network's input side.
    n_units : int
        Units of the whole network (part of the graph's key).
    layout : str or None
        Layout of the output of its last unit (``"NCHW"``, ``"NHWC"``...).
    engine : {"torch", "onnxruntime", "openvino"}
        What runs it.
    requested : str
        The ``engine`` parameter: with ``"auto"``, an engine that fails
        falls back to torch (with a warning) for that call.
    precision : {"float32", "bfloat16"}
        From the second stage on (the policy of :mod:`sktransfer._device`).
    kind : {"embeddings", "frozen"}
        The store's kind: the extractor's features (one entry per image),
        or a fine-tuned network's frozen outputs (one per image and view).
    settings : dict
        What else changes the outputs (normalisation...), for the store's key.
    location : str or None
        The ``memory=`` directory: outputs and the exported graph are kept
        there; ``None``: nothing stored.
    layer_module : str or None
        Torch only: stop after this module (inside a unit) and pool.
    """

    backbone: str
    weights_id: str
    cut: int | None
    pool: bool
    size: int
    n_units: int
    layout: str | None
    engine: str
    requested: str
    precision: str
    kind: str
    settings: dict = dataclasses.field(default_factory=dict, compare=False)
    location: str | None = None
    layer_module: str | None = None

    def __setstate__(self, state):
        # A trunk pickled by sktransfer 0.2 named its weights units_id and its
        # cut point stop, and did not record its layout.
        renamed = {"units_id": "weights_id", "stop": "cut"}
        state = {renamed.get(k, k): v for k, v in state.items()}
        state.setdefault("layout", None)
        for name, value in state.items():
            object.__setattr__(self, name, value)

    # -- identity ---------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.precision)

    def identity(self) -> dict:
        """The one description of this trunk that names what is stored of it:
        its outputs under ``memory=`` and its exported graph
        (:func:`sktransfer._store.key`, which adds the format version)."""
        return {
            "backbone": self.backbone,
            "weights_id": self.weights_id,
            "cut": self.cut,
            "pool": self.pool,
            "layer_module": self.layer_module,
            "size": int(self.size),
            "n_units": self.n_units,
            "layout": self.layout,
            "engine": self.engine,
            "precision": self.precision,
            **self.settings,
        }

    def graph_key(self, start: int = 0, stop: int | None = None, pool: bool | None = None):
        """Name of the graph of units ``start..stop`` (default: the trunk's):
        the part of :meth:`identity` the graph computes from, whatever engine
        runs it at whatever precision, and the torch version that exports it."""
        identity = self.identity()
        graph = {k: identity[k] for k in ("backbone", "weights_id", "size", "n_units",
                                          "layout")}
        return _store.key("graph", {
            **graph, "start": start, "stop": self.cut if stop is None and start == 0 else stop,
            "pool": self.pool if pool is None else pool, "torch": torch.__version__})

    def replace(self, **changes) -> FrozenTrunk:
        """A copy with ``changes`` (``engine="torch", location=None``, say)."""
        return dataclasses.replace(self, **changes)

    # -- running ----------------------------------------------------------------

    def run_torch(self, network, x: torch.Tensor) -> torch.Tensor:
        """The trunk on a normalised batch ``x``, by torch, under the precision policy."""
        if self.layer_module is not None:
            return global_pool(_run_until(network, self.layer_module, x, self.dtype),
                               network.layout_of(self.layer_module))
        return TrunkModule(network, self.cut, self.pool, dtype=self.dtype)(x)

    def _example(self, network, start: int = 0) -> torch.Tensor:
        """What units ``start..`` take: the earlier units' output on two random images."""
        x = torch.rand(2, 3, self.size, self.size, generator=torch.Generator().manual_seed(0))
        if start == 0:
            return x
        with torch.no_grad():
            device = next(network.parameters()).device
            return TrunkModule(network, start)(x.to(device)).float().cpu()

    def engine_part(self, network):
        """ONNX Runtime's or OpenVINO's run of the trunk (``None`` for torch):
        its graphs from the process cache, from ``location`` or exported now.

        Raises :class:`~sktransfer._export.ExportError` when the network
        cannot be exported, ``ImportError`` when the engine is not installed.
        """
        if self.engine == "torch":
            return None
        if not _engines.available(self.engine):
            raise ImportError(
                f"engine={self.engine!r} needs onnx, onnxscript and {self.engine}: pip "
                f"install onnx onnxscript {self.engine} in this environment, or refit with "
                "engine='auto' or 'torch'.")

        def part(start, stop, pool):
            key = self.graph_key(start, stop, pool)
            return key, _engines.graph(TrunkModule(network, stop, pool, start), key,
                                       lambda: self._example(network, start), self.location)

        if self.engine == "onnxruntime":
            return _engines.OnnxRuntimePart(*part(0, self.cut, self.pool))
        split = network.autocast_unit
        end = network.n_units if self.cut is None else self.cut
        if self.precision == "float32" or split is None or split >= end:
            # the policy keeps a trunk that ends before the second stage in float32
            return _engines.OpenVinoPart([(*part(0, self.cut, self.pool), "float32")],
                                         "float32")
        return _engines.OpenVinoPart([(*part(0, split, False), "float32"),
                                      (*part(split, self.cut, self.pool), self.precision)],
                                     self.precision)

    def prepared(self, network, owner: str) -> FrozenTrunk:
        """This trunk with its engine ready (exported now: ``fit`` reports a
        failure), or, with ``requested="auto"`` and a network the exporter
        cannot trace, the same trunk run by torch (with a warning)."""
        from ._export import ExportError

        try:
            self.engine_part(network)
        except ExportError as exc:
            if self.requested != "auto":
                raise
            warnings.warn(f"{owner}: {exc} Running it with torch instead (engine='auto').",
                          UserWarning, stacklevel=3)
            return self.replace(engine="torch")
        return self

    def __call__(self, network, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output for a normalised batch ``x`` on the network's device.

        An engine that fails (not installed here, a session that cannot be
        created or run) raises with an explicit ``engine``; with
        ``engine="auto"`` torch runs this call instead, with a warning, and
        the estimator is left as it was.
        """
        if self.engine != "torch":
            key = self.graph_key()
            if key not in cache("failed"):
                try:
                    return self.engine_part(network)(x)
                except Exception as exc:
                    if self.requested != "auto":
                        raise
                    cache("failed").put(key, f"{type(exc).__name__}: {exc}", 1)
            warnings.warn(
                f"engine {self.engine!r} cannot run this model's frozen part here "
                f"({cache('failed').get(key)}); torch runs it instead (engine='auto': the same "
                "network and weights, within the engines' tolerance).", UserWarning,
                stacklevel=2)
        return self.run_torch(network, x)

    def graphs(self, network) -> dict:
        """``{key: serialised graph}``: what another process needs to run the
        engine without exporting again (empty for torch)."""
        try:
            part = self.engine_part(network)
        except Exception:  # the receiving process falls back on its own
            return {}
        return {} if part is None else part.graphs

    # -- the store of outputs -----------------------------------------------------

    def store(self, shape=None, dtype=None) -> _store.OutputStore | None:
        """The ``memory=`` store of this trunk's outputs (``None`` without memory)."""
        if self.location is None:
            return None
        return _store.OutputStore(self.location, self.identity(), shape, dtype=dtype,
                                  kind=self.kind)

    def fill(self, network, source, indices, views, *, preprocess, batch_size: int,
             n_jobs: int | None, write, progress=None) -> None:
        """The trunk on every image of ``indices`` as each view (see
        :data:`~sktransfer._inference.FLIPS`), handed over batch by batch:
        ``write(v, positions, outputs)`` gets the outputs of view ``v`` for
        the images at ``positions`` (offsets into ``indices``), a CPU tensor
        in the dtype the trunk produced (bf16 from a bf16 stage). Nothing is
        held here beyond one batch.

        With a store, the views stored there are read and the others
        computed and stored (a grid search's first prediction stores an
        image's identity view; a later fit that trains on it computes only
        its other three flips).
        """
        indices = np.asarray(indices)
        n = len(indices)
        store = self.store()
        keys = [source.content_key(int(i)) for i in indices] if store is not None else None
        # The views still to compute, per image: all of them without a store.
        todo: dict[tuple, list] = {tuple(range(len(views))): list(range(n))}
        if store is not None:
            todo = {}
            for p in range(n):
                missing = []
                for v, view in enumerate(views):
                    entry = store.get(f"{keys[p]}-{view}")
                    if entry is None:
                        missing.append(v)
                    else:
                        write(v, np.array([p]), _from_numpy(entry)[None])
                if missing:
                    todo.setdefault(tuple(missing), []).append(p)
            if progress is not None:
                progress.update(n - sum(map(len, todo.values())))
        device = next(network.parameters()).device
        for missing, positions in todo.items():
            positions = np.array(positions, dtype=int)
            for pos, views_out in _inference.run(
                    source, indices[positions], preprocess=preprocess, batch_size=batch_size,
                    n_jobs=n_jobs, device=device, fn=lambda x, _: self(network, x),
                    views=[views[v] for v in missing], mode="no_grad", progress=progress):
                at = positions[pos]
                for v, out in zip(missing, views_out):
                    out = out.to("cpu")
                    write(v, at, out)
                    if store is not None:
                        for k, p in enumerate(at):
                            store.put(f"{keys[p]}-{views[v]}", _to_numpy(out[k]))

    def outputs(self, network, source, indices, views, *, preprocess, batch_size: int,
                n_jobs: int | None, progress=None) -> torch.Tensor:
        """``(n_views, n, ...)`` on the CPU: :meth:`fill` into one tensor (for
        a bounded number of images: a prediction's chunk)."""
        held = {}

        def write(v, positions, out):
            if "outputs" not in held:
                held["outputs"] = torch.empty((len(views), len(indices), *out.shape[1:]),
                                              dtype=out.dtype)
            held["outputs"][v, torch.as_tensor(positions)] = out

        self.fill(network, source, indices, views, preprocess=preprocess,
                  batch_size=batch_size, n_jobs=n_jobs, write=write, progress=progress)
        return held["outputs"]


@dataclasses.dataclass(frozen=True)
class FrozenPart:
    """The frozen units of a network as they run, in training and in prediction alike.

    With a ``trunk`` (a fixed frozen part): the trunk, with its engine,
    precision and store. Without (nothing fixed: everything trains, or
    gradual unfreezing moves the cut point during the fit): torch runs the
    units before ``network.cut``, at ``dtype`` under the precision policy of
    :mod:`sktransfer._device`, as they are at each call.

    Parameters
    ----------
    network : BackboneNetwork
    trunk : FrozenTrunk or None
    dtype : torch.dtype
        The frozen units' precision without a trunk (the trunk has its own).
    """

    network: object
    trunk: FrozenTrunk | None
    dtype: torch.dtype = torch.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part's output for a normalised batch ``x``."""
        if self.trunk is not None:
            return self.trunk(self.network, x)
        return self.network.forward_units(x, 0, self.network.cut, self.dtype)

    def outputs(self, source, indices, views, feed, progress=None) -> torch.Tensor:
        """``(n_views, n, ...)`` on the CPU for the images ``indices`` of
        ``source`` (:meth:`FrozenTrunk.outputs`, with its store)."""
        return self.trunk.outputs(self.network, source, indices, views,
                                  preprocess=feed.preprocess, batch_size=feed.batch_size,
                                  n_jobs=feed.n_jobs, progress=progress)

    def fill(self, source, indices, views, feed, write, progress=None) -> None:
        """:meth:`FrozenTrunk.fill` for the images ``indices`` of ``source``."""
        self.trunk.fill(self.network, source, indices, views, preprocess=feed.preprocess,
                        batch_size=feed.batch_size, n_jobs=feed.n_jobs, write=write,
                        progress=progress)

    def output_shape(self, feed) -> tuple[tuple, torch.dtype]:
        """The shape of one image's output, and its dtype (one image through it)."""
        size = feed.preprocess.size
        x = torch.zeros(1, 3, size, size, device=feed.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out = self(x)
        return tuple(out.shape[1:]), out.dtype

    def float32(self) -> FrozenPart:
        """The same units run by torch at float32, storing nothing (a
        reference to compare an exported graph with)."""
        trunk = (None if self.trunk is None else
                 self.trunk.replace(engine="torch", precision="float32", location=None))
        return dataclasses.replace(self, trunk=trunk, dtype=torch.float32)


def as_top_input(x: torch.Tensor) -> torch.Tensor:
    """Trunk outputs as the trained top's input: float32, channels-last maps."""
    x = x.float()
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
