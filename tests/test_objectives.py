"""The objective contract: registry, masks from frame tags, the one loss form, validation, tags in the batch."""
from __future__ import annotations

import ast
import re
import csv
import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

import forcefit
from conftest import ETHANOL, make_frames
from forcefit.config import ConfigError, build_config
from forcefit.data import DataError, Frame, batch_from_frames
from forcefit.objectives.terms import EnergyTerm, ForcesTerm, SupervisedLoss

TINY = {"model": {"options": {"features": 8, "num_layers": 1, "num_basis": 4}},
        "training": {"batch_size": 4, "progress": False, "threads": 1, "lr": 1e-2}}


def test_unknown_objective_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="objective: .*unknown objective 'denoise'; choose one of: dens, force-centric, score-matching, supervised"):
        build_config({"objective": {"kind": "denoise"}})
    with pytest.raises(ConfigError, match="objective.sigmaa"):
        build_config({"objective": [{"kind": "supervised"}, {"kind": "dens", "sigmaa": 0.1}]})


def test_the_training_module_imports_no_objective():
    """The module calls objectives and knows none of them (nor the objectives package)."""
    source = Path(forcefit.__file__).parent / "training" / "module.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not [m for m in imported if "objectives" in m or "dens" in m], imported


class _Linear(torch.nn.Module):
    """E = Σ a·x_i (so F = −a on every atom): outputs known in closed form."""

    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def forward(self, batch, compute_forces=True, force_condition=None):
        x = batch["positions"]
        energy = torch.zeros(batch["ptr"].shape[0] - 1, dtype=x.dtype).index_add(0, batch["batch"], x @ self.a)
        return {"energy": energy, "forces": -self.a.expand_as(x), "vectors": {}}


def test_masks_mix_energy_only_forces_only_and_full_frames():
    """loss = λ_E · weighted mean over frames with energy + λ_F · weighted mean over atoms of frames with forces."""
    pos = [np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([[0.0, 1, 0], [0, 0, 1.0], [1.0, 1, 1]]), np.array([[2.0, 0, 0]])]
    frames = [
        Frame(positions=pos[0], numbers=np.array([1, 1]), energy=1.0, weight=2.0),  # energy only
        Frame(positions=pos[1], numbers=np.array([1, 8, 1]), forces=np.ones((3, 3)), weight=0.5),  # forces only
        Frame(positions=pos[2], numbers=np.array([8]), energy=-1.0, forces=np.zeros((1, 3))),  # both
    ]
    batch = batch_from_frames(frames, 3.0, torch.float64)
    a = _Linear.a.numpy()
    loss_fn = SupervisedLoss([EnergyTerm(1.0, "mse"), ForcesTerm(10.0, "mse")])
    loss, metrics = loss_fn(_Linear()(batch), batch)
    e = [(pos[0] @ a).sum(), (pos[2] @ a).sum()]
    loss_e = (2.0 * ((e[0] - 1.0) / 2) ** 2 + 1.0 * ((e[1] + 1.0) / 1) ** 2) / 3.0
    f_err_sq = lambda ref: (((-a) - ref) ** 2).mean()  # noqa: E731  per atom, over components
    loss_f = (3 * 0.5 * f_err_sq(np.ones(3)) + 1.0 * f_err_sq(np.zeros(3))) / (3 * 0.5 + 1.0)
    assert loss.item() == pytest.approx(loss_e + 10.0 * loss_f, rel=1e-12)
    assert metrics["loss_energy"].item() == pytest.approx(loss_e, rel=1e-12)
    # the published form on the same batch: |ΔE|/n and per-atom ‖ΔF‖
    published, _ = SupervisedLoss([EnergyTerm(1.0, "mae"), ForcesTerm(80.0, "l2")])(_Linear()(batch), batch)
    norm = lambda ref: np.linalg.norm(-a - ref)  # noqa: E731
    expected = (2.0 * abs(e[0] - 1.0) / 2 + abs(e[1] + 1.0)) / 3.0 + 80 * (3 * 0.5 * norm(np.ones(3)) + norm(np.zeros(3))) / 2.5
    assert published.item() == pytest.approx(expected, rel=1e-12)


def test_tags_travel_into_the_batch():
    frames = [Frame(positions=ETHANOL.positions, numbers=ETHANOL.numbers, energy=1.0, level="dft", equilibrium=True, weight=3.0),
              Frame(positions=ETHANOL.positions + 0.1, numbers=ETHANOL.numbers, forces=np.ones((9, 3)), level="gfn2")]
    batch = batch_from_frames(frames, 5.0, torch.float64, levels=["gfn2", "dft"])
    assert batch["level"].tolist() == [1, 0] and batch["equilibrium"].tolist() == [True, False]
    assert batch["has_energy"].tolist() == [True, False] and batch["has_forces"].tolist() == [False, True]
    assert batch["weight"].tolist() == [3.0, 1.0] and batch["weight"].dtype == torch.float64
    assert batch_from_frames(frames, 5.0)["level"].tolist() == [-1, -1]  # no list of levels: the model's default level


def _partial_file(tmp_path, neither: bool = False):
    images = make_frames(24, seed=3)
    for k, atoms in enumerate(images):
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        if k % 3 != 1 and not (neither and k == 5):
            atoms.info["energy"] = e
        if k % 3 != 0 and not (neither and k == 5):
            atoms.arrays["forces"] = f
    path = tmp_path / "partial.xyz"
    ase.io.write(path, images, format="extxyz")
    return path


