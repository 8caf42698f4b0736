"""The regressor (size, ONNX parity) and the identity adversary (ArcFace margin, privacy loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from anonymizer.nets.adversary import (
    Adversary,
    ArcFaceHead,
    IResNet,
    arcface_loss,
    identity_information,
    information_bound,
)
from anonymizer.nets.regressor import (
    HeatmapRegressor,
    count_parameters,
    load_regressor,
    save_regressor,
)
from obscura.errors import ObscuraError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_regressor_fits_a_raspberry_pi_budget_and_outputs_69_maps() -> None:
    model = HeatmapRegressor()  # the GPU configuration's size
    assert count_parameters(model) <= 5_000_000
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 69, 16, 16)


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # the TorchScript exporter (dynamo=False) is the deployable path
def test_regressor_exports_to_onnx_with_onnxruntime_parity(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = HeatmapRegressor().eval()
    x = torch.rand(1, 3, 64, 64)
    path = tmp_path / "regressor.onnx"
    torch.onnx.export(
        model, (x,), str(path), input_names=["capture"], output_names=["heatmaps"], opset_version=17, dynamo=False
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"capture": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_regressor_file_round_trip_and_refuses_damage(tmp_path) -> None:
    model = HeatmapRegressor(8, 3, 4, 32)
    path = save_regressor(
        tmp_path / "regressor.pt", model, {"base_channels": 8, "depth": 3, "stride": 4, "max_channels": 32}, 64
    )
    loaded, size = load_regressor(path)
    x = torch.rand(1, 3, 64, 64)
    assert size == 64 and torch.equal(loaded(x), model.eval()(x))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ObscuraError, match="corrupt"):
        load_regressor(path)


def test_arcface_margin_lowers_only_the_target_logit() -> None:
    torch.manual_seed(0)
    head = ArcFaceHead(16, 5, scale=10.0, margin=0.5)
    emb = torch.randn(8, 16)
    labels = torch.arange(8) % 5
    plain, margin = head.logits(emb), head.margin_logits(emb, labels)
    target = torch.nn.functional.one_hot(labels, 5).bool()
    assert torch.all(margin[target] < plain[target])
    assert torch.equal(margin[~target], plain[~target])
    theta = torch.acos(plain[target] / 10.0)
    assert torch.all(theta < math.pi - 0.5)  # random 16-d directions: all on the cos(theta + m) branch
    assert torch.allclose(margin[target], 10.0 * torch.cos(theta + 0.5), atol=1e-4)


def test_arcface_margin_stays_decreasing_past_pi_minus_m() -> None:
    head = ArcFaceHead(2, 2, scale=1.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angles = torch.linspace(0.1, math.pi - 0.01, 50)
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    target = head.margin_logits(emb, torch.zeros(50, dtype=torch.long))[:, 0]
    assert torch.all(target[1:] < target[:-1])


def test_identity_information_is_zero_only_for_a_uniform_posterior() -> None:
    uniform = torch.zeros(4, 10)
    confident_right = torch.eye(10)[:4] * 20
    confident_wrong = torch.eye(10)[4:8] * 20  # sure of the wrong identity: still identity information
    assert identity_information(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_information(confident_right) > 1.0
    assert identity_information(confident_wrong) == pytest.approx(identity_information(confident_right).item())
    labels = torch.arange(4)
    assert information_bound(confident_right, labels) == pytest.approx(math.log(10), abs=1e-6)
    assert information_bound(uniform, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_adversary_learns_separable_identities() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32) * 0.2 + torch.linspace(0, 0.8, 4).view(4, 1, 1, 1)  # 4 identities by brightness
    labels = torch.arange(4)
    adversary = Adversary(4, width=8, embedding_dim=16, scale=16.0, margin=0.2)
    opt = torch.optim.Adam(adversary.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        plain, margin = adversary(images.repeat(2, 1, 1, 1), labels.repeat(2))
        loss, accuracy = arcface_loss(margin, plain, labels.repeat(2))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first and accuracy.item() == 1.0


def test_a_recogniser_with_an_input_size_reads_larger_images_at_that_scale() -> None:

    torch.manual_seed(0)
    net = IResNet(width=8, embedding_dim=16, input_px=32).eval()
    large = torch.rand(2, 3, 64, 64, requires_grad=True)
    small = F.interpolate(large.detach(), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(net(large), net(small), atol=1e-6)
    net(large).sum().backward()
    assert large.grad is not None and large.grad.abs().sum() > 0  # differentiable, for stage II's identity term
    net.input_px = 0
    assert not torch.allclose(net(large.detach()), net(small), atol=1e-3)  # without it the net sees another scale
