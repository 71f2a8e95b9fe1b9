"""The benchmark pages and the README's generated blocks are what benchmarks/make_docs.py writes from the result files."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
FIX = "run python benchmarks/make_docs.py (and commit what it writes)"


@pytest.fixture(scope="module")
def make_docs():
    return load_benchmark("make_docs", "make_docs")


def test_committed_pages_and_readme_blocks_are_current(make_docs, tmp_path):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    written = make_docs.write(tmp_path)
    assert written, "make_docs wrote nothing"
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is missing: {FIX}"
        assert committed.read_text() == path.read_text(), f"{rel} differs from the result files: {FIX}"


def test_every_generated_page_cites_result_files_that_exist(make_docs):
    for rel, text in make_docs.render_pages().items():
        cited = set(re.findall(r"`([\w.\-]+\.json)`", text))
        assert cited, rel
        missing = [name for name in cited if not (make_docs.RESULTS / name).exists()]
        assert not missing, f"{rel} cites result files that do not exist: {missing}"


def test_a_changed_result_file_changes_the_page_and_the_readme(make_docs, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(make_docs.RESULTS, results)
    data = json.loads((results / "ethanol_budget.json").read_text())
    ace950 = next(r for r in data if r["model"] == "equivariant-ace" and r["n_train"] == 950)
    ace950["test_forces_mae_meV_per_A"] = 987.654  # no real result is this bad
    (results / "ethanol_budget.json").write_text(json.dumps(data))
    assert "| 987.7 |" in make_docs.render_pages(results)["docs/benchmarks/mace.md"]
    assert "| 987.7 |" not in make_docs.render_pages()["docs/benchmarks/mace.md"]
    readme = (ROOT / "README.md").read_text()
    assert make_docs.fill_blocks(readme, results) != readme


def test_unknown_block_name_is_refused(make_docs):
    with pytest.raises(SystemExit, match="unknown generated block 'nope'"):
        make_docs.fill_blocks("<!-- generated:nope -->\nold\n<!-- /generated -->\n")


def test_doc_links_stay_inside_the_repository_and_resolve():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "NOTES.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"\w+://", target):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.relative_to(ROOT)} links outside the repository: {target}"
            assert resolved.exists(), f"{page.relative_to(ROOT)} links to a missing file: {target}"
