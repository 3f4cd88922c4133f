"""README code blocks run, so they never rot, and print what the pages show."""

import contextlib
import doctest
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BENCH = README.parent / "benchmarks"
GUIDES = [README, README.parent / "docs" / "getting_started.md",
          README.parent / "docs" / "user_guide.md", README.parent / "docs" / "deploying.md",
          README.parent / "docs" / "scaling.md", README.parent / "docs" / "report.md"]
# The blocks of one page run in order, in one namespace, as a reader would.
# A block followed by a ```text block must print that text (doctest's rules:
# "..." stands for any text, whitespace runs compare equal).
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*\n```text\n(.*?)```)?", flags=re.DOTALL)
PAGES = {path.name: BLOCK.findall(path.read_text()) for path in GUIDES}


def test_pages_have_examples():
    assert all(len(blocks) >= 1 for blocks in PAGES.values())
    assert len(PAGES["README.md"]) >= 2
    assert sum(bool(shown) for blocks in PAGES.values() for _, shown in blocks) >= 4


@pytest.mark.parametrize("page", list(PAGES))
def test_page_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for code, shown in PAGES[page]:
        code = code.replace("/tmp/sktransfer-cache", str(tmp_path / "cache"))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, page, "exec"), namespace)
        if shown:
            assert checker.check_output(shown, printed.getvalue(), flags), (
                f"{page}: the block printed\n{printed.getvalue()}\nbut the page shows\n{shown}")


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "test-command" in ci and "README.md" in ci


def _benchmark(name):
    """A module of benchmarks/ (they import each other by plain name)."""
    import importlib
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


RESULTS = BENCH / "results"
DOCS = sorted((README.parent / "docs").glob("*.md"))
# Blocks of hand-written pages that a benchmark script renders.
GENERATED = re.compile(r"<!-- (headline|summary|multitask|distributed):start -->.*?"
                       r"<!-- \1:end -->", re.S)
# A measurement written as a percentage with decimals ("85.4 %", "88.66%").
PERCENTAGE = re.compile(r"(?<![\w.])(\d+)\.(\d+) ?%")


@pytest.fixture(scope="module")
def rendered():
    """Every page the benchmark scripts render, from the committed results."""
    return _benchmark("render_pages").pages()


@pytest.mark.parametrize("page", sorted(
    [str(p.relative_to(README.parent)) for p in RESULTS.glob("*.md")]
    + ["README.md", "docs/user_guide.md", "docs/results.md"]))
def test_pages_are_rendered_from_the_results(page, rendered):
    """A results page (and the README's headline, the user guide's multi-task
    table) is exactly what its script renders from the results files: no
    number in it that the files do not hold, none typed by hand."""
    kept = _benchmark("render_pages").KEPT
    if Path(page).name in kept:
        pytest.skip(f"{page} is kept as measured (checked against its JSON below)")
    assert page in rendered, f"{page}: no script renders it; add it to render_pages.pages()"
    assert rendered[page] == (README.parent / page).read_text(), (
        f"{page} is not what its results give: run python benchmarks/render_pages.py")


def test_readme_summary_and_results_page_are_rendered_and_not_empty(rendered):
    if not (RESULTS / "seed_claims" / "curves.json").exists():
        pytest.skip("no results to render")
    assert re.search(r"summary:start -->\n\S", README.read_text()), "README summary empty"
    page = (README.parent / "docs" / "results.md").read_text()
    assert re.search(r"headline:start -->\n\S", page), "results page empty"


def test_readme_is_short_and_keeps_its_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 170
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        assert text.count(marker) == 1


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_kept_results_pages_cite_only_their_results():
    """The results pages no script renders any more: every percentage in them
    is a value of their own JSON (as a fraction or a percentage), at the
    precision printed."""
    import json

    for page, source in _benchmark("render_pages").KEPT.items():
        values = list(_numbers(json.loads((RESULTS / source).read_text())))
        for m in PERCENTAGE.finditer((RESULTS / page).read_text()):
            printed, digits = float(f"{m[1]}.{m[2]}"), len(m[2])
            assert any(round(v * scale, digits) == printed
                       for v in values for scale in (1, 100)), (
                f"{page} cites {m[0]}, which {source} does not hold")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_hand_written_text_cites_no_measurement(page):
    """Outside their generated blocks, the README and the docs state no
    measured percentage: figures come from a rendered block or a results
    page, so none can go stale or be typed by hand."""
    prose = GENERATED.sub("", page.read_text())
    found = [m[0] for m in PERCENTAGE.finditer(prose)]
    assert not found, f"{page.name} types measured figures {found}: render them instead"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_pages_read_for_users_not_the_tracker(page):
    """No issue references and no tracker words in the README or the docs."""
    text = page.read_text()
    for pattern in (r"(?<![\w&])#\d+\b", r"\bbars?\b", r"row \(b\)", r"\bround \d"):
        found = re.findall(pattern, text, flags=re.I)
        assert not found, f"{page.name}: {found}"


