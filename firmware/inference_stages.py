"""Pipeline stages built from ONNX models with onnxruntime: the face-heatmap regressor and the anonymizer.

Conventions an exported model must follow (deploy/ writes them this way):
- regressor: one input, the capture as N x 3 x S x S float32 RGB; first output = heatmaps N x K x h x w.
- anonymizer: inputs by name: `capture` (as above), `heatmaps` (the regressor's output), and any other
  input fed from a constant .npy in the bundle (e.g. a style code); first output = N x 3 x S x S RGB.
Pixel values map to `value_range` ("0..1" or "-1..1") on the way in and back on the way out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import onnxruntime as ort

from firmware.bundle_reader import BundleConfig, load_config, verify_bundle
from firmware.tensorrt_runner import TensorRtSession, engine_path
from obscura.errors import ObscuraError

log = logging.getLogger("firmware.inference_stages")
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: Sequence[str] = ()) -> list[str]:
    """The requested execution providers, or the best available: TensorRT, then CUDA, then CPU."""

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ObscuraError(f"execution provider {missing[0]} is not available (available: {', '.join(available)})")
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available]


def make_session(path: str | Path, providers: Sequence[str] = (), threads: int = 1):
    """An onnxruntime session for `path` with `threads` intra-op threads (one per stage suits a pipeline)."""

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    chosen = choose_providers(providers)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise ObscuraError(f"cannot load ONNX model {path}: {str(err).splitlines()[0]}") from None


def to_model_input(capture: np.ndarray, size: int, value_range: str) -> np.ndarray:
    """H x W x 3 uint8 -> 1 x 3 x size x size float32: centre square crop, area resize, scaled to the range."""

    h, w = capture.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = capture[top : top + side, left : left + side]
    if side != size:
        square = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    x = square.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    return x * 2.0 - 1.0 if value_range == "-1..1" else x


def from_model_output(y: np.ndarray, value_range: str) -> np.ndarray:
    """1 x 3 x S x S float -> S x S x 3 uint8."""
    if y.ndim != 4 or y.shape[1] != 3:
        raise ValueError(f"anonymizer output must be N x 3 x H x W, got {y.shape}")
    x = (y[0] + 1.0) / 2.0 if value_range == "-1..1" else y[0]
    return np.clip(np.rint(x.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


class OnnxRegressor:
    """Capture -> face heatmaps, through an onnxruntime session."""

    def __init__(self, session, size: int, value_range: str = "0..1"):
        self.session = session
        self.size = size
        self.value_range = value_range
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ObscuraError(f"regressor model must have one input, has {[i.name for i in inputs]}")
        self.input_name = inputs[0].name

    def __call__(self, capture: np.ndarray) -> np.ndarray:
        """Heatmaps for one frame, shape 1 x K x h x w."""
        x = to_model_input(capture, self.size, self.value_range)
        return self.session.run(None, {self.input_name: x})[0]


class OnnxAnonymizer:
    """Capture (+ heatmaps, + constant inputs) -> de-identified frame, through an onnxruntime session."""

    def __init__(self, session, size: int, value_range: str = "0..1", constants: dict[str, np.ndarray] | None = None):
        self.session = session
        self.size = size
        self.value_range = value_range
        self.constants = dict(constants or {})
        names = [i.name for i in session.get_inputs()]
        if "capture" not in names:
            raise ObscuraError(f"anonymizer model needs an input named 'capture', has {names}")
        unknown = [n for n in names if n not in ("capture", "heatmaps") and n not in self.constants]
        if unknown:
            raise ObscuraError(
                f"anonymizer input {unknown[0]!r} has no value (add it to constants in the bundle config)"
            )
        self.needs_heatmaps = "heatmaps" in names

    def __call__(self, capture: np.ndarray, heatmaps: np.ndarray | None) -> np.ndarray:
        """One de-identified S x S x 3 uint8 frame."""
        feeds = {"capture": to_model_input(capture, self.size, self.value_range), **self.constants}
        if self.needs_heatmaps:
            if heatmaps is None:
                raise ValueError("the anonymizer needs heatmaps but no regressor produced any")
            feeds["heatmaps"] = heatmaps
        return from_model_output(self.session.run(None, feeds)[0], self.value_range)


def load_stages(
    bundle: str | Path,
    providers: Sequence[str] = (),
    engine_dir: str | Path | None = None,
    public_key: str | Path | None = None,
) -> tuple[OnnxRegressor | None, OnnxAnonymizer | None, BundleConfig]:
    """Verify a bundle (and its signature, given the trusted public key) and build its stages (either may be absent).

    A model runs on a TensorRT engine when `engine_dir` holds one built from exactly that ONNX file
    (see firmware.tensorrt_runner), else on onnxruntime.
    """
    root = Path(bundle)
    manifest = verify_bundle(root, public_key)
    cfg = load_config(root, manifest)
    chosen = providers or cfg.providers

    def session(rel: str):
        engine = None if engine_dir is None else engine_path(engine_dir, manifest["files"][rel]["sha256"])
        if engine is not None and engine.is_file():
            log.info("%s runs on TensorRT engine %s", rel, engine)
            return TensorRtSession(engine)
        return make_session(root / rel, chosen, cfg.threads)

    regressor = anonymizer = None
    if cfg.regressor:
        regressor = OnnxRegressor(session(cfg.regressor), cfg.input_size, cfg.value_range)
    if cfg.anonymizer:
        constants = {
            name: np.load(root / rel, allow_pickle=False).astype(np.float32) for name, rel in cfg.constants.items()
        }
        anonymizer = OnnxAnonymizer(session(cfg.anonymizer), cfg.input_size, cfg.value_range, constants)
        if anonymizer.needs_heatmaps and regressor is None:
            raise ObscuraError(f"bundle {root}: the anonymizer takes heatmaps but the config names no regressor")
    return regressor, anonymizer, cfg
