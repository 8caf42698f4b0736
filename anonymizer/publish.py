"""Commit finished runs to weights/ with the manifest: stage I (optic, regressor) and stage II (the anonymizer).

`simulate.py publish --run DIR --command "..." [--report R.json ...] [--attack A.json ...]`
copies a stage-I run's files, its identity splits and its resolved config, and records their
SHA-256, the exact training command, the split, and the metrics reached (training, the
evaluation reports and the adaptive attacker reports given) in weights/manifest.json.
`simulate.py publish --anonymizer-run DIR --command "..." --report R.json ...` does the same for
a stage-II run: its generator_ema.pt becomes weights/anonymizer.pt, stored in float16 (half the
bytes, so the CPU-size networks stay under the 20 MB a committed file may have) and read back as
float32 by `load_anonymizer`. Each publish keeps the other stage's manifest entries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from anonymizer import checkpoint, runs
from obscura import atomic, manifest, paths
from obscura.digest import file_sha256
from obscura.errors import ObscuraError

FILES = (runs.OPTIC, runs.REGRESSOR, runs.ADVERSARY)  # the adversary: stage II's identity-dissimilarity recogniser


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file, or a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ObscuraError(f"{path}: cannot read as JSON ({err})") from None


def evaluation_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation report.json."""
    privacy = {
        name: {k: p[k] for k in ("rank1", "rank1_oracle", "auc", "tar_at_far_1e-3", "chance")}
        for name, p in report["privacy"].items()
    }
    return {
        "data": Path(report["data"]).name,
        "min_images": report["min_images"],
        "split": report["split"],
        "n_identities": report["n_identities"],
        "n_probes": report["n_probes"],
        "privacy": privacy,
        "landmark_nme": report["utility"].get("landmark_nme"),
    }


def attacker_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an adaptive-attacker report.json."""
    return {
        "test": report["test"],
        "n_identities": report["n_identities"],
        "chance": report["chance"],
        **{
            p: {k: report[p][k] for k in ("rank1", "auc", "tar_at_far_1e-3")}
            for p in ("captured_gallery", "clean_gallery", "clean_only")
        },
    }


def adversary_start(run: Path) -> dict[str, str] | None:
    """The recogniser a stage-I run's adversary started from (`adversary.init`) and its SHA-256, or None for a fresh one."""
    init = runs.load_stage1_config(run).adversary.init
    if not init:
        return None
    if not Path(init).is_file():
        raise ObscuraError(
            f"--run {run}: its adversary started from {init}, which is gone; expected the file, so its SHA-256 can be recorded"
        )
    return {"file": init, "sha256": file_sha256(Path(init))}


def publish(run: Path, dest: Path, command: str, reports: list[Path], attacks: list[Path]) -> Path:
    """Copy a stage-I run's optic and regressor into `dest` and write the manifest; returns its path."""
    for name in (*FILES, runs.METRICS, runs.CONFIG):
        if not (run / name).is_file():
            raise ObscuraError(f"--run {run}: {name} not found (expected a finished stage-I output folder)")
    trained = _read_json(run / runs.METRICS)
    for name in FILES:
        atomic.write_bytes(dest / name, (run / name).read_bytes())
    atomic.write_bytes(dest / runs.STAGE1_CONFIG, (run / runs.CONFIG).read_bytes())
    splits = sorted((run / runs.SPLITS).glob("*.txt"))
    for split in splits:
        atomic.write_bytes(dest / runs.SPLITS / split.name, split.read_bytes())
    data = {
        "set": Path(trained["data"]["root"]).name,
        "trained_on_split": runs.TRAIN_SPLIT,
        "split_files": [f"{runs.SPLITS}/{s.name}" for s in splits],
        "resolved_config": runs.STAGE1_CONFIG,
        **trained["data"],
    }
    figures = {
        "training": {
            "steps": trained["steps"],
            "seconds_per_step": trained["seconds_per_step"],
            "device": trained["device"],
            "final": trained["final"],
            "validation": trained.get("validation"),
            "parameters": trained["parameters"],
            "adversary_init": adversary_start(run),
        },
        "evaluation": [evaluation_figures(_read_json(p)) for p in reports],
        "adaptive_attacker": [attacker_figures(_read_json(p)) for p in attacks],
    }
    entries = {name: manifest.entry(dest / name, command, data, figures) for name in FILES}
    return manifest.write(dest, entries, {"about": "stage-I learned optic and heatmap regressor; see docs/stage1.md"})


def anonymizer_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluate-anonymizer report.json."""
    return {
        k: report[k]
        for k in (
            "source",
            "split",
            "n_sources",
            "styles",
            "n_outputs",
            "judge_size",
            "utility",
            "identity_leakage",
            "diversity_sface",
            "realism",
        )
    } | {"data": Path(report["data"]).name}


def half_precision(state: dict[str, Any]) -> dict[str, Any]:
    """A saved anonymizer's network weights in float16 (other entries unchanged)."""

    def half(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: half(v) for k, v in value.items()}
        return value.half() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    return {k: half(v) if isinstance(v, dict) and k not in ("arch", "info") else v for k, v in state.items()}


def publish_anonymizer(run: Path, dest: Path, command: str, reports: list[Path]) -> Path:
    """Store a stage-II run's EMA networks as dest/anonymizer.pt (float16) and add it to the manifest."""
    for name in (runs.GENERATOR_EMA, runs.METRICS, runs.CONFIG):
        if not (run / name).is_file():
            raise ObscuraError(f"--anonymizer-run {run}: {name} not found (expected a finished stage-II output folder)")
    state = checkpoint.load(run / runs.GENERATOR_EMA)
    changed = runs.changed_files(state["info"]["stage1_digest"], dest)
    if changed:
        raise ObscuraError(
            f"--anonymizer-run {run} was trained on another stage I than the one in {dest} (differs in "
            f"{', '.join(changed)}); publish that stage-I run there first"
        )
    state["info"]["stage1"] = (
        runs.STAGE1_WEIGHTS if dest.resolve() == paths.WEIGHTS_DIR.resolve() else str(dest.resolve())
    )
    checkpoint.save(dest / runs.ANONYMIZER, half_precision(state))
    atomic.write_bytes(dest / runs.STAGE2_CONFIG, (run / runs.CONFIG).read_bytes())
    trained = _read_json(run / runs.METRICS)
    data = {
        **trained["data"],
        "trained_on_split": runs.TRAIN_SPLIT,
        "split_files": [runs.TRAIN_SPLIT, runs.TEST_SPLIT],
        "resolved_config": runs.STAGE2_CONFIG,
        "stored_as": "float16",
    }
    figures = {
        "training": {
            k: trained.get(k)
            for k in ("steps", "seconds_per_step", "device", "final", "parameters", "identity_embedder")
        },
        "evaluation": [anonymizer_figures(_read_json(p)) for p in reports],
    }
    entry = manifest.entry(dest / runs.ANONYMIZER, command, data, figures)
    return manifest.write(
        dest, {runs.ANONYMIZER: entry}, {"about_anonymizer": "stage-II StarGAN-v2 anonymizer; see docs/stage2.md"}
    )
