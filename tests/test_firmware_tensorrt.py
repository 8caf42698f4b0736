"""The firmware's TensorRT engine runner, against fakes of the TensorRT runtime (named-tensor API of
>= 8.5 and 10, bindings API of 8.2) and pycuda. The fake "engine" is the ONNX file itself, executed
by onnxruntime, so the pipeline's output can be checked exactly."""

from __future__ import annotations

import itertools
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from deploy.standins import build_standin_bundle, expected_output
from firmware.bundle_reader import verify_bundle
from firmware.inference_stages import (
    OnnxAnonymizer,
    OnnxRegressor,
    load_stages,
    to_model_input,
)
from firmware.tensorrt_runner import engine_path
from obscura.errors import ObscuraError


def install_fakes(monkeypatch: pytest.MonkeyPatch, named: bool) -> dict[int, bytearray]:
    """tensorrt (runtime side) and pycuda with a dict standing in for device memory (an overrun fails)."""
    memory: dict[int, bytearray] = {}
    addresses = itertools.count(0x1000, 0x1000)

    class Allocation:
        def __init__(self, nbytes: int) -> None:
            self.address = next(addresses)
            memory[self.address] = bytearray(nbytes)

        def __int__(self) -> int:
            return self.address

    def write(address: int, data: bytes) -> None:
        assert len(data) <= len(memory[address]), "device buffer overrun"
        memory[address][: len(data)] = data

    def htod(device, host, stream) -> None:
        write(int(device), np.ascontiguousarray(host).tobytes())

    def dtoh(host, device, stream) -> None:
        host[...] = np.frombuffer(bytes(memory[int(device)][: host.nbytes]), host.dtype).reshape(host.shape)

    driver = types.ModuleType("pycuda.driver")
    driver.mem_alloc = Allocation
    driver.memcpy_htod_async = htod
    driver.memcpy_dtoh_async = dtoh
    driver.Stream = lambda: types.SimpleNamespace(handle=7, synchronize=lambda: None)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", types.ModuleType("pycuda.autoinit"))

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0" if named else "8.2.1"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class Context:
        def __init__(self, session: ort.InferenceSession, names: list[str], inputs: set[str]) -> None:
            self.session, self.names, self.inputs = session, names, inputs
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def _outputs(self) -> dict[str, np.ndarray]:
            feeds = {
                n: np.frombuffer(bytes(memory[self.addresses[n]]), np.float32)[: int(np.prod(self.shapes[n]))].reshape(
                    self.shapes[n]
                )
                for n in self.inputs
            }
            return dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))

        def _output_shape(self, name: str) -> tuple:
            zeros = {n: np.zeros(self.shapes[n], np.float32) for n in self.inputs}
            outputs = self.session.run(None, zeros)
            return outputs[[o.name for o in self.session.get_outputs()].index(name)].shape

        # named-tensor API (TensorRT >= 8.5)
        def set_input_shape(self, name: str, shape) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return self._output_shape(name)

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 7
            for name, value in self._outputs().items():
                write(self.addresses[name], value.astype(np.float32).tobytes())
            return True

        # bindings API (TensorRT < 8.5)
        def set_binding_shape(self, index: int, shape) -> bool:
            self.shapes[self.names[index]] = tuple(shape)
            return True

        def get_binding_shape(self, index: int) -> tuple:
            return self._output_shape(self.names[index])

        def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
            assert 0 not in bindings, "every binding needs a device address"
            self.addresses = dict(zip(self.names, bindings))
            return self.execute_async_v3(stream_handle)

    class Engine:
        def __init__(self, data: bytes) -> None:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            ins = [(i.name, True, i.shape) for i in self.session.get_inputs()]
            outs = [(o.name, False, o.shape) for o in self.session.get_outputs()]
            self.io = [*outs[:1], *ins, *outs[1:]]  # outputs need not come last in an engine
            self.names = [n for n, _, _ in self.io]

        def create_execution_context(self) -> Context:
            return Context(self.session, self.names, {n for n, is_in, _ in self.io if is_in})

        def _shape(self, name: str) -> tuple:
            shape = next(s for n, _, s in self.io if n == name)
            return tuple(d if isinstance(d, int) else -1 for d in shape)

    if named:
        Engine.num_io_tensors = property(lambda self: len(self.io))
        Engine.get_tensor_name = lambda self, i: self.names[i]
        Engine.get_tensor_mode = lambda self, n: "INPUT" if dict((a, b) for a, b, _ in self.io)[n] else "OUTPUT"
        Engine.get_tensor_shape = lambda self, n: self._shape(n)
    else:
        Engine.num_bindings = property(lambda self: len(self.io))
        Engine.get_binding_name = lambda self, i: self.names[i]
        Engine.binding_is_input = lambda self, i: self.io[i][1]
        Engine.get_binding_shape = lambda self, i: self._shape(self.names[i])
        Engine.get_binding_index = lambda self, n: self.names.index(n)

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            return Engine(data) if data.startswith(b"\x08") else None  # an ONNX protobuf starts with ir_version

    trt.Runtime = Runtime
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return memory


