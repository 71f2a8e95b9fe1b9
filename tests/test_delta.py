"""Δ-learning: labels minus a cheap baseline for training, and the model file that adds the baseline back at inference."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms

import forcefit
from conftest import ETHANOL, make_frames
from forcefit.baseline import Baseline, attach_baseline, baseline_labels, subtract_baseline
from forcefit.data import DataError, Frame, batch_from_frames, frame_from_atoms
from forcefit.evaluate import predict
from forcefit.extras import MissingExtra
from forcefit.model_file import ModelFileError, load_model, read_model_file, save_model
from forcefit.models.build import build_potential

ARCH = {"name": "painn", "cutoff": 4.0, "options": {"features": 8, "num_layers": 1, "num_basis": 4}, "species": [1, 6, 8]}
PAIR = "labeling_helpers:pair"  # a pair potential standing in for the cheap method where tblite is not the point
WATER = Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.97, 0.05, 0.0], [-0.22, 0.93, 0.04]])


def _method(name: str) -> str:
    if name == "gfn2":
        pytest.importorskip("tblite")
    return name


@pytest.fixture
def plain_model(tmp_path):
    """A tiny float64 PaiNN model file without baseline, with a readout large enough to matter."""
    torch.manual_seed(0)
    potential = build_potential(ARCH).double()
    torch.nn.init.normal_(potential.backbone.readout[-1].weight)
    path = tmp_path / "plain.pt"
    save_model(potential, ARCH, path)
    return path


def _frames(n: int) -> list[Frame]:
    return [frame_from_atoms(a, "eth.xyz", k) for k, a in enumerate(make_frames(n))]


def _energy_forces(atoms: Atoms, calc) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def test_subtracting_then_adding_the_baseline_back_gives_the_labels():
    pytest.importorskip("tblite")
    frames = _frames(3)
    frames[1] = dataclasses.replace(frames[1], forces=None)
    frames[2] = dataclasses.replace(frames[2], energy=None)
    threads = torch.get_num_threads()
    delta = subtract_baseline(frames, "gfn2")
    assert torch.get_num_threads() == threads  # xTB's single OpenMP thread is not left to a training run that follows
    for f, d, (energy, forces) in zip(frames, delta, baseline_labels(frames, "gfn2")):
        assert (d.energy is None) == (f.energy is None) and (d.forces is None) == (f.forces is None)
        if f.energy is not None:
            assert abs(d.energy - f.energy) > 1.0  # really subtracted
            assert abs(d.energy + energy - f.energy) < 1e-10
        if f.forces is not None:
            np.testing.assert_allclose(d.forces + forces, f.forces, rtol=0, atol=1e-10)
        assert d.positions is f.positions and (d.source, d.index, d.config_type, d.level) == (f.source, f.index, f.config_type, f.level)


@pytest.mark.parametrize("name", ["gfn2", PAIR])
def test_delta_model_predicts_network_plus_baseline(plain_model, tmp_path, name):
    method = _method(name)
    delta_path = attach_baseline(plain_model, method, tmp_path / "delta.pt")
    plain, delta = forcefit.load(plain_model), forcefit.load(delta_path)
    assert delta.metadata["baseline"] == {"method": method} and "baseline" not in plain.metadata
    frame = Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers)
    [(base_energy, base_forces)] = baseline_labels([frame], method)
    assert np.abs(base_forces).max() > 0.1
    net_energy, net_forces = _energy_forces(ETHANOL, plain.calculator)
    energy, forces = _energy_forces(ETHANOL, delta.calculator)
    assert abs(energy - (net_energy + base_energy)) < 1e-10
    np.testing.assert_allclose(forces, net_forces + base_forces, rtol=0, atol=1e-10)
    assert delta.calculator.baseline_seconds > 0 and delta.calculator.model_seconds > 0
    assert plain.calculator.baseline_seconds == 0 and plain.calculator.model_seconds > 0

    pred = predict(delta.model, [frame])  # what forcefit eval and compare use
    assert abs(pred["energy"][0] - energy) < 1e-10
    np.testing.assert_allclose(pred["forces"][0], forces, rtol=0, atol=1e-10)


def test_delta_forces_are_minus_the_gradient_of_the_total_energy(plain_model, tmp_path):
    pytest.importorskip("tblite")
    calc = forcefit.load(attach_baseline(plain_model, "gfn2", tmp_path / "delta.pt")).calculator
    _, forces = _energy_forces(WATER, calc)
    h, numeric = 1e-3, np.zeros((len(WATER), 3))
    for i in range(len(WATER)):
        for k in range(3):
            plus, minus = WATER.copy(), WATER.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            numeric[i, k] = -(_energy_forces(plus, calc)[0] - _energy_forces(minus, calc)[0]) / (2 * h)
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, numeric, rtol=0, atol=2e-4)  # xTB's SCF convergence, not the float64 model, sets this


def test_file_without_baseline_behaves_as_before(plain_model):
    payload = torch.load(plain_model, weights_only=False)
    assert payload["format_version"] == 4 and "baseline" not in payload  # an older forcefit still reads it
    potential = load_model(plain_model)
    frame = Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers)
    out = potential(batch_from_frames([frame], potential.cutoff, torch.float64), compute_forces=True)
    ff = forcefit.load(plain_model)
    assert ff.calculator.baseline is None
    energy, forces = _energy_forces(ETHANOL, ff.calculator)
    assert abs(energy - float(out["energy"][0])) < 1e-10
    np.testing.assert_allclose(forces, out["forces"].detach().numpy(), rtol=0, atol=1e-10)
    assert abs(predict(potential, [frame])["energy"][0] - energy) < 1e-10


def test_delta_model_file_is_format_5_and_attaching_again_is_idempotent(plain_model, tmp_path):
    delta = attach_baseline(plain_model, PAIR, tmp_path / "delta.pt")
    assert torch.load(delta, weights_only=False)["format_version"] == 5
    attach_baseline(delta, {"method": PAIR})  # a rerun pipeline step
    assert read_model_file(delta)["baseline"] == {"method": PAIR}
    with pytest.raises(ModelFileError, match="already carries the baseline"):
        attach_baseline(delta, "labeling_helpers:flaky")


def test_bad_baseline_method_fails_clearly(plain_model, tmp_path):
    with pytest.raises(DataError, match="field 'baseline': unknown baseline method 'gfn3'; choose gfn2, gfn1, ipea1 or an import path"):
        Baseline.of("gfn3")
    with pytest.raises(DataError, match="unknown baseline method 'dft'"):
        save_model(load_model(plain_model), ARCH, tmp_path / "x.pt", baseline="dft")
    before = plain_model.read_bytes()
    with pytest.raises(DataError, match="cannot import 'no_such_module'"):
        attach_baseline(plain_model, "no_such_module:make")
    with pytest.raises(DataError, match="has no setting 'charges'"):
        attach_baseline(plain_model, {"method": PAIR, "charges": 1})
    assert plain_model.read_bytes() == before and not (tmp_path / "x.pt").exists()

    payload = torch.load(plain_model, weights_only=False)
    torch.save(dict(payload, baseline={"method": "gfn7"}, format_version=5), tmp_path / "edited.pt")
    with pytest.raises(ModelFileError, match="edited.pt: bad baseline entry .*unknown baseline method 'gfn7'"):
        load_model(tmp_path / "edited.pt")


def test_baseline_failure_names_file_frame_and_field():
    frames = [dataclasses.replace(f, source="eth.xyz", index=7) for f in _frames(1)]
    with pytest.raises(DataError, match=r"file eth.xyz, frame 7, field 'baseline': the baseline labeling_helpers:picky failed: "
                                        r"RuntimeError: SCF did not converge"):
        subtract_baseline(frames, "labeling_helpers:picky")  # fails on every structure with oxygen, also on the safer retry


def test_missing_tblite_names_the_extra(plain_model, tmp_path, monkeypatch):
    delta = tmp_path / "delta.pt"
    save_model(load_model(plain_model), ARCH, delta, baseline="gfn2")
    monkeypatch.setitem(__import__("sys").modules, "tblite.interface", None)
    with pytest.raises(MissingExtra, match=r"GFN2-xTB baseline needs the 'tblite' package.*forcefit\[label\]"):
        forcefit.load(delta)


def test_finetuning_a_delta_model_is_refused_rather_than_dropping_its_baseline(plain_model, tmp_path):
    from forcefit.config import ConfigError, FinetuneConfig
    from forcefit.training.finetune import init_architecture

    delta = attach_baseline(plain_model, PAIR, tmp_path / "delta.pt")
    with pytest.raises(ConfigError, match="Δ model .*would drop that baseline"):
        init_architecture(FinetuneConfig(init=str(delta)), [1, 6, 8], ["default"], "default")
    init_architecture(FinetuneConfig(init=str(plain_model)), [1, 6, 8], ["default"], "default")  # a plain file is fine
