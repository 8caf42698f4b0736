"""The trained networks as ONNX files the firmware runs, checked against PyTorch on real captures.

`export_trained(stage1, anonymizer_file, out)` writes into `out`:
- regressor.onnx: capture N x 3 x S x S in [0, 1] -> heatmaps N x 69 x S/4 x S/4 (S: the stage-I crop size);
- anonymizer.onnx: (capture, heatmaps as the regressor gives them, latent N x latent_dim) -> output
  N x 3 x G x G in [0, 1] (G: the generator's size), through `anonymizer.anonymize.render`, the same
  function the PyTorch `Anonymizer.anonymize` uses on captures;
- latent.npy: one latent (1 x latent_dim) drawn from a seed, the style the camera renders. The device
  feeds this same latent with every frame, so the person it draws stays the same from frame to frame;
  a fresh latent per frame would draw a different face every frame;
- psf.npy: the stage-I PSF (C x H x W), for sim:// sources on a workstation;
- parity.json and parity.png: PyTorch against onnxruntime on real faces imaged by the stage-I camera.

Real faces are the stage-I run's test-split identities (never seen in training) under the face set its
config names, or a folder given with `faces_dir`. The parity batches include 1 and > 1 faces, which
proves the batch axis is dynamic.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import onnxruntime
import torch
from torch import Tensor, nn

from anonymizer import runs
from anonymizer.anonymize import Anonymizer, render
from anonymizer.nets.stargan import Generator, MappingNetwork
from deploy.bundle_builder import build_bundle
from deploy.onnx_export import MIN_OPSET, PARITY_TOLERANCE, check_parity, export_onnx
from faces.alignment import centre_crop
from faces.face_sets import (
    IMAGE_SUFFIXES,
    list_images,
    read_rgb,
    read_split,
    resolve_root,
    round_robin,
)
from firmware.bundle_reader import BundleConfig
from firmware.inference_stages import make_session
from obscura import atomic
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from obscura.paths import shared_data_dir
from optics.image_io import from_uint8, to_uint8, write_png

REGRESSOR = "regressor.onnx"
ANONYMIZER = "anonymizer.onnx"
LATENT = "latent.npy"
PSF = "psf.npy"
PARITY = "parity.json"
PREVIEW = "parity.png"
FIRST_BATCHES = (1, 3)  # then the remaining faces in one batch
MIN_FACES = sum(FIRST_BATCHES)
NOISE_SEED = 0  # sensor noise of the parity captures
PREVIEW_FACES = 4


class LatentAnonymizer(nn.Module):
    """(capture N x 3 x S x S in [0, 1], heatmaps, latent N x latent_dim) -> anonymized face N x 3 x G x G in [0, 1]."""

    def __init__(self, generator: Generator, mapping: MappingNetwork) -> None:
        super().__init__()
        self.generator, self.mapping = generator, mapping

    def forward(self, capture: Tensor, heatmaps: Tensor, latent: Tensor) -> Tensor:
        return render(self.generator, self.mapping, capture, heatmaps, latent)


def load_trained(stage1: str, anonymizer_file: str | Path) -> Anonymizer:
    """The stage-II file with the stage-I result it was trained on; one-line errors for anything missing or mismatched."""
    runs.require_stage1(stage1, (*runs.STAGE2_NEEDS, runs.CONFIG), f"--stage1 {stage1}")
    if not Path(anonymizer_file).is_file():
        raise ObscuraError(f"--anonymizer {anonymizer_file}: no such file (expected a stage-II generator_ema.pt)")
    model = Anonymizer.load(anonymizer_file, stage1)
    size, crop = model.nets.generator.img_size, model.crop_size
    if size < crop:
        # onnxruntime's antialiased Resize differs from torch's by ~0.04, far above the parity tolerance
        raise ObscuraError(
            f"--anonymizer {anonymizer_file}: its generator works at {size} px, below the stage-I crop of "
            f"{crop} px; shrinking the capture has no ONNX form that matches PyTorch, export a generator of >= {crop} px"
        )
    return model


def parity_faces(
    model: Anonymizer, stage1: str, faces_dir: str | Path | None, count: int
) -> tuple[Tensor, list[str], str]:
    """`count` sRGB face crops N x 3 x S x S in [0, 1], their files, and where they come from."""
    if count < MIN_FACES:
        raise ObscuraError(f"--parity-faces {count}: expected >= {MIN_FACES} (a batch of 1 and one of 3)")
    if faces_dir is not None:
        folder = Path(faces_dir)
        if not folder.is_dir():
            raise ObscuraError(f"--faces {folder}: not a folder of face images")
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        source = f"images under {folder}"
    else:
        try:
            root = resolve_root(model.parts.root)
        except ObscuraError:
            raise ObscuraError(
                f"no real faces for the parity check: the stage-I face set {model.parts.root!r} is not under "
                f"{shared_data_dir()} (set OBSCURA_DATA, or pass --faces DIR of face images)"
            ) from None
        split = runs.stage1_folder(stage1) / runs.TEST_SPLIT
        listing = list_images(root)
        paths = round_robin([listing[name] for name in read_split(split) if name in listing])
        source = f"stage-I test split {split} of {root}, one image per identity in turn"
    if len(paths) < count:
        raise ObscuraError(f"parity faces: {len(paths)} images in {source}; expected >= {count}")
    crops = []
    for path in paths[:count]:
        rgb, _ = read_rgb(path)
        crop, _ = centre_crop(rgb, model.crop_size, str(path))
        crops.append(crop)
    return from_uint8(np.stack(crops)), [str(p) for p in paths[:count]], source


def batch_sizes(count: int) -> list[int]:
    """FIRST_BATCHES, then the rest of `count` faces as one batch."""
    return [*FIRST_BATCHES, *([count - MIN_FACES] if count > MIN_FACES else [])]


@contextmanager
def known_export_warnings() -> Iterator[None]:
    """Silence the exporter's warnings that do not apply to these networks (each checked by the parity test)."""
    with warnings.catch_warnings():
        # sizes read as Python numbers: only the batch axis is dynamic, the rest is fixed by the architecture
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # the mapping network's head index is arange(N) and domain 0, never negative
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        # InstanceNorm2d keeps no running statistics: it normalises each image by its own, in eval mode too
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
        yield


