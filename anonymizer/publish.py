"""Commit a finished stage-I run as the project's learned optic: weights/optic.npz + regressor.pt + manifest.

`python -m anonymizer.publish --run DIR --command "..." [--report R.json ...] [--attack A.json ...]`
copies the two files, the run's identity splits and its resolved config beside them, and writes
weights/manifest.json with their SHA-256, the exact training command, the split, and the
metrics reached (training, the evaluation reports and the adaptive attacker reports given).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from obscura import atomic, manifest
from obscura.errors import ObscuraError

FILES = ("optic.npz", "regressor.pt", "adversary.pt")  # the adversary: stage II's identity-dissimilarity recogniser


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file, or a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ObscuraError(f"{path}: cannot read as JSON ({err})") from None


def evaluation_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation report.json."""
    privacy = {name: {k: p[k] for k in ("rank1", "rank1_oracle", "auc", "tar_at_far_1e-3", "chance")} for name, p in report["privacy"].items()}
    return {"data": Path(report["data"]).name, "min_images": report["min_images"], "split": report["split"],
            "n_identities": report["n_identities"], "n_probes": report["n_probes"], "privacy": privacy,
            "landmark_nme": report["utility"].get("landmark_nme")}


def attacker_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an adaptive-attacker report.json."""
    return {"test": report["test"], "n_identities": report["n_identities"], "chance": report["chance"],
            **{p: {k: report[p][k] for k in ("rank1", "auc", "tar_at_far_1e-3")} for p in ("captured_gallery", "clean_gallery", "clean_only")}}


def publish(run: Path, dest: Path, command: str, reports: list[Path], attacks: list[Path]) -> Path:
    """Copy a stage-I run's optic and regressor into `dest` and write the manifest; returns its path."""
    for name in (*FILES, "metrics.json", "config.yaml"):
        if not (run / name).is_file():
            raise ObscuraError(f"--run {run}: {name} not found (expected a finished stage-I output folder)")
    trained = _read_json(run / "metrics.json")
    for name in FILES:
        atomic.write_bytes(dest / name, (run / name).read_bytes())
    atomic.write_bytes(dest / "stage1_config.yaml", (run / "config.yaml").read_bytes())
    splits = sorted((run / "splits").glob("*.txt"))
    for split in splits:
        atomic.write_bytes(dest / "splits" / split.name, split.read_bytes())
    data = {"set": Path(trained["data"]["root"]).name, "trained_on_split": "splits/train.txt",
            "split_files": [f"splits/{s.name}" for s in splits], "resolved_config": "stage1_config.yaml", **trained["data"]}
    figures = {
        "training": {"steps": trained["steps"], "seconds_per_step": trained["seconds_per_step"], "device": trained["device"],
                     "final": trained["final"], "validation": trained.get("validation"), "parameters": trained["parameters"]},
        "evaluation": [evaluation_figures(_read_json(p)) for p in reports],
        "adaptive_attacker": [attacker_figures(_read_json(p)) for p in attacks],
    }
    entries = {name: manifest.entry(dest / name, command, data, figures) for name in FILES}
    return manifest.write(dest, entries, {"about": "stage-I learned optic and heatmap regressor; see docs/stage1.md"})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: publish a run into weights/."""
    from obscura.cli import run_reporting_errors
    from obscura.paths import WEIGHTS_DIR

    p = argparse.ArgumentParser(prog="python -m anonymizer.publish", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="finished stage-I output folder")
    p.add_argument("--command", required=True, help="the exact command that trained the run (recorded in the manifest)")
    p.add_argument("--report", action="append", default=[], type=Path, help="evaluation report.json of the run (repeatable)")
    p.add_argument("--attack", action="append", default=[], type=Path, help="adaptive-attacker report.json of the run (repeatable)")
    p.add_argument("--dest", type=Path, default=WEIGHTS_DIR, help="destination folder (default: weights/)")
    args = p.parse_args(argv)
    return run_reporting_errors("anonymizer.publish", lambda: print(publish(args.run, args.dest, args.command, args.report, args.attack)))


if __name__ == "__main__":
    raise SystemExit(main())
