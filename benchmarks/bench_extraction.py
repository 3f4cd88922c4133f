"""Throughput, fidelity and cached grid search of PretrainedFeatureExtractor.

Measured side by side in one process, on ELPV PNG files:

(a) the estimator as users call it, from PNG files on disk (decoding included);
(b) a plain PyTorch fp32 eval loop over pre-decoded tensors, same model and
    input size (resize and normalisation in the loop, batch 32);
(c) GridSearchCV (5 folds x 10 values of LogisticRegression C) over a
    pipeline with the embedding cache, cold, vs. one extraction pass plus the
    same search over the precomputed features.

Plus the agreement of the default (bf16 on this CPU) features with fp32
features on all 2,624 images, and the downstream accuracy of both on the
Deitsch et al. (2019) split (75/25, stratified by probability x cell type,
random_state=0).

(a), (b) and the fidelity run at two input sizes: 224, the backbone's
(``image_size=None``, like for like with the runs before the core rewrite, kept in
``extraction_before_core.{json,md}``), and 300, ELPV's own size, which the
default ``image_size="auto"`` uses since that rewrite. (c) runs at the default.

Run: ``python benchmarks/bench_extraction.py`` (needs the ``bench`` extra).
Writes ``benchmarks/results/extraction.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown  # noqa: E402

from sktransfer import (
    PretrainedFeatureExtractor,  # noqa: E402
    _process_cache,  # noqa: E402
)
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
N_THROUGHPUT = 512
REPEATS = 2
C_GRID = np.logspace(-4, 0, 10)
N_SPLITS = 5


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def time_estimator(paths, **params):
    est = PretrainedFeatureExtractor(**params).fit(paths[:2])
    est.transform(paths[:32])  # warm-up: first-call allocations
    rates = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        est.transform(paths)
        rates.append(len(paths) / (time.perf_counter() - t))
    return statistics.median(rates), rates


def time_plain_fp32(paths, size, batch_size=32):
    """What a user writes with plain PyTorch: fp32, NCHW, eval, no_grad."""
    # private helpers, imported here so that rendering needs only the results
    from sktransfer._testing import drop_head, load_backbone

    decoded = [
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
        for p in paths
    ]
    model = drop_head(load_backbone("efficientnet_lite0")).eval()
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)

    def run(items):
        for s in range(0, len(items), batch_size):
            x = torch.stack(items[s:s + batch_size]).float() / 255
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
            with torch.no_grad():
                model((x - mean) / std)

    run(decoded[:32])
    rates = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        run(decoded)
        rates.append(len(decoded) / (time.perf_counter() - t))
    return statistics.median(rates), rates


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def paper_split(paths, probability, cell_type, random_state=0):
    strata = np.char.add(probability.astype(str), cell_type)
    return train_test_split(np.arange(len(paths)), test_size=0.25, stratify=strata,
                            random_state=random_state)


def downstream_accuracy(F_train, y_train, F_test, y_test):
    # C chosen by cross-validation inside the training split only.
    model = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                         {"logisticregression__C": C_GRID}, cv=5)
    model.fit(F_train, y_train)
    return accuracy_score(y_test, model.predict(F_test)), float(
        model.best_params_["logisticregression__C"])


# The like-for-like size of earlier runs (the backbone's, image_size=None),
# then the default since the core rewrite, image_size="auto": ELPV's own 300 px.
SIZES = {"224": None, "300": "auto"}


def measure_size(paths, probability, cell_type, y, image_size):
    """Throughput on N_THROUGHPUT files and fidelity on all, at one input size."""
    sub = list(paths[:N_THROUGHPUT])
    out = {}
    side = PretrainedFeatureExtractor(image_size=image_size).fit(paths[:2]).image_size_
    out["image_size"] = side
    log(f"[{side} px] (b) plain PyTorch fp32 loop over pre-decoded tensors...")
    out["plain_fp32_images_per_s"], out["plain_fp32_runs"] = time_plain_fp32(sub, side)
    log(f"    {out['plain_fp32_images_per_s']:.1f} images/s")
    log(f"[{side} px] (a) estimator from PNG files, defaults...")
    out["estimator_images_per_s"], out["estimator_runs"] = time_estimator(
        sub, image_size=image_size)
    log(f"    {out['estimator_images_per_s']:.1f} images/s")
    log(f"[{side} px] (a') estimator from PNG files, n_jobs=2 decoding threads...")
    out["estimator_n_jobs2_images_per_s"], out["estimator_n_jobs2_runs"] = time_estimator(
        sub, image_size=image_size, n_jobs=2)
    log(f"    {out['estimator_n_jobs2_images_per_s']:.1f} images/s")
    log(f"[{side} px] (a'') estimator from PNG files, precision='float32'...")
    out["estimator_fp32_images_per_s"], out["estimator_fp32_runs"] = time_estimator(
        sub, image_size=image_size, precision="float32")
    out["speedup_vs_plain_fp32"] = out["estimator_images_per_s"] / out["plain_fp32_images_per_s"]

    log(f"[{side} px] features of all images, default precision (one extraction pass)...")
    est = PretrainedFeatureExtractor(image_size=image_size).fit(paths[:2])
    out["default_precision"] = est.precision_
    t = time.perf_counter()
    F_default = est.transform(paths)
    out["one_pass_s"] = time.perf_counter() - t
    log(f"    {out['one_pass_s']:.1f} s")
    log(f"[{side} px] features of all images, float32...")
    F_fp32 = PretrainedFeatureExtractor(image_size=image_size, precision="float32").fit(
        paths[:2]).transform(paths)
    cos = cosine(F_default, F_fp32)
    out["cosine_default_vs_fp32"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    # The paper's split (random_state=0), then four more splits of the same
    # protocol: one 656-image test set moves by 0.15 points per image.
    per_split = []
    for rs in range(N_SPLITS):
        train, test = paper_split(paths, probability, cell_type, rs)
        acc_d, c_d = downstream_accuracy(F_default[train], y[train], F_default[test], y[test])
        acc_f, c_f = downstream_accuracy(F_fp32[train], y[train], F_fp32[test], y[test])
        per_split.append({"random_state": rs, "default": acc_d, "float32": acc_f,
                          "C_default": c_d, "C_float32": c_f})
    out["paper_split_accuracy"] = per_split[0]
    out["split_accuracies"] = per_split
    out["mean_accuracy"] = {
        "default": float(np.mean([r["default"] for r in per_split])),
        "float32": float(np.mean([r["float32"] for r in per_split])),
    }
    log(f"    cosine mean {cos.mean():.4f} min {cos.min():.4f}; "
        f"accuracy {per_split[0]['default']:.4f} vs {per_split[0]['float32']:.4f}")
    acc = out["paper_split_accuracy"]
    out["bars"] = {
        "speedup >= 3": out["speedup_vs_plain_fp32"] >= 3,
        "cosine mean >= 0.995": out["cosine_default_vs_fp32"]["mean"] >= 0.995,
        "cosine min >= 0.98": out["cosine_default_vs_fp32"]["min"] >= 0.98,
        "accuracy within 0.5 points (paper split)": abs(acc["default"] - acc["float32"])
        <= 0.005,
        f"accuracy within 0.5 points (mean of {N_SPLITS} splits)": abs(
            out["mean_accuracy"]["default"] - out["mean_accuracy"]["float32"]) <= 0.005,
    }
    return out, F_default


def main():
    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    out = {"machine": describe_machine(), "n_images_throughput": N_THROUGHPUT, "sizes": {}}
    for key, image_size in SIZES.items():
        out["sizes"][key], F_default = measure_size(paths, probability, cell_type, y,
                                                    image_size)
    default = out["sizes"]["300"]  # PretrainedFeatureExtractor() on ELPV

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    grid = {"logisticregression__C": C_GRID}
    log("(c) grid search over precomputed features (default size)...")
    t = time.perf_counter()
    GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                 grid, cv=folds).fit(F_default, y)
    out["grid_precomputed_search_s"] = time.perf_counter() - t
    out["grid_precomputed_total_s"] = default["one_pass_s"] + out["grid_precomputed_search_s"]
    log("(c) grid search over the cached pipeline, cold cache...")
    with tempfile.TemporaryDirectory() as cache_dir:
        _process_cache.clear()
        pipe = make_pipeline(PretrainedFeatureExtractor(memory=cache_dir), StandardScaler(),
                             LogisticRegression(max_iter=3000))
        t = time.perf_counter()
        search = GridSearchCV(pipe, grid, cv=folds).fit(paths, y)
        out["grid_cached_s"] = time.perf_counter() - t
        out["grid_best_C"] = float(search.best_params_["logisticregression__C"])
    out["grid_ratio"] = out["grid_cached_s"] / out["grid_precomputed_total_s"]
    log(f"    cached {out['grid_cached_s']:.1f} s vs {out['grid_precomputed_total_s']:.1f} s")
    out["bars"] = {"cached grid <= 1.3x": out["grid_ratio"] <= 1.3}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "extraction.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "extraction.md").write_text(render(out))
    log(render(out))


def render_size(key, r) -> str:
    a = r["paper_split_accuracy"]
    rows = [
        ("(a) estimator, PNG files, defaults "
         f"({r['default_precision']})", f"{r['estimator_images_per_s']:.1f}"),
        ("(a) estimator, PNG files, n_jobs=2", f"{r['estimator_n_jobs2_images_per_s']:.1f}"),
        ("(a) estimator, PNG files, precision='float32'",
         f"{r['estimator_fp32_images_per_s']:.1f}"),
        ("(b) plain PyTorch fp32 loop, pre-decoded tensors", f"{r['plain_fp32_images_per_s']:.1f}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    bars = "\n".join(f"| {k} | {'met' if v else 'NOT met'} |" for k, v in r["bars"].items())
    what = ("`image_size=None`, the backbone's size: like for like with the runs before the "
            "core rewrite"
            if SIZES[key] is None else
            "`image_size=\"auto\"`, the default: ELPV's own size")
    return f"""## {r['image_size']} x {r['image_size']} ({what})

