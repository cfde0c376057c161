"""FER2013 reader: ``fer2013.csv`` with ``emotion,pixels,Usage``; images decoded in memory.

``pixels`` holds 2304 space-separated gray values (48x48); ``emotion`` is 0 angry,
1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral; ``Usage`` is Training /
PublicTest / PrivateTest, read as the splits train / val / test (change with
``usage={"train": "Training", ...}``). The rows' ``path`` is ``<csv>#<line>``.

Rows with an empty ``Usage`` belong to no split: they are skipped with a notice naming
their lines; exactly duplicated rows are kept with a notice. Every bad row of the split
is listed in one error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, SplitAbsent, canonical_table, map_codes, parser_error
from affectlab.data.readers.common import Problems, notice, report_duplicates
from affectlab.data.schema import ALL_EXPRESSIONS, LabelSpace, native_expressions
from affectlab.errors import ConfigError, DatasetError

SIDE = 48
DEFAULT_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def _source(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("fer2013.csv", "fer2013/fer2013.csv"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"fer2013: no fer2013.csv in {root}; expected the Kaggle file with emotion,pixels,Usage")


def decode_pixels(text: str, *, where: str) -> np.ndarray:
    """``"70 80 82 ..."`` (2304 values 0-255) -> uint8 [48, 48]."""
    try:
        values = np.array(text.split(), dtype=np.int64)
    except (ValueError, AttributeError):
        raise DatasetError(f"{where}: pixels are not space-separated integers 0-255") from None
    if values.size != SIDE * SIDE:
        raise DatasetError(f"{where}: {values.size} pixel values, expected {SIDE * SIDE} (48x48 gray)")
    if values.min() < 0 or values.max() > 255:
        raise DatasetError(f"{where}: pixel values must be 0-255, found {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(SIDE, SIDE)


@register_reader(
    "fer2013",
    layout="fer2013.csv: emotion (0 angry .. 6 neutral), pixels (48x48 gray ints), Usage "
    "(train=Training, val=PublicTest, test=PrivateTest)",
    splits=("train", "val", "test"),
    split_aliases={"training": "train", "publictest": "val", "privatetest": "test", "validation": "val"},
    aliases={"fer": {}},
)
def read_fer2013(root: Path, split: str, *, usage: Mapping[str, str] | None = None) -> ReadResult:
    """Read one FER2013 split, decoding the pixels of its rows.

    Parameters
    ----------
    usage : mapping, optional
        Split -> ``Usage`` value; default train=Training, val=PublicTest, test=PrivateTest.
    """
    mapping = dict(DEFAULT_USAGE)
    if usage is not None:
        if not isinstance(usage, Mapping) or not set(usage) <= set(DEFAULT_USAGE):
            raise ConfigError(f"fer2013 usage must map some of {list(DEFAULT_USAGE)} to Usage values, got {usage!r}")
        mapping.update(usage)
    source = _source(root)
    try:
        table = pd.read_csv(source, dtype={"pixels": str, "Usage": str}, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise parser_error(source, exc, "emotion,pixels,Usage") from None
    absent = [c for c in ("emotion", "pixels", "Usage") if c not in table.columns]
    if absent:
        raise DatasetError(f"{source}: missing column(s) {absent}; expected header emotion,pixels,Usage")
    usages = table["Usage"].str.strip()
    known = set(mapping.values()) | set(DEFAULT_USAGE.values())
    problems = Problems()
    unknown = usages[~usages.isin(known) & (usages != "")]
    for pos, value in unknown.items():
        problems.add(f"{source}:{int(pos) + 2}: Usage {value!r} is not one of {sorted(known)}")
    problems.raise_if_any()
    blank = np.flatnonzero((usages == "").to_numpy())
    if blank.size:
        shown = ", ".join(str(r + 2) for r in blank[:10]) + (f", ... and {blank.size - 10} more" if blank.size > 10 else "")
        rows_were = "1 row with an empty Usage belongs to no split and was" if blank.size == 1 else (
            f"{blank.size} rows with an empty Usage belong to no split and were"
        )
        notice(f"{source}: {rows_were} skipped (line{'s' if blank.size != 1 else ''} {shown}); give them one of {sorted(known)}")
    rows = np.flatnonzero((usages == mapping[split]).to_numpy())
    if rows.size == 0:
        raise SplitAbsent(f"fer2013: no rows with Usage {mapping[split]!r} in {source}")
    sub = table.iloc[rows]
    names = None
    with problems.collect():
        names = map_codes(sub["emotion"], "fer2013", source=source, lines=rows + 2)
    images = []
    for r, t in zip(rows, sub["pixels"]):
        with problems.collect():
            images.append(decode_pixels(t, where=f"{source}:{r + 2}"))
    problems.raise_if_any()
    images = np.stack(images)
    report_duplicates(
        list(zip(sub["emotion"].astype(str), sub["pixels"].str.strip())), source=source,
        line_of=lambda k: int(rows[k]) + 2, what=f"the same emotion and pixels in {mapping[split]}",
    )
    labels = canonical_table([f"{source}#{r + 2}" for r in rows], expression=names.to_numpy())
    present = set(native_expressions("fer2013"))
    space = LabelSpace(expressions=tuple(e for e in ALL_EXPRESSIONS if e in present))
    return ReadResult(labels, space, images=images, check_files=False)
