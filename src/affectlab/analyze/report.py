"""HTML report per input: expression timeline, VA circumplex, AU heatmap, per-face summary.

Each video gets ``DIR/<name>.html`` with its figures embedded as PNG (one self-contained
file to mail or archive); the still images of a run share ``DIR/images.html``; and
``DIR/index.html`` links them all and lists the inputs that failed.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from affectlab.analyze.table import AffectTable


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name) or "input"
    slug, k = base, 1
    while slug in taken:
        k += 1
        slug = f"{base}_{k}"
    taken.add(slug)
    return slug


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 0} .fail{color:#b00}
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")


def _summary_html(table: AffectTable) -> str:
    s = table.summary()
    if s.empty:
        return "<p>No rows.</p>"
    return s.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0)


def _archetypes_html(rows: pd.DataFrame) -> str:
    """The archetypes a face was nearest to, most frequent first (models with an AURA head)."""
    if "archetype" not in rows.columns:
        return ""
    rows = rows[rows["archetype"].notna()]
    if rows.empty:
        return ""
    top = (
        rows.groupby("archetype")
        .agg(frames=("frame", "size"), label=("archetype_label", "first"), purity=("archetype_purity", "first"),
             training_faces=("archetype_size", "first"))
        .sort_values("frames", ascending=False)
        .head(8)
        .reset_index()
    )
    return ("<h3>Nearest archetypes</h3><p>The training faces nearest to this face: each archetype's majority "
            "label and the share of its training faces with that label (purity).</p>"
            + top.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0))


def video_report(table: AffectTable, path: str, out_file: Path, failure: str | None = None) -> Path:
    """Write the report of one video's rows (``table`` holds only that input)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    name = Path(path).name
    n_frames = table["frame"].nunique()
    found = table.loc[table["face"] >= 0, "frame"].nunique()
    parts = [f"<h1>{html.escape(name)}</h1>",
             f"<p>{html.escape(str(path))}<br>{n_frames} frames analysed, a face in {found} "
             f"({100.0 * found / max(n_frames, 1):.1f} %), {len(table.face_ids())} face track(s).</p>"]
    if failure:
        parts.append(f"<p class='fail'>Failed: {html.escape(failure)}. The rows read before the failure are included.</p>")
    parts += ["<h2>Summary per face</h2>", _summary_html(table)]
    faces = table.face_ids()
    # the faces seen longest first; plots of a handful of faces keep the page readable
    counts = table[table["face"] >= 0]["face"].value_counts()
    for face in [int(f) for f in counts.index[:4]]:
        parts.append(f"<h2>Face {face}</h2>")
        if table.expression_names or "valence" in table.columns:
            fig, ax = plt.subplots(figsize=(10, 3.2))
            table.plot_timeline(face=face, ax=ax)
            parts.append("<h3>Expression timeline</h3>" + _img(_png(fig), f"timeline face {face}"))
        if "valence" in table.columns:
            fig, ax = plt.subplots(figsize=(4.6, 4.6))
            table.plot_circumplex(face=face, ax=ax)
            parts.append("<h3>Valence / arousal on the circumplex</h3>" + _img(_png(fig), f"circumplex face {face}"))
        if table.au_names:
            fig, ax = plt.subplots(figsize=(10, 0.25 * len(table.au_names) + 1.4))
            table.plot_aus(face=face, ax=ax)
            parts.append("<h3>Action units over time</h3>" + _img(_png(fig), f"AUs face {face}"))
        parts.append(_archetypes_html(table[table["face"] == face]))
    if not faces:
        parts.append("<p>No face was detected in this input.</p>")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(_page(name, "\n".join(parts)), encoding="utf-8")
    return out_file


def images_report(table: AffectTable, out_file: Path) -> Path:
    """One page for the still images of a run: a row per face with its predictions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    parts = [f"<h1>Images ({table['input'].nunique()})</h1>"]
    with_face = table[table["face"] >= 0]
    parts.append(f"<p>A face was found in {with_face['input'].nunique()} of {table['input'].nunique()} images.</p>")
    if "expression" in table.columns and len(with_face):
        counts = with_face["expression"].value_counts()
        fig, ax = plt.subplots(figsize=(6, 3))
        counts.plot.bar(ax=ax, color="#4477aa")
        ax.set_ylabel("faces")
        ax.set_title("top expression")
        parts.append(_img(_png(fig), "expression counts"))
    if "valence" in table.columns and len(with_face):
        from affectlab.analyze.table import _draw_circumplex

        fig, ax = plt.subplots(figsize=(4.6, 4.6))
        _draw_circumplex(ax)
        ax.scatter(with_face["valence"], with_face["arousal"], s=10, alpha=0.7)
        parts.append("<h2>Valence / arousal</h2>" + _img(_png(fig), "circumplex"))
    keep = ["input", "face", "x", "y", "w", "h", "score"] + [c for c in ("expression", "valence", "arousal") if c in table.columns]
    keep += list(table.au_names)
    keep += [c for c in ("archetype", "archetype_label", "archetype_purity") if c in table.columns]
    view = pd.DataFrame(table[keep]).copy()
    view["input"] = view["input"].map(lambda p: Path(p).name)
    parts += ["<h2>Faces</h2>", view.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0)]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(_page("images", "\n".join(parts)), encoding="utf-8")
    return out_file


def index_page(out_dir: Path, entries: Sequence[tuple[str, str | None, str | None]]) -> Path:
    """``index.html`` linking each input's page; ``entries`` are (input, page file, failure)."""
    rows = []
    for inp, page, fail in entries:
        link = f"<a href='{html.escape(page)}'>{html.escape(Path(inp).name)}</a>" if page else html.escape(Path(inp).name)
        status = f"<span class='fail'>{html.escape(fail)}</span>" if fail else "ok"
        rows.append(f"<tr><td>{link}</td><td>{status}</td></tr>")
    body = "<h1>affectlab analysis</h1><table><tr><th>input</th><th>status</th></tr>" + "".join(rows) + "</table>"
    out = out_dir / "index.html"
    out.write_text(_page("affectlab analysis", body), encoding="utf-8")
    return out
