"""What every reference method shares: the structure a worker labels, the method base class, its failures.

A method is a small frozen, picklable settings object. It travels to worker
processes or Dask workers, where ``compute`` turns one structure into a label
dict ``{"energy": eV, "forces": eV/Å, "charges"?: e, "dipole"?: e·Å}``.
``compute(..., safer=True)`` is the single retry after a failed SCF:
settings that converge more robustly to the same answer.
``check()`` runs in the coordinating process, so bad settings (unknown
functional or basis, a missing optional package, a bad import path) are
reported once, before any work starts.

Worker processes import the method modules, so they stay light: none
imports ``forcefit.data`` (whose package pulls in torch) at module level;
``forcefit.data.DataError`` is imported where it is raised.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


class Unlabellable(ValueError):
    """This method cannot label this structure at all (e.g. periodic input to molecular DFT); never retried."""



class SCFNotConverged(RuntimeError):
    """The SCF did not converge; retried once with safer settings."""



@dataclass
class Structure:
    """What a worker needs to label one structure (plain arrays; cheap to pickle).

    Per-atom initial charges and magnetic moments are kept as given (an ASE
    calculator may read them per atom); xTB and DFT use their sums.
    """

    numbers: np.ndarray
    positions: np.ndarray  # Å
    cell: np.ndarray
    pbc: np.ndarray
    initial_charges: np.ndarray | None = None
    initial_magmoms: np.ndarray | None = None

    @property
    def charge(self) -> int:
        """Total charge: the sum of the initial charges."""
        return 0 if self.initial_charges is None else int(round(float(np.sum(self.initial_charges))))

    @property
    def unpaired(self) -> int:
        """Unpaired electrons: the sum of the initial magnetic moments."""
        return 0 if self.initial_magmoms is None else int(round(float(np.sum(self.initial_magmoms))))

    @classmethod
    def from_atoms(cls, atoms) -> "Structure":
        return cls(
            numbers=np.asarray(atoms.numbers, dtype=np.int64),
            positions=np.asarray(atoms.positions, dtype=np.float64),
            cell=np.asarray(atoms.cell[:], dtype=np.float64),
            pbc=np.asarray(atoms.pbc, dtype=bool),
            initial_charges=atoms.arrays["initial_charges"].copy() if "initial_charges" in atoms.arrays else None,
            initial_magmoms=atoms.arrays["initial_magmoms"].copy() if "initial_magmoms" in atoms.arrays else None,
        )

    def to_atoms(self):
        from ase import Atoms

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        if self.initial_charges is not None:
            atoms.set_initial_charges(self.initial_charges)
        if self.initial_magmoms is not None:
            atoms.set_initial_magnetic_moments(self.initial_magmoms)
        return atoms



@dataclass(frozen=True)
class Method:
    """Base: settings of one reference method (see module docstring)."""

    def settings(self) -> dict:
        """The settings that define the level of theory (stored in the campaign)."""
        return {"method": self.kind, **asdict(self)}

    kind = "method"
    default_level = "method"
    in_process = False  # may run in a thread of the coordinating process
    chunk = 1  # structures per task sent to a worker

    def default_threads(self, workers: int) -> int:
        return 1

    def check(self) -> None:
        """Validate settings in the coordinating process; raise DataError."""

    def describe(self) -> str:
        return self.kind

    def compute(self, s: Structure, safer: bool = False) -> dict:
        raise NotImplementedError

