"""The torch.compile path of the ASE calculator gives the eager results."""
from __future__ import annotations

import numpy as np
import torch

from conftest import ETHANOL
from forcefit.models.painn import PaiNN
from forcefit.models.potential import Potential
from forcefit.simulate.calculator import ForcefitCalculator


def test_compiled_calculator_matches_eager():
    torch.manual_seed(0)
    model = Potential(PaiNN(3, features=8, num_layers=1, num_basis=4), [1, 6, 8])
    torch.nn.init.normal_(model.backbone.readout[-1].weight)
    eager, compiled = ForcefitCalculator(model, dtype=torch.float32), ForcefitCalculator(model, dtype=torch.float32, compile=True)
    for shift in (0.0, 0.05):
        atoms = ETHANOL.copy()
        atoms.positions += shift * np.random.default_rng(1).normal(size=atoms.positions.shape)
        atoms.calc = eager
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        assert np.abs(f).max() > 1e-3  # a model with zero output would match trivially
        atoms.calc = compiled
        assert abs(atoms.get_potential_energy() - e) < 1e-4
        np.testing.assert_allclose(atoms.get_forces(), f, atol=1e-4)
