"""Kohn-Sham DFT labels with PySCF (optionally with D3 dispersion from dftd3)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
from ase.units import Bohr as BOHR, Hartree as HARTREE

from ..extras import require
from .method import Method, SCFNotConverged, Structure, Unlabellable
from .threads import limit_threads

_DISPERSION = {"d3bj": "RationalDampingParam", "d3zero": "ZeroDampingParam", "d3mbj": "ModifiedRationalDampingParam", "d3op": "OptimizedPowerDampingParam"}


@dataclass(frozen=True)
class DFT(Method):
    """Kohn-Sham DFT with PySCF: restricted for closed shells, unrestricted otherwise.

    Density fitting is on by default (it is what makes def2-SVP labels of
    small molecules take seconds). Dispersion ("d3bj", "d3zero", ...) is
    added from the ``dftd3`` package, parametrised for the functional.
    """

    xc: str = "PBE"
    basis: str = "def2-svp"
    density_fit: bool = True
    grid_level: int = 3
    charge: int | None = None  # None: the structure's own charge
    spin: int | None = None  # 2S; None: from the structure's magnetic moments
    dispersion: str | None = None
    conv_tol: float = 1e-9  # Hartree
    max_cycle: int = 100
    threads: int | None = field(default=None, compare=False)

    kind = "dft"
    default_level = "dft"

    def settings(self) -> dict:
        out = {"method": "dft", **asdict(self)}
        out.pop("threads")
        return out

    def default_threads(self, workers: int) -> int:
        return max(1, (os.cpu_count() or 1) // max(1, workers))

    def describe(self) -> str:
        disp = f"+{self.dispersion}" if self.dispersion else ""
        return f"{self.xc}{disp}/{self.basis}{' (DF)' if self.density_fit else ''}"

    def check(self) -> None:
        from ..data.errors import DataError

        require("pyscf", "DFT")
        from pyscf import gto
        from pyscf.dft import libxc

        try:
            libxc.parse_xc(self.xc)
        except Exception as exc:
            raise DataError(f"PySCF does not know the functional '{self.xc}'", field="xc") from exc
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                gto.basis.load(self.basis, "H")
            except Exception as exc:
                raise DataError(f"PySCF does not know the basis set '{self.basis}'", field="basis") from exc
        if not 0 <= self.grid_level <= 9:
            raise DataError(f"grid level must be 0..9, got {self.grid_level}", field="grid_level")
        if self.dispersion:
            if self.dispersion not in _DISPERSION:
                raise DataError(f"unknown dispersion '{self.dispersion}'; choose one of {', '.join(_DISPERSION)}", field="dispersion")
            try:
                import dftd3.interface  # noqa: F401
            except ImportError as exc:
                raise DataError(
                    f"dispersion '{self.dispersion}' needs the 'dftd3' package, which is not installed (pip install dftd3)",
                    field="dispersion",
                ) from exc

    def compute(self, s: Structure, safer: bool = False) -> dict:
        from pyscf import dft, gto

        if s.pbc.any():
            raise Unlabellable("PySCF DFT labels molecules only; this structure has periodic boundaries")
        if self.threads:
            limit_threads(self.threads)
        charge = s.charge if self.charge is None else self.charge
        spin = s.unpaired if self.spin is None else self.spin
        mol = gto.M(
            atom=[(int(z), tuple(p)) for z, p in zip(s.numbers, s.positions)],
            basis=self.basis, charge=charge, spin=spin, unit="Angstrom", verbose=0,
        )
        mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
        mf.xc = self.xc
        mf.grids.level = self.grid_level
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        if self.density_fit:
            mf = mf.density_fit()
        if safer:  # level shift + damping, then second-order SCF: slower, converges to the same state
            mf.level_shift = 0.5
            mf.damp = 0.5
            mf.diis_start_cycle = 4
            mf.max_cycle = 3 * self.max_cycle
            mf.kernel()
            if not mf.converged:
                mf = mf.newton()
                mf.kernel(mf.make_rdm1())
        else:
            mf.kernel()
        if not mf.converged:
            raise SCFNotConverged(f"SCF did not converge in {mf.max_cycle} cycles (last energy {mf.e_tot:.8f} Ha)")
        energy = float(mf.e_tot) * HARTREE
        gradient = np.asarray(mf.nuc_grad_method().kernel())
        out = {"charges": np.asarray(mf.mulliken_pop(verbose=0)[1], dtype=float),
               "dipole": np.asarray(mf.dip_moment(unit="AU", verbose=0), dtype=float) * BOHR}
        if self.dispersion:
            e_disp, g_disp = self._dispersion(s)
            energy += e_disp * HARTREE
            gradient = gradient + g_disp
        out["energy"] = energy
        out["forces"] = -gradient * (HARTREE / BOHR)
        return out

    def _dispersion(self, s: Structure):
        from dftd3 import interface

        param = getattr(interface, _DISPERSION[self.dispersion])(method=self.xc.lower())
        model = interface.DispersionModel(s.numbers, s.positions / BOHR)
        res = model.get_dispersion(param, grad=True)
        return float(res["energy"]), np.asarray(res["gradient"])

