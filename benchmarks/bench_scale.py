"""Fine-tuning at any data size: memory, disk and time as the number of images grows.

Two measurements, each fit in a fresh process (peak RSS from ``getrusage``;
disk used: the largest drop of the free space of the temporary directory's
file system, sampled every 50 ms while the process runs):

- ``memory``: a one-epoch default ``TransferClassifier`` on 400 and 1,600
  ELPV training images (the paper split's first images, at their own 300 px),
  with scikit-learn's default ``working_memory`` and under
  ``working_memory=128``: how the peak grows with n within and beyond the
  budget, and whether the bounded fit's probabilities (on 64 test images)
  equal the unbounded one's;
- ``scale``: a default ``TransferClassifier`` fitted for 2 epochs on n
  images generated from ELPV (random crops of 250-300 px, rotations up to
  10 degrees and brightness within +-20 % of the 2,624 cells, written as
  JPEG files at 300 px to a temporary directory that is removed after the
  run, never committed) for n = 2,000, 8,000 and 32,000 on a CPU.

Run: ``python benchmarks/bench_scale.py [memory] [scale] [--sizes 2000,8000]``
(bench extra); writes ``results/scale.{json,md}`` after every fit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_kind, machine_markdown  # noqa: E402

RESULTS = Path(__file__).parent / "results"
STORE = RESULTS / "scale.json"
MEMORY_SIZES = (400, 1600)
MEMORY_HEADER = ("| working_memory | training images | peak own memory | peak resident set | "
                 "disk used | fit | machine |\n|---|---|---|---|---|---|---|")
SCALE_HEADER = ("| images | peak own memory | peak resident set | disk used | fit | fit per "
                "image | frozen outputs computed once | machine |\n"
                "|---|---|---|---|---|---|---|---|")
SCALE_SIZES = (2000, 8000, 32000)
BOUND_MIB = 128

CHILD = """
import json, resource, sys, threading, time
import numpy as np, sklearn
# Peak of the process's own (anonymous) memory: ru_maxrss also counts the
# pages of a mapped file it reads, which the system reclaims at will.
anon = [0]
def watch():
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon[0] = max(anon[0], int(line.split()[1]))
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
sys.path.insert(0, {bench!r})
from _elpv import paper_split
from sktransfer import TransferClassifier
args = json.loads(sys.argv[1])
if args["files"]:
    X = np.array(json.load(open(args["files"])))
    y = np.array(json.load(open(args["labels"])))
    X_test = X[:64]
else:
    X, y, X_test, _ = paper_split()
    X, y, X_test = X[:args["n"]], y[:args["n"]], X_test[:64]
config = {{}} if args["working_memory"] is None else {{"working_memory": args["working_memory"]}}
with sklearn.config_context(**config):
    clf = TransferClassifier(max_epochs=args["epochs"], random_state=0)
    t = time.perf_counter()
    clf.fit(X, y)
    fit_s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
proba = clf.predict_proba(X_test)
np.save(args["proba"], proba)
print(json.dumps({{"fit_s": fit_s, "peak_rss_mib": peak / 1024, "peak_anon_mib": anon[0] / 1024,
                  "image_size": clf.image_size_,
                  "epochs": clf.n_epochs_, "frozen_precomputed": clf.frozen_precomputed_,
                  "engine": clf.engine_}}))
