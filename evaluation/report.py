"""report.json, report.md and PNGs (example probes; privacy versus utility) of an evaluation run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from evaluation.analysis import RECOGNISERS, UTILITY_DETECTORS
from faces.face_sets import read_rgb
from obscura import atomic

if TYPE_CHECKING:
    from evaluation.evaluate import EvaluateConfig, Records
    from evaluation.methods import Method

PROTOCOL = {
    "gallery": "first readable image (sorted by file name) of each identity, clean",
    "probes": "every other readable image of that identity, after the method",
    "rank1": "closed set over all gallery identities; the probe is detected and aligned on itself; "
    "correct only when its own identity scores strictly above every other (ties are wrong); "
    "a probe without a detected face is wrong",
    "rank1_oracle": "as rank1, but the probe is aligned with the landmarks found on its clean image "
    "(the stronger attacker); a probe whose clean image has no face is wrong",
    "verification": "every probe-versus-gallery pair (genuine: same identity); score = cosine similarity "
    "of unit embeddings; a probe or gallery image without a face scores -1 (the minimum) in all its pairs; "
    "AUC counts ties as one half; TAR at FAR=1e-3 accepts score > t for the lowest t with impostor "
    "acceptance <= 1e-3; EER = mean of FAR and FRR where they are closest",
    "transformed_gallery": "gallery images also go through the method; probes as above; rank1 aligns both "
    "sides on themselves, rank1_oracle aligns both with clean landmarks",
    "chance": "1 / number of gallery identities",
    "ci95": "percentile interval of bootstrap resamples of the probes with replacement (count in 'bootstrap'); "
    "for verification each resample re-weights the pairs of the drawn probes",
    "detectors": "sface: YuNet (score >= 0.5) 5 landmarks -> 112x112 ArcFace-template crop -> SFace; "
    "dlib: HOG (images under 200 px upsampled once) -> 68 landmarks -> dlib's own 150x150 chip "
    "(padding 0.25) -> ResNet; of several faces the one whose box centre is nearest the image centre",
    "utility": "source and output resized (bilinear) to 256x256; MTCNN (5 points) and dlib HOG (68 points); "
    "FD = share of probes with a source face whose output has one; BB = mean distance of box centres (px); "
    "LM = mean absolute landmark coordinate difference (px); NME = mean landmark distance / source "
    "inter-ocular distance (eye centres for 5 points, outer eye corners 36-45 for 68); over probes",
}


def write(result: dict, rec: "Records", method: "Method", out: Path, cfg: "EvaluateConfig") -> None:
    """Write report.json, report.md, examples.png and privacy_utility.png into `out`."""
    atomic.write_json(out / "report.json", result)
    atomic.write_text(out / "report.md", markdown(result))
    _examples_png(rec, method, out / "examples.png", cfg.examples)
    _privacy_utility_png(result, out, out / "privacy_utility.png")


def _fmt(value: float, ci: list[float] | None = None) -> str:
    text = "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def markdown(r: dict) -> str:
    """Human-readable report."""
    lines = [
        f"# Evaluation: `{r['method']}` on `{r['data']}`",
        "",
        f"Method: {r['method_description']}.",
        f"Identities: {r['n_identities']} (>= {r['min_images']} readable images"
        + (f", split {r['split']}" if r["split"] else "")
        + f"); gallery {r['n_gallery']}, probes {r['n_probes']}; chance rank-1 {1 / r['n_identities']:.4f}.",
        f"Greyscale images: {r['greyscale_images']} of {r['n_images']} ({r['colour_handling']}).",
        f"Unreadable images skipped: {len(r['unreadable_images'])}"
        + "".join(f"\n- `{p}`" for p in r["unreadable_images"]),
        "",
        "## Privacy (lower is more private; 95 % bootstrap intervals)",
        "",
        "| recogniser | rank-1 | rank-1 oracle | AUC | EER | TAR@FAR=1e-3 | chance | probes without face |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in RECOGNISERS:
        p = r["privacy"][name]
        lines.append(
            f"| {name} | {_fmt(p['rank1'], p['rank1_ci95'])} | {_fmt(p['rank1_oracle'], p['rank1_oracle_ci95'])} "
            f"| {_fmt(p['auc'], p['auc_ci95'])} | {_fmt(p['eer'], p['eer_ci95'])} "
            f"| {_fmt(p['tar_at_far_1e-3'], p['tar_at_far_1e-3_ci95'])} | {p['chance']:.4f} "
            f"| {p['probes_without_face']} |"
        )
    lines += ["", "Gallery also transformed:", ""]
    lines += ["| recogniser | rank-1 | rank-1 oracle | AUC | TAR@FAR=1e-3 |", "|---|---|---|---|---|"]
    for name in RECOGNISERS:
        t = r["privacy"][name]["transformed_gallery"]
        cells = [_fmt(t[k]) for k in ("rank1", "rank1_oracle", "auc", "tar_at_far_1e-3")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += reconstruction_lines(r)
    lines += ["", "## Utility (source versus output at 256x256)", ""]
    lines += ["| detector | FD | BB (px) | LM (px) | NME | pairs |", "|---|---|---|---|---|---|"]
    for name in UTILITY_DETECTORS:
        u = r["utility"][name]
        cells = [_fmt(u[k]) for k in ("fd", "bb", "lm", "nme")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {u['n_pairs']} |")
    if "landmark_nme" in r["utility"]:
        lines += [
            "",
            f"Regressor landmarks on the captures of moved faces (fixed motions, seed {r['utility']['motion_seed']}, "
            f"in motions.json) versus dlib's on the clean images moved alike: NME "
            f"{_fmt(r['utility']['landmark_nme'])} over {r['utility']['landmark_nme_pairs']} probes "
            f"(answering every probe with the mean shape: {_fmt(r['utility']['landmark_nme_mean_shape'])}); "
            f"on the aligned faces {_fmt(r['utility']['landmark_nme_aligned'])} "
            f"(mean shape {_fmt(r['utility']['landmark_nme_mean_shape_aligned'])}).",
        ]
    lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in r["protocol"].items()]
    lines += ["", f"Run time {r['seconds']} s with {r['workers']} worker(s); cache `{r['cache_dir']}`.", ""]
    return "\n".join(lines)


def reconstruction_lines(r: dict) -> list[str]:
    """The privacy table after each reconstruction attacker (reconstruction.png shows the rebuilds)."""
    attacks = r["privacy"].get("reconstruction", {})
    if not attacks:
        return []
    lines = ["", "After reconstruction (each probe rebuilt from its output, then judged; gallery clean):", ""]
    lines += ["| attacker | recogniser | rank-1 | rank-1 oracle | AUC | TAR@FAR=1e-3 |", "|---|---|---|---|---|---|"]
    for by_recogniser in attacks.values():
        for name in RECOGNISERS:
            p = by_recogniser[name]
            lines.append(
                f"| `{by_recogniser['attacker']}` | {name} | {_fmt(p['rank1'], p['rank1_ci95'])} "
                f"| {_fmt(p['rank1_oracle'], p['rank1_oracle_ci95'])} | {_fmt(p['auc'], p['auc_ci95'])} "
                f"| {_fmt(p['tar_at_far_1e-3'], p['tar_at_far_1e-3_ci95'])} |"
            )
    return lines


def _examples_png(rec: "Records", method: "Method", path: Path, count: int) -> None:
    """Clean probes (top) and their outputs (bottom), one probe from identities spread over the set."""

    matplotlib.use("Agg")

    n = min(count, len(rec.probe_paths))
    if n == 0:
        return
    picks = np.linspace(0, len(rec.probe_paths) - 1, n).round().astype(int)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.3), squeeze=False)
    for col, idx in enumerate(picks):
        image, _ = read_rgb(rec.probe_paths[idx])
        for row, shown in enumerate((image, method.apply(image))):
            axes[row, col].imshow(shown)
            axes[row, col].axis("off")
        axes[0, col].set_title(Path(rec.probe_paths[idx]).parent.name[:18], fontsize=7)
    axes[0, 0].text(-0.1, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, method.name, transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    atomic.write_figure(path, fig)


def _privacy_utility_png(result: dict, out: Path, path: Path) -> None:
    """Rank-1 (both recognisers) versus MTCNN face detection rate, this run and sibling runs on the same data."""

    matplotlib.use("Agg")

    runs = {result["method"]: result}
    for other in sorted(out.parent.glob("*/report.json")):
        if other.parent.resolve() == out.resolve():
            continue
        try:
            r = json.loads(other.read_text())
        except (OSError, ValueError):
            continue
        if all(r.get(k) == result[k] for k in ("data", "min_images", "split")):
            runs.setdefault(r["method"], r)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, marker in (("sface", "o"), ("dlib", "s")):
        xs = [r["utility"]["mtcnn"]["fd"] for r in runs.values()]
        ys = [r["privacy"][name]["rank1"] for r in runs.values()]
        ax.scatter(xs, ys, marker=marker, label=f"{name} rank-1")
        for x, y, m in zip(xs, ys, runs):
            ax.annotate(m, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(result["privacy"]["sface"]["chance"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("MTCNN face detection rate FD on outputs (higher = more utility)")
    ax.set_ylabel("rank-1 identification (lower = more private)")
    ax.set_title(f"privacy vs utility, {Path(result['data']).name} (>= {result['min_images']} images)")
    ax.legend(fontsize=8)
    atomic.write_figure(path, fig)
