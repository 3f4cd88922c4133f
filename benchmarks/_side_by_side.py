"""Two versions of sktransfer measured side by side, alternating, in one session.

This machine is shared and noisy: figures from different runs are not
comparable. So an older commit is checked out beside today's code (a
``git worktree``), and one script measures both in turn, round by round,
each measurement in its own process importing its own version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The start of a measuring script: imports, the ELPV files (``paths``,
#: ``probability``, ``cell_type``), and the extraction throughput of
#: ``PretrainedFeatureExtractor(image_size=None)`` (224 px, ``engine="auto"``)
#: on the first 512 of them (``X``), best of 2 passes after a warm-up
#: (``rates``). Public API only: it runs on an older commit as well.
EXTRACTION = r"""
import json, sys, time
import numpy as np
from sktransfer import PretrainedFeatureExtractor, TransferClassifier
from sktransfer.datasets import load_elpv
paths, probability, cell_type = load_elpv()
X = list(paths[:512])
est = PretrainedFeatureExtractor(image_size=None).fit(X[:2])
est.transform(X[:32])
rates = []
for _ in range(2):
    t = time.perf_counter()
    est.transform(X)
    rates.append(len(X) / (time.perf_counter() - t))
"""


def measure(src: Path, script: str) -> dict:
    """The JSON that ``script`` prints last, run with the sktransfer of ``src``."""
    proc = subprocess.run([sys.executable, "-c", script], cwd=src, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(src)}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(base: str, rounds: int, script: str, hide=()) -> dict:
    """``{"before": [...], "after": [...]}``: ``script`` on commit ``base`` and on
    today's checkout, alternating for ``rounds`` rounds (keys in ``hide`` are
    left out of the progress log)."""
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), base], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            for k in range(rounds):
                for name, src in (("before", old), ("after", ROOT)):
                    runs[name].append(measure(src, script))
                    shown = {key: v for key, v in runs[name][-1].items() if key not in hide}
                    print(f"round {k + 1} {name}: {shown}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           check=False, capture_output=True)
    return runs


def head_commit() -> str:
    """Today's checkout's short commit."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()


def median(runs, key):
    """The median of ``key`` over ``runs``."""
    import statistics

    return statistics.median(r[key] for r in runs)


def record(name: str, out: dict, render) -> None:
    """Write ``results/<name>.json`` and its page ``render(out)``, and print the page."""
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (results / f"{name}.md").write_text(render(out))
    print(render(out))
