"""One markdown table from many evaluation reports (the rows of docs/baselines.md)."""
from __future__ import annotations

import json
from pathlib import Path

from obscura.errors import ObscuraError

HEADER = (
    "| data | method | ids | probes | sface rank-1 [95 % CI] | sface oracle | sface AUC | sface TAR@1e-3 "
    "| dlib rank-1 [95 % CI] | dlib oracle | dlib AUC | dlib TAR@1e-3 | chance "
    "| MTCNN FD / BB / LM / NME | dlib FD / BB / LM / NME | regressor NME | time (s) |"
)


def find_reports(folders: list[str | Path]) -> list[Path]:
    """Every report.json directly in, or one level below, the given folders (sorted)."""
    found: set[Path] = set()
    for folder in map(Path, folders):
        found.update(p for p in [folder / "report.json", *folder.glob("*/report.json")] if p.is_file())
    if not found:
        raise ObscuraError(f"no report.json in or below {', '.join(map(str, folders))}")
    return sorted(found)


def _n(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def row(r: dict) -> str:
    """One table row of a report."""
    cells = [Path(r["data"]).name + f" >= {r['min_images']}", f"`{r['method']}`", str(r["n_identities"]), str(r["n_probes"])]
    for name in ("sface", "dlib"):
        p = r["privacy"][name]
        lo, hi = p["rank1_ci95"]
        cells += [f"{_n(p['rank1'])} [{_n(lo)}, {_n(hi)}]", _n(p["rank1_oracle"]), _n(p["auc"]), _n(p["tar_at_far_1e-3"])]
    cells.append(_n(r["privacy"]["sface"]["chance"], 4))
    for name in ("mtcnn", "dlib"):
        u = r["utility"][name]
        cells.append(f"{_n(u['fd'])} / {_n(u['bb'], 2)} / {_n(u['lm'], 2)} / {_n(u['nme'])}")
    cells.append(_n(r["utility"].get("landmark_nme")))
    cells.append(f"{r['seconds']:.0f}")
    return "| " + " | ".join(cells) + " |"


def table(paths: list[Path]) -> str:
    """Markdown table of the given reports, in the order given."""
    rows = [row(json.loads(p.read_text())) for p in paths]
    return "\n".join([HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *rows]) + "\n"


def landmark_error(r: dict) -> tuple[float, str]:
    """The landmark NME a report offers and whose it is: the stage-I regressor's if any, else dlib's on the outputs."""
    u = r["utility"]
    if "landmark_nme" in u:
        return u["landmark_nme"], "regressor"
    return u["dlib"]["nme"], f"dlib, FD {u['dlib']['fd']:.2f}"


def privacy_utility_png(paths: list[Path], out: str | Path) -> Path:
    """SFace rank1_oracle against landmark NME, one point per report, one colour per data set.

    Baselines have no regressor, so their NME is dlib's 68 points found on the output (over the
    share FD of outputs where dlib still finds a face); learned optics use their own regressor.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from obscura import atomic

    reports = [json.loads(p.read_text()) for p in paths]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for data in sorted({Path(r["data"]).name for r in reports}):
        rows = [r for r in reports if Path(r["data"]).name == data]
        xs = [r["privacy"]["sface"]["rank1_oracle"] for r in rows]
        ys = [landmark_error(r)[0] for r in rows]
        ax.scatter(xs, ys, label=f"{data} (chance {rows[0]['privacy']['sface']['chance']:.4f})")
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(f"{r['method']} ({landmark_error(r)[1]})", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("SFace rank-1, oracle alignment (lower = more private)")
    ax.set_ylabel("landmark NME, inter-ocular (lower = more useful)")
    ax.set_title("privacy versus utility")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return atomic.write_figure(out, fig)