def _engines_for(bundle: Path, engine_dir: Path) -> None:
    """What `deploy build-engine --bundle` leaves on a device, with the ONNX bytes as the fake engine."""
    manifest = verify_bundle(bundle)
    for rel in ("models/regressor.onnx", "models/anonymizer.onnx"):
        target = engine_path(engine_dir, manifest["files"][rel]["sha256"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((bundle / rel).read_bytes())


@pytest.mark.parametrize("named", [True, False], ids=["tensorrt10-named-tensors", "tensorrt8.2-bindings"])
def test_stages_run_on_matching_engines_and_give_the_models_output(monkeypatch, tmp_path: Path, named: bool) -> None:
    install_fakes(monkeypatch, named)
    build_standin_bundle(tmp_path / "bundle", 32)
    _engines_for(tmp_path / "bundle", tmp_path / "engines")
    regressor, anonymizer, cfg = load_stages(tmp_path / "bundle", engine_dir=tmp_path / "engines")
    assert type(regressor.session).__name__ == "TensorRtSession"
    assert type(anonymizer.session).__name__ == "TensorRtSession"
    capture = np.random.default_rng(6).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    out = anonymizer(capture, regressor(capture))
    style = np.load(tmp_path / "bundle" / cfg.constants["style"])
    expected = expected_output(to_model_input(capture, 32, "0..1"), style)[0].transpose(1, 2, 0)
    assert np.abs(out.astype(float) - np.rint(expected * 255)).max() <= 1


def test_without_a_matching_engine_onnxruntime_is_used(monkeypatch, tmp_path: Path) -> None:
    install_fakes(monkeypatch, True)
    build_standin_bundle(tmp_path / "bundle", 16)
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "0123456789abcdef.engine").write_bytes(b"\x08 engine of another model")
    regressor, anonymizer, _ = load_stages(tmp_path / "bundle", engine_dir=tmp_path / "engines")
    assert isinstance(regressor, OnnxRegressor) and isinstance(anonymizer, OnnxAnonymizer)
    assert type(regressor.session) is ort.InferenceSession


def test_an_engine_tensorrt_cannot_load_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    install_fakes(monkeypatch, True)
    build_standin_bundle(tmp_path / "bundle", 16)
    _engines_for(tmp_path / "bundle", tmp_path / "engines")
    for engine in (tmp_path / "engines").iterdir():
        engine.write_bytes(b"built by TensorRT 8 on another GPU")
    with pytest.raises(ObscuraError, match="TensorRT cannot load it"):
        load_stages(tmp_path / "bundle", engine_dir=tmp_path / "engines")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ObscuraError, match="TensorRT and pycuda are needed"):
        load_stages(tmp_path / "bundle", engine_dir=tmp_path / "engines")


@pytest.mark.parametrize("named", [True, False], ids=["tensorrt10-named-tensors", "tensorrt8.2-bindings"])
def test_device_buffers_are_kept_between_frames_and_grown_for_a_larger_batch(
    monkeypatch, tmp_path: Path, named: bool
) -> None:
    memory = install_fakes(monkeypatch, named)
    build_standin_bundle(tmp_path / "bundle", 16)
    _engines_for(tmp_path / "bundle", tmp_path / "engines")
    regressor, _, _ = load_stages(tmp_path / "bundle", engine_dir=tmp_path / "engines")
    session = regressor.session
    reference = ort.InferenceSession(
        str(tmp_path / "bundle" / "models" / "regressor.onnx"), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    n_tensors = len(session.get_inputs()) + len(session.get_outputs())
    rng = np.random.default_rng(3)
    allocations = []
    for batch in (1, 1, 2, 1):
        x = rng.uniform(0, 1, (batch, 3, 16, 16)).astype(np.float32)
        got = session.run(None, {name: x})
        for ours, theirs in zip(got, reference.run(None, {name: x})):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
        allocations.append(len(memory))
    assert allocations == [n_tensors, n_tensors, 2 * n_tensors, 2 * n_tensors]
