"""Fine-tuning from a forcefit model file: carry the weights over, add species and levels, refit the energy offsets.

Why the refit: levels of theory differ by large energy offsets (GFN2-xTB total
energy of acetylacetone is about −620 eV, DFT about −9390 eV). A model file's
E0s belong to its own level, so the first fine-tuning step would see errors of
hundreds of eV per structure and blow the weights away. The network's own
prediction is kept and only the per-element offsets are refitted, by least
squares of (label − network energy) on the new training frames, so the first
step starts from the right energy. The scale stays the model file's: the
network's forces are in that unit.
"""
from __future__ import annotations

import torch
from ase.data import chemical_symbols

from ..config import ConfigError, FinetuneConfig
from ..data import batch_from_frames
from ..data.reference_energies import e0s_least_squares
from ..model_file import load_model, read_model_file


def init_architecture(cfg: FinetuneConfig, species: list[int], levels: list[str], default_level: str) -> dict:
    """The architecture of the fine-tuning model: the file's backbone with this run's species and levels.

    Refuses new elements when ``new_species: refuse``.
    """
    payload = read_model_file(cfg.init)
    if payload.get("baseline"):
        raise ConfigError(f"{cfg.init}: a Δ model (it adds {payload['baseline'].get('method')} to its predictions); "
                          "fine-tuning would drop that baseline. Train on labels minus the baseline "
                          "(forcefit.baseline.subtract_baseline) with --init and attach it again (attach_baseline)")
    source = payload["architecture"]
    new = sorted(set(species) - set(source["species"]))
    if new and cfg.new_species == "refuse":
        names = ", ".join(chemical_symbols[z] for z in new)
        raise ConfigError(f"{cfg.init}: the training data contain element(s) {names} that this model file does not know "
                          f"(it knows {', '.join(chemical_symbols[z] for z in source['species'])}); "
                          "use finetune.new_species: add to give them new embeddings")
    architecture = {k: v for k, v in source.items() if k not in ("e0s", "shift", "levels", "default_level", "aux_heads")}
    architecture.update(species=sorted(set(source["species"]) | set(species)), levels=levels, default_level=default_level)
    return architecture


def transfer_weights(target: torch.nn.Module, cfg: FinetuneConfig) -> list[str]:
    """Copy the file's weights into ``target`` (same backbone, maybe more species and other levels).

    Species-indexed parameters copy the rows of the species the file knows (new
    species keep their fresh initialisation); each energy head copies the file's
    head of the same level, else the file's default level; with ``readout: reinit``
    the energy readout keeps its fresh initialisation instead. Returns notes for the log.
    """
    source = load_model(cfg.init)
    backbone = target.backbone
    species_dims = backbone.species_parameters()
    head_dims = backbone.energy_head_parameters()
    src_rows = {z: k for k, z in enumerate(source.species)}
    tgt_state = backbone.state_dict()
    src_state = source.backbone.state_dict()
    head_source = [source.levels.index(lv) if lv in source.levels else source.levels.index(source.default_level)
                   for lv in target.levels]
    fresh_readout = tuple(backbone.READOUT_PREFIXES) if cfg.readout == "reinit" else ()
    new_state = {}
    for name, value in tgt_state.items():
        if fresh_readout and name.startswith(fresh_readout):
            new_state[name] = value
            continue
        if name not in src_state:
            raise ConfigError(f"{cfg.init}: the model file has no weights for {name}")
        old = src_state[name].to(value.dtype)
        if name in species_dims:
            dim, block = species_dims[name]
            value = value.clone()
            for k, z in enumerate(target.species):
                if z in src_rows:
                    j = src_rows[z]
                    value.narrow(dim, k * block, block).copy_(old.narrow(dim, j * block, block))
        elif name in head_dims:
            value = old.index_select(head_dims[name], torch.tensor(head_source))
        else:
            if old.shape != value.shape:
                raise ConfigError(f"{cfg.init}: weights {name} have shape {tuple(old.shape)}, the fine-tuning model needs {tuple(value.shape)}")
            value = old
        new_state[name] = value
    backbone.load_state_dict(new_state)
    target.scale.copy_(source.scale)
    notes = [f"fine-tuning from {cfg.init} (mode {cfg.mode}" + (", energy readout re-initialised)" if fresh_readout else ")")]
    added = [chemical_symbols[z] for z in target.species if z not in src_rows]
    if added:
        notes.append(f"new element(s) {', '.join(added)}: new embeddings")
    for lv, k in zip(target.levels, head_source):
        if lv != source.levels[k] and not fresh_readout:
            notes.append(f"level '{lv}': energy head starts from the file's '{source.levels[k]}' head")
    _copy_offsets(target, source)
    return notes