"""


def _fit(n, epochs, working_memory, files=None, labels=None):
    """One fit in a fresh process: its report, and the disk it took."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    proba = tmp / "proba.npy"
    args = {"n": n, "epochs": epochs, "working_memory": working_memory, "files": files,
            "labels": labels, "proba": str(proba)}
    free0 = shutil.disk_usage(tempfile.gettempdir()).free
    lowest = [free0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            lowest[0] = min(lowest[0], shutil.disk_usage(tempfile.gettempdir()).free)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    child = CHILD.format(bench=str(Path(__file__).parent))
    try:
        out = subprocess.run([sys.executable, "-c", child, json.dumps(args)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        done.set()
        watcher.join()
    row = json.loads(out.strip().splitlines()[-1])
    import numpy as np

    row["proba"] = np.load(proba).tolist()
    shutil.rmtree(tmp)
    row.update(n=n, working_memory_mib=working_memory,
               disk_used_mib=max(0.0, (free0 - lowest[0]) / 2**20),
               fit_s_per_image=row["fit_s"] / n)
    return row


def _record(kind, row):
    payload = json.loads(STORE.read_text()) if STORE.exists() else {"memory": [], "scale": []}
    row["machine"] = describe_machine()
    payload[kind] = [r for r in payload[kind]
                     if (r["n"], r.get("working_memory_mib")) != (row["n"],
                                                                  row.get("working_memory_mib"))]
    payload[kind].append(row)
    STORE.write_text(json.dumps(payload, indent=2) + "\n")
    render()


def run_memory():
    for n in MEMORY_SIZES:
        for working_memory in (None, BOUND_MIB):
            row = _fit(n, 1, working_memory)
            print({k: v for k, v in row.items() if k != "proba"}, file=sys.stderr, flush=True)
            _record("memory", row)


def _make(args):
    """One generated image (in a worker process): crop, rotation, brightness."""
    from PIL import Image, ImageEnhance

    source, path, side, x0, y0, angle, light, out = args
    cell = Image.open(source).convert("L")
    image = cell.crop((x0, y0, x0 + side, y0 + side))
    image = image.rotate(angle, resample=Image.BILINEAR)
    image = ImageEnhance.Brightness(image).enhance(light)
    image.resize((out, out), Image.BICUBIC).save(path, quality=90)


def generate(n: int, root: Path, seed: int = 0, side: int = 300, n_jobs: int = 1):
    """``n`` JPEG files (``side`` px) made from ELPV cells, and their defect labels."""
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    from sktransfer.datasets import load_elpv

    paths, probability, _ = load_elpv()
    rng = np.random.default_rng(seed)
    jobs, labels = [], []
    for i in range(n):
        k = int(rng.integers(len(paths)))
        crop = int(rng.integers(250, 301))
        x0, y0 = (int(v) for v in rng.integers(0, 301 - crop, size=2))
        jobs.append((str(paths[k]), str(root / f"{i:06d}.jpg"), crop, x0, y0,
                     float(rng.uniform(-10, 10)), float(rng.uniform(0.8, 1.2)), side))
        labels.append(int(probability[k] > 0.5))
    if n_jobs > 1:
        with ProcessPoolExecutor(n_jobs) as pool:
            list(pool.map(_make, jobs, chunksize=256))
    else:
        for job in jobs:
            _make(job)
    return [job[1] for job in jobs], labels


def run_scale(sizes):
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="bench-scale-images-"))
        try:
            t = time.perf_counter()
            files, labels = generate(n, root, n_jobs=2)
            made_s = time.perf_counter() - t
            (root / "files.json").write_text(json.dumps(files))
            (root / "labels.json").write_text(json.dumps(labels))
            row = _fit(n, 2, None, str(root / "files.json"), str(root / "labels.json"))
            row["generated_s"] = made_s
            row.pop("proba")
            print(row, file=sys.stderr, flush=True)
            _record("scale", row)
        finally:
            shutil.rmtree(root)


def _change(mib):
    return f"grew by {mib:,.0f} MiB" if mib >= 0 else f"fell by {-mib:,.0f} MiB"


def render(payload=None, write=True) -> str:
    """``results/scale.md`` from ``payload`` (default: ``scale.json``)."""
    import numpy as np

    payload = payload or json.loads(STORE.read_text())
    memory = sorted(payload.get("memory", []), key=lambda r: (r["working_memory_mib"] or 0,
                                                              r["n"]))
    lines = []
    for r in memory:
        bound = "default (1,024 MiB)" if r["working_memory_mib"] is None else (
            f"{r['working_memory_mib']} MiB")
        lines.append(f"| {bound} | {r['n']:,} | {r['peak_anon_mib']:,.0f} MiB | "
                     f"{r['peak_rss_mib']:,.0f} MiB | {r['disk_used_mib']:,.0f} MiB | "
                     f"{r['fit_s']:.0f} s | {machine_kind(r['machine'])} |")
    growth = []
    for bound in dict.fromkeys(r["working_memory_mib"] for r in memory):
        rows = {r["n"]: r for r in memory if r["working_memory_mib"] == bound}
        if len(rows) >= 2:
            lo, hi = min(rows), max(rows)
            name = "the default working_memory" if bound is None else f"working_memory={bound}"
            own = rows[hi]["peak_anon_mib"] - rows[lo]["peak_anon_mib"]
            rss = rows[hi]["peak_rss_mib"] - rows[lo]["peak_rss_mib"]
            growth.append(f"- {name}: from {lo:,} to {hi:,} training images the peak of the "
                          f"process's own memory {_change(own)} (its resident set, mapped "
                          f"file pages included, {_change(rss)}).")
    same = []
    for n in dict.fromkeys(r["n"] for r in memory):
        pair = [r for r in memory if r["n"] == n]
        if len(pair) == 2:
            diff = float(np.abs(np.array(pair[0]["proba"]) - np.array(pair[1]["proba"])).max())
            same.append(f"- {n:,} images: the bounded and the unbounded fit's probabilities "
                        f"on 64 test images differ by at most {diff:.1e}"
                        + (" (identical)." if diff == 0 else "."))
    scale = sorted(payload.get("scale", []), key=lambda r: r["n"])
    scale_lines = [f"| {r['n']:,} | {r['peak_anon_mib']:,.0f} MiB | "
                   f"{r['peak_rss_mib']:,.0f} MiB | {r['disk_used_mib']:,.0f} MiB "
                   f"| {r['fit_s'] / 60:.1f} min | {r['fit_s_per_image'] * 1000:.1f} ms | "
                   f"{'yes' if r['frozen_precomputed'] else 'no'} | "
                   f"{machine_kind(r['machine'])} |" for r in scale]
    latest = max((r["machine"] for r in memory + scale), key=lambda m: m.get("date", ""),
                 default=None)
    text = f"""# Fine-tuning at any data size

Written by `benchmarks/bench_scale.py` from `scale.json`. Each row is a fit
in a fresh process. Peak own memory: the largest `RssAnon` of
`/proc/self/status` (sampled every 20 ms), the memory the process itself
holds; peak resident set: `getrusage`'s, which also counts the pages of a
mapped file the process has read (page cache the system reclaims when
memory is short). Disk used: the largest drop of the free space of the
temporary directory's file system while the fit ran (where the frozen
part's outputs go once they exceed scikit-learn's `working_memory`).

## Memory within and beyond the budget

A one-epoch default `TransferClassifier` on the first n training images of
ELPV's paper split, at their own 300 px (the frozen part's output of four
flip views per image is computed once).

{MEMORY_HEADER}
{chr(10).join(lines)}

{chr(10).join(growth)}
{chr(10).join(same)}

## Time and memory as n grows

A default `TransferClassifier` fitted for 2 epochs on n JPEG files made
from ELPV's cells (random crops, rotations and brightness; generated for the
run, then deleted).

{SCALE_HEADER}
{chr(10).join(scale_lines)}

## Machine

{machine_markdown(latest) if latest else ""}
"""
    if write:
        (RESULTS / "scale.md").write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["memory", "scale"])
    parser.add_argument("--sizes", default=",".join(map(str, SCALE_SIZES)))
    options = parser.parse_args()
    if "memory" in options.parts:
        run_memory()
    if "scale" in options.parts:
        run_scale([int(s) for s in options.sizes.split(",")])
