"""Running a TensorRT engine built on the device, behind the small part of onnxruntime's session API
the pipeline stages use (`get_inputs()`, `get_outputs()`, `run(None, feeds)`).

Engines live outside the bundle (they are built on the device after a flash), named by the sha256
of the ONNX file they came from, so an engine is never used with a model it was not built from:
ENGINE_DIR/<first 16 hex digits of the model's sha256>.engine. TensorRT >= 8.5 is driven through
its named-tensor API (the only one in 10); older 8.x through bindings. `tensorrt` and `pycuda`
are imported only when an engine is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from obscura.errors import ObscuraError


@dataclass(frozen=True)
class TensorInfo:
    """Name and shape of an engine input or output (what onnxruntime's NodeArg offers the stages)."""

    name: str
    shape: tuple[int, ...]


def engine_path(engine_dir: str | Path, model_sha256: str) -> Path:
    """Where the engine built from the model with this sha256 lives."""
    return Path(engine_dir) / f"{model_sha256[:16]}.engine"


class TensorRtSession:
    """Synchronous inference on one engine with one CUDA stream; device buffers are kept between calls
    and grown when a call needs more (a video stream allocates once)."""

    def __init__(self, path: str | Path):
        try:
            import pycuda.autoinit  # noqa: F401 - creates the CUDA context
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as err:
            raise ObscuraError(f"engine {path}: TensorRT and pycuda are needed to run it ({err})") from None
        self._trt, self._cuda = trt, cuda
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ObscuraError(f"engine {path}: TensorRT cannot load it (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.named = hasattr(self.engine, "num_io_tensors")  # TensorRT >= 8.5
        self._inputs, self._outputs = self._io()
        self._buffers: dict[str, tuple[int, Any]] = {}  # tensor name -> (bytes, device allocation)

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """Inputs and outputs, in engine order."""
        e, trt = self.engine, self._trt
        inputs, outputs = [], []
        if self.named:
            for i in range(e.num_io_tensors):
                name = e.get_tensor_name(i)
                info = TensorInfo(name, tuple(e.get_tensor_shape(name)))
                (inputs if e.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(info)
        else:
            for i in range(e.num_bindings):
                info = TensorInfo(e.get_binding_name(i), tuple(e.get_binding_shape(i)))
                (inputs if e.binding_is_input(i) else outputs).append(info)
        return inputs, outputs

    def get_inputs(self) -> list[TensorInfo]:
        """The engine's inputs."""
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        """The engine's outputs."""
        return list(self._outputs)

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Copy the inputs in, execute, copy every output back (float32 engines: the precision is internal)."""
        cuda, ctx = self._cuda, self.context
        bindings = [0] * (0 if self.named else self.engine.num_bindings)
        for info in self._inputs:
            host = np.ascontiguousarray(feeds[info.name], dtype=np.float32)
            device = self._device(info.name, host.nbytes)
            cuda.memcpy_htod_async(device, host, self.stream)
            if self.named:
                ctx.set_input_shape(info.name, host.shape)
                ctx.set_tensor_address(info.name, int(device))
            else:
                ctx.set_binding_shape(self._binding(info.name), host.shape)
                bindings[self._binding(info.name)] = int(device)
        results = []
        for info in self._outputs:
            shape = tuple(
                ctx.get_tensor_shape(info.name) if self.named else ctx.get_binding_shape(self._binding(info.name))
            )
            host = np.empty(shape, np.float32)
            device = self._device(info.name, host.nbytes)
            results.append((host, device))
            if self.named:
                ctx.set_tensor_address(info.name, int(device))
            else:
                bindings[self._binding(info.name)] = int(device)
        if self.named:
            ok = ctx.execute_async_v3(self.stream.handle)
        else:
            ok = ctx.execute_async_v2(bindings, self.stream.handle)
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        for host, device in results:
            cuda.memcpy_dtoh_async(host, device, self.stream)
        self.stream.synchronize()
        return [host for host, _ in results]

    def _device(self, name: str, nbytes: int) -> Any:
        """Device memory of at least `nbytes` for a tensor, reused from earlier calls where large enough."""
        held = self._buffers.get(name)
        if held is None or held[0] < nbytes:
            held = (nbytes, self._cuda.mem_alloc(nbytes))
            self._buffers[name] = held
        return held[1]

    def _binding(self, name: str) -> int:
        """Binding index of a tensor (TensorRT < 8.5)."""
        return self.engine.get_binding_index(name)