def _copy_offsets(target, source) -> None:
    """E0s and shift from the file, per level as the heads were copied (used when the refit is off)."""
    with torch.no_grad():
        for t, lv in enumerate(target.levels):
            s = source.levels.index(lv) if lv in source.levels else source.levels.index(source.default_level)
            target.shift[t] = source.shift[s]
            for k, z in enumerate(target.species):
                if z in source.species:
                    target.e0[t, k] = source.e0[s, source.species.index(z)]


@torch.no_grad()
def refit_energy_offsets(potential: torch.nn.Module, frames: list, multi_level: bool, batch_size: int = 64) -> dict[str, dict[int, float]]:
    """Per level with energy labels, E0s such that label ≈ network energy + Σ E0 on ``frames`` (shift folded into them).

    Writes them into ``potential`` (that level's shift set to zero) and returns them;
    levels without labelled frames keep their offsets.
    """
    was_training = potential.training
    potential.eval()
    dtype = next(potential.parameters()).dtype
    levels = potential.levels if multi_level else None
    network = []  # the prediction without the offsets
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        batch = batch_from_frames(chunk, potential.cutoff, dtype, levels=levels)
        energy = potential(batch, compute_forces=False)["energy"].double()
        for k, frame in enumerate(chunk):
            t = potential.levels.index(frame.level) if multi_level else potential.levels.index(potential.default_level)
            z = potential.z_to_index[torch.as_tensor(frame.numbers)]
            offsets = potential.e0[t, z].double().sum() + potential.shift[t].double() * frame.n_atoms
            network.append(float(energy[k] - offsets))
    result = {}
    for t, level in enumerate(potential.levels):
        idx = [k for k, f in enumerate(frames) if (f.level == level or not multi_level) and f.energy is not None]
        if not idx:
            continue
        e0s = e0s_least_squares([frames[k] for k in idx], potential.species, [frames[k].energy - network[k] for k in idx])
        for k, z in enumerate(potential.species):
            potential.e0[t, k] = e0s[z]
        potential.shift[t] = 0.0
        result[level] = e0s
    potential.train(was_training)
    return result


def parameter_groups(potential: torch.nn.Module, cfg: FinetuneConfig | None) -> list[dict]:
    """Optimiser groups: everything at lr factor 1, or the backbone frozen / at ``backbone_lr`` (energy readout and
    auxiliary heads always train at the full rate)."""
    if cfg is None or cfg.mode == "all":
        return [{"params": [p for p in potential.parameters() if p.requires_grad], "lr_factor": 1.0}]
    prefixes = tuple(f"backbone.{p}" for p in potential.backbone.READOUT_PREFIXES)
    body, heads = [], []
    for name, param in potential.named_parameters():
        (body if name.startswith("backbone.") and not name.startswith(prefixes) else heads).append(param)
    if cfg.mode == "freeze-backbone":
        for param in body:
            param.requires_grad_(False)
        return [{"params": heads, "lr_factor": 1.0}]
    return [{"params": heads, "lr_factor": 1.0}, {"params": body, "lr_factor": cfg.backbone_lr}]
