"""A lean ASE calculator on tblite for sampling (MD, optimisation, Hessians), not for labels."""
from __future__ import annotations

import numpy as np
from ase.units import Bohr as BOHR, Hartree as HARTREE, kB as KB

from .method import Structure
from .threads import limit_threads
from .xtb import XTB_NAMES


def _ase_calculator_base():
    from ase.calculators.calculator import Calculator

    return Calculator


class XTBCalculator(_ase_calculator_base()):
    """A lean ASE calculator on tblite for sampling (MD, optimisation, Hessians).

    Keeps one tblite object per composition and restarts each SCF from the
    previous step's wavefunction: about twice as fast as ``tblite.ase.TBLite``
    in MD. Labels use ``XTB.compute`` (a fresh SCF per structure) instead.
    """

    implemented_properties = ["energy", "free_energy", "forces", "charges", "dipole"]

    def __init__(self, method: str = "GFN2-xTB", electronic_temperature: float = 300.0, **kwargs):
        super().__init__(**kwargs)
        self.method = XTB_NAMES.get(method.lower(), method)
        self.electronic_temperature = electronic_temperature
        self._xtb = self._res = self._key = None

    def check_state(self, atoms, tol=1e-15):
        if self.atoms is None:
            return ["positions", "numbers", "cell", "pbc"]
        changes = []
        for name, a, b in (
            ("positions", atoms.positions, self.atoms.positions), ("numbers", atoms.numbers, self.atoms.numbers),
            ("cell", atoms.cell.array, self.atoms.cell.array), ("pbc", atoms.pbc, self.atoms.pbc),
            ("initial_charges", atoms.get_initial_charges(), self.atoms.get_initial_charges()),
            ("initial_magmoms", atoms.get_initial_magnetic_moments(), self.atoms.get_initial_magnetic_moments()),
        ):
            if a.shape != b.shape or not np.array_equal(a, b):
                changes.append(name)
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        from ase.calculators.calculator import CalculationFailed, all_changes
        from tblite.interface import Calculator as TBCalculator

        super().calculate(atoms, properties, system_changes or all_changes)
        limit_threads(1, environment=False)
        a = self.atoms
        s = Structure.from_atoms(a)
        periodic = bool(s.pbc.any())
        key = (tuple(s.numbers), tuple(s.pbc), s.charge, s.unpaired)
        try:
            if self._xtb is None or key != self._key:
                self._xtb = TBCalculator(self.method, s.numbers, s.positions / BOHR, s.charge, s.unpaired,
                                         s.cell / BOHR if periodic else None, s.pbc if periodic else None)
                self._xtb.set("verbosity", 0)
                self._xtb.set("temperature", self.electronic_temperature * KB / HARTREE)
                self._key, self._res = key, None
            else:
                self._xtb.update(positions=s.positions / BOHR, lattice=s.cell / BOHR if periodic else None)
            self._res = self._xtb.singlepoint(self._res)
        except RuntimeError as exc:
            self._xtb = self._res = None
            raise CalculationFailed(str(exc)) from exc
        self.results["energy"] = self.results["free_energy"] = float(self._res.get("energy")) * HARTREE
        self.results["forces"] = -np.asarray(self._res.get("gradient")) * (HARTREE / BOHR)
        self.results["charges"] = np.asarray(self._res.get("charges"))
        self.results["dipole"] = np.asarray(self._res.get("dipole")) * BOHR
