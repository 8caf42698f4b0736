"""Stand-in ONNX models with the exact interfaces of the trained networks, until those exist.

They let the whole device path (bundle, flash, pipeline, sinks, benchmark) run end to end and be
tested now; a bundle made from them says so (`stand_in: true`), and nothing reports their speed
or output as the real system's.

- regressor: capture N x 3 x S x S -> heatmaps N x 1 x S/4 x S/4 = channel mean of 4 x 4 block means.
- anonymizer: (capture, heatmaps, style N x 3) -> clip(upsample4(heatmaps) + style - capture, 0, 1).
Both are exact closed forms, so a test can recompute them with numpy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploy.bundle_builder import build_bundle
from firmware.bundle_reader import BundleConfig
from obscura.errors import ObscuraError

OPSET = 17
HEATMAP_STRIDE = 4


def regressor_model(size: int):
    """The stand-in regressor as an onnx.ModelProto (dynamic batch)."""

    h = size // HEATMAP_STRIDE
    nodes = [
        helper.make_node(
            "AveragePool", ["capture"], ["pooled"], kernel_shape=[HEATMAP_STRIDE] * 2, strides=[HEATMAP_STRIDE] * 2
        ),
        helper.make_node("ReduceMean", ["pooled"], ["heatmaps"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_regressor",
        [helper.make_tensor_value_info("capture", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 1, h, h])],
    )
    return _finish(graph)


def anonymizer_model(size: int):
    """The stand-in anonymizer as an onnx.ModelProto (dynamic batch)."""

    h = size // HEATMAP_STRIDE
    scales = numpy_helper.from_array(np.array([1, 1, HEATMAP_STRIDE, HEATMAP_STRIDE], np.float32), "scales")
    shape4 = numpy_helper.from_array(np.array([-1, 3, 1, 1], np.int64), "shape4")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [
        helper.make_node("Resize", ["heatmaps", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Reshape", ["style", "shape4"], ["style4"]),
        helper.make_node("Add", ["up", "style4"], ["lifted"]),
        helper.make_node("Sub", ["lifted", "capture"], ["raw"]),
        helper.make_node("Clip", ["raw", "zero", "one"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_anonymizer",
        [
            helper.make_tensor_value_info("capture", TensorProto.FLOAT, ["N", 3, size, size]),
            helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 1, h, h]),
            helper.make_tensor_value_info("style", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, size, size])],
        initializer=[scales, shape4, zero, one],
    )
    return _finish(graph)


def _finish(graph):
    """Wrap a graph in a checked model at the project's opset."""

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="obscura-standin")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_standins(folder: str | Path, size: int) -> dict[str, Path]:
    """Write regressor.onnx, anonymizer.onnx and style.npy into `folder`; returns their paths."""

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"regressor": out / "regressor.onnx", "anonymizer": out / "anonymizer.onnx", "style": out / "style.npy"}
    onnx.save(regressor_model(size), paths["regressor"])
    onnx.save(anonymizer_model(size), paths["anonymizer"])
    np.save(paths["style"], np.array([[0.2, 0.5, 0.8]], np.float32))
    return paths


def expected_output(capture01: np.ndarray, style: np.ndarray) -> np.ndarray:
    """What the stand-ins produce for a 1 x 3 x S x S capture in [0, 1] (numpy, for tests)."""
    n, c, s, _ = capture01.shape
    k = HEATMAP_STRIDE
    heat = capture01.reshape(n, c, s // k, k, s // k, k).mean(axis=(3, 5)).mean(axis=1, keepdims=True)
    up = heat.repeat(k, axis=2).repeat(k, axis=3)
    return np.clip(up + style.reshape(n, 3, 1, 1) - capture01, 0.0, 1.0)


def check_standin_size(size: int) -> None:
    """A stand-in input size must be a positive multiple of the heatmap stride."""
    if size < HEATMAP_STRIDE or size % HEATMAP_STRIDE:
        raise ObscuraError(f"--standin {size}: expected an input size that is a positive multiple of {HEATMAP_STRIDE}")


def build_standin_bundle(
    out_dir: str | Path,
    size: int,
    psf: str | Path | None = None,
    version: str | None = None,
    config: BundleConfig | None = None,
    signing_key: str | Path | None = None,
) -> dict:
    """A complete bundle made of the stand-ins (marked `stand_in: true`), from `config` if given; returns its manifest."""
    check_standin_size(size)
    cfg = config or BundleConfig()
    cfg.input_size, cfg.stand_in = size, True
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_standins(tmp, size)
        return build_bundle(
            out_dir,
            {"regressor": paths["regressor"], "anonymizer": paths["anonymizer"]},
            cfg,
            psf=psf,
            constants={"style": paths["style"]},
            version=version,
            signing_key=signing_key,
        )
