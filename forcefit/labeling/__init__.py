"""Labelling engine: starting structures, samplers, reference calculators, resumable campaigns.

Python API (names load lazily, so worker processes that import this package
stay light)::

    from forcefit.labeling import Campaign, label, sample_md

    frames = sample_md("CCO", method="gfn2", temperature=500, steps=2000, every=10, seed=0)
    camp = Campaign("eth.db")            # SQLite file, or a postgresql:// URL
    camp.add(frames)                     # deduplicated; tagged config_type="md_500K"
    label(camp, "gfn2")                  # GFN2-xTB via tblite; resumable
    label(camp, "dft", xc="PBE", basis="def2-svp", select=50, workers=2)
    train_frames = camp.frames("dft")    # forcefit.data.Frame list

Structures: ``from_smiles``, ``read_structures``.
Samplers: ``optimise``, ``sample_md``, ``sample_normal_modes``, ``rattle``.
Selection: ``select`` (random, farthest-point "fps"; "uncertainty" is a hook
that needs per-structure scores from a committee, not built yet).
Methods: ``make_method`` ("gfn2", "gfn1", "ipea1", "dft", "module:factory"),
``XTB`` (module ``xtb``), ``DFT`` (``dft``), ``ImportedCalculator``
(``ase_calculator``), all built on ``Method`` (``method``);
``XTBCalculator`` (``xtb_calculator``) is a fast ASE calculator for sampling.
Campaigns: ``Campaign`` (the ASE-database store, ``campaign``; its layout is
``forcefit.data.campaign_schema``), ``label`` (``runner``: runs it in this
process, on a local process pool, or on a Dask cluster, see ``executors``;
commits results in batches of at most 256 labels or 0.5 s), ``LabelReport``.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "from_smiles": "structures", "read_structures": "structures",
    "optimise": "samplers", "sample_md": "samplers", "sample_normal_modes": "samplers", "rattle": "samplers",
    "make_calculator": "samplers",
    "select": "selection", "descriptors": "selection", "farthest_point": "selection", "select_by_uncertainty": "selection",
    "make_method": "calculators", "XTB": "xtb", "DFT": "dft", "ImportedCalculator": "ase_calculator",
    "XTBCalculator": "xtb_calculator", "Method": "method",
    "Campaign": "campaign",
    "label": "runner", "LabelReport": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'forcefit.labeling' has no attribute '{name}'")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
