"""`simulate.py train-optics` / `attack-optic` (stage I) and `train-anonymizer` (stage II).

Heavy imports (torch, cv2, dlib) happen inside the handler so `--help` stays fast.
"""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-optics`, `attack-optic` and `train-anonymizer` sub-commands."""
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
    a = subparsers.add_parser(
        "attack-optic",
        help="fine-tune a recogniser on a stage-I optic's captures and judge it on unseen identities (adaptive attacker)",
        description="The adaptive attacker of a stage-I optic: fine-tune the run's adversary on captures of its training "
        "identities, then report rank-1 and verification on identities it never saw. Resumes from OUT/checkpoints.",
    )
    a.add_argument("--run", required=True, metavar="DIR", help="stage-I output folder (config.yaml, optic.npz, adversary.pt)")
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (report.json, attacker.pt, PNG, checkpoints)")
    a.add_argument("--test-data", metavar="DIR", help="judge on this face folder instead of the run's test split")
    a.add_argument("--config", metavar="FILE", help="YAML/JSON file of attacker settings")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. steps=500 (repeatable)")
    a.set_defaults(func=run_attack)
    s = subparsers.add_parser(
        "train-anonymizer",
        help="train the StarGAN-v2 anonymizer on a stage-I optic's captures (stage II)",
        description="Train the StarGAN-v2 anonymizer (generator, mapping network, style encoder, discriminator) on captures "
        "of the frozen stage-I camera and heatmaps of its regressor (stage II). Resumes from OUT/checkpoints.",
    )
    s.add_argument("--config", required=True, metavar="FILE", help="stage-II YAML config (e.g. configs/stage2_cpu.yaml)")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (checkpoints, generator_ema.pt, metrics, PNGs)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.steps=10 (repeatable)")
    s.set_defaults(func=run_train_anonymizer)


def run_train(args: argparse.Namespace) -> int:
    """Load and validate the configuration, then train (or resume) and print a one-line summary."""
    from anonymizer.stage1.stage1_train import train
    from anonymizer.stage1.stage1_config import load_config
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


def run_attack(args: argparse.Namespace) -> int:
    """Fine-tune and judge the adaptive attacker; print its figures on the unseen identities."""
    from evaluation.attacks.adaptive_recogniser import PROTOCOLS, AttackConfig, run
    from obscura import config

    overrides = config.parse_overrides(args.set)
    overrides.update({k: v for k, v in (("run", args.run), ("out", args.out), ("test_data", args.test_data)) if v is not None})
    result = run(config.load(AttackConfig, args.config, overrides))
    print(f"adaptive attacker on {result['n_identities']} unseen identities, {result['n_probes']} probes "
          f"(chance {result['chance']:.4f}, {result['seconds']} s); report in {args.out}/report.json")
    for name in PROTOCOLS:
        r = result[name]
        print(f"  {name}: rank-1 {r['rank1']:.3f}, AUC {r['auc']:.3f}, TAR@FAR=1e-3 {r['tar_at_far_1e-3']:.3f}")
    return 0


def run_train_anonymizer(args: argparse.Namespace) -> int:
    """Load and validate the stage-II configuration, then train (or resume) and print a one-line summary."""
    from anonymizer.stage2.stage2_train import train
    from anonymizer.stage2.stage2_config import load_config
    from obscura import config

    cfg = load_config(args.config, config.parse_overrides(args.set))
    metrics = train(cfg, args.out)
    if metrics:
        final = metrics.get("final", {})
        print(
            f"stage II: {metrics['steps']} steps ({metrics['steps_this_run']} this run, {metrics['seconds_this_run']:.0f} s on "
            f"{metrics['device']}); generator adversarial {final.get('g_adv', float('nan')):.3f}, cycle {final.get('g_cycle', float('nan')):.3f}, "
            f"heatmap {final.get('g_heatmap', float('nan')):.4f}, identity cosine {final.get('identity_cosine', float('nan')):.2f}; "
            f"outputs in {args.out}"
        )
    return 0
