"""Reference methods: GFN1/GFN2-xTB (tblite), DFT (PySCF), any ASE calculator.

A method is a small frozen, picklable settings object. It travels to worker
processes or Dask workers, where ``compute`` turns one structure into a label
dict ``{"energy": eV, "forces": eV/Å, "charges"?: e, "dipole"?: e·Å}``.
``compute(..., safer=True)`` is the single retry after a failed SCF:
settings that converge more robustly to the same answer.
``check()`` runs in the coordinating process, so bad settings (unknown
functional or basis, a missing optional package, a bad import path) are
reported once, before any work starts.

Worker processes import this module, so it must stay light: it never
imports ``forcefit.data`` (whose package pulls in torch) at module level.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ase.units import Bohr as BOHR, Hartree as HARTREE, kB as KB  # the constants tblite.ase uses

MIN_DISTANCE = 0.3  # Å: closer atoms are a broken structure, not an SCF problem


def DataError(message, **where):  # noqa: N802 - stands in for the class, imported lazily
    """forcefit.data.errors.DataError, imported only when raised (keeps workers free of torch)."""
    from ..data.errors import DataError as _DataError

    return _DataError(message, **where)


class Unlabellable(ValueError):
    """This method cannot label this structure at all (e.g. periodic input to molecular DFT); never retried."""


class GeometryError(Unlabellable):
    """A structure no method can label (overlapping atoms); never retried."""


class SCFNotConverged(RuntimeError):
    """The SCF did not converge; retried once with safer settings."""


# ---------------------------------------------------------------- threads
_thread_state = threading.local()


def limit_threads(n: int, environment: bool = True) -> None:
    """Cap OpenMP/BLAS threads of the calling thread (and of libraries loaded later).

    tblite on a small molecule is ~40x slower with idle OpenMP threads
    spinning on a busy machine, so xTB always runs single-threaded; DFT
    uses ``n`` threads per worker. Environment variables cover libraries not
    yet loaded (``environment=False`` leaves them alone: in-process use);
    the system libgomp (tblite) and PySCF's own copy are set directly.
    """
    n = max(1, int(n))
    if getattr(_thread_state, "threads", None) == (n, environment):
        return
    if environment:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
    try:
        import ctypes

        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(n)
    except (OSError, AttributeError):  # not Linux/GNU OpenMP: env vars only
        pass
    if environment and "pyscf" in sys.modules:
        from pyscf import lib

        lib.num_threads(n)
    _thread_state.threads = (n, environment)


def check_geometry(numbers: np.ndarray, positions: np.ndarray, min_distance: float = MIN_DISTANCE) -> None:
    """Raise GeometryError naming the first pair of atoms closer than ``min_distance`` Å."""
    pos = np.asarray(positions, dtype=float)
    if not np.all(np.isfinite(pos)):
        raise GeometryError("positions contain NaN or infinite values")
    if len(pos) < 2:
        return
    diff = pos[:, None, :] - pos[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)  # squared distances: no square root for the common, clean case
    d2.flat[:: len(pos) + 1] = np.inf
    if d2.min() >= min_distance ** 2:
        return
    i, j = np.unravel_index(np.argmin(d2), d2.shape)
    i, j = sorted((int(i), int(j)))
    raise GeometryError(f"overlapping atoms {i} and {j}: {np.sqrt(d2[i, j]):.3f} Å apart (minimum {min_distance} Å)")


def find_unlabellable(structures, min_distance: float = MIN_DISTANCE) -> list[int]:
    """Indices of the structures ``check_geometry`` rejects, checked many at a time.

    One numpy pass per block of structures with the same number of atoms
    (blocks of ~250k atom pairs), instead of a handful of small numpy calls
    per structure next to each SCF: the coordinator screens a whole
    campaign in about a microsecond per small molecule.
    """
    groups: dict[int, list[int]] = {}
    for k, st in enumerate(structures):
        groups.setdefault(len(st.numbers), []).append(k)
    bad = []
    for n, idx in groups.items():
        if n < 2:
            bad += [k for k in idx if not np.all(np.isfinite(np.asarray(structures[k].positions, dtype=float)))]
            continue
        step = max(1, 250_000 // (n * n))
        for a in range(0, len(idx), step):
            part = idx[a:a + step]
            pos = np.stack([np.asarray(structures[k].positions, dtype=float) for k in part])
            diff = pos[:, :, None, :] - pos[:, None, :, :]
            d2 = np.einsum("mijk,mijk->mij", diff, diff)
            d2[:, np.arange(n), np.arange(n)] = np.inf
            ok = d2.reshape(len(part), -1).min(axis=1) >= min_distance ** 2  # NaN (bad positions) compares False
            bad += [k for k, good in zip(part, ok) if not good]
    return bad


# ---------------------------------------------------------------- structures in tasks
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


# ---------------------------------------------------------------- methods
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


_XTB_NAMES = {"gfn2": "GFN2-xTB", "gfn1": "GFN1-xTB", "ipea1": "IPEA1-xTB"}


@dataclass(frozen=True)
class XTB(Method):
    """GFN-xTB through tblite's Python interface (Bohr/Hartree inside, converted here).

    Calls ``tblite.interface.Calculator`` directly, with exactly the defaults
    of ``tblite.ase.TBLite``, to skip the ASE wrapper's per-call overhead.
    A fresh calculator per structure keeps every label independent of the
    order structures are labelled in (identical on any pool or cluster).
    """

    method: str = "GFN2-xTB"
    accuracy: float = 1.0
    electronic_temperature: float = 300.0  # K
    max_iterations: int = 250
    charge: int | None = None  # None: the structure's own charge
    multiplicity: int | None = None  # None: from the structure's magnetic moments

    kind = "xtb"
    in_process = True
    chunk = 16

    @property
    def default_level(self) -> str:  # type: ignore[override]
        return {v: k for k, v in _XTB_NAMES.items()}.get(self.method, "xtb")

    def settings(self) -> dict:
        return {"method": self.method, **{k: v for k, v in asdict(self).items() if k != "method"}}

    def describe(self) -> str:
        return self.method

    def check(self) -> None:
        if self.method not in _XTB_NAMES.values():
            raise DataError(f"unknown xTB method '{self.method}'; choose one of {', '.join(_XTB_NAMES.values())}", field="method")
        try:
            import tblite.interface  # noqa: F401
        except ImportError as exc:
            raise DataError(f"xTB needs the 'tblite' package ({exc})", field="method") from exc

    def compute(self, s: Structure, safer: bool = False) -> dict:
        from tblite.interface import Calculator

        limit_threads(1, environment=False)
        charge = s.charge if self.charge is None else self.charge
        uhf = s.unpaired if self.multiplicity is None else self.multiplicity - 1
        periodic = s.pbc.any()
        calc = Calculator(
            self.method, s.numbers, s.positions / BOHR, charge, uhf,
            s.cell / BOHR if periodic else None, s.pbc if periodic else None,
        )
        calc.set("verbosity", 0)
        calc.set("accuracy", self.accuracy)
        calc.set("temperature", self.electronic_temperature * KB / HARTREE)
        calc.set("max-iter", self.max_iterations * (4 if safer else 1))
        calc.set("mixer", "broyden")
        calc.set("mixer-memory", 0)
        calc.set("guess", 0)  # superposition of atomic densities
        calc.set("mixer-damping", 0.1 if safer else 0.4)
        try:
            res = calc.singlepoint()
        except RuntimeError as exc:
            raise SCFNotConverged(str(exc)) from exc
        energy, gradient, charges, dipole = _xtb_results(res, len(s.numbers))
        gradient *= -(HARTREE / BOHR)  # in place (fresh arrays): the forces; same numbers as -g * (H/B)
        dipole *= BOHR
        return {"energy": float(energy) * HARTREE, "forces": gradient, "charges": charges, "dipole": dipole}


_TBLITE_C = None  # (ffi, lib) of tblite's C interface, or False where it is not usable


def _xtb_results(res, n: int) -> tuple:
    """(energy, gradient, charges, dipole) of a tblite result, in atomic units.

    ``res.get`` makes a new error handle per call and, for the dipole,
    converts tblite's whole post-processing dictionary (bond orders
    included) to numpy: ~75 µs per structure, 7% of a GFN2 ethanol label.
    This reads the same four values through the same C functions with one
    error handle (~10 µs); on any surprise (another tblite version) it
    falls back to ``res.get``. The numbers are identical either way.
    """
    global _TBLITE_C
    if _TBLITE_C is None:
        try:
            from tblite.library import ffi, lib

            _TBLITE_C = (ffi, lib) if all(hasattr(lib, f) for f in (
                "tblite_new_error", "tblite_delete_error", "tblite_check_error", "tblite_get_result_energy",
                "tblite_get_result_gradient", "tblite_get_result_charges", "tblite_get_post_processing_dict",
                "tblite_get_array_size_label", "tblite_get_array_entry_label", "tblite_delete_double_dictionary")) else False
        except ImportError:
            _TBLITE_C = False
    handle = getattr(res, "_res", None)
    if _TBLITE_C and handle is not None:
        ffi, lib = _TBLITE_C
        err = lib.tblite_new_error()
        table = ffi.NULL
        try:
            gradient, charges, dipole = np.empty((n, 3)), np.empty(n), np.empty(3)
            energy = ffi.new("double *")
            lib.tblite_get_result_energy(err, handle, energy)
            lib.tblite_get_result_gradient(err, handle, ffi.from_buffer("double[]", gradient))
            lib.tblite_get_result_charges(err, handle, ffi.from_buffer("double[]", charges))
            ok = not lib.tblite_check_error(err)
            if ok:
                table = lib.tblite_get_post_processing_dict(err, handle)
                ok = not lib.tblite_check_error(err) and table != ffi.NULL
            if ok:
                size = ffi.new("int[3]")
                lib.tblite_get_array_size_label(err, table, b"molecular-dipole", size, size + 1, size + 2)
                ok = not lib.tblite_check_error(err) and (size[0], size[1], size[2]) == (3, 0, 0)
            if ok:
                lib.tblite_get_array_entry_label(err, table, b"molecular-dipole", ffi.from_buffer("double[]", dipole))
                ok = not lib.tblite_check_error(err)
            if ok:
                return energy[0], gradient, charges, dipole
        finally:
            if table != ffi.NULL:
                lib.tblite_delete_double_dictionary(ffi.new("tblite_double_dictionary *", table))
            lib.tblite_delete_error(ffi.new("tblite_error *", err))
    return (res.get("energy"), np.asarray(res.get("gradient"), dtype=float), np.asarray(res.get("charges"), dtype=float),
            np.asarray(res.get("dipole"), dtype=float))


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
        try:
            from pyscf import gto
            from pyscf.dft import libxc
        except ImportError as exc:
            raise DataError(f"DFT needs the 'pyscf' package ({exc})", field="method") from exc
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


_calc_cache = threading.local()


@dataclass(frozen=True)
class ImportedCalculator(Method):
    """Any ASE calculator, built by a factory named ``module:function`` (or ``file.py:function``).

    The factory is called once per worker and the calculator reused; the
    retry after a failure uses a fresh instance. The module must be
    importable where the work runs (worker processes share the coordinator's
    ``sys.path``; Dask workers need it installed).
    """

    path: str = ""

    kind = "calculator"

    @property
    def default_level(self) -> str:  # type: ignore[override]
        name = re.sub(r"\W", "_", self.path.rpartition(":")[2]) or "calculator"
        return name if name[0].isalpha() else f"calc_{name}"

    def settings(self) -> dict:
        return {"method": "calculator", "path": self.path}

    def describe(self) -> str:
        return self.path

    def check(self) -> None:
        resolve_factory(self.path)

    def compute(self, s: Structure, safer: bool = False) -> dict:
        cache = _calc_cache.__dict__
        calc = None if safer else cache.get(self.path)
        if calc is None:
            calc = resolve_factory(self.path)()
            cache[self.path] = calc
        atoms = s.to_atoms()
        atoms.calc = calc
        out = {"energy": float(atoms.get_potential_energy()), "forces": np.asarray(atoms.get_forces(), dtype=float)}
        implemented = getattr(calc, "implemented_properties", ())
        for name, getter in (("charges", atoms.get_charges), ("dipole", atoms.get_dipole_moment)):
            if name in implemented:
                try:
                    out[name] = np.asarray(getter(), dtype=float)
                except Exception:  # optional extras: never fail a label for them
                    pass
        return out


def resolve_factory(path: str):
    """Import ``module:function`` or ``path/file.py:function``; DataError naming the problem."""
    module_name, sep, attr = path.rpartition(":")
    if not sep or not module_name or not attr:
        raise DataError(f"'{path}' is not of the form module:function", field="calculator")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.exists():
                raise DataError("no such file", file=module_name, field="calculator")
            spec = importlib.util.spec_from_file_location(f"_forcefit_calc_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:
        if type(exc).__name__ == "DataError":
            raise
        raise DataError(f"cannot import '{module_name}' ({type(exc).__name__}: {exc})", field="calculator") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise DataError(f"module '{module_name}' has no callable '{attr}'", field="calculator")
    return factory


METHODS = ("gfn2", "gfn1", "ipea1", "dft")


def make_method(method: "str | Method", **settings: Any) -> Method:
    """A Method from a name ("gfn2", "gfn1", "ipea1", "dft"), an import path "module:factory", or a Method.

    Settings that are None are left at their defaults; settings the method
    does not take are an error (naming the setting).
    """
    if isinstance(method, Method):
        if any(v is not None for v in settings.values()):
            raise DataError("pass settings inside the Method object, not alongside it", field="method")
        return method
    settings = {k: v for k, v in settings.items() if v is not None}
    name = str(method).strip()
    if ":" in name:
        cls, kwargs = ImportedCalculator, {"path": name}
    elif name.lower() in _XTB_NAMES:
        cls, kwargs = XTB, {"method": _XTB_NAMES[name.lower()]}
    elif name.lower() == "dft":
        cls, kwargs = DFT, {}
    else:
        raise DataError(f"unknown method '{name}'; choose one of {', '.join(METHODS)} or an import path module:factory", field="method")
    fields = {f for f in cls.__dataclass_fields__}
    for key in settings:
        if key not in fields or key in ("method", "path"):
            raise DataError(f"method '{name}' has no setting '{key}'", field=key)
    obj = cls(**kwargs, **settings)
    obj.check()
    return obj


# ---------------------------------------------------------------- sampling calculator
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
        self.method = _XTB_NAMES.get(method.lower(), method)
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
