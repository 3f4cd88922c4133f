"""Inference engines for the frozen part of a network: torch, ONNX Runtime, OpenVINO.

The frozen part is the extractor's whole network (up to ``layer``) or the
frozen units of a fine-tuned network: pretrained weights that never change,
so its ONNX graph is exported once per backbone, weights, cut point and input
size, and reused: within a process by every fit of a grid search, and on
disk under ``memory=``. ONNX Runtime runs it at float32 (equal to torch's
float32 within about 1e-6); OpenVINO at the estimator's ``precision`` (bf16
where the CPU computes it natively, with its own precision handling).
Which is fastest depends on the CPU: ``benchmarks/results/engines.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._cache import _Recent

ENGINES = ("auto", "torch", "onnxruntime", "openvino")


_GRAPHS = _Recent(16)  # key -> serialised ONNX graph
_SESSIONS = _Recent(8)  # (key, threads) -> onnxruntime.InferenceSession
_COMPILED = _Recent(8)  # (key, threads, precision) -> openvino.CompiledModel
_LOCK = threading.Lock()


class Prefix(nn.Module):
    """Units ``start`` to ``stop`` of a network (to the end with ``None``),
    optionally globally average-pooled: a frozen part as one module."""

    def __init__(self, network, stop: int | None = None, pool: bool = False, start: int = 0):
        super().__init__()
        self.network = network
        self.start = start
        self.stop = stop
        self.pool = pool

    def forward(self, x):
        out = self.network.forward_units(x, self.start, self.stop)
        if not self.pool:
            return out.flatten(1) if self.stop is None else out
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out.flatten(1)


@functools.cache
def _importable(*names) -> bool:
    # asked for every batch (a model loaded where its engine is missing)
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in names)


def available(engine: str) -> bool:
    """Whether the packages of ``engine`` are installed (dependencies of
    sktransfer, but a ``--no-deps`` install may lack them; the export needs
    onnx and onnxscript for both ONNX engines)."""
    if engine == "onnxruntime":
        return _importable("onnx", "onnxscript", "onnxruntime")
    if engine == "openvino":
        return _importable("onnx", "onnxscript", "openvino")
    return True


def graph_key(*, backbone: str, weights_id: str, stop: int | None, pool: bool, size: int,
              n_units: int, start: int = 0) -> str:
    """Identity of a frozen part's graph: what it computes, from which weights."""
    settings = {"backbone": backbone, "weights_id": weights_id, "start": start, "stop": stop,
                "pool": pool, "size": int(size), "n_units": n_units,
                "torch": torch.__version__}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def _export(module: Prefix, size: int) -> bytes:
    from ._onnx import OPSET, _export_torch

    module = module.float().cpu().eval()
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # a part that starts later takes the earlier units' output
        example = module.network.forward_units(example, 0, module.start)
        model = _export_torch(module, size, "output", OPSET, input_name="x", example=example)
    return model.SerializeToString()


def graph(module: Prefix, key: str, size: int, memory: str | os.PathLike | None = None) -> bytes:
    """The ONNX graph of ``module``: from this process's cache, from
    ``memory``'s directory, or exported now (and stored in both)."""
    with _LOCK:
        data = _GRAPHS.get(key)
        if data is not None:
            return data
        path = Path(memory) / "sktransfer-onnx" / f"{key}.onnx" if memory else None
        if path is not None and path.is_file():
            data = path.read_bytes()
        else:
            data = _export(_cpu_copy(module), size)
            if path is not None:
                from ._onnx import _write_atomic

                _write_atomic(path, data)
        _GRAPHS[key] = data
        return data


def _cpu_copy(module: Prefix) -> Prefix:
    import copy

    # The estimator's network stays where it is, in its memory format.
    return copy.deepcopy(module).to(memory_format=torch.contiguous_format)


def session(key: str, data: bytes):
    """An ONNX Runtime session of ``data`` with torch's thread budget
    (``torch.get_num_threads()``: one per Dask worker thread, say)."""
    import onnxruntime as ort

    threads = torch.get_num_threads()
    with _LOCK:
        sess = _SESSIONS.get((key, threads))
        if sess is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            _SESSIONS[(key, threads)] = sess
        return sess


class OnnxRuntimePart:
    """Runs a frozen part with ONNX Runtime; called like the torch module it replaces.

    Input: a normalised batch on the CPU (any memory format); output: a
    float32 tensor.
    """

    def __init__(self, key: str, data: bytes):
        self.key = key
        self.data = data

    @property
    def graphs(self) -> dict:
        """``{key: serialised graph}``: what another process needs to run it."""
        return {self.key: self.data}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        sess = session(self.key, self.data)
        (out,) = sess.run(None, {"x": np.ascontiguousarray(x.detach().float().cpu().numpy())})
        return torch.from_numpy(out).to(x.device)


