"""`train-optics` (stage I), `train-anonymizer` (stage II) and `publish` (a finished run into weights/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from anonymizer import publish
from anonymizer.stage1 import stage1_train
from anonymizer.stage1.stage1_config import Stage1Config
from anonymizer.stage2 import stage2_train
from anonymizer.stage2.stage2_config import Stage2Config
from obscura import paths
from obscura.command_line import add_config_options, load_config
from obscura.errors import ObscuraError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-optics`, `train-anonymizer` and `publish` sub-commands."""
    p = subparsers.add_parser(
        "train-optics",
        help="learn the privacy-preserving optic with the face-heatmap regressor (stage I)",
        description="Learn the phase optic jointly with the face-heatmap regressor against an identity adversary "
        "(stage I). Resumes from the newest readable checkpoint in OUT/checkpoints.",
    )
    add_config_options(
        p,
        "stage-I YAML config (e.g. configs/stage1_cpu.yaml)",
        "output folder (checkpoints, optic.npz, regressor.pt, metrics, PNGs)",
        config_required=True,
    )
    p.set_defaults(func=run_train_optics)
    s = subparsers.add_parser(
        "train-anonymizer",
        help="train the StarGAN-v2 anonymizer on a stage-I optic's captures (stage II)",
        description="Train the StarGAN-v2 anonymizer (generator, mapping network, style encoder, discriminator) on captures "
        "of the frozen stage-I camera and heatmaps of its regressor (stage II). Resumes from OUT/checkpoints.",
    )
    add_config_options(
        s,
        "stage-II YAML config (e.g. configs/stage2_cpu.yaml)",
        "output folder (checkpoints, generator_ema.pt, metrics, PNGs)",
        config_required=True,
    )
    s.set_defaults(func=run_train_anonymizer)
    w = subparsers.add_parser(
        "publish",
        help="commit a finished stage-I or stage-II run to weights/ with its manifest",
        description=publish.__doc__.splitlines()[0],
    )
    which = w.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="finished stage-I output folder")
    which.add_argument(
        "--anonymizer-run", type=Path, help="finished stage-II output folder (trained on the stage I in --dest)"
    )
    w.add_argument("--command", required=True, help="the exact command that trained the run (recorded in the manifest)")
    w.add_argument(
        "--report",
        action="append",
        default=[],
        type=Path,
        help="evaluate (stage I) or evaluate-anonymizer (stage II) report.json of the run (repeatable)",
    )
    w.add_argument(
        "--attack", action="append", default=[], type=Path, help="adaptive-attacker report.json of the run (repeatable)"
    )
    w.add_argument("--dest", type=Path, help="destination folder (default: weights/)")
    w.set_defaults(func=run_publish)


def run_train_optics(args: argparse.Namespace) -> int:
    """Load and validate the configuration, then train (or resume) and print a one-line summary."""
    metrics = stage1_train.train(load_config(Stage1Config, args), args.out)
    if metrics:
        final = metrics.get("final", {})
        val = metrics.get("validation", {})
        print(
            f"stage I: {metrics['steps']} steps ({metrics['steps_this_run']} this run, "
            f"{metrics['seconds_this_run']:.0f} s on {metrics['device']}); heatmap loss {final.get('heatmap_loss', float('nan')):.4f}, "
            f"identity information {final.get('identity_information', float('nan')):.3f} nats, "
            f"adversary top-1 {final.get('adversary_accuracy', float('nan')):.2f}, val NME {val.get('val_nme', float('nan')):.3f}; "
            f"outputs in {args.out}"
        )
    return 0


def run_train_anonymizer(args: argparse.Namespace) -> int:
    """Load and validate the stage-II configuration, then train (or resume) and print a one-line summary."""
    metrics = stage2_train.train(load_config(Stage2Config, args), args.out)
    if metrics:
        final = metrics.get("final", {})
        print(
            f"stage II: {metrics['steps']} steps ({metrics['steps_this_run']} this run, {metrics['seconds_this_run']:.0f} s on "
            f"{metrics['device']}); generator adversarial {final.get('g_adv', float('nan')):.3f}, cycle {final.get('g_cycle', float('nan')):.3f}, "
            f"heatmap {final.get('g_heatmap', float('nan')):.4f}, identity cosine {final.get('identity_cosine', float('nan')):.2f}; "
            f"outputs in {args.out}"
        )
    return 0


def run_publish(args: argparse.Namespace) -> int:
    """Publish a stage-I or stage-II run into --dest (default weights/) and print the manifest's path."""
    dest = args.dest or paths.WEIGHTS_DIR
    if args.anonymizer_run and args.attack:
        raise ObscuraError("--attack reports belong to a stage-I --run, not to --anonymizer-run")
    if args.anonymizer_run:
        print(publish.publish_anonymizer(args.anonymizer_run, dest, args.command, args.report))
    else:
        print(publish.publish(args.run, dest, args.command, args.report, args.attack))
    return 0
