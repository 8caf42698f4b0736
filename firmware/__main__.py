"""python -m firmware run --source URI --sink URI [--bundle DIR] | check-bundle DIR."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from pathlib import Path

from firmware.bundle_reader import check_bundle
from firmware.inference_stages import load_stages
from firmware.pipeline import Pipeline
from firmware.sinks import build_sink
from firmware.sources import open_source, parse_uri
from firmware.stream_metrics import Metrics
from obscura.command_line import dispatch
from obscura.errors import ObscuraError


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; bad input is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m firmware", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="stream de-identified frames from a source to sinks")
    run.add_argument(
        "--source",
        help="picam://0, csi://0, v4l2:///dev/video0, file://PATH, sim://FOLDER?psf=FILE (default: the bundle's)",
    )
    run.add_argument(
        "--sink",
        action="append",
        default=[],
        help="http://HOST:PORT/?token_file=F, file://OUT, "
        "rtp://HOST:PORT, rtsp://HOST:PORT/PATH; repeatable (default: the bundle's); "
        "allow_raw_frames=true lets a sink receive frames that are not de-identified",
    )
    run.add_argument(
        "--bundle",
        help="verified bundle folder with the models (without one, only sim:// captures or sinks with "
        "allow_raw_frames=true get frames)",
    )
    run.add_argument(
        "--public-key", help="the bundle must be signed by this Ed25519 public key (PEM; the device's trusted key)"
    )
    run.add_argument(
        "--engine-dir",
        help="TensorRT engines built on this device by `python -m deploy build-engine "
        "--bundle` (used where one matches a model; otherwise onnxruntime)",
    )
    run.add_argument("--queue-size", type=int, default=2, help="frames held between stages (oldest dropped)")
    run.add_argument(
        "--stall-timeout", type=float, default=3.0, help="seconds without a frame before the source is restarted"
    )
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until SIGTERM)")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-bundle", help="verify a bundle's checksums, signature and configuration")
    check.add_argument("bundle")
    check.add_argument("--public-key", help="check the bundle's signature against this Ed25519 public key (PEM)")
    check.set_defaults(func=_check)
    return dispatch(parser, argv, "firmware")


def _check(args: argparse.Namespace) -> int:
    """Verify a bundle and print its version and what it can de-identify."""
    print(check_bundle(args.bundle, args.public_key))
    return 0


def _run(args: argparse.Namespace) -> int:
    """Build source, stages and sinks; run until the duration ends or SIGTERM/SIGINT."""
    if not isinstance(logging.getLevelName(args.log_level.upper()), int):
        raise ObscuraError(f"--log-level {args.log_level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if not args.stall_timeout > 0 or not math.isfinite(args.stall_timeout):
        raise ObscuraError(f"--stall-timeout {args.stall_timeout}: expected a number of seconds > 0")
    if not args.duration >= 0 or not math.isfinite(args.duration):
        raise ObscuraError(f"--duration {args.duration}: expected seconds >= 0 (0 = until SIGTERM)")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    regressor = anonymizer = None
    stand_in = False
    source_uri, sink_uris = args.source, args.sink
    log = logging.getLogger("firmware")
    if args.bundle:
        regressor, anonymizer, cfg = load_stages(args.bundle, engine_dir=args.engine_dir, public_key=args.public_key)
        source_uri = _with_bundle_psf(source_uri or cfg.source, args.bundle, cfg.psf)
        sink_uris = sink_uris or cfg.sinks
        stand_in = cfg.stand_in
        if cfg.stand_in:
            log.warning("bundle %s holds stand-in models, not the trained networks", args.bundle)
    elif args.public_key:
        raise ObscuraError("--public-key checks a bundle's signature; give the --bundle it must have signed")
    else:
        log.warning("no --bundle: no regressor and no anonymizer; only optical captures may be streamed")
    if not source_uri or not sink_uris:
        raise ObscuraError("run needs --source and at least one --sink (or a --bundle whose config names them)")
    if args.queue_size < 1:
        raise ObscuraError(f"--queue-size {args.queue_size}: expected >= 1")
    parse_uri(source_uri)
    source = open_source(source_uri)  # builds (without opening) to check the URI and its files now
    metrics = Metrics(source_uri)
    sinks = [build_sink(uri, metrics.snapshot) for uri in sink_uris]
    pipeline = Pipeline(
        lambda: open_source(source_uri),
        sinks,
        regressor,
        anonymizer,
        metrics,
        queue_size=args.queue_size,
        stall_timeout_s=args.stall_timeout,
        stand_in=stand_in,
    )
    for uri, sink in zip(sink_uris, sinks):
        if pipeline.withholds(sink, source.optical):
            raise ObscuraError(_raw_frames_refusal(uri, source_uri, sink.stream, args.bundle, anonymizer, stand_in))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    pipeline.start()
    for sink in sinks:
        if hasattr(sink, "url"):
            log.info("viewer: %s/?token=<token>", sink.url)
    done.wait(args.duration or None)
    pipeline.stop()
    print(json.dumps(metrics.snapshot(), sort_keys=True))
    return 0


def _raw_frames_refusal(
    sink_uri: str, source_uri: str, stream: str, bundle: str | None, anonymizer: object, stand_in: bool
) -> str:
    """Why a sink would get frames that are not de-identified, and what would allow it."""
    if stream == "capture":
        why = "stream=capture sends the camera's frame"
    elif bundle is None:
        why = "without --bundle nothing de-identifies the frames"
    elif anonymizer is None:
        why = f"bundle {bundle} has no anonymizer"
    else:
        why = f"bundle {bundle} holds stand-in models (stand_in: true), which do not de-identify"
    return (
        f"sink {sink_uri}: {why}, and source {source_uri} is not known to image through the optic (only sim:// is); "
        "refusing to stream raw frames (add allow_raw_frames=true to the sink to allow it)"
    )


def _with_bundle_psf(uri: str, bundle: str, psf: str | None) -> str:
    """sim:// without ?psf= uses the bundle's PSF, so a bundle carries its optic to the workstation."""

    if not uri.startswith("sim://") or psf is None or "psf" in parse_uri(uri).options:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}psf={Path(bundle).resolve() / psf}"


if __name__ == "__main__":
    sys.exit(main())
