"""The benchmark's paired bootstrap: the point estimate is forcefit's MAE ratio, and the interval is paired."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def paired():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling `common`
    try:
        spec = importlib.util.spec_from_file_location("paired_comparison", BENCHMARKS / "paired_comparison.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_point_estimate_is_summed_error_over_summed_components(paired):
    # frame 1: 3 atoms (9 components), frame 2: 1 atom (3 components)
    base = np.array([9.0, 6.0])    # MAE 15/12 = 1.25
    other = np.array([4.5, 6.0])   # MAE 10.5/12 = 0.875
    count = np.array([9.0, 3.0])
    out = paired.paired_change(base, other, count, resamples=200, rng=np.random.default_rng(0))
    assert out["base"] == pytest.approx(1.25)
    assert out["other"] == pytest.approx(0.875)
    assert out["change_pct"] == pytest.approx(100 * (10.5 / 15 - 1))
    assert out["other_better_frames"] == pytest.approx(0.5)
    # every resample is a mix of the two frames' ratios: 0.5 and 1.0
    assert -50 - 1e-9 <= out["ci_low_pct"] <= out["change_pct"] <= out["ci_high_pct"] <= 1e-9


def test_pairing_removes_frame_difficulty_from_the_interval(paired):
    rng = np.random.default_rng(1)
    difficulty = rng.lognormal(0, 1, 40)  # frames differ 10x in error, both models alike
    out = paired.paired_change(difficulty, 0.8 * difficulty, np.ones(40), resamples=500, rng=rng)
    # a uniform 20% improvement is exactly -20% in every paired resample, however hard the frames
    assert out["ci_low_pct"] == pytest.approx(-20) and out["ci_high_pct"] == pytest.approx(-20)
    assert out["other_better_frames"] == 1.0
