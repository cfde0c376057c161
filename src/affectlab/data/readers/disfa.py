"""DISFA reader: per-AU intensity files, binarized at a threshold.

Layout: ``ActionUnit_Labels/SN001/SN001_au1.txt`` with lines ``frame,intensity``
(intensity 0-5) for AU1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26, and the left-camera
frames in ``frames/SN001/<frame>.jpg`` (any zero padding of the frame number). An AU is
present when ``intensity >= threshold`` (default 2, see ARCHITECTURE.md, Conventions), or,
with ``above=N``, when ``intensity > N``: the AURA paper's "greater than 2" is
``disfa:ROOT?above=2&aus=8`` (the same as ``threshold=3``, since intensities are integers).
``aus`` takes a set name (``disfa12``, ``disfa8``), its size (``8``, ``12``) or AU names
(``AU1,AU2,AU4``). Intensities are kept as ``AU<k>_intensity``.

Frames can be extracted from ``Videos_LeftCamera/LeftVideoSN001_comp.avi`` with
:func:`extract_frames` (or ``load_dataset("disfa:...", extract=True)``). Splits are the
three subject-independent parts of the usual 3-fold protocol (``part1``, ``part2``,
``part3``; fold k trains on two parts and tests on the third).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, SplitAbsent, canonical_table
from affectlab.data.images import is_image_file
from affectlab.data.schema import AU_SETS, LabelSpace, au_name, au_number, au_set
from affectlab.errors import ConfigError, DatasetError, LabelError

log = logging.getLogger("affectlab.data")

#: The subject-independent parts of the 3-fold DISFA protocol used by JAA-Net, ME-GraphAU and others.
PARTS: dict[str, tuple[str, ...]] = {
    "part1": ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    "part2": ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    "part3": ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
}
LABEL_DIR = "ActionUnit_Labels"
FRAME_DIR = "frames"
VIDEO_DIR = "Videos_LeftCamera"
_SUBJECT = re.compile(r"^SN\d{3}$")


def video_path(root: Path, subject: str) -> Path:
    """``Videos_LeftCamera/LeftVideoSN001_comp.avi`` of a subject."""
    return root / VIDEO_DIR / f"LeftVideo{subject}_comp.avi"


def extract_frames(root: str | os.PathLike, subjects: Sequence[str] | None = None, *, overwrite: bool = False) -> dict[str, int]:
    """Decode the left-camera videos into ``frames/<subject>/<frame:05d>.jpg`` (frame 1 first).

    Parameters
    ----------
    root : path
        The DISFA folder (holding ``Videos_LeftCamera/``).
    subjects : sequence of str, optional
        Default: every ``LeftVideoSN*_comp.avi`` found.
    overwrite : bool
        Re-extract subjects whose frame folder already exists.

    Returns
    -------
    dict
        Subject -> number of frames written (0 when skipped because already there).
    """
    import av
    import cv2
    from rich.progress import Progress

    root = Path(root)
    if subjects is None:
        subjects = sorted(
            m.group(1) for p in (root / VIDEO_DIR).glob("LeftVideo*_comp.avi") if (m := re.match(r"LeftVideo(SN\d+)_comp", p.name))
        )
    if not subjects:
        raise DatasetError(f"disfa: no {VIDEO_DIR}/LeftVideoSN*_comp.avi under {root} to extract frames from")
    written: dict[str, int] = {}
    with Progress(transient=True) as progress:
        task = progress.add_task("extracting DISFA frames", total=len(subjects))
        for subject in subjects:
            out = root / FRAME_DIR / subject
            src = video_path(root, subject)
            if not src.is_file():
                raise DatasetError(f"disfa: video {src} not found")
            if out.is_dir() and any(out.iterdir()) and not overwrite:
                written[subject] = 0
                progress.advance(task)
                continue
            out.mkdir(parents=True, exist_ok=True)
            count = 0
            with av.open(str(src)) as container:
                for count, frame in enumerate(container.decode(video=0), start=1):
                    bgr = frame.to_ndarray(format="bgr24")
                    if not cv2.imwrite(str(out / f"{count:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                        raise DatasetError(f"disfa: cannot write frames into {out}")
            written[subject] = count
            progress.advance(task)
    return written


def read_intensity_file(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, intensities)`` of one ``SN001_au1.txt`` (lines ``frame,intensity``)."""
    frames, values = [], []
    with open(source, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            parts = [p.strip() for p in text.split(",")]
            if len(parts) != 2 or not parts[0].isdigit() or not parts[1].lstrip("-").isdigit():
                raise DatasetError(f"{source}:{lineno}: expected 'frame,intensity' like '1,0', got {text!r}")
            value = int(parts[1])
            if not 0 <= value <= 5:
                raise LabelError(f"{source}:{lineno}: intensity {value} is out of range for DISFA; expected 0-5", dataset="disfa", value=value)
            frames.append(int(parts[0]))
            values.append(value)
    return np.asarray(frames, dtype=np.int64), np.asarray(values, dtype=np.int64)


def _parse_aus(aus) -> tuple[str, ...]:
    # from a spec query: ``aus=8`` arrives as the int 8, ``aus=AU1,AU2`` as one string
    if isinstance(aus, (int, np.integer)) and not isinstance(aus, bool):
        if f"disfa{int(aus)}" not in AU_SETS:
            raise ConfigError(f"disfa aus={aus}: no DISFA AU set of that size; use 8 or 12, a set name or AU names")
        chosen = AU_SETS[f"disfa{int(aus)}"]
    elif isinstance(aus, str) and "," in aus:
        chosen = tuple(au_name(a) for a in aus.split(",") if a.strip())
    elif isinstance(aus, str):
        chosen = au_set(aus)
    else:
        chosen = tuple(au_name(a) for a in aus)
    outside = [a for a in chosen if a not in AU_SETS["disfa12"]]
    if outside or not chosen:
        raise ConfigError(f"disfa aus {list(chosen)}: {outside or 'empty'}; DISFA codes {', '.join(AU_SETS['disfa12'])}")
    return tuple(sorted(chosen, key=au_number))


def _frame_files(folder: Path) -> dict[int, str]:
    out = {}
    for name in os.listdir(folder):
        stem, _ = os.path.splitext(name)
        if stem.isdigit() and is_image_file(name):
            out[int(stem)] = name
    return out


@register_reader(
    "disfa",
    layout="ActionUnit_Labels/SN001/SN001_au1.txt ('frame,intensity') + frames/SN001/<frame>.jpg "
    "(extract=True decodes Videos_LeftCamera/); AU present if intensity >= threshold (2), or > above "
    "(AURA: ?above=2&aus=8); splits part1-3",
    splits=("part1", "part2", "part3"),
    split_aliases={"fold1": "part1", "fold2": "part2", "fold3": "part3"},
)
def read_disfa(
    root: Path,
    split: str,
    *,
    threshold: int | None = None,
    above: int | None = None,
    aus: str | int | Sequence[str] = "disfa12",
    subjects: Sequence[str] | None = None,
    extract: bool = False,
) -> ReadResult:
    """Read the DISFA subjects of one part.

    Parameters
    ----------
    threshold : int, optional
        AU present when ``intensity >= threshold`` (1-5; default 2).
    above : int, optional
        Instead of ``threshold``: AU present when ``intensity > above`` (0-4); the AURA
        paper's "greater than 2" is ``above=2``.
    aus : str, int or sequence
        AU set name (``disfa12``, ``disfa8``), its size (``8``, ``12``), comma-separated
        AU names (``"AU1,AU2"``) or a sequence of AU names.
    subjects : sequence of str, optional
        Keep only these subjects (e.g. ``["SN001"]``) of the part, or of all parts
        when no SPLIT is given.
    extract : bool
        Extract missing frame folders from the left-camera videos first (PyAV).
    """
    if threshold is not None and above is not None:
        raise ConfigError(f"disfa: give threshold (present if intensity >= threshold) or above (present if intensity > above), "
                          f"not both (got threshold={threshold!r}, above={above!r})")
    if above is not None:
        if isinstance(above, bool) or not isinstance(above, (int, float)) or not 0 <= above <= 4:
            raise ConfigError(f"disfa above must be in 0..4 (present if intensity > above), got {above!r}")
    elif threshold is None:
        threshold = 2
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 1 <= threshold <= 5:
        raise ConfigError(f"disfa threshold must be in 1..5 (present if intensity >= threshold), got {threshold!r}")
    chosen = _parse_aus(aus)
    label_root = root / LABEL_DIR
    if not label_root.is_dir():
        raise DatasetError(f"disfa: no {LABEL_DIR}/ folder in {root}; expected {LABEL_DIR}/SN001/SN001_au1.txt")
    available = sorted(p.name for p in label_root.iterdir() if p.is_dir() and _SUBJECT.match(p.name))
    if subjects is not None:
        wanted = [str(s).upper() for s in subjects]
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise ConfigError(f"disfa subjects {unknown} not in {label_root}; available: {', '.join(available)}")
        wanted = [s for s in wanted if s in PARTS[split]]
    else:
        wanted = [s for s in available if s in PARTS[split]]
    if not wanted:
        raise SplitAbsent(f"disfa: none of the {split} subjects ({', '.join(PARTS[split])}) in {label_root}")
    tables = []
    for subject in wanted:
        frame_dir = root / FRAME_DIR / subject
        if not frame_dir.is_dir():
            video = video_path(root, subject)
            if video.is_file() and extract:
                extract_frames(root, [subject])
            elif video.is_file():
                raise DatasetError(
                    f"disfa: no frames for {subject} in {frame_dir}; extract them from {video} with "
                    "load_dataset(..., extract=True) or affectlab.data.readers.disfa.extract_frames(root)"
                )
            else:
                raise DatasetError(f"disfa: no frames for {subject}: expected {frame_dir}/<frame>.jpg or the video {video}")
        per_au = {}
        frames_ref = None
        for name in chosen:
            source = label_root / subject / f"{subject}_au{au_number(name)}.txt"
            if not source.is_file():
                raise DatasetError(f"disfa: missing label file {source}")
            frames, values = read_intensity_file(source)
            series = pd.Series(values, index=frames)
            if series.index.has_duplicates:
                dup = int(series.index[series.index.duplicated()][0])
                raise DatasetError(f"{source}: frame {dup} appears twice")
            per_au[name] = series
            frames_ref = series.index if frames_ref is None else frames_ref.union(series.index)
        table = pd.DataFrame({n: s.reindex(frames_ref) for n, s in per_au.items()})
        files = _frame_files(frame_dir)
        table.insert(0, "path", [os.path.join(frame_dir, files.get(int(f), f"{int(f):05d}.jpg")) for f in table.index])
        table.insert(1, "frame", table.index.to_numpy(dtype=np.int64))
        table.insert(2, "subject", subject)
        tables.append(table.reset_index(drop=True))
    merged = pd.concat(tables, ignore_index=True)
    intens = merged[list(chosen)].to_numpy(dtype=np.float64)
    present = np.where(np.isnan(intens), -1, (intens > above if above is not None else intens >= threshold).astype(np.int64)).astype(np.int8)
    extra = {f"{n}_intensity": merged[n].to_numpy() for n in chosen}
    labels = canonical_table(
        merged["path"],
        aus={n: present[:, j] for j, n in enumerate(chosen)},
        subject=merged["subject"].to_numpy(),
        video=merged["subject"].to_numpy(),
        frame=merged["frame"].to_numpy(),
        **extra,
    )
    return ReadResult(labels, LabelSpace(aus=chosen))
