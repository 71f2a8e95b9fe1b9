"""Optional dependency groups (pip extras) and the one-line error for a missing one.

Training, evaluation and MD need only the core dependencies. The labelling
engine's reference methods and samplers need ``forcefit[label]`` (tblite,
PySCF, RDKit) and Dask clusters need ``forcefit[dask]``. Those packages are
imported inside the functions that use them, so a missing one shows up as
an ImportError at the point of use; ``MissingExtra`` turns that into a
sentence that says what to install.
"""
from __future__ import annotations

import importlib

EXTRA_OF = {"tblite": "label", "pyscf": "label", "rdkit": "label", "dask": "dask", "distributed": "dask"}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the pip extra that brings it."""

    def __init__(self, package: str, purpose: str | None = None):
        extra = EXTRA_OF.get(package)
        hint = f"install forcefit[{extra}] for this command" if extra else f"pip install {package}"
        who = f"{purpose} needs" if purpose else "needs"
        super().__init__(f"{who} the '{package}' package, which is not installed: {hint}", name=package)
        self.package, self.extra = package, extra


def require(module: str, purpose: str | None = None) -> None:
    """Import ``module`` or raise MissingExtra naming its package and extra."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module.split(".")[0], purpose) from exc


def as_missing_extra(exc: ImportError) -> MissingExtra | None:
    """The MissingExtra behind an ImportError of one of the extras' packages (None for any other import error)."""
    if isinstance(exc, MissingExtra):
        return exc
    package = (getattr(exc, "name", None) or "").split(".")[0]
    return MissingExtra(package) if package in EXTRA_OF else None
