"""Reference methods by name: ``make_method`` ("gfn2", "gfn1", "ipea1", "dft", "module:factory").

Each method lives in its own module (``xtb``, ``dft``, ``ase_calculator``;
the base class and ``Structure`` in ``method``). This module picks one by
name and checks its settings; it also keeps the import path
``forcefit.labeling.calculators`` for the names that used to live here.
"""
from __future__ import annotations

from typing import Any

from .ase_calculator import ImportedCalculator, resolve_factory
from .dft import DFT
from .geometry import MIN_DISTANCE, GeometryError, check_geometry, find_unlabellable
from .method import Method, SCFNotConverged, Structure, Unlabellable
from .threads import limit_threads
from .xtb import XTB, XTB_NAMES
from .xtb_calculator import XTBCalculator

__all__ = [
    "DFT", "GeometryError", "ImportedCalculator", "METHODS", "MIN_DISTANCE", "Method", "SCFNotConverged", "Structure",
    "Unlabellable", "XTB", "XTBCalculator", "check_geometry", "find_unlabellable", "limit_threads", "make_method",
    "resolve_factory",
]

METHODS = ("gfn2", "gfn1", "ipea1", "dft")


def make_method(method: "str | Method", **settings: Any) -> Method:
    """A Method from a name ("gfn2", "gfn1", "ipea1", "dft"), an import path "module:factory", or a Method.

    Settings that are None are left at their defaults; settings the method
    does not take are an error (naming the setting).
    """
    from ..data.errors import DataError

    if isinstance(method, Method):
        if any(v is not None for v in settings.values()):
            raise DataError("pass settings inside the Method object, not alongside it", field="method")
        return method
    settings = {k: v for k, v in settings.items() if v is not None}
    name = str(method).strip()
    if ":" in name:
        cls, kwargs = ImportedCalculator, {"path": name}
    elif name.lower() in XTB_NAMES:
        cls, kwargs = XTB, {"method": XTB_NAMES[name.lower()]}
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

