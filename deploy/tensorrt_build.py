"""TensorRT engines from ONNX, for the TensorRT 8 (JetPack 5) and 10 (JetPack 6) Python APIs.

Builder -> explicit-batch network -> OnnxParser -> builder config (workspace memory pool, FP16 or
INT8 flags, a dynamic-batch optimisation profile) -> serialised engine, written atomically.
TensorRT 10 removed `build_engine`, `max_workspace_size` and `max_batch_size`, and deprecated
(10.1) the INT8 entropy calibrator used here in favour of explicit quantise/dequantise nodes; the
calibrator still works and is what both versions share. Engines are tied to the GPU and the
TensorRT version, so this runs on the device. `tensorrt` and `pycuda` are imported only here,
only when a build starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from firmware.bundle_reader import load_config, verify_bundle
from firmware.inference_stages import to_model_input
from firmware.sources import IMAGE_SUFFIXES
from firmware.tensorrt_runner import engine_path
from obscura import atomic
from obscura.errors import ObscuraError

log = logging.getLogger("deploy.tensorrt")
SUPPORTED_MAJOR = (8, 10)
CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class EngineSpec:
    """What to build: ONNX in, engine out, precision, workspace, largest batch, INT8 calibration captures."""

    onnx: Path
    out: Path
    precision: str = "fp16"
    workspace_mib: int = 1024
    max_batch: int = 1
    calibration: Path | None = None


def import_tensorrt() -> tuple[Any, int]:
    """The tensorrt module and its major version; a clear error where it is missing or too old."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ObscuraError(
            "TensorRT is not installed here (it ships with JetPack: python3-libnvinfer); build engines on the device"
        ) from None
    try:
        major = int(str(trt.__version__).split(".")[0])
    except ValueError:
        raise ObscuraError(f"cannot read the TensorRT version {trt.__version__!r}") from None
    if major < SUPPORTED_MAJOR[0]:
        raise ObscuraError(f"TensorRT {trt.__version__} is too old; expected 8.x or 10.x")
    return trt, major


def build_engine(spec: EngineSpec) -> Path:
    """Parse the ONNX file, configure the builder for this TensorRT version, and write the engine."""
    if spec.precision not in ("fp32", "fp16", "int8"):
        raise ObscuraError(f"precision {spec.precision!r}: expected fp32, fp16 or int8")
    if spec.precision == "int8" and spec.calibration is None:
        raise ObscuraError("int8 needs --calibration FOLDER of captures")
    if spec.max_batch < 1:
        raise ObscuraError(f"max batch {spec.max_batch}: expected >= 1")
    if not spec.onnx.is_file():
        raise ObscuraError(f"ONNX file {spec.onnx} does not exist")
    trt, major = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 8 needs explicit batch asked for; in 10 it is the only mode and the flag is deprecated.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(spec.onnx.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ObscuraError(f"TensorRT cannot parse {spec.onnx}: {errors or 'no parser message'}")
    config = builder.create_builder_config()
    _set_workspace(trt, config, spec.workspace_mib << 20)
    profile = _batch_profile(builder, network, spec.max_batch)
    config.add_optimization_profile(profile)
    if spec.precision == "fp16":
        _require(builder.platform_has_fast_fp16, "this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    if spec.precision == "int8":
        _require(builder.platform_has_fast_int8, "this GPU has no fast INT8")
        if major >= 10:
            log.warning(
                "TensorRT %s: the INT8 calibrator is deprecated (explicit Q/DQ is preferred); using it anyway",
                trt.__version__,
            )
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers without INT8 kernels fall back to FP16, not FP32
        shape = tuple(network.get_input(0).shape)[1:]
        config.int8_calibrator = make_calibrator(trt, spec.calibration, shape, spec.out.with_suffix(".calib"))
        config.set_calibration_profile(profile)
    serialized = _build(builder, network, config)
    if serialized is None:
        raise ObscuraError(f"TensorRT failed to build an engine from {spec.onnx} (see the messages above)")
    atomic.write_bytes(spec.out, bytes(serialized))
    return spec.out


def build_bundle_engines(
    bundle: Path,
    engine_dir: Path,
    precision: str = "fp16",
    workspace_mib: int = 1024,
    max_batch: int = 1,
    calibration: Path | None = None,
) -> list[Path]:
    """An engine for every model of a verified bundle, named by the model's sha256 (what the firmware looks up)."""

    manifest = verify_bundle(bundle)
    cfg = load_config(bundle, manifest)
    built = []
    for rel in (m for m in (cfg.regressor, cfg.anonymizer) if m):
        out = engine_path(engine_dir, manifest["files"][rel]["sha256"])
        built.append(build_engine(EngineSpec(bundle / rel, out, precision, workspace_mib, max_batch, calibration)))
        log.info("%s -> %s", rel, out)
    return built


def _require(ok: bool, message: str) -> None:
    """Refuse a precision the GPU cannot run fast."""
    if not ok:
        raise ObscuraError(message)


def _set_workspace(trt: Any, config: Any, nbytes: int) -> None:
    """Workspace limit: a memory pool since 8.4; the `max_workspace_size` attribute before (gone in 10)."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:
        config.max_workspace_size = nbytes


def _batch_profile(builder: Any, network: Any, max_batch: int) -> Any:
    """min/opt batch 1 and max `max_batch` for every input whose first axis is dynamic."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ObscuraError(
                f"input {tensor.name} has dynamic axes beyond the batch {shape}; export with a fixed size"
            )
        rest = shape[1:]
        profile.set_shape(tensor.name, (1, *rest), (1, *rest), (max_batch, *rest))
    return profile


def _build(builder: Any, network: Any, config: Any) -> Any:
    """Serialised engine: `build_serialized_network` (8.0+, the only way in 10), else 7-style `build_engine`."""
    if hasattr(builder, "build_serialized_network"):
        return builder.build_serialized_network(network, config)
    engine = builder.build_engine(network, config)
    return None if engine is None else engine.serialize()


def calibration_batches(folder: Path, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Captures from `folder` as 1 x C x H x W float32 batches, preprocessed as the firmware does."""

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:CALIBRATION_IMAGES]
    if not files:
        raise ObscuraError(f"calibration folder {folder} holds no images")
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ObscuraError(f"calibration image {path} cannot be read")
        yield to_model_input(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), shape[-1], "0..1")


def make_calibrator(trt: Any, folder: Path, shape: tuple[int, ...], cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 feeding captures through pycuda device memory (class made after the lazy import)."""
    try:
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context
        import pycuda.driver as cuda
    except ImportError:
        raise ObscuraError("INT8 calibration needs pycuda (pip install pycuda on the device)") from None
    batches = list(calibration_batches(folder, shape))

    class Calibrator(trt.IInt8EntropyCalibrator2):
        """Hands TensorRT one capture per batch, then None; caches the scales beside the engine."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = iter(batches)
            self.device = cuda.mem_alloc(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.pending, None)
            if batch is None:
                return None
            cuda.memcpy_htod(self.device, np.ascontiguousarray(batch))
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            atomic.write_bytes(cache, bytes(data))

    return Calibrator()
