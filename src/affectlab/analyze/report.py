"""HTML report of an analysis, for the person who ran it.

``DIR/index.html``
    What was run (model, detector, sampling, smoothing, table, annotated videos), how many
    inputs had a face, and one line per input: its thumbnail, a link to its own page, the
    frames with a face, the dominant expression, mean valence and arousal, its annotated
    video and what happened (``no face found`` and failures are said as such).
``DIR/<name>.html`` per video
    Thumbnail, summary per face (statistics as rows, one column per face, so it fits the
    page however many expressions and AUs the model has), expression probabilities with
    valence/arousal over time, the VA trajectory on the circumplex and an AU heatmap over
    time for the faces seen longest.
``DIR/images.html``
    One card per still image (anchor ``#<name>``): thumbnail with the face boxes, and per
    face its expression probabilities as bars, valence, arousal and top AUs.
``DIR/thumbs/<name>.jpg``
    Small JPEGs (at most 240 px) of the inputs, boxes drawn. They show the user's own
    material; the report is meant to stay with it.

Names come from :func:`~affectlab.analyze.naming.unique_output_names`. Figures are PNGs
embedded in the page; everything fits a 1280-pixel-wide window (long paths wrap, wide
tables scroll inside their own box).
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.analyze.table import AffectTable

THUMB_SIDE = 240


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _e(value) -> str:
    return html.escape(str(value))


_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:16px 24px;max-width:1200px;
     color:#1d1d1f;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin:.2em 0 .4em} h2{font-size:1.25em;margin:1.4em 0 .5em} h3{font-size:1.05em;margin:1em 0 .3em}
a{color:#0b57d0}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #dcdcdc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f3f4f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.path{color:#5f6368;font-size:12px;overflow-wrap:anywhere;word-break:break-word}
.muted{color:#5f6368}
img.thumb{width:96px;height:auto;border-radius:4px;display:block}
img.fig{max-width:100%;height:auto;display:block;margin:.4em 0}
.fail{color:#b00020;font-weight:600} .noface{color:#8a5a00;font-weight:600} .ok{color:#1e7b34}
dl.run{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 14px;font-size:14px;margin:.5em 0 1em}
dl.run dt{color:#5f6368} dl.run dd{margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
.card{border:1px solid #dcdcdc;border-radius:8px;padding:10px 12px;min-width:0}
.card img.big{max-width:100%;width:240px;height:auto;border-radius:4px}
.probs{display:grid;grid-template-columns:max-content minmax(60px,1fr) 3.2em;gap:2px 8px;align-items:center;
       font-size:12px;margin:.3em 0}
.bar{background:#e8eaed;height:10px;border-radius:3px;overflow:hidden}
.bar>span{display:block;height:10px;background:#3366aa}
.top>span{background:#d2691e}
.head{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")


# -- thumbnails ---------------------------------------------------------------------------------------------------


def write_thumbnail(image: np.ndarray, rows: pd.DataFrame | None, path: Path, side: int = THUMB_SIDE) -> Path:
    """A small JPEG of ``image`` with the face boxes of ``rows`` drawn, at most ``side`` pixels."""
    import cv2

    img = np.ascontiguousarray(image[..., :3])
    h, w = img.shape[:2]
    k = min(1.0, side / max(h, w))
    small = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA) if k < 1 else img.copy()
    if rows is not None and len(rows):
        faces = rows.loc[rows["face"] >= 0, ["x", "y", "w", "h"]].to_numpy(dtype=float)
        for x, y, bw, bh in faces * k:
            x0, y0, x1, y1 = int(round(x)), int(round(y)), int(round(x + bw)), int(round(y + bh))
            cv2.rectangle(small, (x0, y0), (x1, y1), (0, 0, 0), 3)
            cv2.rectangle(small, (x0, y0), (x1, y1), (255, 215, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
    if not ok:
        raise OSError(f"cannot encode the thumbnail {path}")
    path.write_bytes(data.tobytes())
    return path


# -- per-input summaries ------------------------------------------------------------------------------------------


def input_summaries(rows: pd.DataFrame, kind: str, expressions: Sequence[str],
                    inputs: Sequence[str] | None = None) -> dict[str, dict]:
    """What the index says about each input (all at once: one pass over the rows).

    Per input: ``kind``, ``frames``, ``frames_with_face``, ``faces`` (tracks),
    ``face_rows``, the ``dominant`` expression (largest mean probability over its faces)
    with ``dominant_p``, and mean ``valence`` / ``arousal``.
    """
    inputs = list(inputs) if inputs is not None else list(dict.fromkeys(rows["input"].astype(str)))
    empty = pd.Series(dtype=float)
    frames = frames_face = faces = face_rows = empty
    means = va = None
    cols = [f"expr_{n}" for n in expressions if f"expr_{n}" in rows.columns]
    if len(rows):
        key = rows["input"].astype(str)
        face = (rows["face"] >= 0).to_numpy()
        frames = rows.groupby(key)["frame"].nunique()
        fdf, fkey = rows[face], key[face]
        if len(fdf):
            frames_face = fdf.groupby(fkey)["frame"].nunique()
            faces = fdf.groupby(fkey)["face"].nunique()
            face_rows = fkey.value_counts()
            if cols:
                means = fdf[cols].astype(float).groupby(fkey).mean()
            va_cols = [c for c in ("valence", "arousal") if c in rows.columns]
            if va_cols:
                va = fdf[va_cols].apply(pd.to_numeric, errors="coerce").groupby(fkey).mean()
    out = {}
    for p in inputs:
        s = {"kind": kind, "frames": int(frames.get(p, 0)), "frames_with_face": int(frames_face.get(p, 0)),
             "faces": int(faces.get(p, 0)), "face_rows": int(face_rows.get(p, 0))}
        if means is not None and p in means.index:
            m = means.loc[p]
            if m.notna().any():
                best = m.idxmax()
                s["dominant"], s["dominant_p"] = best[len("expr_"):], float(m[best])
        if va is not None and p in va.index:
            for c, v in va.loc[p].items():
                if np.isfinite(v):
                    s[c] = float(v)
        out[p] = s
    return out


def input_summary(rows: pd.DataFrame, kind: str, expressions: Sequence[str]) -> dict:
    """:func:`input_summaries` of the rows of one input."""
    name = str(rows["input"].iloc[0]) if len(rows) else ""
    return input_summaries(rows, kind, expressions, [name])[name]


def display_names(inputs: Sequence[str]) -> dict[str, str]:
    """What a person reads for each input: its file name, with as many parent folders as
    it takes to tell inputs of the same file name apart (``day1/clip.mp4``)."""
    parts = {p: Path(os.path.abspath(p)).parts for p in dict.fromkeys(map(str, inputs))}
    depth = {p: 1 for p in parts}
    while True:
        seen: dict[str, list[str]] = {}
        for p, d in depth.items():
            seen.setdefault("/".join(parts[p][-d:]).lower(), []).append(p)
        clash = [p for group in seen.values() if len(group) > 1 for p in group if depth[p] < len(parts[p])]
        if not clash:
            break
        for p in clash:
            depth[p] += 1
    return {p: "/".join(parts[p][-depth[p]:]).lstrip("/") or p for p in parts}


def _status(summary: Mapping, failure: str | None, path: str | None = None) -> str:
    if failure:
        if path and failure.startswith(f"{path}: "):
            failure = failure[len(path) + 2:]  # the line already names the input
        return f"<span class='fail'>failed: {_e(failure)}</span>"
    if not summary.get("frames"):
        return "<span class='noface'>no frame analysed</span>"
    if not summary.get("face_rows"):
        return "<span class='noface'>no face found</span>"
    if summary.get("kind") == "image":
        n = summary["faces"]
        return f"<span class='ok'>{n} face{'s' if n != 1 else ''}</span>"
    f, n = summary["frames_with_face"], summary["frames"]
    return f"<span class='ok'>face in {f} of {n} frames ({100.0 * f / n:.0f} %)</span>"


def _run_html(run: Mapping | None) -> str:
    if not run:
        return ""
    labels = [("model", "model"), ("detector", "face detector"), ("every", "frames"), ("window", "time window"),
              ("smoothing", "temporal smoothing"), ("table", "table"), ("annotated", "annotated videos"),
              ("sources", "columns from"), ("created", "created")]
    items = []
    for key, label in labels:
        value = run.get(key)
        if value in (None, "", [], {}):
            continue
        items.append(f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>")
    return "<dl class='run'>" + "".join(items) + "</dl>" if items else ""


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return f"{v:+.{digits}f}" if isinstance(v, float) else _e(v)


def _rel(target, start: Path) -> str:
    try:
        return Path(os.path.relpath(Path(target).resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(target).resolve().as_uri()


# -- pages --------------------------------------------------------------------------------------------------------


def _summary_html(table: AffectTable) -> str:
    """The per-face statistics transposed: a row per statistic, a column per face."""
    s = table.summary()
    if s.empty:
        return "<p class='muted'>No rows.</p>"
    s = s.drop(columns=["input"]).set_index("face")
    s.index = [f"face {f}" if f >= 0 else "no face" for f in s.index]
    t = s.T
    body = []
    for stat, values in t.iterrows():
        cells = []
        for v in values:
            if isinstance(v, (float, np.floating)):
                cells.append(f"<td class='num'>{'' if not np.isfinite(v) else f'{v:.3f}'}</td>")
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                cells.append("<td></td>")
            else:
                cells.append(f"<td class='num'>{_e(v)}</td>")
        body.append(f"<tr><th>{_e(stat)}</th>{''.join(cells)}</tr>")
    head = "<tr><th>statistic</th>" + "".join(f"<th>{_e(c)}</th>" for c in t.columns) + "</tr>"
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


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
            "label and the share of its training faces with that label (purity).</p><div class='scroll'>"
            + top.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0) + "</div>")


def video_report(table: AffectTable, path: str, out_file: Path, failure: str | None = None, *,
                 thumb: str | None = None, run: Mapping | None = None, annotated: str | None = None,
                 title: str | None = None) -> Path:
    """Write the page of one video (``table`` holds only that input's rows); ``title``
    is its display name (default its file name)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_file = Path(out_file)
    name = title or Path(path).name
    summary = input_summary(table, "video", table.expression_names)
    head = [f"<h1>{_e(name)}</h1>", f"<p class='path'>{_e(path)}</p>"]
    facts = [f"{summary['frames']} frames analysed; {_status(summary, failure, str(path))}; "
             f"{summary['faces']} face track(s)"]
    if "dominant" in summary:
        facts.append(f"dominant expression <b>{_e(summary['dominant'])}</b> (mean probability "
                     f"{summary['dominant_p']:.2f})")
    if "valence" in summary:
        facts.append(f"mean valence {summary['valence']:+.2f}, arousal {summary.get('arousal', float('nan')):+.2f}")
    if annotated:
        facts.append(f"annotated video: <a href='{_e(_rel(annotated, out_file.parent))}'>{_e(Path(annotated).name)}</a>")
    info = "<div>" + "".join(f"<p>{f}</p>" for f in facts) + "</div>"
    thumb_html = f"<img class='thumb' style='width:200px' alt='first frame with a face' src='{_e(thumb)}'>" if thumb else ""
    parts = head + [f"<div class='head'>{thumb_html}{info}</div>", _run_html(run),
                    "<p><a href='index.html'>&larr; all inputs</a></p>"]
    if failure:
        parts.append("<p class='fail'>The rows read before the failure are included.</p>")
    parts += ["<h2>Summary per face</h2>", _summary_html(table)]
    counts = table[table["face"] >= 0]["face"].value_counts()
    # the faces seen longest first; plots of a handful of faces keep the page readable
    shown = [int(f) for f in counts.index[:4]]
    if len(counts) > len(shown):
        parts.append(f"<p class='muted'>Plots of the {len(shown)} faces seen longest of {len(counts)}.</p>")
    for face in shown:
        parts.append(f"<h2>Face {face}</h2>")
        if table.expression_names or "valence" in table.columns:
            fig, ax = plt.subplots(figsize=(10, 3.2))
            table.plot_timeline(face=face, ax=ax)
            parts.append("<h3>Expressions and valence / arousal over time</h3>" + _img(_png(fig), f"timeline face {face}"))
        if "valence" in table.columns:
            fig, ax = plt.subplots(figsize=(4.6, 4.6))
            table.plot_circumplex(face=face, ax=ax)
            parts.append("<h3>Valence / arousal on the circumplex</h3>" + _img(_png(fig), f"circumplex face {face}"))
        if table.au_names:
            fig, ax = plt.subplots(figsize=(10, 0.25 * len(table.au_names) + 1.4))
            table.plot_aus(face=face, ax=ax)
            parts.append("<h3>Action units over time</h3>" + _img(_png(fig), f"AUs face {face}"))
        parts.append(_archetypes_html(table[table["face"] == face]))
    if not shown:
        parts.append("<p class='noface'>No face was detected in this video.</p>")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(_page(name, "\n".join(parts)), encoding="utf-8")
    return out_file


def _probs_html(r: Mapping, expressions: Sequence[str], aus: Sequence[str]) -> str:
    out = []
    probs = [(n, r.get(f"expr_{n}", np.nan)) for n in expressions]
    probs = [(n, float(p)) for n, p in probs if p is not None and np.isfinite(p)]
    if probs:
        best = max(probs, key=lambda t: t[1])[0]
        cells = []
        for n, p in probs:
            cls = "bar top" if n == best else "bar"
            cells.append(f"<span>{_e(n)}</span><span class='{cls}'><span style='width:{100 * p:.1f}%'></span></span>"
                         f"<span class='num'>{p:.2f}</span>")
        out.append("<div class='probs'>" + "".join(cells) + "</div>")
    va = [(c, r.get(c)) for c in ("valence", "arousal")]
    va = [(c, v) for c, v in va if v is not None and np.isfinite(v)]
    if va:
        out.append("<div>" + ", ".join(f"{c} {v:+.2f}" for c, v in va) + "</div>")
    au_vals = [(a, r.get(a, np.nan)) for a in aus]
    au_vals = [(a, float(v)) for a, v in au_vals if v is not None and np.isfinite(v)]
    if au_vals:
        top = sorted(au_vals, key=lambda t: -t[1])[:3]
        out.append("<div class='muted'>top AUs: " + ", ".join(f"{_e(a)} {v:.2f}" for a, v in top) + "</div>")
    label = r.get("archetype_label")
    if isinstance(label, str):
        out.append(f"<div class='muted'>nearest archetype: {_e(label)}</div>")
    return "".join(out)


def images_report(table: AffectTable, out_file: Path, *, names: Mapping[str, str] | None = None,
                  thumbs: Mapping[str, str] | None = None, failures: Mapping[str, str | None] | None = None,
                  order: Sequence[str] | None = None, run: Mapping | None = None,
                  summaries: Mapping[str, dict] | None = None) -> Path:
    """One page for the still images of a run: a card per image with its faces' predictions
    (``summaries``: :func:`input_summaries` of the images, computed when not given)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_file = Path(out_file)
    names, thumbs, failures = dict(names or {}), dict(thumbs or {}), dict(failures or {})
    order = list(order) if order is not None else list(dict.fromkeys(table["input"].astype(str)))
    shown = display_names(order)
    if summaries is None:
        summaries = input_summaries(table, "image", table.expression_names, order)
    # one pass, as records: per-group itertuples costs milliseconds per image, and with the
    # 478 landmark columns a row has too many fields for a namedtuple
    face_records: dict[str, list[dict]] = {}
    for r in table[table["face"] >= 0].to_dict("records"):
        face_records.setdefault(str(r["input"]), []).append(r)
    with_face = table[table["face"] >= 0]
    n_face = with_face["input"].nunique()
    parts = [f"<h1>Images ({len(order)})</h1>", _run_html(run), "<p><a href='index.html'>&larr; all inputs</a></p>",
             f"<p>A face was found in {n_face} of {len(order)} images"
             + (f"; {sum(1 for p in order if failures.get(p))} could not be read" if any(failures.get(p) for p in order)
                else "") + ".</p>"]
    if "expression" in table.columns and len(with_face):
        counts = with_face["expression"].value_counts()
        fig, ax = plt.subplots(figsize=(6, 2.8))
        counts.plot.bar(ax=ax, color="#3366aa")
        ax.set_ylabel("faces")
        ax.set_title("most probable expression per face", fontsize=10)
        parts.append(_img(_png(fig), "expression counts"))
    if "valence" in table.columns and len(with_face):
        from affectlab.analyze.table import _draw_circumplex

        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        _draw_circumplex(ax)
        ax.scatter(with_face["valence"], with_face["arousal"], s=12, alpha=0.7)
        parts.append("<h2>Valence / arousal of every face</h2>" + _img(_png(fig), "circumplex"))
    cards = []
    for p in order:
        summary = summaries.get(p) or {"kind": "image"}
        anchor = names.get(p) or Path(p).stem
        img = (f"<img class='big' loading='lazy' alt='{_e(shown[p])}' src='{_e(thumbs[p])}'>" if p in thumbs
               else "")
        faces_html = []
        for r in face_records.get(p, []):
            title = f"face {int(r['face'])}"
            if isinstance(r.get("expression"), str):
                title += f": <b>{_e(r['expression'])}</b>"
            faces_html.append(f"<div><div>{title}</div>{_probs_html(r, table.expression_names, table.au_names)}</div>")
        cards.append(f"<div class='card' id='{_e(anchor)}'><div><b>{_e(shown[p])}</b></div>"
                     f"<div class='path'>{_e(p)}</div>{img}<div>{_status(summary, failures.get(p), p)}</div>"
                     + "".join(faces_html) + "</div>")
    parts += ["<h2>Every image</h2>", "<div class='cards'>" + "".join(cards) + "</div>"]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(_page("images", "\n".join(parts)), encoding="utf-8")
    return out_file


def index_page(out_dir: Path, entries: Sequence[Mapping], run: Mapping | None = None) -> Path:
    """``index.html``: the run and one line per input.

    ``entries`` are mappings with ``input``, ``page`` (link, relative to ``out_dir``, or
    None), ``thumb``, ``summary`` (:func:`input_summary`), ``failure`` and ``annotated``.
    """
    out_dir = Path(out_dir)
    n = len(entries)
    failed = sum(1 for e in entries if e.get("failure"))
    noface = sum(1 for e in entries if not e.get("failure") and not (e.get("summary") or {}).get("face_rows"))
    kinds = [(e.get("summary") or {}).get("kind") for e in entries]
    counts = f"{kinds.count('video')} video(s), {kinds.count('image')} image(s)"
    head = (f"<h1>affectlab analysis</h1>{_run_html(run)}<p>{n} inputs ({counts}): a face in {n - failed - noface}, "
            f"<span class='noface'>no face found in {noface}</span>"
            + (f", <span class='fail'>{failed} failed</span>" if failed else "") + ".</p>")
    rows = []
    shown = display_names([str(e["input"]) for e in entries])
    for e in entries:
        s = e.get("summary") or {}
        inp = str(e["input"])
        page = e.get("page")
        label = f"<a href='{_e(page)}'>{_e(shown[inp])}</a>" if page else _e(shown[inp])
        thumb = f"<img class='thumb' loading='lazy' alt='' src='{_e(e['thumb'])}'>" if e.get("thumb") else ""
        frames = f"{s.get('frames_with_face', 0)} / {s.get('frames', 0)}" if s.get("kind") == "video" else ""
        dominant = (f"{_e(s['dominant'])} <span class='muted'>{s['dominant_p']:.2f}</span>" if "dominant" in s else "")
        ann = e.get("annotated")
        ann_html = f"<a href='{_e(_rel(ann, out_dir))}'>{_e(Path(ann).name)}</a>" if ann else ""
        rows.append(
            f"<tr><td>{thumb}</td><td>{label}<div class='path'>{_e(inp)}</div></td><td>{_e(s.get('kind', ''))}</td>"
            f"<td class='num'>{frames}</td><td class='num'>{s.get('faces', 0) if s else ''}</td><td>{dominant}</td>"
            f"<td class='num'>{_fmt(s.get('valence'))}</td><td class='num'>{_fmt(s.get('arousal'))}</td>"
            f"<td>{ann_html}</td><td>{_status(s, e.get('failure'), inp)}</td></tr>")
    table = ("<div class='scroll'><table><tr><th></th><th>input</th><th>kind</th><th>frames with a face</th>"
             "<th>faces</th><th>dominant expression</th><th>valence</th><th>arousal</th><th>annotated video</th>"
             "<th>result</th></tr>" + "".join(rows) + "</table></div>")
    out = out_dir / "index.html"
    out.write_text(_page("affectlab analysis", head + table), encoding="utf-8")
    return out
