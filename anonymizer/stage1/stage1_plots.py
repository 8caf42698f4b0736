"""PNG figures of a stage-I run: loss curves and example captures with the regressor's landmarks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from anonymizer.nets import heatmaps
from obscura import atomic  # noqa: E402
from optics.srgb_capture import capture_srgb

PANELS = (
    ("heatmap_loss", "heatmap loss (weighted MSE)"),
    ("identity_information", "identity information KL(U||p) [nats]"),
    ("information_bound", "log K - CE (Barber-Agakov) [nats]"),
    ("adversary_accuracy", "adversary top-1 on the captures"),
    ("nme", "training-batch NME"),
    ("adversary_loss", "adversary ArcFace loss"),
    ("psf_r80_px", "PSF radius holding 80 % of the light [px]"),
    ("quality_l1", "L1(capture, clean) (sRGB)"),
    # with the reconstruction attacker in the loop (rebuild.weight > 0)
    ("rebuild_identity_information", "identity information of the rebuilds [nats]"),
    ("rebuild_adversary_accuracy", "adversary top-1 on the rebuilds"),
    ("rebuild_psnr_db", "least-squares rebuild PSNR [dB]"),
)


def loss_curves(path: Path, history: list[dict]) -> Path:
    """One panel per logged metric against the step count."""
    panels = [(key, title) for key, title in PANELS if history and key in history[0]]
    rows = -(-len(panels) // 4)
    fig, axes = plt.subplots(rows, 4, figsize=(17, 3.5 * rows), squeeze=False)
    steps = [h["step"] for h in history]
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (key, title) in zip(axes.ravel(), panels):
        ax.plot(steps, [h[key] for h in history], lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def examples(path: Path, models, dataset, cfg, count: int = 4) -> Path:
    """Clean crop with dlib's landmarks above, capture with the regressor's landmarks below."""

    items = [dataset[i] for i in range(min(count, len(dataset)))]
    images = torch.stack([it[0] for it in items])
    device = next(models.regressor.parameters()).device
    models.camera.eval()
    models.regressor.eval()
    with torch.no_grad():
        noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        capture = capture_srgb(models.camera, images.to(device), noise)
        found = heatmaps.landmarks(models.regressor(capture), cfg.regressor.stride).cpu()
    models.camera.train()
    models.regressor.train()
    fig, axes = plt.subplots(2, len(items), figsize=(3 * len(items), 6), squeeze=False)
    for j, item in enumerate(items):
        for row, (img, pts, label) in enumerate(
            ((images[j], item[3], "clean + dlib"), (capture[j].cpu(), found[j], "capture + regressor"))
        ):
            ax = axes[row, j]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.scatter(pts[:, 0], pts[:, 1], s=4, c="lime")
            ax.set_title(label, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return atomic.write_figure(path, fig)
