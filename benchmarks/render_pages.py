"""Every page rendered from the results files, in one place.

``python benchmarks/render_pages.py`` writes them all: the results pages, the
README's headline and the user guide's multi-task table. :func:`pages`
returns them without writing anything; ``tests/test_docs.py`` checks that
each committed page is the one its results give, so that no page cites a
number its results files do not hold.

Rendering reads results only: it fits nothing (the ELPV labels are read for
the majority-class rates).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
ROOT = HERE.parent

#: Results pages kept as measured: written by an earlier version of their
#: script, whose JSON the script of today no longer reads. Their numbers are
#: checked against their own JSON instead (tests/test_docs.py).
KEPT = {
    "engines_openvino_all_bf16.md": "engines_openvino_all_bf16.json",
    "extraction_before_core.md": "extraction_before_core.json",
}


def _json(name):
    return json.loads((RESULTS / name).read_text())


def pages() -> dict:
    """path relative to the repository -> the text its results give."""
    import bench_before_after
    import bench_dask
    import bench_distributed
    import bench_engines
    import bench_epoch
    import bench_extraction
    import bench_fit_speed
    import bench_memory
    import bench_multitask
    import bench_onnx
    import bench_overhead
    import bench_parallel
    import bench_reproducibility
    import bench_scale
    import bench_transfer
    import bench_trunk
    import fresh_splits
    import gpu_check
    import profile_fit
    import readme_main_job
    import seed_claims
    import select_transfer_defaults

    seed_text, headline, summary = seed_claims.render(write=False)
    guide = ROOT / "docs" / "user_guide.md"
    scaling = ROOT / "docs" / "scaling.md"
    out = {
        "benchmarks/results/transfer.md": bench_transfer.render(write=False),
        "benchmarks/results/transfer_selection.md": select_transfer_defaults.render(write=False),
        "benchmarks/results/seed_claims.md": seed_text,
        "benchmarks/results/multitask.md": bench_multitask.page(),
        "benchmarks/results/dask.md": bench_dask.render(write=False),
        "benchmarks/results/engines.md": bench_engines.render(write=False),
        "benchmarks/results/onnx_export.md": bench_onnx.render(write=False),
        "benchmarks/results/extraction.md": bench_extraction.render(_json("extraction.json")),
        "benchmarks/results/before_after.md": bench_before_after.render(
            _json("before_after.json")),
        "benchmarks/results/memory.md": bench_memory.render(write=False),
        "benchmarks/results/trunk_before_after.md": bench_trunk.render(
            _json("trunk_before_after.json")),
        "benchmarks/results/profile_fit.md": profile_fit.render(_json("profile_fit.json")),
        "benchmarks/results/parallel.md": bench_parallel.render(write=False),
        "benchmarks/results/fresh_splits.md": fresh_splits.render(),
        "benchmarks/results/epoch.md": bench_epoch.render(_json("epoch.json")),
        "benchmarks/results/fit_speed.md": bench_fit_speed.render(_json("fit_speed.json")),
        "benchmarks/results/reproducibility.md": bench_reproducibility.render(
            _json("reproducibility.json")),
        "benchmarks/results/gpu_check.md": gpu_check.render(_json("gpu_check.json")),
        "benchmarks/results/distributed.md": bench_distributed.render(
            _json("distributed.json")),
        "docs/scaling.md": bench_distributed.docs_with_block(
            scaling.read_text(), bench_distributed.docs_block(
                _json("distributed.json"), _json("gpu_check.json"))),
        "benchmarks/results/readme_main_job.md": readme_main_job.render(write=False),
        "benchmarks/results/overhead.md": bench_overhead.render(write=False),
        "benchmarks/results/scale.md": bench_scale.render(write=False),
        "README.md": seed_claims.readme_with_summary((ROOT / "README.md").read_text(),
                                                     summary),
        "docs/results.md": seed_claims.results_page((ROOT / "docs" / "results.md").read_text(),
                                                    headline),
        "docs/user_guide.md": bench_multitask.guide_with_block(
            guide.read_text(), bench_multitask.render(write=False)),
    }
    return out


def main():
    import seed_claims

    seed_claims.render(write=True)  # also draws the learning-curve plot
    for path, text in pages().items():
        (ROOT / path).write_text(text)
        print(f"rendered {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
