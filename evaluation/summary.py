"""One markdown table from many evaluation reports (the rows of docs/baselines.md)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from obscura import atomic
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
    cells = [
        Path(r["data"]).name + f" >= {r['min_images']}",
        f"`{r['method']}`",
        str(r["n_identities"]),
        str(r["n_probes"]),
    ]
    for name in ("sface", "dlib"):
        p = r["privacy"][name]
        lo, hi = p["rank1_ci95"]
        cells += [
            f"{_n(p['rank1'])} [{_n(lo)}, {_n(hi)}]",
            _n(p["rank1_oracle"]),
            _n(p["auc"]),
            _n(p["tar_at_far_1e-3"]),
        ]
    cells.append(_n(r["privacy"]["sface"]["chance"], 4))
    for name in ("mtcnn", "dlib"):
        u = r["utility"][name]
        cells.append(f"{_n(u['fd'])} / {_n(u['bb'], 2)} / {_n(u['lm'], 2)} / {_n(u['nme'])}")
    u = r["utility"]
    cells.append(
        _n(u.get("landmark_nme"))
        + (f" (mean shape {_n(u['landmark_nme_mean_shape'])})" if "landmark_nme_mean_shape" in u else "")
    )
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


def short_name(method: str) -> str:
    """A plot label: `optic:runs/stage1/l0.1` -> `optic:l0.1`, `psf:a/b/psf_x.npy` -> `psf:psf_x`."""
    kind, sep, path = method.partition(":")
    return f"{kind}:{Path(path).name.removesuffix('.npy')}" if sep and path else method


def privacy_utility_png(paths: list[Path], out: str | Path) -> Path:
    """SFace rank1_oracle against landmark NME, one panel per data set; learned optics joined by a line.

    Baselines have no regressor, so their NME is dlib's 68 points found on the output (over the
    share FD of outputs where dlib still finds a face); learned optics use their own regressor.
    """

    matplotlib.use("Agg")

    reports = [json.loads(p.read_text()) for p in paths]
    sets = sorted({Path(r["data"]).name for r in reports})
    fig, axes = plt.subplots(1, len(sets), figsize=(7 * len(sets), 5.5), squeeze=False)
    for ax, data in zip(axes[0], sets):
        rows = [r for r in reports if Path(r["data"]).name == data]
        learned = sorted(
            (r for r in rows if "landmark_nme" in r["utility"]), key=lambda r: r["privacy"]["sface"]["rank1_oracle"]
        )
        if learned:
            ax.plot(
                [r["privacy"]["sface"]["rank1_oracle"] for r in learned],
                [landmark_error(r)[0] for r in learned],
                "o-",
                color="tab:red",
                label="learned optics (regressor NME)",
            )
        baselines = [r for r in rows if "landmark_nme" not in r["utility"]]
        ax.scatter(
            [r["privacy"]["sface"]["rank1_oracle"] for r in baselines],
            [landmark_error(r)[0] for r in baselines],
            color="tab:blue",
            label="baselines (dlib NME where dlib finds a face; FD in brackets)",
        )
        for r in rows:
            fd = "" if "landmark_nme" in r["utility"] else f" (FD {r['utility']['dlib']['fd']:.2f})"
            ax.annotate(
                short_name(r["method"]) + fd,
                (r["privacy"]["sface"]["rank1_oracle"], landmark_error(r)[0]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.axvline(rows[0]["privacy"]["sface"]["chance"], color="grey", ls="--", lw=1, label="chance")
        ax.set_xlabel("SFace rank-1, oracle alignment (lower = more private)")
        ax.set_ylabel("landmark NME, inter-ocular (lower = more useful)")
        ax.set_title(f"{data} (>= {rows[0]['min_images']} images, {rows[0]['n_identities']} identities)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic.write_figure(out, fig)
