"""Inference of the whole chain on sRGB faces: capture -> heatmaps -> several anonymized faces.

`Anonymizer.load(generator_file)` joins a trained stage-II file (EMA generator, mapping network,
style encoder) with the stage-I result it was trained on (checked by the SHA-256 digests the
file records), and `anonymize(faces, styles)` returns the captures, the heatmaps and `styles`
outputs per face, each from a seeded random latent through the mapping network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from anonymizer.nets.stargan import Generator, MappingNetwork, Networks, load_anonymizer
from anonymizer.runs import Stage1Parts, load_stage1
from anonymizer.stage2.stage2_data import resize
from obscura.errors import ObscuraError

SOURCES = ("capture", "lowres16")


@dataclass
class Result:
    """Captures (N x 3 x S x S), the images the generator read, heatmaps, and outputs (N x K x 3 x G x G), all in [0, 1]."""

    captures: Tensor
    inputs: Tensor
    heatmaps: Tensor
    outputs: Tensor


@dataclass
class Anonymizer:
    """A stage-II generator with its stage-I camera and regressor."""

    nets: Networks
    parts: Stage1Parts
    info: dict

    @classmethod
    def load(
        cls, generator_file: str | Path, stage1: str | None = None, pupil_samples: int | None = None
    ) -> "Anonymizer":
        """Load a stage-II file and the stage-I result it names (or `stage1`), refusing a stage I it was not trained on.

        `pupil_samples` resamples the optic's pupil (None: as it was trained)."""
        nets, info = load_anonymizer(generator_file)
        parts = load_stage1(stage1 or info["stage1"], torch.device("cpu"), pupil_samples=pupil_samples)
        changed = [name for name, digest in info.get("stage1_digest", {}).items() if parts.digest.get(name) != digest]
        if changed:
            raise ObscuraError(
                f"{generator_file} was trained on another stage-I result (differs in {', '.join(changed)}); "
                f"pass the stage-I folder it was trained with"
            )
        return cls(nets, parts, info)

    @property
    def crop_size(self) -> int:
        """Side of the centre crop that stage I images (the optic's pixel scale)."""
        return self.parts.crop_size

    @torch.no_grad()
    def anonymize(self, faces: Tensor, styles: int, seed: int = 0, source: str = "capture") -> Result:
        """Anonymize sRGB crops N x 3 x S x S (S = crop_size) with `styles` latent styles each.

        source 'capture' is the camera's path; 'lowres16' feeds the generator the face
        area-downsampled to 16 x 16 and back instead, as the reference compares (the heatmaps
        then come from the regressor reading that image).
        """
        if source not in SOURCES:
            raise ObscuraError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
        g = torch.Generator().manual_seed(seed)
        captured = self.parts.capture(faces, g)
        seen = captured if source == "capture" else lowres_tensor(faces, 16)
        heatmaps = self.parts.regressor(seen)
        latent = self.info["arch"]["latent_dim"]
        outputs = [
            render(
                self.nets.generator,
                self.nets.mapping_network,
                seen,
                heatmaps,
                torch.randn(faces.shape[0], latent, generator=g),
            )
            for _ in range(styles)
        ]
        return Result(captured, seen, heatmaps, torch.stack(outputs, dim=1))


def render(generator: Generator, mapping: MappingNetwork, seen: Tensor, heatmaps: Tensor, latent: Tensor) -> Tensor:
    """The generator's face in [0, 1] for images `seen` (resized to its size), their heatmaps and latents N x latent_dim.

    One function for the PyTorch path and the exported ONNX model (deploy.trained), so both render
    the same face; the style comes from the mapping network's domain 0.
    """
    domain = torch.zeros(latent.shape[0], dtype=torch.long, device=latent.device)
    return generator(resize(seen, generator.img_size), mapping(latent, domain), heatmaps).clamp(0, 1)


def lowres_tensor(faces: Tensor, n: int) -> Tensor:
    """Area-downsample to n x n and bilinear back (the lowres-N baseline on a batch)."""
    small = torch.nn.functional.interpolate(faces, size=(n, n), mode="area")
    return torch.nn.functional.interpolate(small, size=faces.shape[-2:], mode="bilinear", align_corners=False)
