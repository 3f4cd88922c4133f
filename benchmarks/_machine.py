"""Description of the machine a benchmark ran on, stored with its results."""

from __future__ import annotations

import datetime
import os
import platform


def describe_machine() -> dict:
    import sklearn
    import timm
    import torch
    import torchvision

    from sktransfer import __version__
    from sktransfer._testing import cpu_has_amx, cpu_has_native_bf16

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": mem_gib,
        "native_bf16": cpu_has_native_bf16(),
        "amx": cpu_has_amx(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "scikit-learn": sklearn.__version__,
        "sktransfer": __version__,
    }


def machine_markdown(machine: dict) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in machine.items())


def machine_kind(machine: dict) -> str:
    """What makes fit times comparable between two results: the CPU and its
    bf16 support (without it, training runs in float32, ~2-3x slower here)."""
    bf16 = "native bf16" if machine.get("native_bf16") else "no native bf16"
    return f"{machine['cpu']}, {machine['cpu_count']} CPUs, {bf16}"


def require_reference_cpu(what: str) -> None:
    """Stop unless this CPU is the kind the time budgets were fixed on.

    The 20-minute fit budgets of the ELPV selection rules and five-seed bars
    were fixed on 2-core machines whose CPU runs bf16 natively (AMX /
    AVX512-BF16); without it sktransfer trains in float32, ~2-3x slower, and
    every candidate would read as over budget for the machine's sake.
    ``SKTRANSFER_BENCH_ANY_CPU=1`` runs anyway (the results record the CPU).
    """
    from sktransfer._testing import cpu_has_native_bf16

    if not cpu_has_native_bf16() and os.environ.get("SKTRANSFER_BENCH_ANY_CPU") != "1":
        raise SystemExit(
            f"{what}: this CPU has no native bf16 (no amx_bf16 / avx512_bf16 flag), so its "
            "fit times cannot be held against budgets fixed on CPUs that have it. Run it on "
            "such a machine, or set SKTRANSFER_BENCH_ANY_CPU=1 to run anyway.")
