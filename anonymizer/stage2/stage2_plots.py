"""PNG figures of a stage-II run: loss curves and sample grids (source, capture, outputs, reference)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from obscura import atomic  # noqa: E402

PANELS = (
    (("d_real", "d_fake"), "discriminator: softplus(-D(real)), softplus(D(fake))"),
    (("d_r1",), "R1 penalty (gamma/2 |grad D(real)|^2)"),
    (("g_adv",), "generator adversarial"),
    (("g_style",), "style reconstruction L1"),
    (("g_diversity", "ds_weight"), "diversity L1 and its weight"),
    (("g_cycle",), "cycle L1"),
    (("g_heatmap",), "heatmap consistency L1"),
    (("identity_cosine", "g_identity"), "identity: cosine to source, penalty"),
)


def loss_curves(path: Path, history: list[dict]) -> Path:
    """One panel per loss group against the step count."""
    fig, axes = plt.subplots(2, 4, figsize=(17, 7))
    steps = [h["step"] for h in history]
    for ax, (keys, title) in zip(axes.ravel(), PANELS):
        for key in keys:
            ax.plot(steps, [h[key] for h in history], lw=1.2, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def sample_grid(path: Path, rows: dict[str, Tensor], title: str) -> Path:
    """One row per named N x 3 x H x W batch in [0, 1] (source, capture, outputs, ...), one column per face."""
    names = list(rows)
    count = rows[names[0]].shape[0]
    fig, axes = plt.subplots(len(names), count, figsize=(2.2 * count, 2.2 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(count):
            ax = axes[r, c]
            ax.imshow(rows[name][c].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic.write_figure(path, fig)
