"""`simulate.py deploy` / `python -m deploy`: keygen | export-trained | bundle | sign | verify | flash | rollback | build-engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.bundle_builder import build_bundle, sign_bundle
from deploy.flash import flash, rollback, ssh_from_args
from deploy.standins import build_standin_bundle
from deploy.tensorrt_build import EngineSpec, build_bundle_engines, build_engine
from deploy.trained import build_trained_bundle, export_trained
from firmware.bundle_reader import BundleConfig, check_bundle
from obscura import signing
from obscura.command_line import load_config
from obscura.errors import ObscuraError

SUMMARY = "export the trained networks, make, sign and verify bundles, flash a device over SSH, build TensorRT engines"
KEY_HELP = "Ed25519 private key (PEM, from `deploy keygen`) that signs the bundle"


def _add_ssh(parser: argparse.ArgumentParser) -> None:
    """The options that say how to reach the device."""
    parser.add_argument("--target", required=True, help="[user@]host:/install/dir, e.g. pi@camera.local:/opt/obscura")
    parser.add_argument("--port", type=int, help="ssh port")
    parser.add_argument("-i", "--identity", help="ssh private key")
    parser.add_argument("-F", "--ssh-config", help="ssh client configuration file")
    parser.add_argument("-o", "--ssh-option", action="append", default=[], help="extra ssh -o option (repeatable)")
    parser.add_argument(
        "--restart-cmd", help="command that restarts the service on the device (default: systemctl, where systemd runs)"
    )
    parser.add_argument(
        "--break-lock",
        action="store_true",
        help="take over the device's flash lock from a flash on another machine that no longer runs",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `deploy` with its steps as sub-commands."""
    p = subparsers.add_parser("deploy", help=SUMMARY, description=__doc__.splitlines()[0])
    add_subcommands(p.add_subparsers(dest="step", required=True, metavar="STEP"))


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """The deployment steps: keygen, export-trained, bundle, sign, verify, flash, rollback, build-engine."""
    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (PREFIX.key, PREFIX.pub)")
    k.add_argument("prefix", help="path prefix of the two files, e.g. keys/obscura")
    x = sub.add_parser(
        "export-trained", help="export the trained regressor and anonymizer to ONNX, checked on real captures"
    )
    x.add_argument(
        "--stage1", required=True, help="stage-I result the anonymizer was trained on ('weights' or a run folder)"
    )
    x.add_argument("--anonymizer", required=True, help="stage-II anonymizer file (a run's generator_ema.pt)")
    x.add_argument("--out", required=True, help="folder for the ONNX files, latent, PSF and parity report")
    x.add_argument(
        "--latent-seed",
        type=int,
        default=0,
        help="seed of the one latent the camera renders (fixed, so the drawn person is stable across frames)",
    )
    x.add_argument("--faces", help="folder of face images for the parity check (default: the stage-I test split)")
    x.add_argument(
        "--parity-faces", type=int, default=12, help="faces in the parity check (>= 4: batches of 1, 3, rest)"
    )
    x.add_argument("--bundle", help="also make a bundle of the export in this new folder")
    x.add_argument("--version", help="bundle version name (with --bundle; default: UTC time + content hash)")
    x.add_argument("--key", help=f"{KEY_HELP} (with --bundle)")

    b = sub.add_parser("bundle", help="make a versioned bundle from ONNX models")
    b.add_argument("out", help="new bundle folder")
    b.add_argument("--regressor", help="regressor ONNX file")
    b.add_argument("--anonymizer", help="anonymizer ONNX file")
    b.add_argument(
        "--constant",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="a constant anonymizer input (repeatable)",
    )
    b.add_argument("--psf", help="PSF .npy (C x H x W) for simulated sources")
    b.add_argument("--config", help="bundle config YAML (firmware.bundle_reader.BundleConfig)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    b.add_argument("--version", help="version name (default: UTC time + content hash)")
    b.add_argument(
        "--standin",
        type=int,
        metavar="SIZE",
        help="use stand-in models of this input size (until the trained networks exist)",
    )
    b.add_argument("--key", help=KEY_HELP)

    s = sub.add_parser("sign", help="sign an existing bundle (e.g. one export-trained made)")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, help=KEY_HELP)

    v = sub.add_parser("verify", help="verify a bundle's checksums, signature and configuration")
    v.add_argument("bundle")
    v.add_argument("--public-key", help="check the signature against this Ed25519 public key (PEM)")

    f = sub.add_parser("flash", help="copy a bundle to a device over SSH and make it current")
    f.add_argument("bundle")
    _add_ssh(f)
    f.add_argument(
        "--public-key",
        required=True,
        help="the Ed25519 public key (PEM) the bundle must be signed by; installed on the device at its first "
        "flash, and it must match the key the device holds after that",
    )
    f.add_argument("--dry-run", action="store_true", help="check and print the steps; send nothing")
    f.add_argument("--unit-dir", default="/etc/systemd/system", help="where the systemd unit goes on the device")
    f.add_argument("--python", default="/usr/bin/python3", help="the device's Python, written into the unit")

    r = sub.add_parser("rollback", help="make the device's previous version current again")
    _add_ssh(r)

    e = sub.add_parser("build-engine", help="build a TensorRT engine from ONNX (run this on the device)")
    e.add_argument("onnx", nargs="?", help="one ONNX file (with --out)")
    e.add_argument("--out", help="engine file to write")
    e.add_argument("--bundle", help="build an engine for every model of this bundle (with --engine-dir)")
    e.add_argument("--engine-dir", help="where the firmware finds engines (`firmware run --engine-dir`)")
    e.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    e.add_argument("--calibration", help="folder of captures (images) for INT8 calibration")
    e.add_argument("--workspace-mib", type=int, default=1024)
    e.add_argument("--max-batch", type=int, default=1, help="largest batch of the dynamic-batch profile")
    steps = [(k, _keygen), (x, _export_trained), (b, _bundle), (s, _sign), (v, _verify), (f, _flash)]
    for parser, func in [*steps, (r, _rollback), (e, _engine)]:
        parser.set_defaults(func=func)


