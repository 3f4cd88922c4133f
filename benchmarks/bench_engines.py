"""Inference engines side by side: PretrainedFeatureExtractor with torch, ONNX Runtime, OpenVINO.

In one process, alternating, on ELPV PNG files (decoding included):

- throughput of ``PretrainedFeatureExtractor(engine=...)`` on 512 files at
  224 px (``image_size=None``, the backbone's size) and at 300 px (the
  default ``image_size="auto"`` on ELPV): ``"torch"`` (the default before the
  engine existed: bf16 autocast on this CPU), ``"onnxruntime"`` (float32) and
  ``"openvino"`` (with ``precision="auto"`` on a CPU with native bf16: bf16
  after the first stage, which stays float32, the precision policy of torch);
- the time per image split into decoding, resizing + normalising, and the
  network alone (on preprocessed tensors), so the remaining limit shows;
- fidelity on all 2,624 images at 224 px: cosine similarity of each engine's
  features to torch float32 features, and the test accuracy of frozen
  features + StandardScaler + LogisticRegression (C by 5-fold CV inside the
  training part) on the Deitsch et al. split.

Bars: the default engine (``engine="auto"``, the rule in
``sktransfer/_engines.py``) >= 1.8x the torch default's throughput;
cosine to float32 mean >= 0.995, min >= 0.98; downstream accuracy within
0.5 points of float32.

Run: ``python benchmarks/bench_engines.py``; writes ``results/engines.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown
from bench_extraction import cosine, downstream_accuracy, paper_split

from sktransfer import PretrainedFeatureExtractor
from sktransfer.datasets import load_elpv

RESULTS = Path(__file__).parent / "results"
N_THROUGHPUT = 512
REPEATS = 3
ENGINES = {"torch (bf16 autocast)": dict(engine="torch"),
           "onnxruntime (float32)": dict(engine="onnxruntime"),
           "openvino (bf16 after stage 1)": dict(engine="openvino")}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def throughput(paths, image_size) -> dict:
    """Images/s of each engine, repetitions alternating between engines."""
    fitted, rates = {}, {name: [] for name in ENGINES}
    for name, params in ENGINES.items():
        start = time.perf_counter()
        fitted[name] = PretrainedFeatureExtractor(image_size=image_size, **params).fit(paths[:2])
        fitted[name].transform(paths[:32])  # warm-up
        log(f"{name}: fit + warm-up {time.perf_counter() - start:.1f} s")
    for _ in range(REPEATS):
        for name, est in fitted.items():
            start = time.perf_counter()
            est.transform(paths)
            rates[name].append(len(paths) / (time.perf_counter() - start))
            log(f"  {image_size}: {name} {rates[name][-1]:.1f} img/s")
    return {name: {"median": statistics.median(r), "runs": r} for name, r in rates.items()}, \
        fitted


def split_times(paths, fitted) -> dict:
    """Seconds per image: decode (one thread), resize + normalise, network."""
    # private helpers, imported here so that rendering needs only the results
    from sktransfer._testing import Preprocess, check_images, to_device

    est = next(iter(fitted.values()))
    source = check_images(paths)
    pre = Preprocess(**est.preprocess_)
    start = time.perf_counter()
    decoded = [source.load(i, draft=pre.size) for i in range(len(source))]
    decode = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    batches = [pre(decoded[s:s + 32]) for s in range(0, len(decoded), 32)]
    resize = (time.perf_counter() - start) / len(paths)
    out = {"decode_ms": 1e3 * decode, "resize_normalise_ms": 1e3 * resize}
    for name, est in fitted.items():
        start = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                est.trunk_(est.model_, to_device(x, est.device_))
        out[f"network_ms {name}"] = 1e3 * (time.perf_counter() - start) / len(paths)
    return out


def fidelity(paths, probability, cell_type, y) -> dict:
    """Each engine's features against torch float32 on every image, at 224 px."""
    feats = {}
    settings = dict(ENGINES, **{"torch float32": dict(engine="torch", precision="float32")})
    for name, params in settings.items():
        start = time.perf_counter()
        feats[name] = PretrainedFeatureExtractor(image_size=None, n_jobs=2, **params).fit(
            paths[:2]).transform(paths)
        log(f"fidelity: {name} {time.perf_counter() - start:.0f} s")
    train, test = paper_split(paths, probability, cell_type)
    out = {}
    for name, F in feats.items():
        cos = cosine(F, feats["torch float32"])
        acc, c = downstream_accuracy(F[train], y[train], F[test], y[test])
        out[name] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                     "accuracy": acc, "C": c}
    return out