### Throughput (median of {REPEATS} runs)

| setting | images/s |
|---|---|
{table}

Speed-up of (a) over (b): **{r['speedup_vs_plain_fp32']:.2f}x**.

### Fidelity of the default precision ({r['default_precision']}) vs float32, all 2,624 images

- cosine similarity of features: mean {r['cosine_default_vs_fp32']['mean']:.4f},
  min {r['cosine_default_vs_fp32']['min']:.4f}
- logistic regression on the Deitsch et al. split (75/25, stratified by
  probability x cell type, C chosen by 5-fold CV on the training part):
  {a['default']:.2%} with {r['default_precision']} features vs {a['float32']:.2%} with float32
- the same protocol over {len(r['split_accuracies'])} splits (random_state 0..{len(r['split_accuracies']) - 1}):
  mean {r['mean_accuracy']['default']:.2%} ({r['default_precision']}) vs
  {r['mean_accuracy']['float32']:.2%} (float32); per split:
  {', '.join(f"{s['default']:.2%}/{s['float32']:.2%}" for s in r['split_accuracies'])}

| bar | status |
|---|---|
{bars}
"""


def render(r) -> str:
    sizes = "\n".join(render_size(k, v) for k, v in r["sizes"].items())
    bars = "\n".join(f"| {k} | {'met' if v else 'NOT met'} |" for k, v in r["bars"].items())
    return f"""# PretrainedFeatureExtractor benchmark

Generated by `benchmarks/bench_extraction.py`; numbers from
`extraction.json`. EfficientNet-Lite0 (ImageNet weights), ELPV 300x300
grayscale PNG files; throughput on the first {r['n_images_throughput']} files, both
sides at the same input size. The default precision runs the stem and first
stage in float32 and the rest under bf16 autocast (the precision policy,
`sktransfer._device.precision_policy`).

{sizes}
## Grid search, 5 folds x 10 values of C, 2,624 images, default size

| | seconds |
|---|---|
| one extraction pass | {r['sizes']['300']['one_pass_s']:.1f} |
| search over precomputed features | {r['grid_precomputed_search_s']:.1f} |
| **pass + precomputed search** | **{r['grid_precomputed_total_s']:.1f}** |
| **search over the cached pipeline (cold cache)** | **{r['grid_cached_s']:.1f}** |

Ratio: **{r['grid_ratio']:.2f}x**.

| bar | status |
|---|---|
{bars}

## Machine

{machine_markdown(r['machine'])}
"""


if __name__ == "__main__":
    main()
