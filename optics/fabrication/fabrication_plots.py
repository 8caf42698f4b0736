"""PNG previews: fabricated height maps, PSF pairs, tolerance curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from obscura import atomic  # noqa: E402


def save_height_map(path: Path, height_m: np.ndarray, pitch_m: float, title: str) -> Path:
    """The height map in nanometres over the full mask, axes in millimetres, plus a central zoom."""
    h, w = height_m.shape
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    extent = np.array([0, w, 0, h]) * pitch_m * 1e3
    im = axes[0].imshow(height_m * 1e9, extent=extent, cmap="viridis", interpolation="nearest")
    axes[0].set_xlabel("x (mm)")
    axes[0].set_ylabel("y (mm)")
    axes[0].set_title("height (nm)")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    k = max(min(h, w) // 16, 8)
    cy, cx = h // 2, w // 2
    zoom = height_m[max(cy - k, 0) : cy + k, max(cx - k, 0) : cx + k]
    axes[1].imshow(zoom * 1e9, cmap="viridis", interpolation="nearest")
    axes[1].set_title(f"centre, {zoom.shape[1]} x {zoom.shape[0]} writer pixels")
    fig.suptitle(title)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def save_psf_pair(path: Path, first: np.ndarray, second: np.ndarray, names: tuple[str, str], title: str = "") -> Path:
    """Two C x H x W PSFs side by side per channel (log10) and their difference (linear)."""
    c = first.shape[0]
    fig, axes = plt.subplots(c, 3, figsize=(10, 3.2 * c), squeeze=False)
    for i in range(c):
        for j, (psf, name) in enumerate(((first[i], names[0]), (second[i], names[1]))):
            im = axes[i, j].imshow(np.log10(np.maximum(psf, 1e-7)), cmap="inferno", vmin=-6)
            axes[i, j].set_title(f"{name}, channel {i} (log10)")
            fig.colorbar(im, ax=axes[i, j], fraction=0.046)
        diff = second[i] - first[i]
        scale = max(float(np.abs(diff).max()), 1e-12)
        im = axes[i, 2].imshow(diff, cmap="coolwarm", vmin=-scale, vmax=scale)
        axes[i, 2].set_title(f"{names[1]} - {names[0]}")
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def save_tolerance_curves(path: Path, sweeps: list[dict], min_correlation: float) -> Path:
    """PSF correlation with the error-free fabricated optic against each error's value, one panel per error."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(3.6 * len(sweeps), 3.4), squeeze=False)
    for ax, sweep in zip(axes[0], sweeps):
        ax.plot(sweep["values"], sweep["correlation"], "o-")
        ax.axhline(min_correlation, color="grey", linestyle="--")
        ax.set_xscale("log")
        ax.set_ylim(min(0.0, min(sweep["correlation"])), 1.02)
        ax.set_xlabel(sweep["error"])
        ax.set_ylabel("PSF correlation with fabricated")
        ax.set_title(f"tolerance {sweep['tolerance']:.3g}")
    fig.tight_layout()
    return atomic.write_figure(path, fig)
