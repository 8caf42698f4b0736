"""A one-page, self-contained HTML report: headline figures and rows of captioned PNGs embedded as data URIs.

Embedding keeps the page one file that can be mailed or archived without the folder beside it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from obscura import atomic

STYLE = """body{font-family:sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .7em;text-align:left}
figure{display:inline-block;margin:.4em;text-align:center}figure img{width:160px;image-rendering:pixelated}
figure.wide img{width:auto;max-width:100%}figcaption{font-size:.85em}"""

Row = tuple[str, list[tuple[str, Path]]]


def _figure(caption: str, png: Path, wide: bool) -> str:
    """One embedded image with its caption."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def write(
    path: str | Path, title: str, figures: dict[str, str], rows: list[Row], notes: list[str], wide: tuple[str, ...] = ()
) -> Path:
    """Write the page: a table of named figures, then one section of images per row, then notes."""
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in figures.items())
    sections = "".join(
        f"<h2>{html.escape(heading)}</h2><div>" + "".join(_figure(c, p, heading in wide) for c, p in images) + "</div>"
        for heading, images in rows
    )
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><table>{table}</table>{sections}"
        f"<ul>{items}</ul></body></html>\n"
    )
    return atomic.write_text(path, page)
