"""One markdown table from many evaluation reports (the rows of docs/baselines.md)."""
from __future__ import annotations

import json
from pathlib import Path

from obscura.errors import ObscuraError

HEADER = (
    "| data | method | ids | probes | sface rank-1 [95 % CI] | sface oracle | sface AUC | sface TAR@1e-3 "
    "| dlib rank-1 [95 % CI] | dlib oracle | dlib AUC | dlib TAR@1e-3 | chance "
    "| MTCNN FD / BB / LM / NME | dlib FD / BB / LM / NME | time (s) |"
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
    cells.append(f"{r['seconds']:.0f}")
    return "| " + " | ".join(cells) + " |"


def table(paths: list[Path]) -> str:
    """Markdown table of the given reports, in the order given."""
    rows = [row(json.loads(p.read_text())) for p in paths]
    return "\n".join([HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *rows]) + "\n"
