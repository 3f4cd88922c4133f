"""A default fit on ELPV, today against an older commit, side by side in one session.

Each round fits ``TransferClassifier(random_state=0)`` — every parameter its
default — on the 1,968 training images of Deitsch et al.'s split with the
older commit (a ``git worktree``) and with today's checkout, alternating,
each in its own process, and scores it on the split's 656 test images
(measured, not used to choose anything). Before each fit, extraction
throughput: ``PretrainedFeatureExtractor(image_size=None)`` (224 px,
``engine="auto"``) on the first 512 ELPV PNG files, best of 2 passes after
a warm-up. Only public API is used, so both versions run the same script.

Run: ``python benchmarks/bench_fit_speed.py [BASE_COMMIT] [ROUNDS]``; then
``python benchmarks/bench_fit_speed.py --extraction [BASE_COMMIT]`` adds three
rounds of extraction alone (one pass is noisy on a shared machine).
Writes ``benchmarks/results/fit_speed.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown  # noqa: E402
from _side_by_side import ROOT, alternate  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BASE = "605c7c1"  # main before the frozen trunk became one object and the GPU path

MEASURE = r"""
import json, sys, time
import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
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
y = (probability > 0.5).astype(int)
strata = np.char.add(probability.astype(str), cell_type)
train, test = train_test_split(np.arange(len(paths)), test_size=0.25, stratify=strata,
                               random_state=0)
clf = TransferClassifier(random_state=0)
t = time.perf_counter()
clf.fit(paths[train], y[train])
fit_s = time.perf_counter() - t
t = time.perf_counter()
proba = clf.predict_proba(paths[test])[:, 1]
predict_s = time.perf_counter() - t
print(json.dumps({"extract_images_per_s": max(rates), "engine": clf.engine_,
                  "fit_s": fit_s, "predict_s": predict_s,
                  "epoch_s": [row["dur"] for row in clf.history_],
                  "accuracy": accuracy_score(y[test], (proba >= 0.5).astype(int)),
                  "roc_auc": roc_auc_score(y[test], proba)}))
"""


EXTRACT = r"""
import json, time
from sktransfer import PretrainedFeatureExtractor
from sktransfer.datasets import load_elpv
X = list(load_elpv()[0][:512])
est = PretrainedFeatureExtractor(image_size=None).fit(X[:2])
est.transform(X[:32])
rates = []
for _ in range(2):
    t = time.perf_counter()
    est.transform(X)
    rates.append(len(X) / (time.perf_counter() - t))
print(json.dumps({"extract_images_per_s": max(rates), "engine": est.engine_}))
"""


def extraction(base: str = BASE, rounds: int = 3) -> None:
    """More rounds of extraction alone, added to ``fit_speed.json``."""
    path = RESULTS / "fit_speed.json"
    out = json.loads(path.read_text())
    out["extraction_rounds"] = alternate(base, rounds, EXTRACT)
    path.write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "fit_speed.md").write_text(render(out))
    print(render(out))


def main(base: str = BASE, rounds: int = 1) -> None:
    runs = alternate(base, rounds, MEASURE, hide=("epoch_s",))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    out = {"base": base, "after_commit": commit, "rounds": rounds, "runs": runs,
           "machine": describe_machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fit_speed.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "fit_speed.md").write_text(render(out))
    print(render(out))


def _median(runs, key):
    return statistics.median(r[key] for r in runs)


def render(r) -> str:
    before, after = r["runs"]["before"], r["runs"]["after"]
    rows = []
    for label, key, fmt in [
            ("default fit on 1,968 images, seconds", "fit_s", "{:.0f}"),
            ("mean epoch, seconds", "mean_epoch_s", "{:.1f}"),
            ("predict_proba on 656 images, seconds", "predict_s", "{:.1f}"),
            ("extraction, 224 px, images/s", "extract_images_per_s", "{:.1f}"),
            ("test accuracy (656 images)", "accuracy", "{:.4f}"),
            ("test ROC AUC", "roc_auc", "{:.4f}")]:
        if key == "mean_epoch_s":
            b = statistics.median(statistics.mean(x["epoch_s"]) for x in before)
            a = statistics.median(statistics.mean(x["epoch_s"]) for x in after)
        else:
            b, a = _median(before, key), _median(after, key)
        rows.append(f"| {label} | {fmt.format(b)} | {fmt.format(a)} | {a / b:.2f} |")
    extra = r.get("extraction_rounds")
    if extra:
        b = [x["extract_images_per_s"] for x in extra["before"]]
        a = [x["extract_images_per_s"] for x in extra["after"]]
        rows.append(f"| extraction alone, {len(b)} more rounds, images/s (median; each: "
                    f"{' / '.join(f'{v:.1f}' for v in b)} before, "
                    f"{' / '.join(f'{v:.1f}' for v in a)} after) "
                    f"| {statistics.median(b):.1f} | {statistics.median(a):.1f} "
                    f"| {statistics.median(a) / statistics.median(b):.2f} |")
    engines = sorted({run["engine"] for run in before + after})
    return f"""# A default fit, before and after, side by side

Generated by `benchmarks/bench_fit_speed.py`: commit `{r['base']}` (before) and
`{r['after_commit']}` (after), alternating in one session, {r['rounds']} round(s), each
measurement in its own process. `TransferClassifier(random_state=0)` on Deitsch
et al.'s ELPV split; the frozen part ran with `engine="auto"` ({', '.join(engines)}
on this machine). Test figures are measured, not used to choose anything.

| | before | after | after / before |
|---|---|---|---|
{chr(10).join(rows)}

## Machine

{machine_markdown(r['machine'])}
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--extraction"]:  # more rounds of extraction alone
        extraction(*sys.argv[2:3] or [BASE])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else BASE,
             int(sys.argv[2]) if len(sys.argv) > 2 else 1)