def main():
    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    sub = list(paths[:N_THROUGHPUT])
    result = {"n_throughput": len(sub), "repeats": REPEATS, "sizes": {}}
    for key, size in {"224": None, "300": "auto"}.items():
        rates, fitted = throughput(sub, size)
        result["sizes"][key] = {"throughput": rates, "per_image": split_times(sub, fitted)}
    result["fidelity_224"] = fidelity(list(paths), probability, cell_type, y)
    from sktransfer._testing import cpu_has_amx
    from sktransfer._testing import resolve_engine as resolve

    result["auto_engine"] = resolve("auto", device=torch.device("cpu"), owner="bench")
    result["cpu_has_amx"] = cpu_has_amx()
    result["machine"] = describe_machine()
    (RESULTS / "engines.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))


def render(r=None, write=True) -> str:
    """``results/engines.md`` from ``r`` (default: ``engines.json``)."""
    r = r or json.loads((RESULTS / "engines.json").read_text())
    names = list(ENGINES)
    lines = ["# Inference engines: PretrainedFeatureExtractor from ELPV PNG files", "",
             f"{r['n_throughput']} files, median of {r['repeats']} alternating repetitions, "
             "decoding included (`n_jobs=None`: one decoding thread). Rendered by "
             "`benchmarks/bench_engines.py` from `engines.json`.", "",
             "| input | " + " | ".join(f"{n} img/s" for n in names)
             + " | " + " | ".join(f"{n} vs torch" for n in names[1:])
             + " | decode ms/img | resize+normalise ms/img | "
             + " | ".join(f"network ms/img, {n}" for n in names) + " |",
             "|---" * (2 + 3 * len(names)) + "|"]
    for key, s in r["sizes"].items():
        t, p = s["throughput"], s["per_image"]
        rates = [t[n]["median"] for n in names]
        lines.append(
            f"| {key} px | " + " | ".join(f"{v:.1f}" for v in rates)
            + " | " + " | ".join(f"{v / rates[0]:.2f}x" for v in rates[1:])
            + f" | {p['decode_ms']:.2f} | "
            f"{p['resize_normalise_ms']:.2f} | "
            + " | ".join(f"{p[f'network_ms {n}']:.2f}" for n in names) + " |")
    lines += ["", "Fidelity at 224 px on all 2,624 images (cosine to torch float32 features; "
              "test accuracy of StandardScaler + LogisticRegression on the Deitsch et al. "
              "split, C by 5-fold CV in the training part):", "",
              "| features | cosine mean | cosine min | accuracy |", "|---|---|---|---|"]
    for name, f in r["fidelity_224"].items():
        lines.append(f"| {name} | {f['cosine_mean']:.5f} | {f['cosine_min']:.5f} | "
                     f"{f['accuracy']:.2%} |")
    lines += ["", f"`engine=\"auto\"` on this machine: **{r['auto_engine']}** "
              f"(CPU with AMX: {r['cpu_has_amx']}).", "", machine_markdown(r["machine"]), ""]
    text = "\n".join(lines)
    if write:
        (RESULTS / "engines.md").write_text(text)
    return text


if __name__ == "__main__":
    if sys.argv[1:] == ["render"]:
        print(render())
    else:
        main()