def export_trained(
    stage1: str,
    anonymizer_file: str | Path,
    out: str | Path,
    latent_seed: int = 0,
    faces_dir: str | Path | None = None,
    faces: int = 12,
) -> dict[str, Any]:
    """Write the ONNX models, latent, PSF, preview and parity report into `out`; returns the report (raises if parity fails)."""
    model = load_trained(stage1, anonymizer_file)
    clean, files, source = parity_faces(model, stage1, faces_dir, faces)
    with torch.no_grad():
        captures = model.parts.capture(clean, torch.Generator().manual_seed(NOISE_SEED))
        heatmaps = model.parts.regressor(captures)
    latent = torch.randn(1, model.info["arch"]["latent_dim"], generator=torch.Generator().manual_seed(latent_seed))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = LatentAnonymizer(model.nets.generator, model.nets.mapping_network).eval()
    paths = export_models(model.parts.regressor, wrapper, captures[:1], heatmaps[:1], latent, folder)
    sizes = batch_sizes(len(clean))
    diffs = parity(model.parts.regressor, wrapper, paths, captures, heatmaps, latent, sizes)
    with atomic.atomic_path(folder / LATENT) as tmp:
        np.save(tmp, latent.numpy())
    with atomic.atomic_path(folder / PSF) as tmp:
        np.save(tmp, model.parts.psf.cpu().numpy().astype(np.float32))
    write_preview(folder / PREVIEW, clean[:PREVIEW_FACES], captures[:PREVIEW_FACES], paths, latent.numpy())
    report = {
        "stage1": str(runs.stage1_folder(stage1)),
        "anonymizer": str(anonymizer_file),
        "anonymizer_sha256": file_sha256(anonymizer_file),
        "faces": {"count": len(files), "source": source, "files": files},
        "captures": f"the stage-I camera (anonymizer.runs.Stage1Parts.capture), sensor noise seed {NOISE_SEED}",
        "batch_sizes": sizes,
        "max_abs_diff": diffs,
        "tolerance": PARITY_TOLERANCE,
        "opset": MIN_OPSET,
        "input_size": model.crop_size,
        "output_size": model.nets.generator.img_size,
        "latent_seed": latent_seed,
        "latent_dim": latent.shape[1],
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "onnxruntime_providers": ["CPUExecutionProvider"],
    }
    atomic.write_json(folder / PARITY, report)
    return report


