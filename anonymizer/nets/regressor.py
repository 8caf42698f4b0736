"""The face-heatmap regressor: a small U-Net with CoordConv input (68 landmarks + 1 boundary map).

Like the reference's FAN it sees where it is in the frame (two coordinate channels and the
radius), but it is small enough for a Raspberry Pi (< 5 M parameters) and exports to ONNX with
plain convolutions, batch norm, max-pooling and nearest up-sampling only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from anonymizer import checkpoint
from anonymizer.nets.heatmaps import N_CHANNELS
from obscura.errors import ObscuraError


class CoordConv(nn.Module):
    """Append x, y in [-1, 1] and the radius from the centre to the input, then convolve."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 3, dim_out, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        ys = _ramp(h, x).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = _ramp(w, x).view(1, 1, 1, w).expand(n, 1, h, w)
        radius = torch.sqrt(xs * xs + ys * ys)
        return self.conv(torch.cat([x, xs, ys, radius], dim=1))


def _ramp(size: int, like: Tensor) -> Tensor:
    """size (>= 2) values from -1 to 1 in `like`'s dtype (arange + cast: the ONNX exporter types linspace as double)."""
    return torch.arange(size, device=like.device).to(like.dtype) * (2.0 / (size - 1)) - 1.0


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU layers with a 1x1-projected residual."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim_out),
        )
        self.skip = nn.Identity() if dim_in == dim_out else nn.Conv2d(dim_in, dim_out, 1, bias=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class HeatmapRegressor(nn.Module):
    """sRGB capture N x 3 x H x W in [0, 1] -> N x 69 x H/stride x W/stride heatmaps.

    The encoder halves the resolution `depth` times; the decoder climbs back to 1/`stride` of the
    input (stride a power of two, at most 2^depth), adding the encoder features at each scale.
    H and W must be divisible by 2^depth.
    """

    def __init__(self, base_channels: int = 32, depth: int = 4, stride: int = 4, max_channels: int = 256) -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1) or stride > 2**depth:
            raise ValueError(f"stride {stride}: expected a power of two <= 2^depth = {2**depth}")
        self.depth, self.stride = depth, stride
        widths = [min(base_channels * 2**i, max_channels) for i in range(depth + 1)]
        self.stem = nn.Sequential(CoordConv(3, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        ups = depth - (stride.bit_length() - 1)
        self.up = nn.ModuleList(ConvBlock(widths[depth - i], widths[depth - i - 1]) for i in range(ups))
        self.head = nn.Sequential(
            ConvBlock(widths[depth - ups], widths[depth - ups]), nn.Conv2d(widths[depth - ups], N_CHANNELS, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x * 2.0 - 1.0)
        skips = [h]
        for block in self.down:
            h = block(self.pool(h))
            skips.append(h)
        for i, block in enumerate(self.up):
            h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(h) + skips[self.depth - i - 1]
        return self.head(h)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


REGRESSOR_FORMAT = "obscura-regressor"


def save_regressor(path: str | Path, model: HeatmapRegressor, arch: dict[str, int], image_size: int) -> Path:
    """Write the regressor's weights, architecture and training input size (integrity-checked)."""
    state = {
        "format": REGRESSOR_FORMAT,
        "version": 1,
        "arch": dict(arch),
        "image_size": int(image_size),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return checkpoint.save(path, state)


def load_regressor(path: str | Path) -> tuple[HeatmapRegressor, int]:
    """Rebuild a saved regressor (eval mode) and return it with its training input size."""
    state = checkpoint.load(path)
    if state.get("format") != REGRESSOR_FORMAT:
        raise ObscuraError(f"regressor file {path}: format is {state.get('format')!r}; expected {REGRESSOR_FORMAT!r}")
    model = HeatmapRegressor(**state["arch"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise ObscuraError(
            f"regressor file {path}: weights do not match its architecture ({str(err).splitlines()[0]})"
        ) from None
    return model.eval(), int(state["image_size"])


def init_from(model: HeatmapRegressor, path: str | Path, image_size: int, key: str) -> HeatmapRegressor:
    """Start `model` from a saved regressor's weights; a file of another shape or crop size is refused, naming `key`."""
    start, size = load_regressor(path)
    theirs, ours = start.state_dict(), model.state_dict()
    if size != image_size or theirs.keys() != ours.keys() or any(theirs[k].shape != ours[k].shape for k in ours):
        raise ObscuraError(
            f"config key {key!r}: {path} is a regressor of another architecture or crop size ({size} px); "
            f"expected one of this architecture trained on {image_size} px crops"
        )
    model.load_state_dict(theirs)
    return model
