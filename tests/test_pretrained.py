"""The model shipped inside the package: found by name, loads on CPU, predicts every element it lists, fine-tunes."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.data import chemical_symbols

import forcefit
from forcefit import pretrained
from forcefit.config import ConfigError, FinetuneConfig
from forcefit.model_file import ModelFileError, read_model_file
from forcefit.training.finetune import init_architecture

NAME = "organic-gfn2"


def test_the_shipped_model_is_small_and_its_card_matches_it():
    path = pretrained.model_path(NAME)
    assert path.stat().st_size < 5e6  # "at most a few MB"
    card = pretrained.card(NAME)
    payload = read_model_file(NAME)
    assert card["elements"] == sorted(payload["species"]) == [1, 6, 7, 8]
    assert card["file_bytes"] == path.stat().st_size
    assert card["pool"]["molecules"] >= 200 and card["validation"]["forces_mae_meV_per_A"] > 0


def test_the_shipped_model_predicts_finite_forces_for_every_element_it_lists():
    loaded = forcefit.load(NAME)
    for z in loaded.model.species:
        # the element bonded to hydrogens, and beside each other element: every embedding gets used
        others = [o for o in loaded.model.species if o != z]
        numbers = [z, 1, 1, *others]
        positions = [[0, 0, 0], [1.05, 0, 0], [-0.35, 1.0, 0]] + [[0.2 * k, -1.4, 0.9 * k] for k in range(len(others))]
        atoms = Atoms(numbers=numbers, positions=positions)
        atoms.calc = loaded.calculator
        forces = atoms.get_forces()
        assert np.isfinite(forces).all() and np.isfinite(atoms.get_potential_energy()), chemical_symbols[z]
        assert np.abs(forces).max() > 0


def test_a_name_that_is_neither_a_file_nor_shipped_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match=r"no such model file \(nor the name of a model shipped with forcefit: organic-gfn2\)"):
        read_model_file("organic-gfn3")
    with pytest.raises(KeyError, match="no shipped model"):
        pretrained.model_path("organic-gfn3")


def test_a_file_of_that_name_wins_over_the_shipped_model(tmp_path, monkeypatch):
    (tmp_path / NAME).write_text("not a model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match="not a readable model file"):
        read_model_file(NAME)


def test_fine_tuning_by_name_adds_or_refuses_elements_the_model_never_saw():
    arch = init_architecture(FinetuneConfig(init=NAME), species=[1, 6, 8, 16], levels=["dft"], default_level="dft")
    assert arch["species"] == [1, 6, 7, 8, 16] and arch["name"] == "equivariant-ace"
    with pytest.raises(ConfigError, match=r"element\(s\) S that this model file does not know \(it knows H, C, N, O\)"):
        init_architecture(FinetuneConfig(init=NAME, new_species="refuse"), species=[1, 6, 16], levels=["dft"], default_level="dft")
