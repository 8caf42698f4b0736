"""Reading raw frames (.npy, .tif/.tiff, .png) and writing the calibration's outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from obscura.errors import ObscuraError

FRAME_SUFFIXES = (".npy", ".tif", ".tiff", ".png")


def list_frames(inputs: list[str], what: str) -> list[Path]:
    """Frame files from files and folders (sorted), or a one-line error."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in FRAME_SUFFIXES))
        elif p.is_file():
            paths.append(p)
        else:
            raise ObscuraError(f"{what} {p} does not exist")
    if not paths:
        raise ObscuraError(f"no {what} found in {', '.join(inputs)}; expected {', '.join(FRAME_SUFFIXES)} files")
    return paths


def read_frame(path: Path) -> np.ndarray:
    """One raw frame as C x H x W float64 (colour PNG/TIFF in RGB order)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            frame = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            frame = tifffile.imread(path)
        elif suffix == ".png":
            frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise ValueError("unreadable")
            if frame.ndim == 3:
                frame = frame[..., ::-1]
        else:
            raise ObscuraError(f"frame {path} has suffix {suffix!r}; expected one of {', '.join(FRAME_SUFFIXES)}")
    except (OSError, ValueError) as err:
        raise ObscuraError(f"frame {path} cannot be read ({err})") from None
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim == 3 and frame.shape[-1] in (3, 4) and suffix != ".npy":
        frame = np.moveaxis(frame[..., :3], -1, 0)
    if frame.ndim == 2:
        frame = frame[None]
    if frame.ndim != 3:
        raise ObscuraError(f"frame {path} has shape {frame.shape}; expected H x W or C x H x W")
    return frame


def read_stack(paths: list[Path]) -> np.ndarray:
    """K x C x H x W from frame files of one shape."""
    frames = [read_frame(p) for p in paths]
    for p, f in zip(paths, frames):
        if f.shape != frames[0].shape:
            raise ObscuraError(f"frame {p} has shape {f.shape}; expected {frames[0].shape} like {paths[0]}")
    return np.stack(frames)
