"""`protect`: one protection applied to a folder-per-identity face set, written in the same layout.

Outputs are PNG (lossless: a JPEG would undo an adversarial perturbation), one per input image,
under `<out>/<identity>/`, so any outside tool can judge them; beside them `config.yaml` (the
resolved options), `report.json` (perceptibility and time per image) and `examples.png`. A run
stopped part-way resumes: images already written are kept and only measured again (`method.json`
records whose they are, so another protection is refused there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from skimage.metrics import peak_signal_noise_ratio
from tqdm import tqdm

from faces.face_sets import list_images, read_rgb
from obscura import atomic, config
from obscura.errors import ObscuraError
from optics.image_io import write_png
from protect import registry
from protect.protection import Protection, Transform, ssim_8bit

REPORT = "report.json"
METHOD = "method.json"  # written first: which protection the folder's images are of (a resumed run must match)
EXAMPLES = "examples.png"
EXAMPLE_IDENTITIES = 6


@dataclass
class Measured:
    """One protected image: its perceptibility and, where it was protected in this run, the time it took."""

    psnr_db: float
    ssim: float
    linf: int
    seconds: float | None


def measure(clean: np.ndarray, protected: np.ndarray, seconds: float | None) -> Measured:
    """PSNR, SSIM (8-bit sRGB, colour) and the largest pixel change of a protected image."""
    change = np.abs(protected.astype(np.int16) - clean.astype(np.int16))
    psnr = float("inf") if not change.any() else float(peak_signal_noise_ratio(clean, protected, data_range=255))
    return Measured(psnr, ssim_8bit(clean, protected), int(change.max()), seconds)


def check_resume(out_dir: Path, protection: Protection) -> None:
    """Refuse to mix two protections' images in one folder; mark the folder as this protection's."""
    marker = out_dir / METHOD
    if marker.is_file():
        earlier = config.read_file(marker).get("cache_key")
        if earlier != protection.cache_key:
            raise ObscuraError(
                f"--out {out_dir}: holds images of another protection ({earlier}); expected "
                f"{protection.cache_key} or an empty folder"
            )
    atomic.write_json(marker, {"method": protection.name, "cache_key": protection.cache_key})


def protect_image(name: str, apply: Transform, source: Path, target: Path) -> tuple[np.ndarray, np.ndarray, Measured]:
    """Protect one image (or read its output of an earlier run) and measure it."""
    clean = read_rgb(source)[0]
    if target.is_file():
        protected = read_rgb(target)[0]
        return clean, protected, measure(clean, protected, None)
    start = time.perf_counter()
    protected = apply(clean)
    seconds = time.perf_counter() - start
    if protected.shape != clean.shape or protected.dtype != np.uint8:
        raise ObscuraError(f"{name}: returned {protected.shape} {protected.dtype} for {source}")
    write_png(target, protected)
    return clean, protected, measure(clean, protected, seconds)


def user_transform(protection: Protection, files: list[Path], folder: Path) -> tuple[Transform, float | None]:
    """The transform for one identity's images: the protection itself, or the user's key (learned, or read back).

    Returns it with the seconds spent learning the key (None where nothing was learned in this run).
    """
    per_user = protection.per_user
    if per_user is None:
        return protection.apply, None
    key_file = folder / per_user.key_file
    if key_file.is_file():
        key, seconds = np.load(key_file), None
    else:
        start = time.perf_counter()
        key = per_user.learn([read_rgb(f)[0] for f in files])
        seconds = time.perf_counter() - start
        atomic.write_npy(key_file, key)
    return (lambda image: per_user.apply(image, key)), seconds


def summary(protection: Protection, rows: list[Measured], identities: int) -> dict[str, Any]:
    """The report: what was applied, and the perceptibility and cost of the protection."""
    timed = [r.seconds for r in rows if r.seconds is not None]
    finite = [r.psnr_db for r in rows if np.isfinite(r.psnr_db)]
    return {
        "method": protection.name,
        "description": protection.description,
        "cache_key": protection.cache_key,
        "options": config.to_dict(protection.options),
        "identities": identities,
        "images": len(rows),
        "unchanged_images": sum(r.linf == 0 for r in rows),
        "psnr_db_mean": float(np.mean(finite)) if finite else float("inf"),
        "ssim_mean": float(np.mean([r.ssim for r in rows])),
        "ssim_min": float(np.min([r.ssim for r in rows])),
        "linf_max": max(r.linf for r in rows),
        "ms_per_image": 1000.0 * float(np.mean(timed)) if timed else None,
        "images_protected_this_run": len(timed),
    }


def examples_png(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]], title: str) -> Path:
    """Clean, protected and the change (x8, on grey) for a few identities."""
    matplotlib.use("Agg")
    fig, axes = plt.subplots(3, len(pairs), figsize=(2 * len(pairs), 6.4), squeeze=False)
    for col, (clean, protected) in enumerate(pairs):
        change = np.clip(128 + 8 * (protected.astype(np.int16) - clean), 0, 255).astype(np.uint8)
        for row, (image, label) in enumerate(((clean, "original"), (protected, "protected"), (change, "change x8"))):
            axes[row, col].imshow(image)
            axes[row, col].set_axis_off()
            axes[row, col].set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return atomic.write_figure(path, fig)


def protect_folder(spec: str, data: str | Path, out: str | Path, overrides: list[str], progress: bool = True) -> dict:
    """Protect every image of `data` with the method `spec` (options from `overrides`); returns the report."""
    protection = registry.get(spec, overrides)
    groups = list_images(data)
    out_dir = atomic.writable_folder(out)
    check_resume(out_dir, protection)
    config.write_resolved(protection.options, out_dir)
    rows: list[Measured] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    learned: list[float] = []
    bar = tqdm(total=sum(map(len, groups.values())), desc=f"protect {spec}", unit="img", disable=not progress)
    for identity, files in groups.items():
        apply, seconds = user_transform(protection, files, atomic.writable_folder(out_dir / identity))
        learned += [] if seconds is None else [seconds]
        for i, source in enumerate(files):
            target = out_dir / identity / f"{source.stem}.png"
            clean, protected, measured = protect_image(protection.name, apply, source, target)
            rows.append(measured)
            if i == 0 and len(pairs) < EXAMPLE_IDENTITIES:
                pairs.append((clean, protected))
            bar.update()
    bar.close()
    report = summary(protection, rows, len(groups))
    if protection.per_user is not None:
        report["keys_learned_this_run"] = len(learned)
        report["seconds_per_key"] = float(np.mean(learned)) if learned else None
    atomic.write_json(out_dir / REPORT, report)
    examples_png(out_dir / EXAMPLES, pairs, protection.description)
    return report
