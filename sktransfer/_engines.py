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

import copy
import functools
import os

import numpy as np
import torch

from . import _testing
from ._export import OPSET, export_torch
from ._io import atomic_write
from ._process_cache import cache
from ._store import graph_path

ENGINES = ("auto", "torch", "onnxruntime", "openvino")


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


def _export(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    # A copy: the estimator's network stays where it is, in its memory format.
    module = copy.deepcopy(module).float().cpu().eval().to(memory_format=torch.contiguous_format)
    model = export_torch(module, example.shape[-1], "output", OPSET, input_name="x",
                         example=example.float().cpu())
    _testing.record("graph", "exported")
    return model.SerializeToString()


def graph(module: torch.nn.Module, key: str, example,
          memory: str | os.PathLike | None = None) -> bytes:
    """The ONNX graph of ``module`` (traced on ``example()``, its batch
    dimension dynamic): from this process's cache, from ``memory``'s
    directory, or exported now (and stored in both). ``key``: its name,
    :meth:`~sktransfer._trunk.FrozenTrunk.graph_key`."""

    def make():
        path = graph_path(memory, key) if memory else None
        if path is not None and path.is_file():
            return path.read_bytes()
        data = _export(module, example())
        if path is not None:
            atomic_write(path, data)
        return data

    return cache("graphs").get_or_put(key, make, len)


def session(key: str, data: bytes):
    """An ONNX Runtime session of ``data`` with torch's thread budget
    (``torch.get_num_threads()``: one per Dask worker thread, say)."""
    import onnxruntime as ort

    threads = torch.get_num_threads()

    def make():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    return cache("sessions").get_or_put((key, threads), make, lambda _: len(data))


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

    def make():
        core = ov.Core()
        hint = "bf16" if precision == "bfloat16" else "f32"
        return core.compile_model(core.read_model(data), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
            # With fewer threads than CPUs, other processes share the cores
            # (Dask workers of one thread each): OpenVINO's pinning put
            # them on the same cores; unpinned, a LocalCluster of 2 x 1
            # ran ~1.5x faster on this 2-core machine.
            "ENABLE_CPU_PINNING": threads >= (os.cpu_count() or 1)})

    return cache("compiled").get_or_put((key, threads, precision), make,
                                        lambda _: len(data))


class OpenVinoPart:
    """Runs a frozen part with OpenVINO on the CPU under the precision policy.

    ``parts``: the graphs to run in order with their precisions. At bf16,
    as with torch, the units before the second stage are one float32 graph
    and the rest a bf16 graph (keeping the full-resolution first stage in
    float32 raised the minimum cosine similarity to float32 features on
    ELPV from 0.961 to 0.996, ``benchmarks/results/engines.md``).
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
