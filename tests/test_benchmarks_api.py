"""Benchmarks use sktransfer's public API and the one private testing module only.

Anything else inside sktransfer is free to change without breaking them.
"""

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _private_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "sktransfer."):
            parts = node.module.split(".")
            if any(p.startswith("_") for p in parts[1:]) and node.module != "sktransfer._testing":
                yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sktransfer._") and alias.name != "sktransfer._testing":
                    yield alias.name, node.lineno


def test_benchmarks_import_no_private_module_but_the_testing_one():
    found = {f"{path.name}:{line} {module}" for path in sorted(BENCH.glob("*.py"))
             for module, line in _private_imports(path)}
    assert not found, sorted(found)


def test_every_name_for_benchmarks_resolves():
    from sktransfer import _testing

    for name in _testing.FOR_BENCHMARKS:
        assert getattr(_testing, name) is not None, name


def test_gpu_check_runs_without_cuda_and_skips_each_check_with_its_reason(tmp_path):
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: benchmarks/gpu_check.py runs for real there")
    script = Path(__file__).parent.parent / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--write", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "gpu_check.md").read_text()
    for check in ("tests", "fit", "extraction", "onnx"):
        assert f"## {check}\n\nSkipped: CUDA is not available on this machine" in page