def test_frames_train_on_the_labels_they_have(tmp_path):
    path = _partial_file(tmp_path)
    result = forcefit.train({"data": {"train": str(path), "valid": str(path)}, **TINY, "out": str(tmp_path / "run")},
                            training={**TINY["training"], "max_epochs": 2})
    assert result.metrics["n_energy"] == 16 and result.metrics["n_forces"] == 16 and math.isfinite(result.metrics["forces_mae"])
    with pytest.raises(DataError, match=r"partial\.xyz, frame 0, field 'forces': has no forces label"):
        forcefit.train({"data": {"train": str(path), "valid": str(path)}, **TINY, "out": str(tmp_path / "strict"),
                        "objective": {"kind": "supervised", "partial_labels": False}})


def test_a_frame_with_no_label_at_all_is_named(tmp_path):
    path = _partial_file(tmp_path, neither=True)
    with pytest.raises(DataError, match=r"partial\.xyz.*frame 5.*neither an energy nor forces"):
        forcefit.train({"data": {"train": str(path), "valid": str(path)}, **TINY, "out": str(tmp_path / "run")})


def test_duplicate_frames_are_reported_with_their_count(tmp_path):
    images = make_frames(12, seed=4)
    path = tmp_path / "dup.xyz"
    ase.io.write(path, images + images[:3], format="extxyz")
    with pytest.warns(UserWarning, match="3 training frame\\(s\\) repeat an earlier frame"):
        forcefit.train({"data": {"train": str(path), "valid": str(path)}, **TINY, "out": str(tmp_path / "run")},
                       training={**TINY["training"], "max_epochs": 1})


def test_validation_loss_is_the_configured_loss_form_with_frame_weights(tmp_path):
    """val_loss (which picks the best checkpoint) = the run's supervised loss on the validation frames."""
    images = make_frames(16, seed=5)
    for k, atoms in enumerate(images):
        atoms.info["weight"] = 0.25 + k % 3
    train, valid = tmp_path / "train.xyz", tmp_path / "valid.xyz"
    ase.io.write(train, images[:12], format="extxyz")
    ase.io.write(valid, images[12:], format="extxyz")
    training = {**TINY["training"], "max_epochs": 1, "ema_decay": None, "energy_loss": "mae", "forces_loss": "l2",
                "forces_weight": 80.0, "eval_batch_size": 64}
    result = forcefit.train({"data": {"train": str(train), "valid": str(valid)}, **TINY, "out": str(tmp_path / "run")},
                            training=training)
    rows = [r for r in csv.DictReader(open(result.out / "logs" / "metrics.csv")) if r.get("val_loss")]
    logged = float(rows[-1]["val_loss"])
    model = forcefit.load(result.model_path).model
    frames = forcefit.data.read_frames(valid)
    batch = batch_from_frames(frames, model.cutoff)
    cfg = build_config({"training": training})
    expected, _ = SupervisedLoss.from_training(cfg.training)(model(batch), batch)
    assert logged == pytest.approx(expected.item(), rel=1e-4)
    unweighted = SupervisedLoss.from_training(cfg.training)(model(batch), {**batch, "weight": torch.ones_like(batch["weight"])})[0]
    assert abs(unweighted.item() - logged) > 1e-3 * logged  # the weights matter


def test_dens_and_plain_runs_start_from_the_same_backbone(tmp_path):
    """Same seed, with and without DeNS, through the run's own model building: equal backbone state dicts at step 0."""
    import lightning as L

    from forcefit.training.run import _build_model, frame_needs, make_objectives
    from forcefit.training.data_setup import prepare_data

    path = tmp_path / "f.xyz"
    ase.io.write(path, make_frames(12, seed=6), format="extxyz")
    states = {}
    for name, objective in (("plain", {"kind": "supervised"}), ("dens", {"kind": "dens"})):
        for model in ("painn", "equivariant-ace"):
            cfg = build_config({"data": {"train": str(path)}, "model": {"name": model}, "objective": objective, "seed": 4})
            L.seed_everything(cfg.seed, verbose=False)
            data = prepare_data(cfg, frame_needs(cfg))
            objectives = make_objectives(cfg, data)
            heads = tuple(h for o in objectives for h in o.aux_heads)
            potential, _ = _build_model(cfg, data, heads, torch.float32)
            states[name, model] = potential.state_dict()
    for model in ("painn", "equivariant-ace"):
        plain, dens = states["plain", model], states["dens", model]
        assert {k for k in dens if k not in plain} and all(k.startswith("aux_heads.noise.") for k in dens if k not in plain)
        for key, value in plain.items():
            assert torch.equal(value, dens[key]), (model, key)


def test_one_unknown_element_message_for_validation_evaluation_and_the_calculator(tmp_path):
    """The same check and wording in all three places that meet a structure the model cannot describe."""
    from ase import Atoms

    from forcefit.evaluate import evaluate
    from forcefit.models.build import build_potential
    from forcefit.data import validate_frames
    from forcefit.simulate.calculator import ForcefitCalculator

    potential = build_potential({"name": "painn", "cutoff": 4.0, "options": {"features": 8, "num_layers": 1}, "species": [1, 8]})
    frame = Frame(positions=np.array([[0.0, 0, 0], [1.1, 0, 0]]), numbers=np.array([1, 17]), energy=0.0, source="x.xyz")
    expected = "element(s) Cl (Z=17) that the model does not know (model species: H, O)"
    with pytest.raises(DataError, match=r"x\.xyz, frame 0, field 'numbers': contains " + re.escape(expected)):
        validate_frames([frame], "test", need_energy=False, need_forces=False, species=[1, 8])
    with pytest.raises(ValueError, match="frames contain " + re.escape(expected)):
        evaluate(potential, [frame])
    atoms = Atoms("HCl", positions=frame.positions)
    atoms.calc = ForcefitCalculator(potential)
    with pytest.raises(ValueError, match="the structure contains " + re.escape(expected)):
        atoms.get_potential_energy()
