"""Labels from any ASE calculator, built by a factory named ``module:function`` or ``file.py:function``."""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .method import Method, Structure

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
    from ..data.errors import DataError

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
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot import '{module_name}' ({type(exc).__name__}: {exc})", field="calculator") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise DataError(f"module '{module_name}' has no callable '{attr}'", field="calculator")
    return factory

