"""TensorRT engine builds against fakes of the TensorRT 8 and 10 Python APIs (and pycuda) in sys.modules.

The fakes accept only what the real version offers: the TensorRT 10 builder config has no
`max_workspace_size`, its builder no `build_engine`; the 8.2 config has no memory pools.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from deploy.standins import build_standin_bundle, regressor_model
from deploy.tensorrt_build import EngineSpec, build_bundle_engines, build_engine
from firmware.bundle_reader import verify_bundle
from firmware.inference_stages import to_model_input
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT


def make_fake_tensorrt(version: str) -> types.ModuleType:
    """A tensorrt module with the surface of `version` that records every call in `events`."""
    major, minor = (int(x) for x in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.events = []
    events = trt.events

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            events.append(("logger", level))

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            events.append(("calibrator_init",))

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        def parse(self, data: bytes) -> bool:
            try:
                model = onnx.load_from_string(data)
                onnx.checker.check_model(model)
            except Exception as err:  # noqa: BLE001
                self.errors.append(f"In node -1: invalid model ({type(err).__name__})")
                return False
            for graph_input in model.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in graph_input.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(graph_input.name, dims))
            events.append(("parse", len(data)))
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    trt.OnnxParser = OnnxParser

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            events.append(("profile", name, lo, opt, hi))

    allowed = {"int8_calibrator", "_flags"} | ({"max_workspace_size"} if (major, minor) < (8, 4) else set())

    class Config:
        def __init__(self) -> None:
            object.__setattr__(self, "_flags", set())
            object.__setattr__(self, "int8_calibrator", None)

        def __setattr__(self, name: str, value: object) -> None:
            if name not in allowed:
                raise AttributeError(
                    f"'tensorrt.IBuilderConfig' object has no attribute '{name}' in TensorRT {version}"
                )
            events.append(("config", name, value))
            object.__setattr__(self, name, value)

        def set_flag(self, flag: str) -> None:
            self._flags.add(flag)
            events.append(("flag", flag))

        def add_optimization_profile(self, profile: Profile) -> int:
            events.append(("add_profile",))
            return 0

        def set_calibration_profile(self, profile: Profile) -> None:
            events.append(("calibration_profile",))

    if (major, minor) >= (8, 4):

        def set_memory_pool_limit(self, pool: str, nbytes: int) -> None:
            events.append(("memory_pool", pool, nbytes))

        Config.set_memory_pool_limit = set_memory_pool_limit

    class Builder:
        platform_has_fast_fp16 = True
        platform_has_fast_int8 = True

        def __init__(self, logger: Logger) -> None:
            events.append(("builder",))

        def create_network(self, flags: int) -> Network:
            events.append(("network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calibrator = config.int8_calibrator
            if calibrator is not None:
                assert calibrator.read_calibration_cache() is None
                while (pointers := calibrator.get_batch([network.get_input(0).name])) is not None:
                    events.append(("calibration_batch", pointers))
                calibrator.write_calibration_cache(b"scales")
            events.append(("build", sorted(config._flags)))
            return f"ENGINE {version}".encode()

    if major < 10:

        def build_engine(self, network: Network, config: Config) -> None:
            raise AssertionError("build_engine is deprecated; build_serialized_network must be used")

        Builder.build_engine = build_engine
    trt.Builder = Builder
    return trt


def install_fake_pycuda(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """pycuda, pycuda.autoinit and pycuda.driver; returns the list of host->device copies."""
    copies: list[np.ndarray] = []
    driver = types.ModuleType("pycuda.driver")
    driver.mem_alloc = _Pointer
    driver.memcpy_htod = lambda dst, src: copies.append(np.array(src, copy=True))
    package = types.ModuleType("pycuda")
    package.driver = driver
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", types.ModuleType("pycuda.autoinit"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return copies


class _Pointer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __int__(self) -> int:
        return 0x7F000000


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "regressor.onnx"
    onnx.save(regressor_model(32), path)
    return path


@pytest.mark.parametrize("version, flags", [("10.3.0", 0), ("8.6.2", 1), ("8.2.1", 1)])
def test_fp16_engine_for_each_tensorrt_api(monkeypatch, model: Path, tmp_path: Path, version: str, flags: int) -> None:
    trt = make_fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    out = build_engine(EngineSpec(model, tmp_path / "r.engine", "fp16", workspace_mib=256, max_batch=4))
    assert out.read_bytes() == f"ENGINE {version}".encode()
    assert ("network", flags) in trt.events  # explicit batch asked for in 8, implicit in 10
    if version.startswith("8.2"):
        assert ("config", "max_workspace_size", 256 << 20) in trt.events
    else:
        assert ("memory_pool", "WORKSPACE", 256 << 20) in trt.events
    assert ("profile", "capture", (1, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32)) in trt.events
    assert ("build", ["FP16"]) in trt.events


def test_int8_engine_is_calibrated_on_captures(monkeypatch, model: Path, tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    copies = install_fake_pycuda(monkeypatch)
    captures = tmp_path / "captures"
    captures.mkdir()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    for i, rgb in enumerate(images):
        cv2.imwrite(str(captures / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = build_engine(EngineSpec(model, tmp_path / "r.engine", "int8", calibration=captures))
    assert out.is_file() and ("build", ["FP16", "INT8"]) in trt.events
    assert [e for e in trt.events if e[0] == "calibration_batch"] == [("calibration_batch", [0x7F000000])] * 3
    for copy, rgb in zip(copies, images):
        assert np.allclose(copy, to_model_input(rgb, 32, "0..1"))  # what the firmware would feed
    assert (tmp_path / "r.calib").read_bytes() == b"scales" and ("calibration_profile",) in trt.events


def test_clear_errors(monkeypatch, model: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ObscuraError, match="TensorRT is not installed"):
        build_engine(EngineSpec(model, tmp_path / "e"))
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("7.2.3"))
    with pytest.raises(ObscuraError, match="too old"):
        build_engine(EngineSpec(model, tmp_path / "e"))
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.0.1"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ObscuraError, match="cannot parse .*invalid model"):
        build_engine(EngineSpec(bad, tmp_path / "e"))
    with pytest.raises(ObscuraError, match="int8 needs --calibration"):
        build_engine(EngineSpec(model, tmp_path / "e", "int8"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", None)
    with pytest.raises(ObscuraError, match="needs pycuda"):
        build_engine(EngineSpec(model, tmp_path / "e", "int8", calibration=tmp_path))
    assert not (tmp_path / "e").exists()


def test_tensorrt_is_imported_lazily_and_the_cli_reports_its_absence(model: Path, tmp_path: Path) -> None:
    code = "import sys, deploy.tensorrt_build, deploy.__main__; assert 'tensorrt' not in sys.modules; print('ok')"
    assert (
        subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        == "ok"
    )
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "build-engine", str(model), "--out", str(tmp_path / "e")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "deploy: error: TensorRT is not installed" in result.stderr


def test_bundle_engines_are_named_by_the_sha256_of_their_model(monkeypatch, tmp_path: Path) -> None:

    trt = make_fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_standin_bundle(tmp_path / "bundle", 16)
    built = build_bundle_engines(tmp_path / "bundle", tmp_path / "engines")
    files = verify_bundle(tmp_path / "bundle")["files"]
    expected = {files[rel]["sha256"][:16] + ".engine" for rel in ("models/regressor.onnx", "models/anonymizer.onnx")}
    assert {p.name for p in built} == expected == {p.name for p in (tmp_path / "engines").iterdir()}
    assert len([e for e in trt.events if e[0] == "parse"]) == 2


def test_build_engine_cli_needs_one_of_its_two_forms(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "build-engine", "--bundle", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "either ONNX --out ENGINE, or --bundle DIR --engine-dir DIR" in result.stderr
