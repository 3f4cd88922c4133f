"""What a training batch costs beyond the bare torch loop, head only, on stored outputs.

A ``TransferClassifier(trainable_stages=0, augment=False)`` on the first
1,024 training images of ELPV's paper split at 224 px: its frozen part (the
whole backbone) runs once, and each epoch trains the new head on the stored
outputs through skorch. Beside it, in the same process, a bare torch loop
over the same head: the same AdamW, label-smoothed cross-entropy, gradient
clipping and batch size, on tensors of the same shape. Per batch: the
median over epochs 2-8 of an epoch's time over its batches. An older commit
and today's checkout alternate, round by round (``_side_by_side``).

Run: ``python benchmarks/bench_overhead.py [BASE_COMMIT] [ROUNDS]``;
writes ``results/overhead.{json,md}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown  # noqa: E402
from _side_by_side import alternate, head_commit, median  # noqa: E402

RESULTS = Path(__file__).parent / "results"

SCRIPT = r"""
import copy, json, statistics, sys, time
import numpy as np, torch
sys.path.insert(0, "benchmarks")
from _elpv import paper_split
from sktransfer import TransferClassifier
X, y, _, _ = paper_split()
X, y = X[:1024], y[:1024]
clf = TransferClassifier(trainable_stages=0, augment=False, image_size=224, max_epochs=8,
                         batch_size=32, random_state=0).fit(X, y)
ours = [row["dur"] / row["train_batch_count"] for row in clf.history_[1:]]

head = copy.deepcopy(clf.model_.head).train()
opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
features = torch.randn(len(X), clf.model_.n_features)
labels = torch.as_tensor(y)
bare = []
for epoch in range(8):
    order = torch.randperm(len(X))
    t = time.perf_counter()
    n = 0
    for s in range(0, len(X), 32):
        idx = order[s:s + 32]
        opt.zero_grad()
        loss = loss_fn(head(features[idx]), labels[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        n += 1
    if epoch:
        bare.append((time.perf_counter() - t) / n)
print(json.dumps({"ours_ms": 1000 * statistics.median(ours),
                  "bare_ms": 1000 * statistics.median(bare),
                  "engine": clf.engine_, "threads": torch.get_num_threads()}))
"""


def main(base: str = "9881f36", rounds: int = 3):
    runs = alternate(base, rounds, SCRIPT)
    payload = {"base": base, "head": head_commit(), "runs": runs, "machine": describe_machine()}
    (RESULTS / "overhead.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(render(payload))


def render(payload=None, write=True) -> str:
    """``results/overhead.md`` from ``payload`` (default: ``overhead.json``)."""
    payload = payload or json.loads((RESULTS / "overhead.json").read_text())
    runs = payload["runs"]
    rows = []
    for name, commit in (("before", payload["base"]), ("after", payload["head"])):
        ours, bare = median(runs[name], "ours_ms"), median(runs[name], "bare_ms")
        rows.append(f"| {commit} ({name}) | {ours:.2f} ms | {bare:.2f} ms | "
                    f"{bare / ours:.2f}x | {32 / ours * 1000:,.0f} img/s |")
    text = f"""# Per-batch overhead of a head-only fit

Written by `benchmarks/bench_overhead.py`. `TransferClassifier(trainable_stages=0,
augment=False, image_size=224)` on 1,024 ELPV training images (the frozen
part's outputs computed once), against a bare torch loop over the same head
(AdamW, label-smoothed cross-entropy, gradient clipping, batch 32) in the
same process. Median over {len(runs['after'])} alternating rounds of the
median over epochs 2-8 of the time per batch.

| code | skorch fit, per batch | bare loop, per batch | bare / skorch | skorch fit |
|---|---|---|---|---|
{chr(10).join(rows)}

## Machine

{machine_markdown(payload['machine'])}
"""
    if write:
        (RESULTS / "overhead.md").write_text(text)
    return text


if __name__ == "__main__":
    main(*sys.argv[1:2], *[int(a) for a in sys.argv[2:3]])