def export_models(
    regressor: nn.Module,
    anonymizer: LatentAnonymizer,
    capture1: Tensor,
    heatmaps1: Tensor,
    latent: Tensor,
    folder: Path,
) -> dict[str, Path]:
    """regressor.onnx and anonymizer.onnx in `folder`, traced on one real capture (the batch axis stays dynamic)."""
    paths = {"regressor": folder / REGRESSOR, "anonymizer": folder / ANONYMIZER}
    with known_export_warnings():
        export_onnx(regressor, (capture1,), paths["regressor"], ["capture"], ["heatmaps"])
        export_onnx(
            anonymizer,
            (capture1, heatmaps1, latent),
            paths["anonymizer"],
            ["capture", "heatmaps", "latent"],
            ["output"],
        )
    return paths


def parity(
    regressor: nn.Module,
    anonymizer: LatentAnonymizer,
    paths: dict[str, Path],
    captures: Tensor,
    heatmaps: Tensor,
    latent: Tensor,
    sizes: list[int],
) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| per output over batches of `sizes`; on failure the ONNX files are removed and it raises."""
    starts = np.cumsum([0, *sizes]).tolist()
    spans = [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]
    try:
        reg = check_parity(regressor, paths["regressor"], [(captures[s].numpy(),) for s in spans])
        anon = check_parity(
            anonymizer,
            paths["anonymizer"],
            [(captures[s].numpy(), heatmaps[s].numpy(), latent.expand(s.stop - s.start, -1).numpy()) for s in spans],
        )
    except ObscuraError:
        for path in paths.values():
            path.unlink(missing_ok=True)  # a model that fails parity must not look like a finished export
        raise
    return {
        **{f"regressor.{k}": v for k, v in reg.max_abs_diff.items()},
        **{f"anonymizer.{k}": v for k, v in anon.max_abs_diff.items()},
    }


def write_preview(path: Path, clean: Tensor, captures: Tensor, models: dict[str, Path], latent: np.ndarray) -> Path:
    """PNG rows of face | capture | ONNX output (regressor then anonymizer, as on the device)."""
    x = captures.numpy()
    heat = make_session(models["regressor"], ["CPUExecutionProvider"]).run(None, {"capture": x})[0]
    feeds = {"capture": x, "heatmaps": heat, "latent": np.repeat(latent, len(x), axis=0).astype(np.float32)}
    out = make_session(models["anonymizer"], ["CPUExecutionProvider"]).run(None, feeds)[0]
    size = x.shape[-1]
    rows = [
        np.hstack(
            [
                to_uint8(f),
                to_uint8(c),
                cv2.resize(to_uint8(torch.from_numpy(o)), (size, size), interpolation=cv2.INTER_AREA),
            ]
        )
        for f, c, o in zip(clean, captures, out)
    ]
    return write_png(path, np.vstack(rows))


def build_trained_bundle(
    export_dir: str | Path, bundle_dir: str | Path, version: str | None = None, signing_key: str | Path | None = None
) -> dict[str, Any]:
    """A bundle of an export folder: both models, the latent as the anonymizer's constant input, the PSF; returns the manifest."""
    folder = Path(export_dir)
    try:
        report = json.loads((folder / PARITY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ObscuraError(
            f"{folder / PARITY}: cannot read the export's parity report ({err}); run export-trained first"
        ) from None
    cfg = BundleConfig(input_size=int(report["input_size"]), value_range="0..1")
    models = {"regressor": folder / REGRESSOR, "anonymizer": folder / ANONYMIZER}
    return build_bundle(
        bundle_dir,
        models,
        cfg,
        psf=folder / PSF,
        constants={"latent": folder / LATENT},
        version=version,
        signing_key=signing_key,
    )
