"""The demo's second half: one photographed face through the committed camera, regressor and anonymizer.

The face is first put where the training faces sit (the celeba-crops frame), because the learned
optic, the regressor and the generator only ever saw faces there: YuNet's 5 landmarks are mapped
by a similarity transform onto the frame's mean landmark positions, then the stage-I centre crop
is taken. The anonymized faces are judged as `evaluate-anonymizer` judges them (at 256 x 256, by
MTCNN, dlib, SFace; none trained here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anonymizer import runs
from anonymizer.anonymize import Anonymizer
from evaluation.anonymization import (
    DLIB_DISTANCE_THRESHOLD,
    SFACE_COSINE_THRESHOLD,
    VERIFIERS,
    Judges,
    judge_size,
    leakage,
    utility,
)
from faces.alignment import centre_crop, similarity
from faces.face_models import YuNet
from obscura import manifest, paths
from obscura.errors import ObscuraError
from optics.image_io import from_uint8, to_uint8, write_png

# Where faces sit in ../shared/data/celeba-crops (160 x 160): YuNet's 5 landmarks (eyes, nose tip,
# mouth corners; image left first), median over 100 training images (every 30th of the first 3,000
# in name order); the spread is 3-6 px. Measured once so the demo needs no face data.
CELEBA_FRAME_SIZE = 160
CELEBA_FRAME_POINTS = np.array([[60.73, 75.60], [100.15, 75.62], [80.36, 98.91], [63.57, 117.11], [97.19, 117.12]])
DEMO_STYLES = 6


def training_frame_crop(rgb: np.ndarray, crop_size: int, source: str) -> np.ndarray:
    """The face of an RGB uint8 photo warped into the celeba-crops frame and centre-cropped to crop_size."""
    face = YuNet().detect(rgb).central(rgb.shape)
    if face is None:
        raise ObscuraError(f"{source}: YuNet finds no face to anonymize")
    matrix = similarity(face.landmarks, CELEBA_FRAME_POINTS)
    frame = cv2.warpAffine(
        rgb, matrix, (CELEBA_FRAME_SIZE, CELEBA_FRAME_SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT
    )
    return np.ascontiguousarray(centre_crop(frame, crop_size, source)[0])


def heatmap_image(heatmaps: np.ndarray, size: int) -> np.ndarray:
    """The regressor's 68 landmark maps and boundary map as one RGB uint8 picture (max over channels, magma)."""
    peak = heatmaps.max(axis=0)
    scaled = np.clip(peak / max(float(peak.max()), 1e-6) * 255.0, 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(cv2.resize(scaled, (size, size), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_MAGMA)
    return coloured[:, :, ::-1]


def judge(source: np.ndarray, outputs: list[np.ndarray]) -> dict[str, Any]:
    """Face detection (FD/BB/LM) and identity leakage of the outputs against their source, at 256 x 256."""
    judges = Judges()
    src = judges.look(judge_size(source))
    outs = [judges.look(judge_size(o)) for o in outputs]
    if src["sface"] is None or src["dlib"] is None:
        raise ObscuraError("demo face: SFace or dlib finds no face on the clean source, so leakage cannot be judged")
    util = utility([src], [outs])
    leak = leakage([src], [outs])
    verified = [any(o[name] is not None and same(src[name], o[name]) for name, same in VERIFIERS.items()) for o in outs]
    return {
        "fd": util["mtcnn"]["fd"],
        "identity_leakage": float(np.mean(verified)),
        "identity_leakage_by": {"sface": leak["sface"], "dlib": leak["dlib"]},
        "utility": util,
        "sface_cosine_to_source": [
            None if o["sface"] is None else round(float(o["sface"] @ src["sface"]), 4) for o in outs
        ],
        "definitions": {
            "fd": "share of outputs where MTCNN finds a face (the source has one)",
            "identity_leakage": f"share of outputs that SFace (cosine >= {SFACE_COSINE_THRESHOLD}) or dlib "
            f"(distance < {DLIB_DISTANCE_THRESHOLD}) verifies as the source face",
        },
    }


def run(
    face_rgb: np.ndarray,
    out: Path,
    source: str,
    styles: int = DEMO_STYLES,
    seed: int = 0,
    pupil_samples: int | None = None,
) -> dict[str, Any]:
    """Capture, heatmaps and `styles` anonymized faces of one photo; writes PNGs and returns the report section."""
    weights = paths.WEIGHTS_DIR / runs.ANONYMIZER
    manifest.verify(paths.WEIGHTS_DIR / manifest.NAME, [runs.ANONYMIZER, runs.OPTIC, runs.REGRESSOR])
    model = Anonymizer.load(weights, pupil_samples=pupil_samples)
    crop = training_frame_crop(face_rgb, model.crop_size, source)
    faces = from_uint8(crop[None])
    result = model.anonymize(faces, styles, seed)
    capture8 = to_uint8(result.captures[0])
    outputs = list(to_uint8(result.outputs[0]))
    files = {
        "source": write_png(out / "anon_source.png", crop),
        "capture": write_png(out / "anon_capture.png", capture8),
        "heatmaps": write_png(out / "anon_heatmaps.png", heatmap_image(result.heatmaps[0].numpy(), model.crop_size)),
    }
    for k, image in enumerate(outputs):
        files[f"anonymized {k + 1}"] = write_png(out / f"anonymized_{k + 1}.png", image)
    report = {
        "weights": str(weights.relative_to(paths.WEIGHTS_DIR.parent)),
        "styles": styles,
        "seed": seed,
        "pupil_samples": model.parts.camera.optic.config.pupil_samples,
        "crop_size": model.crop_size,
        "output_size": int(result.outputs.shape[-1]),
        **judge(crop, outputs),
    }
    report["images"] = {name: path.name for name, path in files.items()}
    return report
