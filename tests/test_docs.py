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
          README.parent / "docs" / "scaling.md"]
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


def test_readme_headline_table_comes_from_the_results():
    """The README's numbers are rendered from benchmarks/results, never typed."""
    seed_claims = _benchmark("seed_claims")
    _, rows = seed_claims.render(write=False)
    text = README.read_text()
    assert seed_claims.readme_with_headline(text, rows) == text
    if (BENCH / "results" / "seed_claims" / "curves.json").exists():
        assert rows, "results exist but the README table is empty"


def test_user_guide_multitask_table_comes_from_the_results():
    """The user guide's multi-task answer is rendered from benchmarks/results."""
    multitask = _benchmark("bench_multitask")
    guide = (README.parent / "docs" / "user_guide.md").read_text()
    assert "<!-- multitask:start -->" in guide
    assert multitask.guide_with_block(guide, multitask.render(write=False)) == guide
