"""report.md and examples.png of a template-inversion run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from obscura import atomic

SOURCE = (
    "same image: the rebuilt face against the judge's template of the very photo whose template was stolen; "
    "other images: against the judge's templates of the identity's other photos (every such pair counts); "
    "real photos: two clean photos of one identity, the judge's own rate at the same threshold; "
    "mean face: the mean of 200 training faces offered as every rebuild (an attacker who ignores the template)"
)


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.1f} %"


def markdown(r: dict[str, Any]) -> str:
    """Human-readable report of one run."""
    test, train = r["test"], r["train"]
    lines = [
        f"# Template inversion: `{r['recogniser']}` templates, protection `{r['protection']}`",
        "",
        f"Decoder: `{r['decoder']}` (trained on `{r['decoder_trained_on']}` templates). "
        f"Test: {test['identities']} identities of `{test['set']}`, {test['templates']} templates, {test['rebuilt']} rebuilt.",
    ]
    if train:
        lines.append(
            f"Training: {train.get('images')} images of {train.get('identities')} identities ({train.get('pairs')} pairs with mirror images)."
        )
    lines += [
        "",
        "## Reversibility success rate (RSR)",
        "",
        f"Thresholds from the judge's impostor pairs of clean test images. {SOURCE}.",
        "",
        "| judge | threshold FMR 0.1 % | threshold FMR 1 % | same image @0.1 % | same image @1 % | other images @0.1 % | other images @1 % | real photos @0.1 % | real photos @1 % | mean face @1 % | detected |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, j in r["rsr"].items():
        t, s, o, g = j["thresholds"], j["same_image"], j["other_images"], j["clean_genuine"]
        lines.append(
            f"| {name} | {t['0.001']:.4f} | {t['0.01']:.4f} | {_pct(s['0.001'])} | **{_pct(s['0.01'])}** | {_pct(o['0.001'])} | "
            f"{_pct(o['0.01'])} | {_pct(g['0.001'])} | {_pct(g['0.01'])} | {_pct(j['mean_face_same_image']['0.01'])} | "
            f"{_pct(j['detected_share'])} |"
        )
    v = r["verification"]
    lines += [
        "",
        f"## Verification of `{r['recogniser']}` templates (gallery: first image of each of {v['n_gallery']} identities; {v['n_probes']} probes)",
        "",
        "| templates | EER | TAR @ FMR 0.1 % | TAR @ FMR 1 % | AUC |",
        "|---|---|---|---|---|",
    ]
    for name in ("unprotected", "protected"):
        if name in v:
            m = v[name]
            lines.append(
                f"| {name} | {100 * m['eer']:.2f} % | {_pct(m['tar_at_fmr_0.001'])} | {_pct(m['tar_at_fmr_0.01'])} | {m['auc']:.4f} |"
            )
    if "eer_cost_points" in v:
        lines.append(f"\nEER cost of the protection: {v['eer_cost_points']:+.2f} points.")
    lines += [
        "",
        f"Pixel MSE of the rebuilt faces: {r['pixels']['mse']:.4f}. Wall {r['wall_seconds']} s, CPU {r['cpu_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def examples_png(path: Path, truth: np.ndarray, rebuilt: np.ndarray, r: dict[str, Any], count: int) -> Path:
    """Source faces (top) over their rebuilds (bottom), each with the judges' same-image cosine."""
    matplotlib.use("Agg")
    picks = np.linspace(0, len(truth) - 1, min(count, len(truth))).round().astype(int)
    fig, axes = plt.subplots(2, len(picks), figsize=(1.7 * len(picks), 4.0), squeeze=False)
    for col, k in enumerate(picks):
        axes[0, col].imshow(truth[k])
        axes[1, col].imshow(rebuilt[k])
        scores = " ".join(
            f"{n[:5]} {j['per_image_same'][k]:.2f}" for n, j in r["rsr"].items() if j["per_image_same"][k] is not None
        )
        axes[1, col].set_title(scores, fontsize=6)
        for row in range(2):
            axes[row, col].axis("off")
    axes[0, 0].set_title("source", fontsize=8, loc="left")
    fig.suptitle(
        f"faces rebuilt from {r['recogniser']} templates ({r['protection']}); cosine to the source photo", fontsize=9
    )
    fig.tight_layout()
    return atomic.write_figure(path, fig)
