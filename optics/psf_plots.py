"""PNG figures of PSFs, MTFs and captures (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from obscura import atomic  # noqa: E402

CHANNEL_NAMES = ("R", "G", "B")


def mtf(psf: np.ndarray) -> np.ndarray:
    """Modulus of the optical transfer function of a C x H x W PSF (centred, DC = 1)."""
    otf = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(psf, axes=(-2, -1))), axes=(-2, -1))
    return np.abs(otf) / np.abs(otf).max(axis=(-2, -1), keepdims=True)


def save_psf_figure(path: Path, psf: np.ndarray, pixel_pitch_m: float, title: str) -> Path:
    """Row 1: log10 PSF per channel (axes in um); row 2: MTF along the x axis per channel."""
    c, h, w = psf.shape
    fig, axes = plt.subplots(2, c, figsize=(3.2 * c, 6.0), squeeze=False)
    extent_um = np.array([-w // 2, w - w // 2, h - h // 2, -h // 2]) * pixel_pitch_m * 1e6
    curves = mtf(psf)
    freq = np.fft.fftshift(np.fft.fftfreq(w))
    for i in range(c):
        name = CHANNEL_NAMES[i] if c == 3 else f"ch{i}"
        im = axes[0, i].imshow(np.log10(np.maximum(psf[i], 1e-9)), extent=extent_um, cmap="inferno", vmin=-7)
        axes[0, i].set_title(f"log10 PSF {name}")
        axes[0, i].set_xlabel("x (um)")
        fig.colorbar(im, ax=axes[0, i], fraction=0.046)
        half = freq >= 0
        axes[1, i].plot(freq[half], curves[i, h // 2, half])
        axes[1, i].set_ylim(0, 1.05)
        axes[1, i].set_xlabel("cycles / pixel")
        axes[1, i].set_title(f"MTF {name} (x axis)")
    fig.suptitle(title)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def save_side_by_side(path: Path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> Path:
    """A grid of RGB uint8 images: one row per scene, one column per version (titled)."""
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.0 * cols, 3.2 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for col in range(cols):
            ax = axes[r, col]
            ax.axis("off")
            if col < len(images):
                name, image = images[col]
                ax.imshow(image)
                ax.set_title(f"{label}: {name}" if col == 0 else name, fontsize=9)
    fig.tight_layout()
    return atomic.write_figure(path, fig)
