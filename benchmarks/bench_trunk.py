"""The frozen trunk restructuring, before and after, side by side: same answers, same speed.

The code that runs the frozen part of a network (engines, precision, the
``memory=`` store) became one object; a single target became the
one-column case of several. Nothing of what a default model learns was
meant to change. Both versions run here in one session, alternating, each
measurement in its own process: the base commit from a ``git worktree``,
today's code from this checkout. Only public API is used, so both run the
same script.

- extraction: ``PretrainedFeatureExtractor(image_size=None)`` (224 px,
  ``engine="auto"``) on the first 512 ELPV PNG files, images/s (best of 2
  passes after a warm-up);
- the default classifier: ``TransferClassifier(random_state=0,
  max_epochs=EPOCHS)``, every other parameter its default, fitted on 256
  ELPV images and scored on 256 others: fit and predict seconds, and the
  predicted probabilities, compared between the versions (maximum absolute
  difference; 0 means the same model, bit for bit, on this machine).

Run: ``python benchmarks/bench_trunk.py [BASE_COMMIT] [ROUNDS]``.
Writes ``benchmarks/results/trunk_before_after.{json,md}``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASE = "605c7c1"  # main before the frozen trunk became one object
EPOCHS = 3

MEASURE = r"""
import json, sys, time
import numpy as np
from sktransfer import PretrainedFeatureExtractor, TransferClassifier
from sktransfer.datasets import load_elpv
paths, probability, _ = load_elpv()
X, y = list(paths[:512]), (probability[:512] > 0.5).astype(int)
est = PretrainedFeatureExtractor(image_size=None).fit(X[:2])
est.transform(X[:32])
rates = []
for _ in range(2):
    t = time.perf_counter()
    est.transform(X)
    rates.append(len(X) / (time.perf_counter() - t))
clf = TransferClassifier(random_state=0, max_epochs=EPOCHS)
t = time.perf_counter()
clf.fit(X[:256], y[:256])
fit_s = time.perf_counter() - t
t = time.perf_counter()
proba = clf.predict_proba(X[256:])
predict_s = time.perf_counter() - t
print(json.dumps({"extract_images_per_s": max(rates), "engine": est.engine_,
                  "fit_s": fit_s, "predict_s": predict_s,
                  "accuracy": float((proba.argmax(1) == y[256:]).mean()),
                  "proba": proba[:, 1].astype(float).tolist()}))
""".replace("EPOCHS", str(EPOCHS))


def measure(src: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE], cwd=src, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(src)}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(base: str = BASE, rounds: int = 2) -> None:
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), base], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            for k in range(rounds):
                for name, src in (("before", old), ("after", ROOT)):
                    runs[name].append(measure(src))
                    shown = {key: v for key, v in runs[name][-1].items() if key != "proba"}
                    print(f"round {k + 1} {name}: {shown}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           check=False, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    out = {"base": base, "after_commit": commit, "rounds": rounds, "epochs": EPOCHS,
           "runs": runs, "machine": describe_machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trunk_before_after.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "trunk_before_after.md").write_text(render(out))
    print(render(out))


def _median(runs, key):
    return statistics.median(r[key] for r in runs)


def render(r) -> str:
    before, after = r["runs"]["before"], r["runs"]["after"]
    rows = []
    for label, key, fmt in [("extraction, 224 px, images/s (median of rounds)",
                             "extract_images_per_s", "{:.1f}"),
                            (f"default fit, 256 images, {r['epochs']} epochs, seconds",
                             "fit_s", "{:.1f}"),
                            ("predict_proba, 256 images, seconds", "predict_s", "{:.1f}"),
                            ("test accuracy on the 256 others", "accuracy", "{:.4f}")]:
        b, a = _median(before, key), _median(after, key)
        rows.append(f"| {label} | {fmt.format(b)} | {fmt.format(a)} | {a / b:.2f} |")
    proba = [np.asarray(run["proba"]) for run in before + after]
    diff = max(float(np.abs(p - proba[0]).max()) for p in proba)
    per_round = "\n".join(
        f"| {k} | " + " / ".join(f"{run['extract_images_per_s']:.1f}" for run in r["runs"][k])
        + " | " + " / ".join(f"{run['fit_s']:.1f}" for run in r["runs"][k]) + " |"
        for k in ("before", "after"))
    engines = sorted({run["engine"] for run in before + after})
    return f"""# The frozen trunk restructuring, before and after

Generated by `benchmarks/bench_trunk.py`: commit `{r['base']}` (before) and
`{r['after_commit']}` (after), alternating in one session, {r['rounds']} rounds,
each measurement in its own process. Extraction ran with `engine="auto"`
({', '.join(engines)} on this machine).

| | before | after | after / before |
|---|---|---|---|
{chr(10).join(rows)}

The default classifier's predicted probabilities, all rounds and both
versions: largest absolute difference **{diff:.3g}** (0: the same model and
the same predictions, bit for bit).

Per round (extraction images/s, fit seconds):

| version | extraction | fit |
|---|---|---|
{per_round}

## Machine

{machine_markdown(r['machine'])}
"""


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else BASE,
         int(sys.argv[2]) if len(sys.argv) > 2 else 2)
