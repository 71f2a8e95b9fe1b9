"""Models that ship inside the package, named instead of pathed (``--init organic-gfn2``).

A shipped model is a plain forcefit model file beside a JSON model card
(what it was trained on, its elements, size and validation errors, how to
rebuild it). Names resolve to files here, so they load on CPU with no
download. ``benchmarks/pretrain_shipped.py`` builds them; ``docs/pretrained.md``
is made from the cards.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = ("organic-gfn2",)


def model_path(name: str) -> Path:
    """The file of the shipped model ``name``; a name the package lists but whose file is missing is an error."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped model '{name}' (shipped: {', '.join(SHIPPED)})")
    path = HERE / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"the shipped model '{name}' is not in this installation ({path} is missing); "
                                "rebuild it with benchmarks/pretrain_shipped.py")
    return path


def card(name: str) -> dict:
    """The model card of a shipped model (``{name}.json`` beside its file)."""
    model_path(name)
    return json.loads((HERE / f"{name}.json").read_text())


def resolve(path_or_name: str | Path) -> Path:
    """A model file path, or the file of a shipped model when the argument is one's name and no such file exists."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in SHIPPED:
        return model_path(str(path_or_name))
    return path
