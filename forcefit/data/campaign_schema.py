"""The layout of a labelling campaign database, in one place.

The labelling engine writes campaigns (``forcefit.labeling.campaign``) and
the data layer reads them back as frames (``forcefit.data.campaign``); both
take every key name from here, so the writer and the reader cannot drift
apart. The data layer never imports the labelling engine; the engine
imports this.

- metadata: ``forcefit_campaign: True``, ``schema: 1``, ``levels: {name: settings}``
  (the method settings that define each level: method, functional, basis, ...).
- one row per structure (deduplicated by a hash of numbers, positions, cell,
  pbc, charge and spin), key-value pairs ``config_type`` (the structure's
  tag), ``structure_hash``, optional ``weight`` and ``equilibrium``, sampler
  details, and per level ``L``: ``has_L = 1`` once labelled, ``cost_L``
  (CPU seconds of the label), ``failed_L`` (failed attempts: 1 = retry
  pending, ``MAX_ATTEMPTS`` = given up), ``sel_L = 1`` when chosen for a
  ``--select`` subset.
- ``row.data["label.L"]``: energy (eV), forces (eV/Å), optional charges (e)
  and dipole (e·Å), cpu_seconds, wall_seconds, attempt, safer, host;
  ``row.data["failures.L"]``: one record per failed attempt with its error text.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from .errors import DataError

SCHEMA = 1
MARKER = "forcefit_campaign"  # metadata key that makes an ASE database a campaign
LEVELS = "levels"  # metadata key: level name -> method settings
MAX_ATTEMPTS = 2  # the first try and one retry with safer settings; failed_L reaching it means given up
_LEVEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


class LevelKeys(NamedTuple):
    """The key names one level of theory ``L`` uses in a row."""

    has: str  # key-value pair: 1 once labelled
    cost: str  # key-value pair: CPU seconds of the label
    failed: str  # key-value pair: failed attempts so far
    selected: str  # key-value pair: 1 when chosen for a --select subset
    label: str  # row.data entry: the label
    failures: str  # row.data entry: the failed attempts


def level_keys(level: str) -> LevelKeys:
    """Key names of ``level`` in a campaign row."""
    return LevelKeys(f"has_{level}", f"cost_{level}", f"failed_{level}", f"sel_{level}", f"label.{level}", f"failures.{level}")


def check_level_name(level: str) -> str:
    """Level names become database keys: letters, digits and underscores, starting with a letter."""
    if not isinstance(level, str) or not _LEVEL.match(level):
        raise DataError(f"level name '{level}' must start with a letter and contain only letters, digits and '_'", field="level")
    return level


def is_campaign(metadata: dict) -> bool:
    """Whether an ASE database's metadata marks it as a forcefit campaign."""
    return bool(metadata.get(MARKER, False))


def new_metadata() -> dict:
    """The metadata of an empty campaign."""
    return {MARKER: True, "schema": SCHEMA, LEVELS: {}}
