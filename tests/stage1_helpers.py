"""A tiny real stage-I configuration and its command-line runner, shared by the tests that need a trained run."""

from __future__ import annotations

import argparse
import json

from anonymizer import training_commands

TINY = {
    "data.max_identities": 3,
    "data.max_images_per_identity": 3,
    "data.image_size": 64,
    "data.val_images": 4,
    "camera.optic.pupil_samples": 96,
    "camera.optic.psf_size": 32,
    "camera.optic.mask.num_terms": 36,  # low orders only: a 96-sample pupil resolves them
    "camera.optic.spectrum.samples_per_channel": 1,
    "regressor.base_channels": 8,
    "regressor.depth": 3,
    "regressor.max_channels": 32,
    "adversary.width": 8,
    "train.steps": 3,
    "train.batch_size": 4,
    "train.checkpoint_every": 1,
    "train.log_every": 1,
    "train.warmup_steps": 1,
    "train.threads": 1,
    "train.progress": False,
    "train.device": "cpu",
}


def train_cli(overrides: dict, out, **more) -> int:
    """Run the train-optics handler through an argparse parser built with training_commands.register."""
    parser = argparse.ArgumentParser()
    training_commands.register(parser.add_subparsers())
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in {**overrides, **more}.items()]
    args = parser.parse_args(
        ["train-optics", "--config", str(empty_config(out)), "--out", str(out), *sum((["--set", s] for s in sets), [])]
    )
    return args.func(args)


def empty_config(out):
    """A config file holding only a comment (everything comes from --set)."""
    path = out.parent / f"{out.name}.yaml"
    path.write_text("# tiny test configuration: all keys are set on the command line\n")
    return path