def _keygen(args: argparse.Namespace) -> int:
    """Make a signing key pair."""
    private, public = f"{args.prefix}.key", f"{args.prefix}.pub"
    key_id = signing.generate_keypair(private, public)
    print(f"key {key_id}: private {private} (keep it off the device), public {public} (the device's trusted key)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    """Sign a bundle."""
    key_id = sign_bundle(args.bundle, args.key)
    print(f"bundle {args.bundle}: signed by key {key_id}")
    return 0


def _export_trained(args: argparse.Namespace) -> int:
    """Export the trained networks (and bundle them)."""
    if args.bundle and Path(args.bundle).exists():
        raise ObscuraError(f"bundle output {args.bundle} already exists; choose a new folder (bundles are immutable)")
    report = export_trained(args.stage1, args.anonymizer, args.out, args.latent_seed, args.faces, args.parity_faces)
    diffs = ", ".join(f"{name} {value:.2e}" for name, value in report["max_abs_diff"].items())
    print(
        f"exported {args.out}: parity on {report['faces']['count']} real captures in batches {report['batch_sizes']}: "
        f"max |ONNX - PyTorch| {diffs} (tolerance {report['tolerance']:g})"
    )
    if args.bundle:
        manifest = build_trained_bundle(args.out, args.bundle, args.version, args.key)
        print(f"bundle {args.bundle}: version {manifest['version']}, {len(manifest['files'])} files")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    """Make a bundle."""
    cfg = load_config(BundleConfig, args)
    if args.standin is not None:
        if args.regressor or args.anonymizer or args.constant:
            raise ObscuraError("--standin replaces --regressor/--anonymizer/--constant; give one or the other")
        if cfg.input_size not in (BundleConfig.input_size, args.standin):
            raise ObscuraError(f"--standin {args.standin} sets input_size; the config asks for {cfg.input_size}")
        manifest = build_standin_bundle(args.out, args.standin, args.psf, args.version, cfg, args.key)
    else:
        models = {role: getattr(args, role) for role in ("regressor", "anonymizer") if getattr(args, role)}
        if not models:
            raise ObscuraError("bundle needs --regressor and/or --anonymizer (or --standin SIZE)")
        constants = {}
        for item in args.constant:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ObscuraError(f"--constant {item!r}: expected NAME=FILE.npy")
            constants[name] = path
        manifest = build_bundle(
            args.out, models, cfg, psf=args.psf, constants=constants, version=args.version, signing_key=args.key
        )
    print(f"bundle {args.out}: version {manifest['version']}, {len(manifest['files'])} files")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Verify a bundle (the device's `firmware check-bundle`)."""
    print(check_bundle(args.bundle, args.public_key))
    return 0


def _flash(args: argparse.Namespace) -> int:
    """Flash a bundle."""
    ssh = ssh_from_args(args.target, args.port, args.identity, args.ssh_config, args.ssh_option)
    version = flash(
        args.bundle,
        ssh,
        args.public_key,
        dry_run=args.dry_run,
        unit_dir=args.unit_dir,
        python=args.python,
        restart_cmd=args.restart_cmd,
        break_lock=args.break_lock,
    )
    print(
        f"{'checked' if args.dry_run else 'flashed'} version {version} {'for' if args.dry_run else 'to'} {args.target}"
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    """Roll back."""
    ssh = ssh_from_args(args.target, args.port, args.identity, args.ssh_config, args.ssh_option)
    rollback(ssh, args.restart_cmd, break_lock=args.break_lock)
    return 0


def _engine(args: argparse.Namespace) -> int:
    """Build a TensorRT engine."""
    calibration = Path(args.calibration) if args.calibration else None
    if args.bundle and args.engine_dir and not (args.onnx or args.out):
        paths = build_bundle_engines(
            Path(args.bundle), Path(args.engine_dir), args.precision, args.workspace_mib, args.max_batch, calibration
        )
    elif args.onnx and args.out and not (args.bundle or args.engine_dir):
        paths = [
            build_engine(
                EngineSpec(
                    Path(args.onnx), Path(args.out), args.precision, args.workspace_mib, args.max_batch, calibration
                )
            )
        ]
    else:
        raise ObscuraError("build-engine takes either ONNX --out ENGINE, or --bundle DIR --engine-dir DIR")
    for path in paths:
        print(f"engine {path}: {args.precision}, built with TensorRT on this device")
    return 0
