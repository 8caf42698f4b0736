"""The PE-MIU grid: RSR and EER cost over block size x permuted blocks, gathered from attack-templates reports.

Each report is one cell: the stolen templates' protection `pemiu:BLOCK:PERMUTED` (or `none`),
rebuilt by a decoder trained on that protection (the paper's attacker) or on unprotected
templates (an attacker who ignores the protection); the two kinds are tabulated apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from obscura import atomic
from obscura.errors import ObscuraError

FMR_KEY = "0.01"


def find(folders: list[str]) -> list[dict[str, Any]]:
    """Every attack-templates report.json in or below the folders."""
    found = []
    for folder in folders:
        base = Path(folder)
        if not base.is_dir():
            raise ObscuraError(f"{folder}: not a folder (expected attack-templates output folders)")
        for path in sorted(base.rglob("report.json")):
            report = json.loads(path.read_text(encoding="utf-8"))
            if "rsr" in report and "protection" in report:
                found.append({**report, "folder": str(path.parent)})
    if not found:
        raise ObscuraError(f"no attack-templates report.json under {', '.join(folders)}")
    return found


def cell(protection: str) -> tuple[int, int]:
    """(block, permuted) of a protection label; `none` is (0, 0)."""
    if protection == "none":
        return 0, 0
    _, block, permuted = protection.split(":")
    return int(block), int(permuted)


def rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per report: recogniser, cell, decoder kind, RSR at FMR 1 % per judge, EER cost."""
    out = []
    for r in reports:
        block, permuted = cell(r["protection"])
        v = r["verification"]
        out.append(
            {
                "recogniser": r["recogniser"],
                "protection": r["protection"],
                "block": block,
                "permuted": permuted,
                "decoder_trained_on": r["decoder_trained_on"],
                "attacker": "trained on this protection"
                if r["decoder_trained_on"] == r["protection"]
                else "trained on unprotected templates",
                "rsr_same_image": {n: j["same_image"][FMR_KEY] for n, j in r["rsr"].items()},
                "rsr_other_images": {n: j["other_images"][FMR_KEY] for n, j in r["rsr"].items()},
                "eer": v.get("protected", v["unprotected"])["eer"],
                "eer_cost_points": v.get("eer_cost_points", 0.0),
                "rebuilt": r["test"]["rebuilt"],
                "folder": r["folder"],
            }
        )
    return sorted(out, key=lambda x: (x["recogniser"], x["attacker"], x["block"], x["permuted"]))


def markdown(table: list[dict[str, Any]]) -> str:
    """The grid as a markdown table."""
    judges = sorted({n for row in table for n in row["rsr_same_image"]})
    head = " | ".join(f"RSR {n} same image / other images @FMR 1 %" for n in judges)
    lines = [
        "| recogniser | attacker | protection | " + head + " | EER | EER cost (points) | rebuilt |",
        "|---|---|---|" + "---|" * len(judges) + "---|---|---|",
    ]
    for row in table:
        rsr = " | ".join(
            f"{100 * row['rsr_same_image'][n]:.1f} % / {100 * row['rsr_other_images'][n]:.1f} %"
            if n in row["rsr_same_image"]
            else "-"
            for n in judges
        )
        lines.append(
            f"| {row['recogniser']} | {row['attacker']} | `{row['protection']}` | {rsr} | {100 * row['eer']:.2f} % | "
            f"{row['eer_cost_points']:+.2f} | {row['rebuilt']} |"
        )
    return "\n".join(lines) + "\n"


def heatmap_png(path: Path, table: list[dict[str, Any]]) -> Path:
    """One panel per (recogniser, attacker, judge): same-image RSR at FMR 1 % over block size x permuted blocks."""
    matplotlib.use("Agg")
    panels = sorted({(r["recogniser"], r["attacker"], n) for r in table for n in r["rsr_same_image"]})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (rec, attacker, judge) in zip(axes[0], panels):
        cells = [
            r for r in table if r["recogniser"] == rec and r["attacker"] == attacker and judge in r["rsr_same_image"]
        ]
        blocks = sorted({r["block"] for r in cells})
        permuted = sorted({r["permuted"] for r in cells})
        grid = np.full((len(blocks), len(permuted)), np.nan)
        for r in cells:
            grid[blocks.index(r["block"]), permuted.index(r["permuted"])] = 100 * r["rsr_same_image"][judge]
        ax.imshow(grid, cmap="magma", vmin=0, vmax=max(1.0, float(np.nanmax(grid))), aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color="cyan")
        ax.set_xticks(range(len(permuted)), [str(p) for p in permuted])
        ax.set_yticks(range(len(blocks)), ["none" if b == 0 else str(b) for b in blocks])
        ax.set_xlabel("permuted blocks")
        ax.set_ylabel("block size")
        ax.set_title(f"{rec} templates, judge {judge}\n{attacker}: RSR % @FMR 1 %", fontsize=8)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def write(folders: list[str], out: str) -> str:
    """grid.json, grid.md and grid.png of every report found; returns the markdown."""
    table = rows(find(folders))
    text = markdown(table)
    atomic.write_json(Path(out) / "grid.json", table)
    atomic.write_text(Path(out) / "grid.md", text)
    heatmap_png(Path(out) / "grid.png", table)
    return text