@pytest.mark.parametrize("page", sorted(RESULTS.glob("*.md")), ids=lambda p: p.name)
def test_results_pages_name_no_issue(page):
    """Results pages say what changed ("before the core rewrite"), not which
    issue asked for it."""
    found = re.findall(r"(?<![\w&])#\d+\b", page.read_text())
    assert not found, f"{page.name}: {found}"


def test_readme_summary_and_results_have_no_tracker_words():
    for page, name in [(README, "summary"), (README.parent / "docs" / "results.md", "headline")]:
        block = re.search(rf"{name}:start -->(.*?)<!--", page.read_text(), re.S)[1]
        assert not re.search(r"\bround\b|\bbar\b|#\d", block, flags=re.I), block


def test_fresh_splits_are_shown_only_when_they_exist(tmp_path, monkeypatch):
    """With results in ``fresh_splits/``, the headline shows each configuration's
    mean ± sd, each split and the machine; with none, no row for them."""
    import json

    fresh = _benchmark("fresh_splits")
    seed_claims = _benchmark("seed_claims")
    monkeypatch.setattr(fresh, "FOLDER", tmp_path / "absent")
    assert "fresh split" not in "\n".join(seed_claims.against_published())
    machine = {"cpu": "Some CPU", "cpu_count": 2, "native_bf16": True}
    scores = {1: (0.880, 0.930), 2: (0.900, 0.950)}
    for seed, (acc, auc) in scores.items():
        (tmp_path / f"defaults_{seed}.json").write_text(json.dumps({
            "configuration": "defaults", "split_seed": seed, "accuracy": acc,
            "roc_auc": auc, "fit_s": 600.0 + seed * 60, "machine": machine}))
    monkeypatch.setattr(fresh, "FOLDER", tmp_path)
    row = next(line for line in seed_claims.against_published() if "fresh splits" in line)
    assert "`TransferClassifier()`" in row and "split seeds 1, 2" in row
    assert "89.00% ± 1.41%" in row and "(each: 88.0% / 90.0%)" in row
    assert "0.940 ± 0.014" in row and "11.5 min" in row
    assert "Some CPU, 2 CPUs, native bf16" in row
    (tmp_path / "broken.json").write_text(json.dumps({"configuration": "defaults"}))
    with pytest.raises(ValueError, match="broken.json: no split_seed"):
        fresh.summary()
    page = fresh.render(tmp_path / "absent")
    assert "No results yet." in page
    with pytest.raises(SystemExit, match="paper split"):
        fresh.split(0)


def test_provenance_names_the_commit_of_each_stale_result():
    """Each result marked as recorded with older code names the last commit
    that changed it (skipped outside a full git checkout)."""
    import json
    import shutil
    import subprocess

    root = README.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("no git checkout")
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=root,
                             capture_output=True, text=True).stdout.strip()
    if shallow != "false":
        pytest.skip("shallow or unreadable history")
    known = json.loads((RESULTS / "provenance.json").read_text())
    for result, p in known.items():
        if result == "about":
            continue
        last = subprocess.run(["git", "log", "-1", "--format=%h", "--abbrev=7", "--",
                               f"benchmarks/results/{result}"], cwd=root,
                              capture_output=True, text=True).stdout.strip()
        assert last == p["commit"], f"{result} last changed in {last}, not {p['commit']}"


def test_results_files_belong_to_a_known_run():
    """Every selection and test-split result is a candidate or a test run of
    transfer_candidates.json, and every candidate has one name."""
    selection = _benchmark("_selection")
    bench_transfer = _benchmark("bench_transfer")
    names = [c["name"] for c in selection.DATA["candidates"]]
    assert len(names) == len(set(names))
    for path in (RESULTS / "transfer_selection").glob("*.json"):
        assert path.stem in names, f"{path.name}: not a candidate of transfer_candidates.json"
    runs = {f for run in bench_transfer.test_runs().values() for f in bench_transfer.run_files(run)}
    for path in (RESULTS / "transfer").glob("*.json"):
        assert path.stem in runs, f"{path.name}: not a test run of transfer_candidates.json"
    rounds = {r["round"] for r in selection.DATA["rounds"]}
    assert {c["round"] for c in selection.DATA["candidates"]} <= rounds


def test_benchmark_scripts_import_each_other_without_cycles():
    """The benchmark scripts form a hierarchy: no two import each other,
    directly or through others."""
    import ast

    local = {p.stem for p in BENCH.glob("*.py")}
    graph = {}
    for path in BENCH.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        graph[path.stem] = imported & local - {path.stem}

    def visit(name, stack):
        assert name not in stack, "import cycle: " + " -> ".join([*stack, name])
        for other in graph[name]:
            visit(other, [*stack, name])

    for name in graph:
        visit(name, [])
