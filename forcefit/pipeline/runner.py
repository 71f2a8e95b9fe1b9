"""``run_pipeline(config)``: check every input, write the data once, then run each stage in order.

A stage that finished (its ``stage.json`` exists) is skipped; a stage with a
checkpoint but no ``stage.json`` was killed and resumes from it; the data step
refuses a pipeline folder made from other inputs. Stage folders:
``OUT/data`` (the frames every stage reads), ``OUT/stages/NAME`` (run folders),
``OUT/report.*``.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..atomic_file import atomic_path, write_text_atomic
from ..config import ConfigError, build_config
from ..data import DataError, Frame, read_frames, split_indices, validate_frames
from .config import PipelineConfig, Source
from .stages import ACCURATE_LEVEL, CHEAP_LEVEL, UPSTREAM, StageConfigs, stage_order

DONE = "stage.json"


class Pipeline:
    def __init__(self, cfg: PipelineConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.data_dir = self.out / "data"
        self.stages = stage_order(cfg.recipes)
        self.configs = StageConfigs(cfg, self.data_dir, self.stage_dir)

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name

    # ---- inputs
    def read_source(self, name: str, src: Source) -> list[Frame]:
        frames: list[Frame] = []
        for path in src.files:
            part = read_frames(path, level=src.level)
            if not part:
                raise DataError(f"data.{name}: no frames" + (f" with labels of level '{src.level}'" if src.level else ""),
                                file=str(path), field="level" if src.level else None)
            frames += part
        return frames

    def check_inputs(self) -> dict[str, list[Frame]]:
        """Read every source and check it carries what its recipes need, before any stage runs."""
        frames = {name: self.read_source(name, src) for name, src in self.cfg.sources().items()}
        for name in ("accurate", "accurate_valid", "test"):
            if name in frames:
                validate_frames(frames[name], f"data.{name}", need_energy=False, need_forces=True)
        if "cheap" in frames:
            validate_frames(frames["cheap"], "data.cheap", need_energy=False, need_forces=True)
        if "asteroid-score" in self.cfg.recipes and self.cfg.data.temperature is None:
            untagged = next((f for f in frames.get("unlabelled", []) if f.temperature is None), None)
            if untagged is not None:
                raise DataError("data.unlabelled: the frame has no 'temperature' and data.temperature is not set; "
                                "asteroid-score needs the temperature (K) each frame was sampled at",
                                untagged.source, untagged.index, "temperature")
        return frames

    def _fingerprint(self) -> str:
        """Hash of the inputs (file contents and the data, model and seed settings): a folder belongs to one."""
        h = hashlib.sha256()
        h.update(json.dumps([self.cfg.data.model_dump(), self.cfg.seed], sort_keys=True, default=str).encode())
        for src in self.cfg.sources().values():
            for path in src.files:
                h.update(Path(path).read_bytes())
        return h.hexdigest()[:16]

    def prepare_data(self) -> dict:
        """Split and write the frames every stage reads (once; later runs check they are the same inputs)."""
        info_path = self.data_dir / "data.json"
        for name, src in self.cfg.sources().items():
            for path in src.files:
                if not Path(path).exists():
                    raise DataError(f"data.{name}: file not found", file=str(path))
        fingerprint = self._fingerprint()
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info.get("fingerprint") != fingerprint:
                raise ConfigError(f"{self.out}: this pipeline folder was made from other data or seed; choose another out")
            return info
        frames = self.check_inputs()
        c, seed = self.cfg.data, self.cfg.seed
        accurate = frames["accurate"]
        if "accurate_valid" in frames:
            train, valid = accurate, frames["accurate_valid"]
        else:
            valid_idx, train_idx = split_indices(len(accurate), [c.valid_fraction, None], seed=seed, source="data.accurate")
            train, valid = [accurate[k] for k in train_idx], [accurate[k] for k in valid_idx]
        sets = {"accurate_train": _tagged(train, ACCURATE_LEVEL), "accurate_valid": _tagged(valid, ACCURATE_LEVEL)}
        if "test" in frames:
            sets["test"] = _tagged(frames["test"], ACCURATE_LEVEL)
        if "cheap" in frames:
            cheap = frames["cheap"]
            v_idx, t_idx = split_indices(len(cheap), [c.cheap_valid_fraction, None], seed=seed, source="data.cheap")
            sets["cheap_train"] = _tagged([cheap[k] for k in t_idx], CHEAP_LEVEL)
            sets["cheap_valid"] = _tagged([cheap[k] for k in v_idx], CHEAP_LEVEL)
        if "unlabelled" in frames:
            sets["unlabelled"] = [_unlabelled(f) for f in frames["unlabelled"]]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name, subset in sets.items():
            write_frames(subset, self.data_dir / f"{name}.xyz")
        info = {"fingerprint": fingerprint, "counts": {k: len(v) for k, v in sets.items()},
                "cpu_seconds_per_label": {k: labelling_cost(s) for k, s in self.cfg.sources().items()}}
        write_text_atomic(info_path, json.dumps(info, indent=2))
        return info

    # ---- stages
    def run(self) -> dict:
        info = self.prepare_data()
        self.log(f"pipeline {self.out}: recipes {', '.join(self.cfg.recipes)}; stages {', '.join(self.stages)}")
        for stage in self.stages:
            self.run_stage(stage)
        return info

    def run_stage(self, stage: str) -> dict:
        folder = self.stage_dir(stage)
        done = folder / DONE
        settings = self.stage_settings(stage)
        if done.exists():
            finished = json.loads(done.read_text())
            if finished.get("settings") != settings:
                raise ConfigError(f"stage {stage} in {folder} was run with other settings than this config gives it; "
                                  "delete that stage folder (and the stages after it) to rerun it, or choose another out")
            self.log(f"stage {stage}: done, skipped ({folder})")
            return finished
        start = time.perf_counter()
        if stage == "bias":
            result = self._bias()
        elif stage == "delta":
            self._delta_data()
            result = self._train(stage)
            from ..baseline import attach_baseline

            attach_baseline(folder / "model.pt", self.cfg.delta.method, folder / "model.pt")
        else:
            result = self._train(stage)
        result["seconds"] = time.perf_counter() - start
        result["settings"] = settings
        write_text_atomic(done, json.dumps(result, indent=2))
        return result

    def stage_settings(self, stage: str) -> dict:
        """What a stage's result depends on, beyond the inputs the data step fingerprints: its own settings and
        those of the stage whose output it reads, so a finished stage is not reused on a changed upstream."""
        if stage == "bias":
            settings = json.loads(self.cfg.asteroid.model_dump_json())
        else:
            # relative to the pipeline folder, so a stage copied into another pipeline (a variant sharing θ0) still matches
            text = json.dumps(self.configs.config(stage), default=str).replace(json.dumps(str(self.out))[1:-1], "$OUT")
            settings = json.loads(text)
        if stage == "delta":
            settings["baseline"] = self.cfg.delta.method
        if stage in UPSTREAM:
            settings["upstream"] = self.stage_settings(UPSTREAM[stage])
        return settings

    def _train(self, stage: str) -> dict:
        from ..training.run import train

        folder = self.stage_dir(stage)
        run = build_config(self.configs.config(stage), source=f"stage {stage}")
        resume = (folder / "checkpoints" / "last.ckpt").exists()
        self.log(f"stage {stage}: {'resuming' if resume else 'training'} in {folder}")
        result = train(run, resume=resume)
        return {"stage": stage, "model": str(result.model_path), "metrics": result.metrics}

    def _bias(self) -> dict:
        from ..evaluate import predict
        from ..model_file import load_model
        from .bias import bias_weights, frame_bias, weighted_frames, write_bias_report

        folder = self.stage_dir("bias")
        theta0 = load_model(self.stage_dir("accurate") / "model.pt")
        a = self.cfg.asteroid
        summary = {}
        for part in ("train", "valid"):
            frames = read_frames(self.data_dir / f"cheap_{part}.xyz")
            predicted = predict(theta0, frames)  # one pass gives θ0's forces (the bias) and energies (the labels)
            bias = frame_bias(frames, predicted["forces"])
            weights = bias_weights(bias, a.gamma)
            energies = np.asarray(predicted["energy"], dtype=np.float64) if a.energy == "theta0" else None
            write_frames(weighted_frames(frames, weights, energies, drop_energy=a.energy == "none"), folder / f"cheap_{part}.xyz")
            if part == "train":
                summary = write_bias_report(bias, weights, a.gamma, folder)
        self.log(f"stage bias: b_i mean {summary['bias_mean_eV_per_A'] * 1000:.0f} meV/Å "
                 f"(min {summary['bias_min_eV_per_A'] * 1000:.0f}, max {summary['bias_max_eV_per_A'] * 1000:.0f}); "
                 f"weights {summary['weight_min']:.3g}..{summary['weight_max']:.3g}, effective frames "
                 f"{summary['effective_frames']:.0f} of {summary['frames']}")
        return {"stage": "bias", **summary}

    def _delta_data(self) -> None:
        """Accurate frames with the cheap method's labels subtracted (the Δ model learns the difference)."""
        from ..baseline import subtract_baseline

        folder = self.configs.delta_data_dir()
        for name in ("accurate_train", "accurate_valid", "test"):
            target = folder / f"{name}.xyz"
            if (self.data_dir / f"{name}.xyz").exists() and not target.exists():
                frames = read_frames(self.data_dir / f"{name}.xyz")
                write_frames(subtract_baseline(frames, self.cfg.delta.method), target)


def _tagged(frames: list[Frame], level: str) -> list[Frame]:
    from dataclasses import replace

    return [replace(f, level=level) for f in frames]


def _unlabelled(frame: Frame) -> Frame:
    from dataclasses import replace

    return replace(frame, energy=None, forces=None, level=CHEAP_LEVEL)


def write_frames(frames: list[Frame], path: Path) -> None:
    """Frames as extended XYZ with their labels and tags (weight, level), atomically."""
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, [f.to_atoms() for f in frames], format="extxyz")


def labelling_cost(src: Source) -> float | None:
    """CPU-seconds per label: measured by the campaign the labels came from, else as the config states."""
    if src.cpu_seconds_per_label is not None:
        return src.cpu_seconds_per_label
    for path in src.files:
        if str(path).endswith(".db") and src.level:
            from ..labeling.campaign import Campaign

            try:
                level = Campaign(path, create=False).info()["levels"].get(src.level)
            except Exception:  # not a campaign (a plain ASE database): no measured cost
                continue
            if level and level.get("cpu_mean") is not None:
                return float(level["cpu_mean"])
    return None


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    return Pipeline(cfg, log).run()

