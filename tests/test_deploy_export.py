"""ONNX export of torch modules: opset, dynamic batch, parity with PyTorch, including on optical captures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from deploy.onnx_export import check_parity, export_onnx
from firmware.inference_stages import choose_providers, make_session, to_model_input
from firmware.psf import PsfConvolver
from obscura.errors import ObscuraError


class TwoInputNet(torch.nn.Module):
    """Shaped like the anonymizer: (capture, heatmaps) -> image and a side output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encode = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.InstanceNorm2d(8, affine=True),
            torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        )
        self.mix = torch.nn.Conv2d(9, 3, 3, padding=1)

    def forward(self, capture: torch.Tensor, heatmaps: torch.Tensor):
        features = self.encode(capture)
        up = torch.nn.functional.interpolate(torch.cat([features, heatmaps], 1), scale_factor=2.0, mode="nearest")
        return torch.tanh(self.mix(up)), features.mean(dim=(2, 3))


def _export(tmp_path: Path) -> tuple[TwoInputNet, Path]:
    net = TwoInputNet()
    path = export_onnx(
        net,
        (torch.rand(1, 3, 32, 32), torch.rand(1, 1, 16, 16)),
        tmp_path / "net.onnx",
        ["capture", "heatmaps"],
        ["output", "pooled"],
    )
    return net, path


def test_export_has_opset_17_and_a_dynamic_batch(tmp_path: Path) -> None:
    _, path = _export(tmp_path)
    model = onnx.load(str(path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input] == ["batch", "batch"]
    session = make_session(path)
    out = session.run(
        None,
        {
            "capture": np.random.rand(3, 3, 32, 32).astype(np.float32),
            "heatmaps": np.random.rand(3, 1, 16, 16).astype(np.float32),
        },
    )
    assert out[0].shape == (3, 3, 32, 32) and out[1].shape == (3, 8)
    assert choose_providers()[-1] == "CPUExecutionProvider"


def test_parity_within_1e_4_on_random_batches_of_several_sizes(tmp_path: Path) -> None:
    net, path = _export(tmp_path)
    rng = np.random.default_rng(0)
    batches = [(rng.random((n, 3, 32, 32), np.float32), rng.random((n, 1, 16, 16), np.float32)) for n in (1, 4)]
    parity = check_parity(net, path, batches)
    assert parity.batches == 2 and parity.worst <= 1e-4 and set(parity.max_abs_diff) == {"output", "pooled"}


def test_parity_on_optical_captures_of_real_faces(tmp_path: Path, shared_data: Path) -> None:
    faces = sorted((shared_data / "lfw-a").rglob("*.jpg"))[:4]
    assert faces, "no LFW-a images"
    psf = np.zeros((3, 15, 15), np.float32)
    psf[:, 4:11, 4:11] = 1 / 49
    optic = PsfConvolver(psf)
    captures = [optic.capture(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)) for f in faces]
    batch = np.concatenate([to_model_input(c, 32, "0..1") for c in captures])
    net, path = _export(tmp_path)
    parity = check_parity(net, path, [(batch, np.random.default_rng(1).random((4, 1, 16, 16), np.float32))])
    assert parity.worst <= 1e-4


def test_a_model_that_drifts_fails_the_parity_check(tmp_path: Path) -> None:
    net, path = _export(tmp_path)
    with torch.no_grad():
        net.mix.bias += 1e-2  # the PyTorch weights moved on after the export
    with pytest.raises(ObscuraError, match="differs from PyTorch by"):
        check_parity(net, path, [(np.random.rand(1, 3, 32, 32), np.random.rand(1, 1, 16, 16))])


def test_opset_below_17_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ObscuraError, match="expected >= 17"):
        export_onnx(
            TwoInputNet(),
            (torch.rand(1, 3, 32, 32), torch.rand(1, 1, 16, 16)),
            tmp_path / "x.onnx",
            ["capture", "heatmaps"],
            ["output", "pooled"],
            opset=13,
        )
