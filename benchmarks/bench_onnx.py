"""Export parity on ELPV: a fine-tuned TransferClassifier as one ONNX file.

``python benchmarks/bench_onnx.py MODEL.joblib`` takes the fitted
``TransferClassifier`` of ``bench_transfer.py``'s run ``MODEL_RUN`` (the run
dumps it to ``/tmp/sktransfer-bench-<run>.joblib``; the script checks that the
model still scores the test accuracy stored in ``results/transfer/<run>.json``,
so the numbers are those of the committed model) and measures, on the 656 test
images of the Deitsch et al. split:

- export time, file size and opset of :func:`sktransfer.export_onnx`;
- max |delta probability| between ONNX Runtime and ``predict_proba`` at
  float32 on identical input tensors (the estimator's own resize, fed to both);
- label agreement when the ONNX model gets its input from the torch-free
  :func:`sktransfer.onnx_inputs` (PIL resize), against the estimator's labels
  at float32 and at its default precision, and the test accuracy of each.

Bars: max |delta p| <= 1e-5, label agreement >= 99.5 %, export
<= 30 s. Results: ``results/onnx_export.{json,md}``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _elpv import paper_split
from _machine import describe_machine, machine_markdown, provenance_note

from sktransfer import export_onnx, onnx_inputs

RESULTS = Path(__file__).parent / "results"
#: The model measured: the defaults right after the core rewrite, without flip
#: TTA (today's defaults average four flips at predict time).
MODEL_RUN = "tta_off_torch_seed_0"


def main(model_path: str) -> dict:
    import onnxruntime as ort

    # private helpers, imported here so that rendering needs only the results
    from sktransfer._testing import Preprocess, check_images, float32_reference, iter_batches

    _, _, X_test, y_test = paper_split()
    model = joblib.load(model_path)
    # Fitted (and scored) before engine= existed: with torch.
    for attr in ("engine", "engine_"):
        if not hasattr(model, attr):
            setattr(model, attr, "torch")
    stored = json.loads((RESULTS / "transfer" / f"{MODEL_RUN}.json").read_text())
    default_pred = model.predict(X_test)
    accuracy = float(np.mean(default_pred == y_test))
    if abs(accuracy - stored["accuracy"]) > 1e-9:
        raise SystemExit(f"{model_path} scores {accuracy:.4f}, not the committed "
                         f"{stored['accuracy']:.4f} of results/transfer/{MODEL_RUN}.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        report = export_onnx(model, path, X=X_test[:32])
        export_total = time.perf_counter() - start
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        # Identical tensors: the estimator's own preprocessing, fed to both.
        source = check_images(X_test)
        tensors = np.concatenate([b.numpy() for _, b in iter_batches(
            source, range(len(source)), 64, Preprocess(**model.preprocess_), 2,
            normalize=False)])
        start = time.perf_counter()
        proba32 = float32_reference(model, tensors.transpose(0, 2, 3, 1))["probabilities"]
        torch_s = time.perf_counter() - start
        start = time.perf_counter()
        onnx_label, onnx_proba = session.run(None, {"images": tensors})
        onnx_s = time.perf_counter() - start
        max_dp = float(np.abs(onnx_proba - proba32).max())
        same_tensor_agreement = float(np.mean(onnx_label == model.classes_[proba32.argmax(1)]))

        # The torch-free route a service takes: files -> PIL -> ONNX Runtime.
        start = time.perf_counter()
        served_in = onnx_inputs(X_test, path)
        prep_s = time.perf_counter() - start
        served_label, _ = session.run(None, {"images": served_in})
        pixels = float(np.abs(served_in - tensors).max())
    label32 = float32_reference(model, X_test)["label"]
    result = {
        "model": str(model_path),
        "model_test_accuracy": accuracy,
        "n_test": len(y_test),
        "export_s": report.export_seconds,
        "export_with_checks_s": round(export_total, 2),
        "file_mib": round(report.file_size / 2**20, 2),
        "opset": report.opset,
        "report_check": {"n": report.n_check, "max_abs_diff": report.max_abs_diff,
                         "label_agreement": report.label_agreement},
        "same_tensors": {"max_abs_dp": max_dp, "label_agreement": same_tensor_agreement,
                         "torch_float32_s": round(torch_s, 2),
                         "onnxruntime_s": round(onnx_s, 2)},
        "torch_free_inputs": {
            "max_abs_pixel_diff": pixels,
            "preprocess_s": round(prep_s, 2),
            "agreement_vs_float32": float(np.mean(served_label == label32)),
            "agreement_vs_default_precision": float(np.mean(served_label == default_pred)),
            "accuracy_onnx": float(np.mean(served_label == y_test)),
            "accuracy_estimator_float32": float(np.mean(label32 == y_test)),
            "accuracy_estimator_default": accuracy,
        },
        "bars": {"max_abs_dp<=1e-5": max_dp <= 1e-5,
                 "label_agreement>=0.995": float(np.mean(served_label == default_pred)) >= 0.995,
                 "export<=30s": report.export_seconds <= 30},
        "machine": describe_machine(),
    }
    (RESULTS / "onnx_export.json").write_text(json.dumps(result, indent=2) + "\n")
    render(result)
    return result


def render(result: dict | None = None, write=True) -> str:
    """``results/onnx_export.md`` from ``result`` (default: ``onnx_export.json``)."""
    r = result or json.loads((RESULTS / "onnx_export.json").read_text())
    s, t = r["same_tensors"], r["torch_free_inputs"]
    text = f"""# ONNX export of a fine-tuned model (ELPV)

`sktransfer.export_onnx` on the `TransferClassifier(random_state=0, tta=False)`
that `bench_transfer.py {MODEL_RUN}` fitted on the training part of the
Deitsch et al. split (test accuracy {r['model_test_accuracy']:.2%}); {r['n_test']} test images.
Rendered by `benchmarks/bench_onnx.py` from `onnx_export.json`.
{provenance_note("onnx_export.json")}

| measure | value | bar |
|---|---|---|
| export time (`torch.onnx.export` dynamo + checker) | {r['export_s']:.1f} s | <= 30 s |
| file size | {r['file_mib']:.1f} MiB, opset {r['opset']} | |
| max abs diff of probabilities vs `predict_proba` at float32, identical tensors | {s['max_abs_dp']:.1e} | <= 1e-5 |
| label agreement, identical tensors | {s['label_agreement']:.2%} | |
| max abs pixel diff, torch-free `onnx_inputs` (PIL) vs the estimator's torch resize | {t['max_abs_pixel_diff']:.4f} | |
| label agreement, `onnx_inputs` + ONNX Runtime vs `predict` (default precision) | {t['agreement_vs_default_precision']:.2%} | >= 99.5 % |
| label agreement, `onnx_inputs` + ONNX Runtime vs `predict` at float32 | {t['agreement_vs_float32']:.2%} | |
| test accuracy: ONNX from files / estimator float32 / estimator default | {t['accuracy_onnx']:.2%} / {t['accuracy_estimator_float32']:.2%} / {t['accuracy_estimator_default']:.2%} | |
| 656 images at float32 on identical tensors: torch / ONNX Runtime | {s['torch_float32_s']:.1f} s / {s['onnxruntime_s']:.1f} s | |
| `onnx_inputs` for 656 files (PIL decode + resize, one thread) | {t['preprocess_s']:.1f} s | |

{machine_markdown(r['machine'])}
"""
    if write:
        (RESULTS / "onnx_export.md").write_text(text)
    return text


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "render":
        print(render())
    else:
        print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1
                              else f"/tmp/sktransfer-bench-{MODEL_RUN}.joblib"), indent=2))
