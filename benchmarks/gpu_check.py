"""The GPU path, proven in one run on a machine with CUDA.

Six checks, each recorded with what it measured or why it did not run:

1. ``tests``: the tests marked ``cuda`` (``pytest -m cuda``);
2. ``fit``: a default ``TransferClassifier(random_state=0)`` on ELPV's paper
   split, with the GPU's native mixed precision (``precision="auto"``: bf16
   where supported, else float16 with loss scaling), and the same fit at
   ``precision="float32"`` beside it: time, epochs, accuracy and ROC AUC on
   the split's test part (measured, not used to choose anything);
3. ``accelerate``: the same default fit with ``accelerator=Accelerator(...)``
   on one GPU: without mixed precision, and with the accelerator's bf16 and
   fp16 (loss scaling); the frozen part as ``precision="auto"`` sets it;
4. ``extraction``: ``PretrainedFeatureExtractor(batch_size=256)`` on all
   2,624 ELPV images, decoded by one thread (the default) and by all cores;
5. ``onnx``: ``export_onnx`` of the fitted model, run by ONNX Runtime's CUDA
   provider where the installed ONNX Runtime has it, its float32
   probabilities held against the estimator's (bf16 on the GPU);
6. ``scale``: a default fit, 2 epochs, on 100,000 JPEG files made from
   ELPV's cells (``bench_scale.py``'s generator): time per image, host and
   GPU memory.

On a machine without CUDA every check is skipped with its reason and the
script exits 0: what a CPU can test is that it runs. Each check stops the
next from starting once ``BUDGET_S`` (8 minutes) has passed.

Run: ``python benchmarks/gpu_check.py``. Writes
``benchmarks/results/gpu_check.{json,md}`` (a run without CUDA writes them
only with ``--write``, so that a CPU's skips do not replace a GPU's results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _elpv import paper_split  # noqa: E402
from _machine import describe_machine, machine_markdown  # noqa: E402

from sktransfer import PretrainedFeatureExtractor, TransferClassifier, export_onnx  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = HERE / "results"
BUDGET_S = 8 * 60
NO_CUDA = "CUDA is not available on this machine"


def check_tests() -> dict:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
         str(HERE.parent / "tests")],
        capture_output=True, text=True, cwd=HERE.parent)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else "",
            "failures": [s for s in lines if s.startswith(("FAILED", "ERROR"))],
            "seconds": time.perf_counter() - t}


def _score(model, X_test, y_test) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score

    t = time.perf_counter()
    proba = model.predict_proba(X_test)[:, 1]
    predict_s = time.perf_counter() - t
    return {"accuracy": accuracy_score(y_test, (proba >= 0.5).astype(int)),
            "roc_auc": roc_auc_score(y_test, proba), "predict_s": predict_s}


def check_fit(state: dict) -> dict:
    X_train, y_train, X_test, y_test = paper_split()
    out = {"n_train": len(X_train), "n_test": len(X_test)}
    for precision in ("auto", "float32"):
        if time.perf_counter() - state["start"] > BUDGET_S - 120:
            out[precision] = {"skipped": "time budget of the run spent"}
            continue
        model = TransferClassifier(random_state=0, precision=precision)
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.fit(X_train, y_train)
        torch.cuda.synchronize()
        fit_s = time.perf_counter() - t
        from sktransfer._testing import dtype_name, training_dtype

        out[precision] = {
            "fit_s": fit_s, "epochs_run": model.n_epochs_, "image_size": model.image_size_,
            "frozen_precision": model.precision_,
            "training_precision": dtype_name(training_dtype(precision, model.device_)),
            "frozen_precomputed": model.frozen_precomputed_,
            "epoch_s": [row["dur"] for row in model.history_],
            **_score(model, X_test, y_test)}
        if precision == "auto":
            state["model"], state["X_test"] = model, X_test
        print(f"fit precision={precision}: {out[precision]['fit_s']:.1f} s, accuracy "
              f"{out[precision]['accuracy']:.4f}", file=sys.stderr, flush=True)
    return out


def check_accelerate(state: dict) -> dict:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    X_train, y_train, X_test, y_test = paper_split()
    out = {"n_train": len(X_train), "n_test": len(X_test)}
    for mixed in ("no", "bf16", "fp16"):
        if time.perf_counter() - state["start"] > BUDGET_S - 90:
            out[mixed] = {"skipped": "time budget of the run spent"}
            continue
        # One accelerator state per process: a new mixed precision needs a fresh one.
        AcceleratorState._reset_state(reset_partial_state=True)
        model = TransferClassifier(random_state=0,
                                   accelerator=Accelerator(mixed_precision=mixed))
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.fit(X_train, y_train)
        torch.cuda.synchronize()
        out[mixed] = {"fit_s": time.perf_counter() - t, "epochs_run": model.n_epochs_,
                      "frozen_precision": model.precision_,
                      "epoch_s": [row["dur"] for row in model.history_],
                      **_score(model, X_test, y_test)}
        print(f"accelerate mixed_precision={mixed}: {out[mixed]['fit_s']:.1f} s, accuracy "
              f"{out[mixed]['accuracy']:.4f}", file=sys.stderr, flush=True)
    return out


def check_extraction(state: dict) -> dict:
    paths = load_elpv()[0]
    out = {"n_images": len(paths), "batch_size": 256}
    for label, n_jobs in (("one decoding thread (default)", None),
                          (f"{os.cpu_count()} decoding threads", -1)):
        ext = PretrainedFeatureExtractor(batch_size=256, n_jobs=n_jobs).fit(paths[:8])
        ext.transform(paths[:256])  # warm-up: cuDNN picks its kernels
        torch.cuda.synchronize()
        t = time.perf_counter()
        ext.transform(paths)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        out[label] = {"n_jobs": n_jobs, "seconds": seconds,
                      "images_per_s": len(paths) / seconds, "precision": ext.precision_}
    return out


def check_onnx(state: dict) -> dict:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return {"skipped": f"the installed onnxruntime {ort.__version__} has no "
                           f"CUDAExecutionProvider (providers: {providers}); "
                           "install onnxruntime-gpu"}
    from sktransfer import onnx_inputs

    model, X = state["model"], state["X_test"][:256]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t = time.perf_counter()
        export_onnx(model, path)
        export_s = time.perf_counter() - t
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        images = onnx_inputs(X, model)
        session.run(None, {"images": images[:8]})
        t = time.perf_counter()
        got = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"images": images})))
        run_s = time.perf_counter() - t
    want = model.predict_proba(X)  # bf16 on the GPU: the difference is bf16's
    return {"export_s": export_s, "providers": session.get_providers(),
            "images": len(X), "run_s": run_s, "images_per_s": len(X) / run_s,
            "max_abs_diff_vs_estimator": float(np.abs(got["probabilities"] - want).max())}


#: Images of the scale check: generated from ELPV's cells, as bench_scale.py does.
SCALE_IMAGES = 100_000


def check_scale(state: dict) -> dict:
    """A default fit, 2 epochs, on ``SCALE_IMAGES`` JPEG files made from
    ELPV's cells at 224 px (bench_scale.py's generator): time per image,
    peak host memory and GPU memory, disk used, where the frozen outputs
    lived."""
    import resource
    import shutil

    import bench_scale

    root = Path(tempfile.mkdtemp(prefix="gpu-scale-"))
    try:
        t = time.perf_counter()
        files, labels = bench_scale.generate(SCALE_IMAGES, root, side=224,
                                             n_jobs=os.cpu_count())
        generated_s = time.perf_counter() - t
        free0 = shutil.disk_usage(tempfile.gettempdir()).free
        torch.cuda.reset_peak_memory_stats()
        clf = TransferClassifier(max_epochs=2, n_jobs=-1, random_state=0)
        t = time.perf_counter()
        clf.fit(files, labels)
        fit_s = time.perf_counter() - t
        return {"n_images": len(files), "generated_s": generated_s, "fit_s": fit_s,
                "fit_ms_per_image": 1000 * fit_s / len(files),
                "epoch_images_per_s": [len(files) / r["dur"] for r in clf.history_],
                "peak_host_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
                "disk_free_drop_gib": (free0 - shutil.disk_usage(tempfile.gettempdir()).free)
                / 2**30, "frozen_precomputed": clf.frozen_precomputed_,
                "image_size": clf.image_size_}
    finally:
        shutil.rmtree(root, ignore_errors=True)


CHECKS = [("tests", check_tests), ("fit", check_fit), ("accelerate", check_accelerate),
          ("extraction", check_extraction), ("onnx", check_onnx), ("scale", check_scale)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="write the results files even without CUDA")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--checks", nargs="+", default=[n for n, _ in CHECKS],
                        choices=[n for n, _ in CHECKS], help="run only these checks")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other checks of the results file in --out")
    args = parser.parse_args(argv)
    state = {"start": time.perf_counter()}
    result = {"machine": describe_machine(), "checks": {}}
    previous = args.out / "gpu_check.json"
    if args.merge and previous.exists():
        result["checks"] = json.loads(previous.read_text())["checks"]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        result["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "bf16": torch.cuda.is_bf16_supported(),
                         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for name, check in CHECKS:
        if name not in args.checks:
            continue
        if not torch.cuda.is_available():
            result["checks"][name] = {"skipped": NO_CUDA}
            print(f"{name}: skipped ({NO_CUDA})", file=sys.stderr)
            continue
        if time.perf_counter() - state["start"] > BUDGET_S:
            result["checks"][name] = {"skipped": "time budget of the run spent"}
            continue
        try:
            result["checks"][name] = check(state) if name != "tests" else check()
        except Exception as exc:  # one check's failure must not hide the others'
            traceback.print_exc()
            result["checks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {json.dumps(result['checks'][name], default=str)[:400]}",
              file=sys.stderr, flush=True)
    result["seconds"] = time.perf_counter() - state["start"]
    if args.merge and previous.exists():
        result["seconds"] += json.loads(previous.read_text())["seconds"]
    if torch.cuda.is_available() or args.write:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (args.out / "gpu_check.md").write_text(render(result))
    failed = [n for n, c in result["checks"].items() if "error" in c]
    tests = result["checks"].get("tests", {})
    return 1 if failed or tests.get("returncode", 0) not in (0, 5) else 0


def _f(x, digits=1):
    return f"{x:,.{digits}f}"


def _fit_rows(r: dict, settings, precision) -> list[str]:
    """One table row per fit ``r[setting]`` (``precision(fit)`` in the second
    column), and a blank line."""
    rows = []
    for p in settings:
        f = r.get(p, {})
        if "fit_s" not in f:
            rows.append(f"| {p} | {f.get('skipped', '')} | | | | | | |")
            continue
        rows.append(f"| {p} | {precision(f)} | {_f(f['fit_s'])} | {f['epochs_run']} | "
                    f"{_f(float(np.mean(f['epoch_s'])), 2)} | {100 * f['accuracy']:.2f} % | "
                    f"{f['roc_auc']:.4f} | {_f(f['predict_s'], 2)} |")
    return rows + [""]


def render(result: dict) -> str:
    """The results page of one run."""
    c = result["checks"]
    lines = ["# The GPU path, in one run", "",
             "Written by `benchmarks/gpu_check.py` from `gpu_check.json`.", ""]
    gpu = result.get("gpu")
    lines.append(f"GPU: {gpu['name']}, {gpu['memory_gib']} GiB, bf16 {gpu['bf16']}, "
                 f"CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}." if gpu else f"GPU: none ({NO_CUDA}).")
    lines.append("")
    for name, _ in CHECKS:
        r = c.get(name, {})
        lines.append(f"## {name}")
        lines.append("")
        if not r:
            lines += ["Not run.", ""]
            continue
        if "skipped" in r or "error" in r:
            lines += [f"{'Skipped' if 'skipped' in r else 'Failed'}: "
                      f"{r.get('skipped', r.get('error'))}", ""]
            continue
        if name == "tests":
            lines += [f"`pytest -m cuda`: {r['summary']} ({_f(r['seconds'])} s).", ""]
            lines += [f"- {f}" for f in r["failures"]] + ([""] if r["failures"] else [])
        elif name == "fit":
            lines += [f"`TransferClassifier(random_state=0, precision=...)` on ELPV's paper "
                      f"split: fitted on {r['n_train']:,} images, scored on {r['n_test']} "
                      "(measured, not used to choose anything).", "",
                      "| precision | trunk / training | fit (s) | epochs | mean epoch (s) "
                      "| accuracy | ROC AUC | predict (s) |", "|---|---|---|---|---|---|---|---|"]
            lines += _fit_rows(r, ("auto", "float32"), lambda f: (
                f"{f['frozen_precision']} / {f['training_precision']}"))
        elif name == "accelerate":
            lines += ["`TransferClassifier(random_state=0, accelerator=Accelerator("
                      "mixed_precision=...))` on one GPU, the same split and images:", "",
                      "| mixed precision | frozen part | fit (s) | epochs | mean epoch (s) "
                      "| accuracy | ROC AUC | predict (s) |", "|---|---|---|---|---|---|---|---|"]
            lines += _fit_rows(r, ("no", "bf16", "fp16"), lambda f: f["frozen_precision"])
        elif name == "extraction":
            lines += [f"`PretrainedFeatureExtractor(batch_size=256)`, all {r['n_images']:,} "
                      "ELPV images from PNG (decode, resize, network), after a warm-up batch:",
                      "", "| decoding | seconds | images/s | precision |", "|---|---|---|---|"]
            for label, v in r.items():
                if isinstance(v, dict):
                    lines.append(f"| {label} | {_f(v['seconds'], 2)} | {_f(v['images_per_s'])} "
                                 f"| {v['precision']} |")
            lines.append("")
        elif name == "scale":
            rates = ", ".join(_f(x, 0) for x in r["epoch_images_per_s"])
            lines += [f"A default `TransferClassifier(max_epochs=2, n_jobs=-1)` on "
                      f"{r['n_images']:,} JPEG files made from ELPV's cells at "
                      f"{r['image_size']} px: {_f(r['fit_s'])} s "
                      f"({_f(r['fit_ms_per_image'], 2)} ms per image; epochs at {rates} "
                      f"images/s); peak host memory {_f(r['peak_host_rss_gib'], 1)} GiB, GPU "
                      f"{_f(r['peak_gpu_gib'], 1)} GiB; frozen outputs computed once: "
                      f"{r['frozen_precomputed']}.", ""]
        elif name == "onnx":
            lines += [f"`export_onnx` of the fitted model: {_f(r['export_s'])} s; ONNX Runtime "
                      f"({', '.join(r['providers'])}) on {r['images']} test images: "
                      f"{_f(r['images_per_s'])} images/s; largest difference from the "
                      f"estimator's probabilities {r['max_abs_diff_vs_estimator']:.2e}.", ""]
    lines += [f"Whole run: {_f(result['seconds'])} s.", "", "## Machine", "",
              machine_markdown(result["machine"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
