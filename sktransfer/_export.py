"""Tracing a torch module into an ONNX graph: the one call to ``torch.onnx.export``.

Used by the inference engines (the frozen trunk's graph, :mod:`._engines`)
and by :func:`sktransfer.export_onnx` (a whole fitted model).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch

#: The opset of the exported graphs (ONNX Runtime >= 1.17 runs it; skl2onnx
#: 1.20 converts to it).
OPSET = 20
INPUT = "images"


class ExportError(ValueError):
    """The estimator (or one of its steps) cannot be exported to ONNX."""


def export_torch(module: torch.nn.Module, size: int, output: str, opset: int,
                  input_name: str = INPUT, example: torch.Tensor | None = None):
    """``module`` as an ONNX graph for inputs ``(batch, 3, size, size)`` (or
    shaped like ``example``), the batch dimension dynamic."""
    import onnx

    if example is None:
        example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports its progress on stdout and warns about its own
    # internals; the user gets a clear error or the file.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module, (example,), dynamo=True, input_names=[input_name], output_names=[output],
                dynamic_shapes=({0: batch},), opset_version=opset, optimize=True,
                verbose=False)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExportError(
                f"torch.onnx.export could not export the network ({type(exc).__name__}: "
                f"{first[:300]}).") from exc
    return onnx.load_from_string(program.model_proto.SerializeToString())


