"""The PE-MIU grid: RSR and EER cost over block size x permuted blocks, gathered from attack-templates reports.

Each report is one cell seen by one attacker: the stolen templates' protection
`pemiu:BLOCK:PERMUTED` (or `none`), rebuilt by a decoder trained on that protection (the paper's
attacker, who knows the scheme but not the keys) or on unprotected templates (an attacker who
ignores the protection). A cell holds both attackers side by side with the protection's EER cost,
and the figure sets the fully permuted cells' RSR against that cost, the trade-off to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from evaluation.attacks.reversibility import FMRS
from evaluation.attacks.template_inversion import TEMPLATE_DIM
from obscura import atomic
from obscura.errors import ObscuraError
from protect import pemiu

ATTACKERS = ("trained", "unprotected")
ATTACKER_TITLE = {
    "trained": "decoder trained on this protection",
    "unprotected": "unprotected decoder",
}
GOAL_RSR, GOAL_EER_POINTS = 0.02, 1.0  # the goals: RSR <= 2 % at full permutation, EER cost <= 1 point
LOW, HIGH = (f"{fmr:g}" for fmr in FMRS)


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


def attackers(report: dict[str, Any]) -> tuple[str, ...]:
    """Which attackers a report speaks for: `none` templates rebuilt by the unprotected decoder are both."""
    protection, trained_on = report["protection"], report["decoder_trained_on"]
    kinds = (("trained",) if trained_on == protection else ()) + (("unprotected",) if trained_on == "none" else ())
    if not kinds:
        raise ObscuraError(
            f"{report['folder']}/report.json: decoder trained on {trained_on} templates, templates protected by "
            f"{protection}; the grid holds decoders trained on the cell's protection or on unprotected templates"
        )
    return kinds


def judged(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per judge: same-image and other-image RSR at both FMRs, the mean-face floor and how many faces were rebuilt."""
    return {
        name: {
            "same_image": j["same_image"],
            "other_images": j["other_images"],
            "mean_face_same_image": j["mean_face_same_image"],
            "rebuilt": report["test"]["rebuilt"],
            "folder": report["folder"],
        }
        for name, j in report["rsr"].items()
    }


