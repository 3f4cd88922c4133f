"""Description of the machine a benchmark ran on, stored with its results."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


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
    gpu = f", GPU {machine['cuda']}" if machine.get("cuda") else ""
    return f"{machine['cpu']}, {machine['cpu_count']} CPUs, {bf16}{gpu}"


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


def machines_section(runs, what="Rows") -> str:
    """A page's machine section: each kind of machine (:func:`machine_kind`)
    with the runs that ran on it (``what``: their heading; None: not listed,
    as when the table has a machine column), and the details of the latest.

    ``runs``: ``(name, machine)`` pairs. With one kind it is listed alone; a
    page never claims one machine for runs made on several.
    """
    kinds = {}
    for name, machine in runs:
        kinds.setdefault(machine_kind(machine), []).append((name, machine))
    parts = ["## Machines" if len(kinds) > 1 else "## Machine", ""]
    for kind, ran in kinds.items():
        if len(kinds) > 1:
            parts += [f"### {kind}", ""]
            if what:
                parts += [f"{what}: " + ", ".join(n for n, _ in ran), ""]
        latest = max((m for _, m in ran), key=lambda m: m.get("date", ""))
        parts += [machine_markdown(latest), ""]
    return "\n".join(parts)


PROVENANCE = Path(__file__).parent / "results" / "provenance.json"


def provenance_note(result: str) -> str:
    """A sentence naming the commit a results file (a path under ``results/``)
    was recorded at and what changed since, from ``results/provenance.json``;
    empty for results of today's code."""
    known = json.loads(PROVENANCE.read_text()) if PROVENANCE.exists() else {}
    if result not in known:
        return ""
    p = known[result]
    return f"`{result}` was recorded at commit `{p['commit']}` and {p['since']}."
