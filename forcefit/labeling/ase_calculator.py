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


def _bad_factory(message: str, **where):
    """A ``forcefit.data.DataError``, imported only when there is one to raise: this runs on workers, and the
    data package pulls in torch."""
    from ..data.errors import DataError

    return DataError(message, field="calculator", **where)


def resolve_factory(path: str):
    """Import ``module:function`` or ``path/file.py:function``; DataError naming the problem."""
    module_name, sep, attr = path.rpartition(":")
    if not sep or not module_name or not attr:
        raise _bad_factory(f"'{path}' is not of the form module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    file = Path(module_name) if module_name.endswith(".py") else None
    if file is not None and not file.exists():
        raise _bad_factory("no such file", file=module_name)
    try:
        if file is not None:
            spec = importlib.util.spec_from_file_location(f"_forcefit_calc_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise _bad_factory(f"cannot import '{module_name}' ({type(exc).__name__}: {exc})") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise _bad_factory(f"module '{module_name}' has no callable '{attr}'")
    return factory