def compiled(key: str, data: bytes, precision: str):
    """An OpenVINO model compiled for the CPU from the ONNX graph ``data``,
    at ``precision`` ("bfloat16" or "float32"), with torch's thread budget."""
    import openvino as ov

    threads = torch.get_num_threads()
    with _LOCK:
        model = _COMPILED.get((key, threads, precision))
        if model is None:
            core = ov.Core()
            hint = "bf16" if precision == "bfloat16" else "f32"
            model = core.compile_model(core.read_model(data), "CPU", {
                "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                # With fewer threads than CPUs, other processes share the cores
                # (Dask workers of one thread each): OpenVINO's pinning put
                # them on the same cores; unpinned, a LocalCluster of 2 x 1
                # ran ~1.5x faster on this 2-core machine.
                "ENABLE_CPU_PINNING": threads >= (os.cpu_count() or 1)})
            _COMPILED[(key, threads, precision)] = model
        return model


class OpenVinoPart:
    """Runs a frozen part with OpenVINO on the CPU under the precision policy.

    At ``precision="bfloat16"``, as with torch: the units up to the end of
    the first stage in float32 (one graph), the rest in bf16 (a second
    graph). Keeping the full-resolution first stage in float32 raised the
    minimum cosine similarity to float32 features on ELPV from 0.961 to 0.996
    (``benchmarks/results/engines.md``).
    """

    def __init__(self, parts: list, precision: str):
        self.parts = parts  # [(key, data, precision)], run in order
        self.precision = precision

    @property
    def graphs(self) -> dict:
        """``{key: serialised graph}``: what another process needs to run it."""
        return {key: data for key, data, _ in self.parts}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = np.ascontiguousarray(x.detach().float().cpu().numpy())
        for key, data, precision in self.parts:
            # one request per call: requests are not shared between threads
            request = compiled(key, data, precision).create_infer_request()
            out = np.ascontiguousarray(request.infer({0: out})[0], dtype=np.float32)
        return torch.from_numpy(out).to(x.device)


def resolve(engine: str, *, device: torch.device, owner: str) -> str:
    """``"torch"``, ``"onnxruntime"`` or ``"openvino"`` for the ``engine`` parameter.

    ``"auto"``, on the CPU: OpenVINO where the CPU has AMX (Intel Xeon since
    Sapphire Rapids: bf16 matrix units OpenVINO uses and torch's autocast
    does not match) and openvino is installed; else ONNX Runtime where it is
    installed; else torch. On CUDA: torch. Measured, not assumed:
    ``benchmarks/results/engines.md``.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {ENGINES}.")
    if engine == "torch":
        return "torch"
    if engine != "auto":
        if not available(engine):
            raise ImportError(f"{owner}(engine={engine!r}) needs onnx, onnxscript and "
                              f"{engine} (dependencies of sktransfer: pip install onnx "
                              f"onnxscript {engine}).")
        if device.type != "cpu":
            raise ValueError(f"{owner}(engine={engine!r}) runs on the CPU; "
                             f"device={device} was resolved. Use engine='torch' or 'auto'.")
        return engine
    if device.type != "cpu":
        return "torch"
    from ._device import cpu_has_amx

    if cpu_has_amx() and available("openvino"):
        return "openvino"
    return "onnxruntime" if available("onnxruntime") else "torch"


def build_part(network, key_of, size: int, *, stop: int | None, pool: bool, engine: str,
               requested: str, precision: str = "float32", memory=None, owner: str = ""):
    """The frozen part (units ``0..stop`` of ``network``) as ONNX Runtime or
    OpenVINO runs it, or ``None`` for torch.

    ``key_of(start, stop, pool)`` names a graph. With ``requested="auto"`` a
    backbone the exporter cannot trace falls back to torch (with a warning);
    with an explicit engine it raises.
    """
    if engine == "torch":
        return None
    from ._onnx import ExportError

    def part(start, end, end_pool):
        key = key_of(start, end, end_pool)
        return key, graph(Prefix(network, end, end_pool, start), key, size, memory)

    try:
        if engine == "onnxruntime":
            return OnnxRuntimePart(*part(0, stop, pool))
        split = network.stage_ends()[0] if network.stages else None
        if precision != "bfloat16" or not split or (stop is not None and stop <= split):
            return OpenVinoPart([(*part(0, stop, pool), "float32" if not split
                                  and precision == "bfloat16" else precision)], precision)
        return OpenVinoPart([(*part(0, split, False), "float32"),
                             (*part(split, stop, pool), "bfloat16")], precision)
    except ExportError as exc:
        if requested != "auto":
            raise
        warnings.warn(f"{owner}: {exc} Running it with torch instead (engine='auto').",
                      UserWarning, stacklevel=3)
        return None
