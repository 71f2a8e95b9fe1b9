"""forcefit compare: the point estimate is forcefit's MAE ratio, the interval is paired, the command writes what it says."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import make_frames
from forcefit.cli import app
from forcefit.compare import compare_errors, paired_change


def test_point_estimate_is_summed_error_over_summed_components():
    # frame 1: 3 atoms (9 components), frame 2: 1 atom (3 components)
    base = np.array([9.0, 6.0])    # MAE 15/12 = 1.25
    other = np.array([4.5, 6.0])   # MAE 10.5/12 = 0.875
    count = np.array([9.0, 3.0])
    out = paired_change(base, other, count, resamples=200, rng=np.random.default_rng(0))
    assert out["base"] == pytest.approx(1.25)
    assert out["other"] == pytest.approx(0.875)
    assert out["change_pct"] == pytest.approx(100 * (10.5 / 15 - 1))
    assert out["other_better_frames"] == pytest.approx(0.5)
    # every resample is a mix of the two frames' ratios: 0.5 and 1.0
    assert -50 - 1e-9 <= out["ci_low_pct"] <= out["change_pct"] <= out["ci_high_pct"] <= 1e-9


def test_pairing_removes_frame_difficulty_from_the_interval():
    rng = np.random.default_rng(1)
    difficulty = rng.lognormal(0, 1, 40)  # frames differ 10x in error, both models alike
    out = paired_change(difficulty, 0.8 * difficulty, np.ones(40), resamples=500, rng=rng)
    # a uniform 20% improvement is exactly -20% in every paired resample, however hard the frames
    assert out["ci_low_pct"] == pytest.approx(-20) and out["ci_high_pct"] == pytest.approx(-20)
    assert out["other_better_frames"] == 1.0


def test_all_files_row_pools_the_frames_of_every_file():
    def errors(force_sum, count, energy):
        return {"force_sum": np.array(force_sum), "force_count": np.array(count), "energy": np.array(energy)}

    files = {"a.xyz": (errors([9.0], [9.0], [1.0]), errors([4.5], [9.0], [2.0])),
             "b.xyz": (errors([6.0], [3.0], [1.0]), errors([6.0], [3.0], [1.0]))}
    rows = compare_errors(files, resamples=50)
    assert [r["frames"] for r in rows] == ["a.xyz", "b.xyz", "all files"]
    assert rows[0]["F_change_pct"] == pytest.approx(-50) and rows[0]["E_change_pct"] == pytest.approx(100)
    assert rows[2]["n"] == 2 and rows[2]["F_base"] == pytest.approx(15 / 12) and rows[2]["F_other"] == pytest.approx(10.5 / 12)


def _model(path, seed):
    from forcefit.model_file import save_model
    from forcefit.models.build import build_potential

    arch = {"name": "painn", "cutoff": 5.0, "options": {"features": 8, "num_layers": 1}, "species": [1, 6, 8],
            "e0s": {1: 0.0, 6: 0.0, 8: 0.0}, "scale": 1.0, "shift": 0.0, "zbl": False, "direct_forces": False,
            "vector_heads": ()}
    torch.manual_seed(seed)
    potential = build_potential(arch)
    with torch.no_grad():
        for p in potential.parameters():  # the readout starts at zero; the two models must differ
            p.add_(0.1 * torch.randn_like(p))
    save_model(potential, arch, path)
    return path


def test_cli_writes_json_and_plot_and_agrees_with_eval(tmp_path):
    frames = tmp_path / "frames.xyz"
    ase.io.write(frames, make_frames(6, seed=3), format="extxyz")
    a, b = _model(tmp_path / "a.pt", 0), _model(tmp_path / "b.pt", 1)
    out, png, metrics = tmp_path / "cmp.json", tmp_path / "cmp.png", tmp_path / "a.json"
    res = CliRunner().invoke(app, ["compare", str(a), str(b), str(frames), "--resamples", "100", "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    [row] = result["rows"]
    assert row["frames"] == str(frames) and row["n"] == 6 and result["baseline"] == str(a)
    assert row["F_ci_low_pct"] <= row["F_change_pct"] <= row["F_ci_high_pct"]
    assert len(result["per_frame"][str(frames)][0]) == 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(app, ["eval", str(a), str(frames), "--json", str(metrics)])
    assert res.exit_code == 0, res.output
    assert row["F_base"] == pytest.approx(json.loads(metrics.read_text())["forces_mae"], rel=1e-6)  # the same MAE as eval's


@pytest.mark.parametrize("missing", ["model", "frames"])
def test_cli_missing_file_is_one_line_naming_it(tmp_path, missing):
    frames = tmp_path / "frames.xyz"
    ase.io.write(frames, make_frames(2), format="extxyz")
    a = _model(tmp_path / "a.pt", 0)
    gone = tmp_path / "nowhere" / ("b.pt" if missing == "model" else "more.xyz")
    args = [str(a), str(gone), str(frames)] if missing == "model" else [str(a), str(a), str(frames), str(gone)]
    res = CliRunner().invoke(app, ["compare", *args])
    assert res.exit_code == 2
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and gone.name in lines[0], res.output
