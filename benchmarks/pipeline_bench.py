"""End-to-end device pipeline speed with onnxruntime on this CPU: fps at 128 and 256 px, and per-stage ms.

    python benchmarks/pipeline_bench.py --json benchmarks/pipeline_bench.json [--bundle-128 DIR] [--bundle-256 DIR]

The pipeline is the firmware's own (source -> regressor -> anonymizer -> HTTP MJPEG sink, threads and
drop-oldest queues). The source is a camera emulator: optical captures (LFW faces when the face data
is present, else noise) at 640 x 480 through the bundle's PSF (the real optic, which `python -m deploy
export-trained --bundle` puts there) or, for a bundle without one, a 9 x 9 box blur, paced at
--camera-fps, so the figure is min(camera rate, pipeline capacity); the JSON says which PSF each size
used. Without a bundle for a size, stand-in models are used and the JSON says so: their speed says
nothing about the trained networks, and the 128 px goal is judged only on trained models.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware.bundle_reader import load_config  # noqa: E402
from firmware.http_sink import HttpSink  # noqa: E402
from firmware.inference_stages import load_stages  # noqa: E402
from firmware.pipeline import Pipeline  # noqa: E402
from firmware.psf import load_psf  # noqa: E402
from firmware.stream_metrics import Metrics  # noqa: E402
from obscura.benchmark import emit  # noqa: E402
from obscura.command_line import run_reporting_errors  # noqa: E402
from obscura.paths import shared_data_dir  # noqa: E402

GOAL_FPS_128 = 30.0
FRAME_SHAPE = (480, 640)


class CameraEmulator:
    """Cycles through prepared captures at a fixed frame rate, like a camera."""

    uri = "bench://camera"

    def __init__(self, frames: list[np.ndarray], fps: float):
        self.frames, self.period, self.i, self.due = frames, 1.0 / fps, 0, time.monotonic()

    def open(self) -> None:
        self.due = time.monotonic()

    def read(self) -> np.ndarray:
        now = time.monotonic()
        if self.due > now:
            time.sleep(self.due - now)
        self.due = max(self.due, now) + self.period
        self.i += 1
        return self.frames[self.i % len(self.frames)]

    def close(self) -> None:
        pass


def bundle_psf(bundle: Path) -> tuple[np.ndarray, str]:
    """The bundle's PSF (the real optic) where it has one, else a 9 x 9 box blur; and which it is."""
    cfg = load_config(bundle)
    if cfg.psf:
        psf = load_psf(bundle / cfg.psf)
        return psf, f"the bundle's PSF {cfg.psf} ({psf.shape[1]}x{psf.shape[2]} px)"
    return np.ones((3, 9, 9), np.float32) / 81, "a 9x9 box PSF (the bundle has none)"


def captures(psf: np.ndarray, psf_kind: str, n: int = 8) -> tuple[list[np.ndarray], str]:
    """Optical captures at camera size: LFW faces, or noise without the face data, through `psf`."""
    import cv2

    from firmware.psf import PsfConvolver

    optic = PsfConvolver(psf)
    faces = sorted((shared_data_dir() / "lfw-a").rglob("*.jpg"))[:n]
    if faces:
        images = [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), FRAME_SHAPE[::-1]) for f in faces]
        kind = f"LFW-a faces through {psf_kind}"
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (*FRAME_SHAPE, 3), dtype=np.uint8) for _ in range(n)]
        kind = f"noise through {psf_kind} (no face data found)"
    return [optic.capture(image) for image in images], kind


def measure(bundle: Path, frames: list[np.ndarray], camera_fps: float, warmup_s: float, duration_s: float) -> dict:
    """Run the pipeline on one bundle; fps over the measured window and mean per-stage milliseconds."""
    regressor, anonymizer, cfg = load_stages(bundle)
    metrics = Metrics("bench://camera")
    sink = HttpSink("127.0.0.1", 0, "benchmark-token", metrics=metrics.snapshot)
    pipe = Pipeline(lambda: CameraEmulator(frames, camera_fps), [sink], regressor, anonymizer, metrics)
    with pipe:
        time.sleep(warmup_s)
        start_frames, start = metrics.snapshot()["frames"].get("emitted", 0), time.monotonic()
        time.sleep(duration_s)
        snap = metrics.snapshot()
        elapsed = time.monotonic() - start
    return {
        "fps": round((snap["frames"].get("emitted", 0) - start_frames) / elapsed, 2),
        "stages_ms": {stage: v["mean"] for stage, v in sorted(snap["latency_ms"].items())},
        "drops": snap["drops"],
        "input_size": cfg.input_size,
        "models": "stand-in" if cfg.stand_in else "trained",
        "bundle": str(bundle),
    }


def main() -> int:
    """Measure both sizes and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--bundle-128", help="bundle whose models take 128 px (default: stand-ins)")
    parser.add_argument("--bundle-256", help="bundle whose models take 256 px (default: stand-ins)")
    parser.add_argument("--camera-fps", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    import onnxruntime as ort

    results: dict[str, object] = {}
    frame_kinds: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (128, 256):
            bundle = getattr(args, f"bundle_{size}")
            if bundle is None:
                from deploy.standins import build_standin_bundle

                bundle = Path(tmp) / f"standin-{size}"
                build_standin_bundle(bundle, size)
            frames, frame_kinds[str(size)] = captures(*bundle_psf(Path(bundle)))
            run = measure(Path(bundle), frames, args.camera_fps, args.warmup, args.duration)
            if run["input_size"] != size:
                print(
                    f"pipeline_bench.py: error: bundle {bundle} takes {run['input_size']} px, expected {size}",
                    file=sys.stderr,
                )
                return 2
            results[f"fps_{size}"] = run["fps"]
            results[f"stages_ms_{size}"] = run["stages_ms"]
            results[f"drops_{size}"] = run["drops"]
            results[f"models_{size}"] = run["models"]
            print(
                f"{size} px ({run['models']} models): {run['fps']} fps, stages ms {run['stages_ms']}", file=sys.stderr
            )
    stand_ins = [s for s in (128, 256) if results[f"models_{s}"] == "stand-in"]
    results.update(
        {
            "stand_in": bool(stand_ins),
            "goal": {"fps_128": GOAL_FPS_128},
            "goal_met": None if 128 in stand_ins else results["fps_128"] >= GOAL_FPS_128,
            "note": (
                f"stand-in models at {' and '.join(f'{s} px' for s in stand_ins)} (no trained bundle given): those "
                "figures measure the pipeline's own overhead, not the system, and do not judge the goal"
            )
            if stand_ins
            else "",
            "camera": {"fps": args.camera_fps, "frame": list(FRAME_SHAPE), "frames": frame_kinds},
            "window_s": args.duration,
            "cpu_count": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(),
        }
    )
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors("pipeline_bench.py", main))
