"""Name → class tables whose modules are imported only when a name is chosen (backbones, objectives).

A missing optional piece then fails only for the user who picks it, and the
error lists the names there are.
"""
from __future__ import annotations

import importlib


def resolve(table: dict[str, str], name: str, what: str):
    """The class ``table[name]`` ("package.module:Class"), or a ValueError naming the choices."""
    if name not in table:
        raise ValueError(f"unknown {what} '{name}'; choose one of: {', '.join(sorted(table))}")
    module, cls = table[name].split(":")
    return getattr(importlib.import_module(module), cls)