def cells(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One cell per (recogniser, protection): EER and its cost, and per attacker and judge the RSR of its largest run."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in reports:
        setting = pemiu.parse(r["protection"], TEMPLATE_DIM)
        v = r["verification"]
        c = out.setdefault(
            (r["recogniser"], r["protection"]),
            {
                "recogniser": r["recogniser"],
                "protection": r["protection"],
                "block": setting.block if setting else 0,
                "permuted": setting.permuted if setting else 0,
                "full": setting is None or setting.permuted == setting.n_blocks,
                "eer": v.get("protected", v["unprotected"])["eer"],
                "eer_cost_points": v.get("eer_cost_points", 0.0),
                "attackers": {kind: {} for kind in ATTACKERS},
            },
        )
        for kind in attackers(r):
            for name, result in judged(r).items():
                kept = c["attackers"][kind].get(name)
                if kept is None or result["rebuilt"] > kept["rebuilt"]:
                    c["attackers"][kind][name] = result
    return sorted(out.values(), key=lambda x: (x["recogniser"], x["block"], x["permuted"]))


def judges_of(table: list[dict[str, Any]]) -> list[str]:
    """Every judge named in any cell, sorted."""
    return sorted({n for c in table for by_judge in c["attackers"].values() for n in by_judge})


def _rsr(result: dict[str, Any] | None) -> str:
    """`same @0.1 % / same @1 % / other @1 % (faces)` of one attacker and judge, or `-` where it was not run."""
    if result is None:
        return "-"
    s, o = result["same_image"], result["other_images"]
    return f"{100 * s[LOW]:.1f} / **{100 * s[HIGH]:.1f}** / {100 * o[HIGH]:.1f} % ({result['rebuilt']})"


def markdown(table: list[dict[str, Any]]) -> str:
    """The grid as a markdown table: each cell's two attackers side by side, then its EER and EER cost."""
    judges = judges_of(table)
    head = " | ".join(f"{ATTACKER_TITLE[kind]}, {n}" for kind in ATTACKERS for n in judges)
    lines = [
        "RSR: same image @FMR 0.1 % / **@FMR 1 %** / other images @FMR 1 % (rebuilt faces).",
        "",
        "| recogniser | protection | fully permuted | " + head + " | EER | EER cost (points) |",
        "|---|---|---|" + "---|" * (len(ATTACKERS) * len(judges)) + "---|---|",
    ]
    for c in table:
        rsr = " | ".join(_rsr(c["attackers"][kind].get(n)) for kind in ATTACKERS for n in judges)
        lines.append(
            f"| {c['recogniser']} | `{c['protection']}` | {'yes' if c['full'] else 'no'} | {rsr} | "
            f"{100 * c['eer']:.2f} % | {c['eer_cost_points']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def _heatmap(ax: plt.Axes, cells_seen: list[dict[str, Any]], kind: str, judge: str, title: str, top: float) -> None:
    """Same-image RSR at FMR 1 % over block size (with its EER cost) x permuted blocks, colours up to `top` %."""
    blocks = sorted({c["block"] for c in cells_seen})
    permuted = sorted({c["permuted"] for c in cells_seen})
    grid = np.full((len(blocks), len(permuted)), np.nan)
    for c in cells_seen:
        result = c["attackers"][kind].get(judge)
        if result is not None:
            grid[blocks.index(c["block"]), permuted.index(c["permuted"])] = 100 * result["same_image"][HIGH]
    ax.imshow(grid, cmap="magma", vmin=0, vmax=top, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color="cyan")
    cost = {c["block"]: c["eer_cost_points"] for c in cells_seen}
    ax.set_xticks(range(len(permuted)), [str(p) for p in permuted])
    ax.set_yticks(range(len(blocks)), ["none" if b == 0 else f"{b} ({cost[b]:+.2f})" for b in blocks])
    ax.set_xlabel("permuted blocks")
    ax.set_ylabel("block size (EER cost, points)")
    ax.set_title(f"{title}\n{ATTACKER_TITLE[kind]}: RSR % @FMR 1 %", fontsize=8)


def _tradeoff(ax: plt.Axes, cells_seen: list[dict[str, Any]], judge: str, title: str) -> None:
    """Fully permuted cells: same-image RSR at FMR 1 % against EER cost, both attackers, the goals' corner shaded."""
    full = [c for c in cells_seen if c["full"]]
    right = 1.5 * max(2 * GOAL_EER_POINTS, *(c["eer_cost_points"] for c in full))
    ax.fill_between([-0.5, GOAL_EER_POINTS], 0, 100 * GOAL_RSR, color="green", alpha=0.25, label="both goals")
    for kind, marker in zip(ATTACKERS, ("o", "s")):
        points = [(c, c["attackers"][kind].get(judge)) for c in full]
        points = [(c, r) for c, r in points if r is not None]
        xs = [c["eer_cost_points"] for c, _ in points]
        ys = [100 * r["same_image"][HIGH] for _, r in points]
        ax.plot(xs, ys, marker=marker, linestyle="none", label=ATTACKER_TITLE[kind])
        for c, x, y in zip((c for c, _ in points), xs, ys):
            label = "none" if c["block"] == 0 else str(c["block"])
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(100 * GOAL_RSR, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(GOAL_EER_POINTS, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=GOAL_EER_POINTS)  # linear up to the goals, logarithmic beyond
    ax.set_yscale("symlog", linthresh=100 * GOAL_RSR)
    ax.set_xlim(-0.5, right)
    ax.set_ylim(0, 100)
    ax.set_xlabel("EER cost (points)")
    ax.set_ylabel("RSR % @FMR 1 % (same image)")
    ax.set_title(f"{title}\nfully permuted blocks, labelled by block size", fontsize=8)
    ax.legend(fontsize=6)


def heatmap_png(path: Path, table: list[dict[str, Any]]) -> Path:
    """Per (recogniser, judge) a row: both attackers' RSR heat-maps and the RSR-against-EER-cost trade-off."""
    matplotlib.use("Agg")
    panels = sorted({(c["recogniser"], n) for c in table for by_judge in c["attackers"].values() for n in by_judge})
    fig, axes = plt.subplots(len(panels), 3, figsize=(13.5, 3.8 * len(panels)), squeeze=False)
    for row, (rec, judge) in zip(axes, panels):
        seen = [c for c in table if c["recogniser"] == rec]
        title = f"{rec} templates, judge {judge}"
        rsr = [r["same_image"][HIGH] for c in seen for a in c["attackers"].values() for n, r in a.items() if n == judge]
        for ax, kind in zip(row, ATTACKERS):
            _heatmap(ax, seen, kind, judge, title, max(1.0, 100 * max(rsr)))
        _tradeoff(row[2], seen, judge, title)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def write(folders: list[str], out: str) -> str:
    """grid.json, grid.md and grid.png of every report found; returns the markdown."""
    table = cells(find(folders))
    text = markdown(table)
    atomic.write_json(Path(out) / "grid.json", table)
    atomic.write_text(Path(out) / "grid.md", text)
    heatmap_png(Path(out) / "grid.png", table)
    return text
