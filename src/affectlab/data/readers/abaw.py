"""ABAW / Aff-Wild2 reader (cropped-aligned frames, per-video annotation files).

Layout: ``cropped_aligned/<video>/<00001>.jpg`` and, per task,
``<Task>/{Train,Validation}_Set/<video>.txt``: a header line, then one row per frame.
VA rows are ``valence,arousal`` (-5 missing), EXPR rows one code 0-7 (Neutral, Anger,
Disgust, Fear, Happiness, Sadness, Surprise, Other; -1 missing), AU rows 12 values 0/1
for ``AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26`` (-1 missing). Row ``i``
(0-based, after the header) is frame ``{i+1:05d}.jpg``; frames without an image are
skipped, as are frames with no label in any requested task. Several tasks are merged
by ``(video, frame)``, leaving the other tasks' labels missing where a task has no row.

A file with only its header (or a header and blank lines) is a video without labels: it
is skipped with a notice naming it. A blank line between rows is an error (it would shift
every later frame), a trailing comma on every line is accepted; every bad line of every
file is listed in one error.

Task folders may be named ``VA``, ``VA_Set`` or ``VA_Estimation_Challenge`` (likewise
``EXPR_Classification_Challenge``, ``AU_Detection_Challenge``) and may sit in the root
or one folder below it (``Third ABAW Annotations/``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, SplitAbsent, map_codes, parser_error, scale_va_column
from affectlab.data.readers.common import Problems, notice
from affectlab.data.schema import ALL_EXPRESSIONS, AU_SETS, MISSING_AU, LabelSpace, au_name, native_expressions
from affectlab.errors import ConfigError, DatasetError, LabelError

log = logging.getLogger("affectlab.data")

TASKS = ("VA", "EXPR", "AU")
TASK_FOLDERS = {
    "VA": ("VA", "VA_Set", "VA_Estimation_Challenge", "VA_Estimation"),
    "EXPR": ("EXPR", "EXPR_Set", "EXPR_Classification_Challenge", "EXPR_Recognition_Challenge", "EXPR_Estimation_Challenge"),
    "AU": ("AU", "AU_Set", "AU_Detection_Challenge"),
}
IMAGE_FOLDERS = ("cropped_aligned", "cropped_aligned_images", "cropped-aligned")


def parse_tasks(tasks) -> tuple[str, ...]:
    """``"MTL"`` -> all three; ``"VA"`` / ``["VA", "EXPR"]`` -> those (validated)."""
    if tasks is None:
        return TASKS
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for item in items:
        for part in str(item).replace("+", ",").split(","):
            key = part.strip().upper()
            if key == "MTL":
                out.extend(TASKS)
            elif key in TASKS:
                out.append(key)
            else:
                raise ConfigError(f"unknown ABAW task {part.strip()!r}; valid tasks: VA, EXPR, AU, MTL")
    return tuple(t for t in TASKS if t in out)


def _task_dir(root: Path, task: str) -> Path | None:
    bases = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name not in IMAGE_FOLDERS)
    for base in bases:
        for name in TASK_FOLDERS[task]:
            if (base / name).is_dir():
                return base / name
    return None


def _image_dir(root: Path) -> Path:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"abaw: no cropped_aligned/ folder in {root}; expected cropped_aligned/<video>/00001.jpg")


def read_task_file(source: Path, task: str, problems: Problems | None = None) -> pd.DataFrame:
    """One video's annotations as canonical columns plus ``frame`` (1-based); missing codes decoded.

    Problems of the file's rows are added to ``problems`` (raised at once when not given);
    a header-only file gives an empty table and a notice.
    """
    own = problems is None
    problems = Problems() if own else problems
    before = len(problems)
    empty = pd.DataFrame({"frame": np.zeros(0, dtype=np.int64)})
    with open(source, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip()
    names = [h.strip() for h in header.split(",")]
    while len(names) > 1 and names[-1] == "":
        names.pop()  # a trailing comma on the header
    expected = {"VA": 2, "EXPR": None, "AU": 12}[task]
    if task == "VA" and [n.lower() for n in names] != ["valence", "arousal"]:
        problems.add(f"{source}:1: expected the header 'valence,arousal', got {header!r}")
    if task == "AU":
        try:
            aus = [au_name(n) for n in names]
        except LabelError:
            problems.add(f"{source}:1: expected a header of AU names like 'AU1,AU2,AU4,...', got {header!r}")
            aus = []
        if aus and len(aus) != expected:
            problems.add(f"{source}:1: expected 12 AU columns ({','.join(AU_SETS['abaw12'])}), got {len(aus)}")
    if len(problems) > before:
        if own:
            problems.raise_if_any()
        return empty
    width = 1 if task == "EXPR" else expected
    try:
        # one spare column: a trailing comma lands there (accepted), a real extra field is reported
        raw = pd.read_csv(
            source, header=None, skiprows=1, dtype=str, keep_default_na=False, skip_blank_lines=False,
            names=list(range(width + 1)),
        )
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame(columns=list(range(width + 1)))
    except pd.errors.ParserError as exc:
        problems.add(str(parser_error(source, exc, f"one {task} row per frame")))
        if own:
            problems.raise_if_any()
        return empty
    text = raw.apply(lambda c: c.str.strip())
    blank = (text == "").all(axis=1).to_numpy()
    # trailing blank lines are harmless; blank lines inside the file are not
    n = len(blank)
    while n and blank[n - 1]:
        n -= 1
    raw, text, blank = raw.iloc[:n], text.iloc[:n], blank[:n]
    if n == 0:
        notice(f"{source}: only a header, no frame rows; video {source.stem!r} has no {task} labels")
        return empty
    what = {"VA": "valence,arousal", "EXPR": "one expression code", "AU": f"{width} AU values"}[task]
    for pos in np.flatnonzero(blank):
        problems.add(
            f"{source}:{pos + 2}: blank line between frame rows; expected {what} (line k+1 is frame k, so a blank "
            "line shifts every later frame)"
        )
    extra = (text[width] != "").to_numpy() & ~blank
    for pos in np.flatnonzero(extra):
        fields = ",".join(raw.iloc[pos]).rstrip(",")
        problems.add(f"{source}:{pos + 2}: more than {width} field(s) for {task}, got {fields!r}; expected {what}")
    numeric = text[list(range(width))].apply(lambda c: pd.to_numeric(c, errors="coerce"))
    bad = numeric.isna().any(axis=1).to_numpy() & ~blank & ~extra
    for pos in np.flatnonzero(bad):
        fields = ",".join(raw.iloc[pos, :width])
        problems.add(
            f"{source}:{pos + 2}: expected {width} comma-separated number(s) for {task} ({what}), got {fields!r}"
        )
    if len(problems) > before:
        if own:
            problems.raise_if_any()
        return empty
    out = pd.DataFrame({"frame": np.arange(1, len(raw) + 1, dtype=np.int64)})
    with problems.collect():
        if task == "VA":
            out["valence"] = scale_va_column(numeric[0], "abaw", source=source, name="valence")
            out["arousal"] = scale_va_column(numeric[1], "abaw", source=source, name="arousal")
            out = out.loc[out["valence"].notna() | out["arousal"].notna()]
        elif task == "EXPR":
            out["expression"] = map_codes(numeric[0], "abaw", source=source).to_numpy()
            out = out.loc[out["expression"].notna()]
        else:
            values = numeric.to_numpy(dtype=np.float64)
            bad = ~np.isin(values, (0.0, 1.0, float(MISSING_AU)))
            for row, col in np.argwhere(bad):
                problems.add(f"{source}:{row + 2}: {aus[col]} value {values[row, col]:g} is not 0, 1 or -1 (missing)", LabelError)
            for j, name in enumerate(aus):
                out[name] = values[:, j].astype(np.int8)
            out = out.loc[(values != MISSING_AU).any(axis=1)]
    if len(problems) > before:
        if own:
            problems.raise_if_any()
        return empty
    return out


def read_task(root: Path, task: str, split: str, image_dir: Path, folders: dict[str, set[str]]) -> pd.DataFrame | None:
    """All videos of one task and split, restricted to frames that have an image."""
    tdir = _task_dir(root, task)
    if tdir is None:
        return None
    sdir = next((tdir / n for n in (f"{split}_Set", split, split.lower() + "_set") if (tdir / n).is_dir()), None)
    if sdir is None:
        return None
    files = sorted(p for p in sdir.iterdir() if p.suffix == ".txt")
    parts = []
    skipped = 0
    problems = Problems()
    for f in files:
        video = f.stem
        table = read_task_file(f, task, problems)
        if problems:
            continue  # keep checking the other files; nothing is returned
        if video not in folders:
            listing = image_dir / video
            folders[video] = set(os.listdir(listing)) if listing.is_dir() else set()
        names = np.array([f"{k:05d}.jpg" for k in table["frame"]], dtype=object)
        has = np.fromiter((n in folders[video] for n in names), dtype=bool, count=len(names))
        skipped += int((~has).sum())
        table = table.loc[has]
        table.insert(0, "video", video)
        parts.append(table)
    problems.raise_if_any()
    log.info("abaw %s %s: %d files, %d labelled frames without an image skipped", task, split, len(files), skipped)
    if not parts:
        return pd.DataFrame(columns=["video", "frame"])
    return pd.concat(parts, ignore_index=True)


@register_reader(
    "abaw",
    layout="cropped_aligned/<video>/00001.jpg + <VA|EXPR|AU>/{Train,Validation}_Set/<video>.txt "
    "(header + one row per frame; -5 VA / -1 EXPR, AU missing); tasks merged by (video, frame)",
    splits=("Train", "Validation"),
    split_aliases={"train": "Train", "train_set": "Train", "val": "Validation", "validation_set": "Validation", "valid": "Validation"},
    aliases={"affwild2": {}, "aff-wild2": {}},
)
def read_abaw(root: Path, split: str, *, tasks: str | Sequence[str] | None = None, every: int = 1) -> ReadResult:
    """Read Aff-Wild2 annotations of one split.

    Parameters
    ----------
    tasks : str or sequence of str, optional
        ``"VA"``, ``"EXPR"``, ``"AU"``, several (``["VA", "EXPR"]`` or ``"VA+EXPR"``) or
        ``"MTL"`` (all three). Default: every task whose folder exists. In a spec:
        ``abaw:/data/ABAW3:Train?tasks=AU``.
    every : int
        Keep every ``every``-th frame of each video (frames 1, 1 + every, ...): consecutive
        frames of a 30 fps video are nearly identical. In a spec: ``?every=10``.
    """
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ConfigError(f"abaw: every must be a positive integer (keep every N-th frame), got {every!r}")
    wanted = parse_tasks(tasks)
    image_dir = _image_dir(root)
    folders: dict[str, set[str]] = {}
    tables = {}
    for task in wanted:
        table = read_task(root, task, split, image_dir, folders)
        if table is None:
            if tasks is not None:
                raise SplitAbsent(
                    f"abaw: no {task} annotations for split {split} under {root}; expected "
                    f"{TASK_FOLDERS[task][0]}/{split}_Set/<video>.txt (or {', '.join(TASK_FOLDERS[task][1:])})"
                )
            continue
        tables[task] = table
    if not tables:
        raise SplitAbsent(f"abaw: no annotation folders for split {split} under {root} (looked for VA, EXPR, AU task folders)")
    merged = None
    for table in tables.values():
        merged = table if merged is None else merged.merge(table, on=["video", "frame"], how="outer")
    if every > 1:
        merged = merged.loc[(merged["frame"].astype(np.int64) - 1) % int(every) == 0]
    merged = merged.sort_values(["video", "frame"], kind="stable").reset_index(drop=True)
    n = len(merged)
    labels = pd.DataFrame(
        {
            "path": [os.path.join(image_dir, v, f"{k:05d}.jpg") for v, k in zip(merged["video"], merged["frame"])],
            "expression": merged["expression"].astype(object).where(merged["expression"].notna(), None)
            if "expression" in merged
            else np.full(n, None, dtype=object),
            "valence": merged["valence"].to_numpy(np.float64) if "valence" in merged else np.full(n, np.nan),
            "arousal": merged["arousal"].to_numpy(np.float64) if "arousal" in merged else np.full(n, np.nan),
        }
    )
    aus = AU_SETS["abaw12"] if "AU" in tables else ()
    for name in aus:
        labels[name] = merged[name].fillna(MISSING_AU).astype(np.int8).to_numpy() if name in merged else MISSING_AU
    labels["video"] = merged["video"].astype(str).to_numpy()
    labels["frame"] = merged["frame"].astype(np.int64).to_numpy()
    # ABAW's eight classes (the seven basic ones and other) in canonical order
    abaw_classes = set(native_expressions("abaw"))
    space = LabelSpace(
        expressions=tuple(e for e in ALL_EXPRESSIONS if e in abaw_classes) if "EXPR" in tables else (),
        aus=aus,
        va="VA" in tables,
    )
    return ReadResult(labels, space, check_files=False)


MTL_FILES = {"Train": ("training_set_annotations.txt", "train_set.txt"),
             "Validation": ("validation_set_annotations.txt", "validation_set.txt", "val_set.txt")}
MTL_HEADER = ["image", "valence", "arousal", "expression", *AU_SETS["abaw12"]]


def _mtl_file(root: Path, split: str) -> Path | None:
    bases = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name not in IMAGE_FOLDERS)
    for base in bases:
        for name in MTL_FILES[split]:
            if (base / name).is_file():
                return base / name
    return None


@register_reader(
    "abaw-mtl",
    layout="ABAW3 multi-task static set: cropped_aligned/<video>/<frame>.jpg + {training,validation}_set_annotations.txt "
    "with header image,valence,arousal,expression,AU1,...,AU26 (-5 VA / -1 EXPR / -1 AU missing)",
    splits=("Train", "Validation"),
    split_aliases={"train": "Train", "val": "Validation", "validation": "Validation", "valid": "Validation"},
)
def read_abaw_mtl(root: Path, split: str) -> ReadResult:
    """Read the static multi-task set of the third ABAW challenge (one annotation file per split).

    Each row is one frame (``image`` relative to ``cropped_aligned/``) with all three
    descriptors; missing values are -5 (valence, arousal) and -1 (expression, AUs), as in
    the per-video files of :func:`read_abaw`. Frames without an image are reported and
    left out by the generic file check.
    """
    source = _mtl_file(root, split)
    if source is None:
        raise SplitAbsent(f"abaw-mtl: no {MTL_FILES[split][0]} for split {split} under {root}")
    image_dir = _image_dir(root)
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise parser_error(source, exc, "image,valence,arousal,expression and 12 AU values per line") from None
    names = [c.strip() for c in raw.columns]
    if [n.lower() for n in names[:4]] != MTL_HEADER[:4] or [au_name(n) if n.upper().startswith("AU") else n for n in names[4:16]] != list(AU_SETS["abaw12"]):
        raise DatasetError(f"{source}:1: expected the header {','.join(MTL_HEADER)}, got {','.join(names)!r}")
    raw.columns = names
    problems = Problems()
    labels = pd.DataFrame({"path": [os.path.join(image_dir, p.strip()) for p in raw["image"]]})
    with problems.collect():
        labels["expression"] = map_codes(pd.to_numeric(raw["expression"], errors="coerce"), "abaw", source=source).to_numpy()
        labels["valence"] = scale_va_column(raw["valence"], "abaw", source=source, name="valence")
        labels["arousal"] = scale_va_column(raw["arousal"], "abaw", source=source, name="arousal")
        for name in AU_SETS["abaw12"]:
            col = pd.to_numeric(raw[names[4 + AU_SETS["abaw12"].index(name)]], errors="coerce")
            bad = ~col.isin((0, 1, MISSING_AU))
            for pos in np.flatnonzero(bad.to_numpy())[:20]:
                problems.add(f"{source}:{pos + 2}: {name} value {raw.iloc[pos][names[4 + AU_SETS['abaw12'].index(name)]]!r} "
                             "is not 0, 1 or -1 (missing)", LabelError)
            labels[name] = col.fillna(MISSING_AU).astype(np.int8).to_numpy()
    problems.raise_if_any()
    parts = [p.strip().replace("\\", "/") for p in raw["image"]]
    labels["video"] = [p.rsplit("/", 1)[0] if "/" in p else "" for p in parts]
    labels["frame"] = [int(Path(p).stem) if Path(p).stem.isdigit() else -1 for p in parts]
    abaw_classes = set(native_expressions("abaw"))
    space = LabelSpace(expressions=tuple(e for e in ALL_EXPRESSIONS if e in abaw_classes), aus=AU_SETS["abaw12"], va=True)
    return ReadResult(labels, space)
