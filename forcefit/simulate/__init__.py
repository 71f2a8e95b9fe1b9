"""Simulation: an ASE calculator around a Potential, Langevin MD with a stability watch, h(r) error."""
from .calculator import ForcefitCalculator
from .md import MDResult, rdf_error, run_md, stability_plot

__all__ = ["ForcefitCalculator", "MDResult", "rdf_error", "run_md", "stability_plot"]
