"""`simulate.py train-optics`: stage I (optic + heatmap regressor against an identity adversary).

Heavy imports (torch, cv2, dlib) happen inside the handler so `--help` stays fast.
"""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-optics` sub-command."""
    p = subparsers.add_parser(
        "train-optics",
        help="learn the privacy-preserving optic with the face-heatmap regressor (stage I)",
        description="Learn the phase optic jointly with the face-heatmap regressor against an identity adversary "
        "(stage I). Resumes from the newest readable checkpoint in OUT/checkpoints.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="stage-I YAML config (e.g. configs/stage1_cpu.yaml)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (checkpoints, optic.npz, regressor.pt, metrics, PNGs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.steps=10 (repeatable)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Load and validate the configuration, then train (or resume) and print a one-line summary."""
    from anonymizer.stage1 import train
    from anonymizer.stage1_config import load_config
    from obscura import config

    cfg = load_config(args.config, config.parse_overrides(args.set))
    metrics = train(cfg, args.out)
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
