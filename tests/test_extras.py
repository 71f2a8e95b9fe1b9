"""Optional extras: the labelling commands are always there and say which extra to install when it is missing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ase.build import molecule
from typer.testing import CliRunner

from forcefit.cli import app
from forcefit.labeling import Campaign, rattle

ROOT = Path(__file__).resolve().parents[1]


def hide(monkeypatch, *modules):
    """Make ``import module`` (and its submodules) fail for these, as if the package were not installed."""
    for name in [n for n in sys.modules if n.split(".")[0] in modules] + list(modules) + ["tblite.interface"]:
        if name.split(".")[0] in modules:
            monkeypatch.setitem(sys.modules, name, None)


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, result.output


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in output, output
    return lines[0]


def test_labelling_commands_are_listed():
    res, out = run("--help")
    assert res.exit_code == 0
    for command in ("sample", "label", "export-data", "campaign-info", "demo"):
        assert command in out


def test_label_without_tblite_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Campaign("c.db").add(rattle(molecule("H2O"), stdev=0.05, n=2, seed=0))
    hide(monkeypatch, "tblite")
    res, out = run("label", "c.db", "--method", "gfn2", "--no-progress")
    assert res.exit_code == 2
    line = one_error_line(out)
    assert "'tblite'" in line and "install forcefit[label] for this command" in line


def test_sample_from_smiles_without_rdkit_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hide(monkeypatch, "rdkit")
    res, out = run("sample", "--smiles", "CCO", "--rattle", "0.05", "--out", "x.db")
    assert res.exit_code == 2
    assert "'rdkit'" in one_error_line(out) and "install forcefit[label]" in out


def test_label_on_dask_without_distributed_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Campaign("c.db").add(rattle(molecule("H2O"), stdev=0.05, n=2, seed=0))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    hide(monkeypatch, "distributed", "dask")
    res, out = run("label", "c.db", "--calculator", "labeling_helpers:pair", "--level", "p",
                   "--scheduler", "tcp://127.0.0.1:1", "--no-progress")
    assert res.exit_code == 2
    assert "install forcefit[dask] for this command" in one_error_line(out)


def test_demo_without_tblite_says_it_needs_the_label_extra(tmp_path, monkeypatch):
    hide(monkeypatch, "tblite")
    res, out = run("demo", "--out", tmp_path / "demo")
    assert res.exit_code == 2
    line = one_error_line(out)
    assert "GFN2-xTB" in line and "install forcefit[label] for this command" in line
    assert not (tmp_path / "demo").exists()  # stopped before any work


def test_heavy_packages_are_extras_not_core_dependencies():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for package in ("tblite", "pyscf", "rdkit"):
        assert package not in core and any(d.startswith(package) for d in extras["label"])
    assert "dask" not in core and any(d.startswith("dask[distributed]") for d in extras["dask"])


@pytest.mark.parametrize("line, extras", [("<!-- test-command -->", "test,label,dask"), ("forcefit demo", "label")])
def test_readme_install_lines_install_the_extras_they_need(line, extras):
    text = (ROOT / "README.md").read_text().splitlines()
    if line.startswith("<!--"):
        command = text[text.index(line) + 2]  # .ci/run takes the line after the code fence that follows the marker
    else:
        command = next(t for t in text if t.endswith(line) and "pip install" in t)
    assert f'-e ".[{extras}]"' in command, command
