"""AffectNet reader (manually annotated part, as distributed).

Layout: ``Manually_Annotated_file_lists/{training,validation}.csv`` with header
``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal``
(the header may be absent, as in some copies of ``validation.csv``); images under
``Manually_Annotated_Images/<subDirectory_filePath>``. Expression codes 0-7 are the
canonical order; 8 None, 9 Uncertain and 10 No-Face are dropped, and AffectNet-7
(``variant=7`` or the ``affectnet7`` prefix) also drops 7 contempt. Valence/arousal are
in [-1, 1] with -2 for missing. The face box is kept as ``x, y, w, h`` and cropped at load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import (
    ReadResult,
    SplitAbsent,
    canonical_table,
    map_codes,
    parser_error,
    scale_va_column,
)
from affectlab.data.readers.common import Problems, allow_outside, check_inside_root
from affectlab.data.schema import LabelSpace, native_expressions
from affectlab.errors import ConfigError, DatasetError

log = logging.getLogger("affectlab.data")

COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
SPLIT_FILES = {"train": "training.csv", "val": "validation.csv"}
_LIST_DIRS = ("Manually_Annotated_file_lists", "Manually_Annotated", ".")
_IMAGE_DIRS = (
    "Manually_Annotated_Images",
    "Manually_Annotated/Manually_Annotated_Images",
    "Manually_Annotated_compressed/Manually_Annotated_Images",
)


def _find(root: Path, candidates, name: str) -> Path | None:
    for d in candidates:
        if (root / d / name).exists():
            return root / d / name
    return None


def read_affectnet_csv(source: Path) -> tuple[pd.DataFrame, int]:
    """The annotation table and the file line of its first row (2 with a header, 1 without)."""
    with open(source, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    has_header = first.strip().lower().startswith("subdirectory_filepath")
    try:
        table = pd.read_csv(
            source,
            header=0 if has_header else None,
            names=None if has_header else list(COLUMNS),
            dtype={"subDirectory_filePath": str, "facial_landmarks": str},
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.ParserError as exc:
        raise parser_error(source, exc, ",".join(COLUMNS)) from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{source}: empty file; expected header {','.join(COLUMNS)}") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{source}: missing column(s) {missing}; expected header {','.join(COLUMNS)}")
    if table[list(COLUMNS)].isna().any(axis=None):
        row, col = np.argwhere(table[list(COLUMNS)].isna().to_numpy())[0]
        raise DatasetError(
            f"{source}:{row + (2 if has_header else 1)}: empty {COLUMNS[col]}; expected 9 fields: {','.join(COLUMNS)}"
        )
    return table, 2 if has_header else 1


@register_reader(
    "affectnet",
    layout="Manually_Annotated_file_lists/{training,validation}.csv + Manually_Annotated_Images/; "
    "codes 0-7 (8-10 dropped; affectnet7 drops contempt), VA -2 = missing",
    splits=("train", "val"),
    split_aliases={"training": "train", "validation": "val", "valid": "val"},
    aliases={"affectnet8": {"variant": 8}, "affectnet7": {"variant": 7}},
)
def read_affectnet(root: Path, split: str, *, variant: int = 8, allow_outside_root: bool | None = None) -> ReadResult:
    """Read one AffectNet split.

    Parameters
    ----------
    variant : {8, 7}
        AffectNet-8 (all eight classes) or AffectNet-7 (contempt dropped).
    allow_outside_root : bool, optional
        Accept image paths that leave the dataset root (``../x.jpg``, absolute paths
        elsewhere); default: refused unless ``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1``.
    """
    if str(variant) not in ("7", "8"):
        raise ConfigError(f"affectnet variant must be 7 or 8, got {variant!r}")
    dataset = f"affectnet{int(variant)}"
    source = _find(root, _LIST_DIRS, SPLIT_FILES[split])
    if source is None:
        raise SplitAbsent(
            f"affectnet: no {SPLIT_FILES[split]} under {root}; expected "
            f"{root}/Manually_Annotated_file_lists/{SPLIT_FILES[split]}"
        )
    table, first_line = read_affectnet_csv(source)
    names = map_codes(table["expression"], dataset, source=source, first_line=first_line)
    valence = scale_va_column(table["valence"], "affectnet", source=source, name="valence", first_line=first_line)
    arousal = scale_va_column(table["arousal"], "affectnet", source=source, name="arousal", first_line=first_line)
    box = {}
    for out, col in zip(("x", "y", "w", "h"), ("face_x", "face_y", "face_width", "face_height")):
        values = pd.to_numeric(table[col], errors="coerce")
        if values.isna().any():
            pos = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DatasetError(f"{source}:{first_line + pos}: {col} {table[col].iloc[pos]!r} is not a number")
        box[out] = values.to_numpy(dtype=np.float64)

    keep = names.notna().to_numpy()
    dropped = int((~keep).sum())
    if dropped:
        codes = pd.to_numeric(table["expression"]).astype(int)[~keep].value_counts().sort_index()
        log.info(
            "%s %s: dropped %d rows with codes %s",
            dataset,
            split,
            dropped,
            ", ".join(f"{c} ({n})" for c, n in codes.items()),
        )
    image_dir = _find(root, _IMAGE_DIRS, "") or root / "Manually_Annotated_Images"
    paths = [os.path.normpath(os.path.join(image_dir, p.strip())) for p in table["subDirectory_filePath"]]
    problems = Problems()
    check_inside_root(
        paths, root, allow=allow_outside(allow_outside_root), where=lambda k: f"{source}:{first_line + k}",
        problems=problems, written=[p.strip() for p in table["subDirectory_filePath"]],
    )
    problems.raise_if_any()
    labels = canonical_table(
        paths,
        expression=names.to_numpy(),
        valence=valence,
        arousal=arousal,
        **box,
    )
    labels = labels.loc[keep].reset_index(drop=True)
    space = LabelSpace(expressions=native_expressions(dataset), va=True)
    return ReadResult(labels, space)
