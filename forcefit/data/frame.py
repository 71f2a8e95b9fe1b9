"""A labelled structure: the unit every reader produces and every pipeline consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One structure with its labels and tags (eV, Å, eV/Å).

    Tags carry what the training methods need to know about a frame: its
    level of theory (fidelity), whether it is an equilibrium geometry, its
    weight, which atoms are fixed (never moved by DeNS corruption), and the
    temperature it was sampled at, if it is a Boltzmann sample (score matching).
    """

    positions: np.ndarray  # (n, 3) float64, Å
    numbers: np.ndarray  # (n,) int64
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # (n, 3) eV/Å
    config_type: str = "default"
    level: str = "default"
    weight: float = 1.0
    equilibrium: bool = False
    fixed: np.ndarray | None = None  # (n,) bool, atoms that never move
    temperature: float | None = None  # K, the temperature of the MD that sampled it (info 'temperature')
    source: str = "<memory>"
    index: int = 0

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def to_atoms(self):
        """An ASE Atoms with energy/forces attached (SinglePointCalculator) and tags in info."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.constraints import FixAtoms

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(config_type=self.config_type, level=self.level, weight=self.weight)
        if self.equilibrium:
            atoms.info["equilibrium"] = True
        if self.temperature is not None:
            atoms.info["temperature"] = self.temperature
        if self.fixed is not None and self.fixed.any():
            atoms.set_constraint(FixAtoms(mask=self.fixed))
        if self.energy is not None or self.forces is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=self.energy, forces=self.forces)
        return atoms


FLAGS = ("equilibrium", "has_energy", "has_forces")


def frame_flags(frames) -> dict[str, np.ndarray]:
    """Per-frame booleans ``equilibrium``, ``has_energy``, ``has_forces`` of a sequence of frames. A packed pool
    (or a subset of one) answers from its per-frame arrays, so summarising a streamed pool reads no atoms."""
    if hasattr(frames, "flags"):
        return frames.flags()
    return {"equilibrium": np.array([f.equilibrium for f in frames], dtype=bool),
            "has_energy": np.array([f.energy is not None for f in frames], dtype=bool),
            "has_forces": np.array([f.forces is not None for f in frames], dtype=bool)}
