"""What ``random_state`` reproduces: the same model bit for bit, or how far apart.

On this machine, each fit in a fresh process: ``TransferClassifier`` with
its defaults but ``random_state=0``, ``max_epochs=EPOCHS`` and ``engine``,
fitted on ``N_FIT`` images of the training part of Deitsch et al.'s ELPV
split and scored on ``N_SCORE`` other images of that training part (no test
image is used). Each engine runs twice: a second fit in another process
that equals the first bit for bit is what "reproducible" means here. The
spread between engines is the largest difference in predicted probability,
the share of images whose predicted class differs, and the accuracies.

Across machines, the results files that fitted one configuration with one
seed on the paper split on different kinds of machine are listed side by
side (``results/transfer/``, ``results/gpu_check.json``).

Run: ``python benchmarks/bench_reproducibility.py``. Writes
``benchmarks/results/reproducibility.{json,md}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _machine import describe_machine, machine_kind, machine_markdown  # noqa: E402

RESULTS = HERE / "results"
N_FIT, N_SCORE, EPOCHS = 256, 256, 10
ENGINES = ("torch", "onnxruntime", "openvino")

FIT = r"""
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from _elpv import training_part
from sktransfer import TransferClassifier
X, y, _ = training_part()
rng = np.random.default_rng(0)
idx = rng.permutation(len(X))
fit, score = idx[:{n_fit}], idx[{n_fit}:{n_fit} + {n_score}]
clf = TransferClassifier(random_state=0, max_epochs={epochs}, engine=sys.argv[2])
t = time.perf_counter()
clf.fit(X[fit], y[fit])
fit_s = time.perf_counter() - t
np.save(sys.argv[3], clf.predict_proba(X[score])[:, 1])
np.save(sys.argv[3] + ".y.npy", y[score])
print(clf.engine_, clf.precision_, fit_s)
"""


def fit_once(engine: str, out: Path) -> dict:
    code = FIT.format(n_fit=N_FIT, n_score=N_SCORE, epochs=EPOCHS)
    proc = subprocess.run([sys.executable, "-c", code, str(HERE), engine, str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    ran, precision, fit_s = proc.stdout.split()[-3:]
    proba = np.load(out)
    y = np.load(str(out) + ".y.npy")
    return {"engine": ran, "precision": precision, "fit_s": float(fit_s),
            "accuracy": float(((proba >= 0.5) == y).mean()), "proba": proba.tolist()}


def across_machines() -> list:
    """One configuration and seed on the paper split, per kind of machine."""
    rows = []
    for path in sorted((RESULTS / "transfer").glob("defaults_seed_0.json")):
        r = json.loads(path.read_text())
        rows.append({"result": f"transfer/{path.name}", "accuracy": r["accuracy"],
                     "roc_auc": r["roc_auc"], "machine": machine_kind(r["machine"]),
                     "sktransfer": r["machine"].get("sktransfer"),
                     "date": r["machine"]["date"][:10], "how": "CPU, engine auto"})
    speed = RESULTS / "fit_speed.json"
    if speed.exists():
        f = json.loads(speed.read_text())
        for version, commit in (("before", f["base"]), ("after", f["after_commit"])):
            for run in f["runs"][version]:
                rows.append({"result": f"fit_speed.json ({version}: commit {commit})",
                             "accuracy": run["accuracy"], "roc_auc": run["roc_auc"],
                             "machine": machine_kind(f["machine"]),
                             "sktransfer": commit, "date": f["machine"]["date"][:10],
                             "how": f"CPU, engine {run['engine']}"})
    gpu = RESULTS / "gpu_check.json"
    if gpu.exists():
        g = json.loads(gpu.read_text())
        for precision, f in g["checks"].get("fit", {}).items():
            if isinstance(f, dict) and "accuracy" in f:
                rows.append({"result": f"gpu_check.json (precision={precision!r})",
                             "accuracy": f["accuracy"], "roc_auc": f["roc_auc"],
                             "machine": machine_kind(g["machine"]),
                             "sktransfer": g["machine"].get("sktransfer"),
                             "date": g["machine"]["date"][:10],
                             "how": f"GPU, trunk {f['frozen_precision']}, training "
                                    f"{f['training_precision']}"})
    return rows


def main():
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ENGINES:
            for k in (1, 2):
                r = fit_once(engine, Path(tmp) / f"{engine}_{k}.npy")
                runs[f"{engine}, fit {k}"] = r
                print(engine, k, {a: b for a, b in r.items() if a != "proba"},
                      file=sys.stderr, flush=True)
    out = {"n_fit": N_FIT, "n_score": N_SCORE, "epochs": EPOCHS, "runs": runs,
           "across_machines": across_machines(), "machine": describe_machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reproducibility.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "reproducibility.md").write_text(render(out))


def render(r) -> str:
    runs = {k: v for k, v in r["runs"].items() if "proba" in v}
    lines = ["# What `random_state` reproduces", "",
             "Written by `benchmarks/bench_reproducibility.py` from `reproducibility.json`.", "",
             f"## On one machine: {machine_kind(r['machine'])}", "",
             f"`TransferClassifier(random_state=0, max_epochs={r['epochs']}, engine=...)`, "
             f"each fit in a fresh process, on {r['n_fit']} images of the ELPV paper split's "
             f"training part, probabilities of {r['n_score']} other training-part images.", "",
             "| fit | engine, trunk precision | fit (s) | accuracy | largest difference in "
             "probability from the first torch fit | predicted classes that differ from it |",
             "|---|---|---|---|---|---|"]
    ref = np.array(next(iter(runs.values()))["proba"])
    for name, v in r["runs"].items():
        if "proba" not in v:
            lines.append(f"| {name} | failed: {v['error']} | | | | |")
            continue
        p = np.array(v["proba"])
        lines.append(f"| {name} | {v['engine']}, {v['precision']} | {v['fit_s']:.0f} "
                     f"| {v['accuracy']:.2%} | {np.abs(p - ref).max():.2e} "
                     f"| {((p >= 0.5) != (ref >= 0.5)).mean():.2%} |")
    lines += ["", "Same engine, two processes:", ""]
    for engine in ENGINES:
        a, b = runs.get(f"{engine}, fit 1"), runs.get(f"{engine}, fit 2")
        if a and b:
            same = a["proba"] == b["proba"]
            lines.append(f"- {engine}: " + ("bit for bit the same probabilities" if same else
                         "largest difference "
                         f"{np.abs(np.array(a['proba']) - np.array(b['proba'])).max():.2e}"))
    lines += ["", "## One configuration on different machines", "",
              "`TransferClassifier(random_state=0)` on Deitsch et al.'s split (1,968 training, "
              "656 test images), from the results files:", "",
              "| result | how | accuracy | ROC AUC | machine | sktransfer | date |",
              "|---|---|---|---|---|---|---|"]
    for row in across_machines():
        lines.append(f"| {row['result']} | {row['how']} | {row['accuracy']:.2%} "
                     f"| {row['roc_auc']:.4f} | {row['machine']} | {row['sktransfer']} "
                     f"| {row['date']} |")
    lines += ["", "## Machine", "", machine_markdown(r["machine"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
