"""AFEW-VA reader: per-clip folders of frames with a JSON of per-frame valence, arousal and landmarks.

Layout (the official release, 600 clips): ``<clip>/<frame>.png`` and ``<clip>/<clip>.json``
(``001/00000.png``, ``001/001.json``); the JSON holds ``{"frames": {"00000": {"valence": v,
"arousal": a, "landmarks": [[x, y], ...68]}, ...}, "actor": ..., "video_id": "001"}``. Valence
and arousal are integers on -10..10, mapped to [-1, 1] by x / 10 (ARCHITECTURE.md, Conventions;
``VA_SCALES["afewva"]``; evaluation also reports ``*_native`` errors on -10..10). When a
frame has landmarks, their bounding box (``x, y, w, h``, widened by ``margin``) is the face
box cropped at load (the frames are whole film stills). A frame without an image file is
dropped with a notice by ``load_dataset``. The release has no official splits (use
``split_by``, which keeps clips whole).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from affectlab.data.datasets import register_reader
from affectlab.data.images import is_image_file
from affectlab.data.readers.common import Problems
from affectlab.data.schema import VA_SCALES, LabelSpace, scale_va
from affectlab.data.tables import ReadResult, canonical_table
from affectlab.errors import DatasetError, LabelError

LOW, HIGH = VA_SCALES["afewva"][:2]


def _line_of(text: str, key: str) -> int:
    """1-based line of the first ``"key"`` in the JSON text (1 when it cannot be found)."""
    m = re.search(re.escape(json.dumps(key)), text)
    return text.count("\n", 0, m.start()) + 1 if m else 1


def read_clip(source: Path, problems: Problems) -> list[tuple[str, float, float, tuple | None]]:
    """``(frame key, valence, arousal, box or None)`` of one clip JSON; problems are recorded, not raised."""
    text = source.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(f"{source}:{exc.lineno}: not valid JSON ({exc.msg}); expected {{\"frames\": {{\"00000\": "
                     "{\"valence\": v, \"arousal\": a, \"landmarks\": [...]}}}}")
        return []
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, dict):
        problems.add(f"{source}:1: no \"frames\" object; expected {{\"frames\": {{\"00000\": {{\"valence\": v, \"arousal\": a}}}}}}")
        return []
    out = []
    for key, entry in frames.items():
        where = f"{source}:{_line_of(text, key)}"
        if not isinstance(entry, dict) or "valence" not in entry or "arousal" not in entry:
            problems.add(f"{where}: frame {key!r} needs \"valence\" and \"arousal\", got {str(entry)[:60]!r}")
            continue
        va = []
        for dim in ("valence", "arousal"):
            value = entry[dim]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                problems.add(f"{where}: frame {key!r} {dim} {value!r} is not a number on {LOW:g}..{HIGH:g}", LabelError)
            elif not LOW <= value <= HIGH:
                problems.add(f"{where}: frame {key!r} {dim} {value:g} is out of range for AFEW-VA; expected {LOW:g}..{HIGH:g}",
                             LabelError)
            else:
                va.append(float(value))
        if len(va) != 2:
            continue
        box = None
        marks = entry.get("landmarks")
        if marks is not None:
            try:
                pts = np.asarray(marks, dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                problems.add(f"{where}: frame {key!r} landmarks are not a list of [x, y] points")
                continue
            if len(pts) and np.isfinite(pts).all():
                lo, hi = pts.min(axis=0), pts.max(axis=0)
                box = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
        out.append((str(key), va[0], va[1], box))
    return out


def _frame_files(folder: Path) -> dict[str, str]:
    return {os.path.splitext(n)[0]: n for n in os.listdir(folder) if is_image_file(n)}


@register_reader(
    "afewva",
    layout="<clip>/<frame>.png + <clip>/<clip>.json ({'frames': {'00000': {'valence': v, 'arousal': a, "
    "'landmarks': [[x, y], ...]}}}, VA on -10..10 -> x/10); face box from the landmarks",
    aliases={"afew-va": {}},
)
def read_afewva(root: Path, split: str | None, *, margin: float = 0.1) -> ReadResult:
    """Read every AFEW-VA clip under the root.

    Parameters
    ----------
    margin : float
        Widen the landmarks' bounding box by this fraction of its size on each side
        (the 68 points stop at the eyebrows).
    """
    if not root.is_dir():
        raise DatasetError(f"afewva: {root} is not a folder")
    clips = sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.json").is_file())
    if not clips:
        raise DatasetError(f"afewva: no clip folders in {root}; expected <clip>/<clip>.json (e.g. 001/001.json) and "
                           "<clip>/00000.png")
    problems = Problems()
    paths, valence, arousal, clip_ids, frame_ids, boxes = [], [], [], [], [], []
    for clip in clips:
        files = _frame_files(clip)
        for key, v, a, box in read_clip(clip / f"{clip.name}.json", problems):
            paths.append(os.path.join(clip, files.get(key, f"{key}.png")))
            valence.append(v)
            arousal.append(a)
            clip_ids.append(clip.name)
            frame_ids.append(int(key) if key.isdigit() else -1)
            if box is not None:
                dx, dy = box[2] * margin, box[3] * margin
                box = (box[0] - dx, box[1] - dy, box[2] + 2 * dx, box[3] + 2 * dy)
            boxes.append(box or (np.nan,) * 4)
    problems.raise_if_any()
    if not paths:
        raise DatasetError(f"afewva: the clip JSONs under {root} list no frames")
    box_arr = np.asarray(boxes, dtype=np.float64)
    extra = {}
    if np.isfinite(box_arr).any():  # rows without landmarks keep NaN boxes: not cropped
        extra = {k: box_arr[:, j] for j, k in enumerate(("x", "y", "w", "h"))}
    labels = canonical_table(
        paths,
        valence=scale_va("afewva", valence, name="valence"),
        arousal=scale_va("afewva", arousal, name="arousal"),
        subject=np.asarray(clip_ids, dtype=object),
        video=np.asarray(clip_ids, dtype=object),
        frame=np.asarray(frame_ids, dtype=np.int64),
        **extra,
    )
    return ReadResult(labels, LabelSpace(va=True))
