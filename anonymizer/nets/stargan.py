"""StarGAN-v2 networks for stage II: generator, mapping network, style encoder, discriminator.

The architecture follows StarGAN-v2 (Choi et al., CVPR 2020; clovaai/stargan-v2 core/model.py)
with its high-pass ("FAN mask") option, which the reference Face-DeId system uses to keep the
source's facial geometry: the generator's encoder features at 1/8, 1/4 and 1/2 of the image
side are gated by face masks made from heatmaps, high-pass filtered, and added to the decoder at
the same scale. Here the masks come from the stage-I regressor's 68 landmark heatmaps of the
privacy-preserving capture (the reference's FAN gives 98 WFLW points).

Differences from the reference, all deliberate:
- images are [0, 1] in and out (the networks map to [-1, 1] inside), like every Obscura network;
- the skip scales are relative to the image side (1/8, 1/4, 1/2: the reference's 32, 64, 128 px
  at 256 px), so a 128 px generator keeps the same geometry;
- the widths are knobs (`dim_in`, `max_conv_dim`, `mapping_dim`) so a CPU configuration is small;
  the reference's values are dim_in = 2^14 / img_size, max_conv_dim = 512, mapping_dim = 512.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from anonymizer import checkpoint
from anonymizer.nets.heatmaps import N_CHANNELS
from obscura.errors import ObscuraError

# 68-point groups (dlib / iBUG order) that make the two masks, as the reference's FAN masks do for
# WFLW: the face mask keeps the chin (not the outer jaw), brows, nose, eyes and lips; the inner
# mask only the eyes and nose (the reference drops jaw, brows and mouth from its second mask).
CHIN = tuple(range(4, 13))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
EYES = tuple(range(36, 48))
MOUTH = tuple(range(48, 68))
FACE_MASK_POINTS = CHIN + BROWS + NOSE + EYES + MOUTH
INNER_MASK_POINTS = NOSE + EYES
HEATMAP_FLOOR = 0.1  # regressor responses below this share of a channel's peak are noise, not face


class ResBlk(nn.Module):
    """Pre-activation residual block (optional instance norm, optional 2x average-pool down-sampling)."""

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False) -> None:
        super().__init__()
        self.normalize, self.downsample = normalize, downsample
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def _residual(self, x: Tensor) -> Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, 0.2))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, 0.2))

    def forward(self, x: Tensor) -> Tensor:
        # unit variance: the sum of two roughly independent branches is scaled back by sqrt(2)
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Adaptive instance norm: (1 + gamma(s)) * IN(x) + beta(s)."""

    def __init__(self, style_dim: int, num_features: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        h = self.fc(s).view(s.shape[0], -1, 1, 1)
        gamma, beta = torch.chunk(h, 2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder block: AdaIN - LReLU - (2x nearest up-sampling) - conv, twice.

    With the high-pass skips (w_hpf > 0) the block has no shortcut, as in the reference: the
    skips carry the source's detail instead.
    """

    def __init__(self, dim_in: int, dim_out: int, style_dim: int, w_hpf: float, upsample: bool = False) -> None:
        super().__init__()
        self.w_hpf, self.upsample = w_hpf, upsample
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        # the reference also builds this 1x1 shortcut when w_hpf > 0 and never uses it; an unused
        # parameter breaks DistributedDataParallel, so it exists here only when it is used
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out and w_hpf == 0 else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv1x1(x) if self.conv1x1 is not None else x

    def _residual(self, x: Tensor, s: Tensor) -> Tensor:
        x = F.leaky_relu(self.norm1(x, s), 0.2)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        return self.conv2(F.leaky_relu(self.norm2(x, s), 0.2))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        out = self._residual(x, s)
        if self.w_hpf == 0:
            out = (out + self._shortcut(x)) / math.sqrt(2)
        return out


class HighPass(nn.Module):
    """Depth-wise 3x3 Laplacian-like high-pass filter, divided by w_hpf."""

    def __init__(self, w_hpf: float) -> None:
        super().__init__()
        kernel = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]) / w_hpf
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = int(x.shape[1])  # a plain int while the ONNX exporter traces shapes: conv needs a known kernel shape
        weight = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)
        return F.conv2d(x, weight, padding=1, groups=channels)


def heatmap_masks(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """69-channel regressor heatmaps -> (face mask, inner-face mask), each N x 1 x h x w in [0, 1].

    Each landmark channel is floored (responses under HEATMAP_FLOOR of its peak dropped) and
    scaled to a peak of 1, then the channels of a group are summed and clipped, as the reference
    does with its FAN heatmaps. The boundary channel is not used (it outlines the whole jaw).
    """
    if heatmaps.ndim != 4 or heatmaps.shape[1] != N_CHANNELS:
        raise ValueError(f"heatmaps have shape {tuple(heatmaps.shape)}; expected N x {N_CHANNELS} x h x w")
    x = heatmaps.clamp_min(0.0)
    peak = x.amax(dim=(2, 3), keepdim=True)
    x = torch.where(x < HEATMAP_FLOOR * peak, torch.zeros_like(x), x) / (peak + 1e-6)
    face = x[:, list(FACE_MASK_POINTS)].sum(dim=1, keepdim=True).clamp(0.0, 1.0)
    inner = x[:, list(INNER_MASK_POINTS)].sum(dim=1, keepdim=True).clamp(0.0, 1.0)
    return face, inner


class Generator(nn.Module):
    """(capture N x 3 x S x S in [0, 1], style N x style_dim, heatmaps N x 69 x h x w or None) -> face in [0, 1].

    Encoder: stem conv, log2(S) - 3 down-sampling ResBlks (instance norm), 2 bottleneck ResBlks.
    Decoder: the mirror image with AdainResBlks. The skips join at the resolutions of the
    down-/up-sampling blocks only (the bottleneck is always 8 px, so at 64 px the 1/8 skip does
    not exist and two remain). Without heatmaps (the reference's cycle pass) there are no skips.
    """

    def __init__(
        self, img_size: int = 256, style_dim: int = 64, dim_in: int = 64, max_conv_dim: int = 512, w_hpf: float = 1.0
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(
            nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2), nn.Conv2d(dim_in, 3, 1, 1, 0)
        )
        repeat_num = int(math.log2(img_size)) - 4 + (1 if w_hpf > 0 else 0)
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, w_hpf, upsample=True))
            dim_in = dim_out
        for _ in range(2):
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim, w_hpf))
        self.skip_sizes = (img_size // 8, img_size // 4, img_size // 2) if w_hpf > 0 else ()
        self.hpf = HighPass(w_hpf) if w_hpf > 0 else None

    def forward(self, x: Tensor, s: Tensor, heatmaps: Tensor | None = None) -> Tensor:
        masks = heatmap_masks(heatmaps) if heatmaps is not None and self.hpf is not None else None
        x = self.from_rgb(x * 2.0 - 1.0)
        # sizes as plain ints: the ONNX exporter traces shapes as tensors, which cannot key the skip cache
        # (only the batch axis is dynamic in an export; the sizes are fixed by img_size)
        cache: dict[int, Tensor] = {}
        for block in self.encode:
            if masks is not None and block.downsample and int(x.shape[2]) in self.skip_sizes:
                cache[int(x.shape[2])] = x
            x = block(x)
        for block in self.decode:
            x = block(x, s)
            size = int(x.shape[2])
            if masks is not None and block.upsample and size in self.skip_sizes:
                # the coarsest skip carries the whole face, the finer ones only eyes and nose
                mask = masks[0] if size == self.skip_sizes[0] else masks[1]
                mask = F.interpolate(mask, size=(size, int(x.shape[3])), mode="bilinear", align_corners=False)
                x = x + self.hpf(mask * cache[size])
        return (self.to_rgb(x) + 1.0) * 0.5


class MappingNetwork(nn.Module):
    """(latent z N x latent_dim, domain N) -> style N x style_dim: 4 shared + 4 per-domain FC layers."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2, hidden_dim: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(
            nn.Sequential(
                *[m for _ in range(3) for m in (nn.Linear(hidden_dim, hidden_dim), nn.ReLU())],
                nn.Linear(hidden_dim, style_dim),
            )
            for _ in range(num_domains)
        )

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.shared(z)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # N x domains x style_dim
        return out[torch.arange(y.shape[0], device=y.device), y]


def _downsampling_trunk(img_size: int, dim_in: int, max_conv_dim: int) -> tuple[list[nn.Module], int]:
    """Stem conv + log2(S) - 2 down-sampling ResBlks + LReLU - 4x4 conv - LReLU: S x S -> 1 x 1 features."""
    blocks: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(int(math.log2(img_size)) - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        blocks.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_out


class StyleEncoder(nn.Module):
    """(image N x 3 x S x S in [0, 1], domain N) -> style N x style_dim (shared trunk, one linear head per domain)."""

    def __init__(
        self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, dim_in: int = 64, max_conv_dim: int = 512
    ) -> None:
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, dim_in, max_conv_dim)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.shared(x * 2.0 - 1.0).flatten(1)
        out = torch.stack([head(h) for head in self.unshared], dim=1)
        return out[torch.arange(y.shape[0], device=y.device), y]


class Discriminator(nn.Module):
    """(image N x 3 x S x S in [0, 1], domain N) -> real/fake logit N for that domain (one output per domain)."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, dim_in: int = 64, max_conv_dim: int = 512) -> None:
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, dim_in, max_conv_dim)
        self.main = nn.Sequential(*blocks, nn.Conv2d(dim_out, num_domains, 1, 1, 0))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        out = self.main(x * 2.0 - 1.0).flatten(1)  # N x domains
        return out[torch.arange(y.shape[0], device=y.device), y]


def he_init(module: nn.Module) -> None:
    """Kaiming-normal (fan-in) weights and zero biases for convolutions and linear layers, as the reference."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


ARCH_KEYS = ("img_size", "num_domains", "style_dim", "latent_dim", "dim_in", "max_conv_dim", "mapping_dim", "w_hpf")
ANONYMIZER_FORMAT = "obscura-stage2-anonymizer"


@dataclass
class Networks:
    """The four StarGAN-v2 networks (an EMA copy has no discriminator)."""

    generator: Generator
    mapping_network: MappingNetwork
    style_encoder: StyleEncoder
    discriminator: Discriminator | None = None

    def named(self) -> dict[str, nn.Module]:
        """The networks by name, without a missing discriminator."""
        return {k: v for k, v in vars(self).items() if v is not None}


def build_networks(arch: dict[str, Any], discriminator: bool = True) -> Networks:
    """The networks of an architecture (keys ARCH_KEYS), He-initialised from torch's current RNG."""
    a = {k: arch[k] for k in ARCH_KEYS}
    nets = Networks(
        Generator(a["img_size"], a["style_dim"], a["dim_in"], a["max_conv_dim"], a["w_hpf"]),
        MappingNetwork(a["latent_dim"], a["style_dim"], a["num_domains"], a["mapping_dim"]),
        StyleEncoder(a["img_size"], a["style_dim"], a["num_domains"], a["dim_in"], a["max_conv_dim"]),
        Discriminator(a["img_size"], a["num_domains"], a["dim_in"], a["max_conv_dim"]) if discriminator else None,
    )
    for net in nets.named().values():
        net.apply(he_init)
    return nets


def save_anonymizer(path: str | Path, ema: Networks, arch: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write the inference networks (EMA generator, mapping network, style encoder), their architecture and `info`."""

    state = {
        "format": ANONYMIZER_FORMAT,
        "version": 1,
        "arch": {k: arch[k] for k in ARCH_KEYS},
        "info": info,
        **{
            name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
            for name, net in ema.named().items()
            if name != "discriminator"
        },
    }
    return checkpoint.save(path, state)


def load_anonymizer(path: str | Path) -> tuple[Networks, dict[str, Any]]:
    """Rebuild saved inference networks (eval mode); returns them with the file's architecture and info."""

    state = checkpoint.load(path)
    if state.get("format") != ANONYMIZER_FORMAT:
        raise ObscuraError(
            f"anonymizer file {path}: format is {state.get('format')!r}; expected {ANONYMIZER_FORMAT!r} "
            "(a stage-II run's generator_ema.pt; a training checkpoint is not one)"
        )
    nets = build_networks(state["arch"], discriminator=False)
    for name, net in nets.named().items():
        try:
            net.load_state_dict(state[name])
        except RuntimeError as err:
            raise ObscuraError(
                f"anonymizer file {path}: {name} weights do not match its architecture ({str(err).splitlines()[0]})"
            ) from None
        net.eval()
    return nets, {"arch": state["arch"], **state["info"]}
