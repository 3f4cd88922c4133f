"""Where a default fit's time goes, measured with cProfile and the torch profiler.

A ``TransferClassifier(random_state=0)`` with every default but ``max_epochs``
is fitted on the first ``N_IMAGES`` ELPV images (300 px, the default
``image_size="auto"``). cProfile attributes the wall time to the parts of
the fit (the frozen pass, the training step's forward and backward, the
optimizer step, drawing batches of stored frozen outputs, skorch's per-batch
bookkeeping); the torch profiler, run over one more epoch, lists the
operators that take the time of the trainable part.

Run: ``python benchmarks/profile_fit.py [N_IMAGES] [EPOCHS]``.
Writes ``benchmarks/results/profile_fit.{json,md}``.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown  # noqa: E402

from sktransfer import TransferClassifier  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"

#: The parts of a fit, by the function whose cumulative time is theirs:
#: (label, file fragment, function name).
PARTS = [
    ("whole fit", "_transfer.py", "fit"),
    ("loading the backbone, building the network", "_base.py", "_build_network"),
    ("exporting the frozen part to ONNX (once per process and settings)", "_engines.py",
     "_export"),
    ("frozen pass (all images and flips, once)", "_training/frozen.py", "compute"),
    ("training epochs (skorch's fit loop)", "skorch/net.py", "fit_loop"),
    ("- training step: forward, loss, backward", "skorch/net.py", "train_step_single"),
    ("  - forward of the trainable part and head", "_training/net.py", "infer"),
    ("  - loss", "_training/net.py", "get_loss"),
    ("  - backward", "torch/_tensor.py", "backward"),
    ("- gradient clipping", "torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    ("- optimizer step (AdamW), without the step's closure", "torch/optim/adam.py", "step"),
    ("- learning-rate schedule", "_training/callbacks.py", "on_batch_end"),
    ("- batches of stored frozen outputs", "_training/data.py", "batches"),
    ("- scoring and callbacks at epoch end", "skorch/net.py", "notify"),
]


def _cumulative(stats: pstats.Stats, fragment: str, name: str) -> float:
    total = 0.0
    for (file, _, func), (_, _, _, cum, _) in stats.stats.items():
        if func == name and file.replace("\\", "/").endswith(fragment):
            total = max(total, cum)  # recursive entries repeat the outermost time
    return total


def main(n_images: int = 256, epochs: int = 3) -> dict:
    paths, probability, _ = load_elpv()
    X = list(paths[:n_images])
    y = (probability[:n_images] > 0.5).astype(int)
    clf = TransferClassifier(random_state=0, max_epochs=epochs)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    clf.fit(X, y)
    profiler.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    parts = {label: _cumulative(stats, fragment, name) for label, fragment, name in PARTS}
    # skorch runs forward and backward as the optimizer's closure, inside its step
    step = "- optimizer step (AdamW), without the step's closure"
    parts[step] -= parts["- training step: forward, loss, backward"]

    # The operators of the trainable part: a one-epoch fit under the torch
    # profiler, its frozen outputs read from a store filled by a fit before.
    import tempfile

    from sklearn.base import clone
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as memory:
        one = clone(clf).set_params(max_epochs=1, memory=memory)
        one.fit(X, y)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            clone(one).fit(X, y)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in ops)
    top_ops = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total_us, "calls": e.count}
               for e in ops[:15]]
    out = {"n_images": n_images, "epochs": epochs, "image_size": clf.image_size_,
           "engine": clf.engine_, "precision": clf.precision_,
           "precision_param": clf.precision, "wall_s": wall,
           "epoch_s": [h["dur"] for h in clf.history_[:epochs]], "parts_s": parts,
           "top_ops": top_ops, "threads": torch.get_num_threads(),
           "machine": describe_machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_fit.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "profile_fit.md").write_text(render(out))
    print(render(out))
    return out


def render(r: dict) -> str:
    whole = r["parts_s"]["whole fit"]
    rows = "\n".join(f"| {label} | {s:.1f} | {100 * s / whole:.0f} % |"
                     for label, s in r["parts_s"].items())
    ops = "\n".join(
        f"| `{o['op']}` | {o['self_ms']:.0f} | {100 * o['share']:.1f} % | {o['calls']} |"
        for o in r["top_ops"])
    rate = r["n_images"] / np.median(r["epoch_s"][1:] or r["epoch_s"])
    epochs = ", ".join(f"{s:.1f}" for s in r["epoch_s"])
    return f"""# Where a default fit's time goes

Generated by `benchmarks/profile_fit.py`: `TransferClassifier(random_state=0,
max_epochs={r['epochs']})`, every other parameter its default, on the first
{r['n_images']} ELPV images at {r['image_size']} px; engine `{r['engine']}`, frozen
part at {r['precision']} (`precision_`), training step at float32 (the CPU rule of
`precision="{r['precision_param']}"`), {r['threads']} torch threads. Whole fit
{r['wall_s']:.1f} s under cProfile (which adds some overhead to Python-heavy parts);
epochs {epochs} s (the first also pays the frozen pass): {rate:.0f} images/s per
epoch after the first.

| part (cumulative, nested parts indented) | seconds | share of the fit |
|---|---|---|
{rows}

Operators of a one-epoch fit whose frozen outputs are read from `memory=`
(torch profiler, self CPU time):

| operator | ms | share | calls |
|---|---|---|---|
{ops}

## Machine

{machine_markdown(r['machine'])}
"""


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
