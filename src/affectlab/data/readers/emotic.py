"""EMOTIC reader (the widely used preprocessed CSV export).

One CSV per split (``train.csv``, ``val.csv``, ``test.csv`` in the root or in
``emotic_pre/``) with columns ``Filename, Folder, Image Size, BBox, Categorical_Labels,
Continuous_Labels, Gender, Age``. ``BBox`` is the person box ``[x1, y1, x2, y2]`` (cropped
at load), ``Categorical_Labels`` a Python list of the 26 categories (multi-label),
``Continuous_Labels`` ``[valence, arousal, dominance]`` on 1..10, scaled to [-1, 1] by
``(x - 5.5) / 4.5``. Images are ``<Folder>/<Filename>`` relative to the root (or its
``emotic/`` folder).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, SplitAbsent, canonical_table, parser_error
from affectlab.data.readers.common import Problems, allow_outside, check_inside_root
from affectlab.data.schema import EMOTIC_CATEGORIES, LabelSpace, scale_va
from affectlab.errors import DatasetError, LabelError

COLUMNS = ("Filename", "Folder", "BBox", "Categorical_Labels", "Continuous_Labels")
_CSV_DIRS = (".", "emotic_pre", "annotations")
_CATEGORY_INDEX = {c.lower(): c for c in EMOTIC_CATEGORIES}


def _literal_list(text, *, where: str, what: str, length: int | None = None) -> list:
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        form = f"a list of {length} numbers" if length else "a list such as ['Engagement', 'Happiness']"
        raise DatasetError(f"{where}: {what} {text!r} is not {form}")
    return list(value)


def _image_base(csv_dir: Path, root: Path, folder: str, filename: str) -> Path:
    for base in (root, root / "emotic", csv_dir, csv_dir.parent / "emotic", csv_dir.parent):
        if (base / folder / filename).is_file():
            return base
    return root


@register_reader(
    "emotic",
    layout="{train,val,test}.csv (Filename, Folder, Image Size, BBox, Categorical_Labels, Continuous_Labels, "
    "Gender, Age): 26 categories multi-label, VAD 1..10, body box cropped",
    splits=("train", "val", "test"),
    split_aliases={"training": "train", "validation": "val", "valid": "val"},
)
def read_emotic(root: Path, split: str, *, crop_body: bool = True, allow_outside_root: bool | None = None) -> ReadResult:
    """Read one EMOTIC split.

    Parameters
    ----------
    crop_body : bool
        False keeps the whole image (box columns dropped).
    allow_outside_root : bool, optional
        Accept image paths that leave the dataset root (``../x.jpg``, absolute paths
        elsewhere); default: refused unless ``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1``.
    """
    source = next((root / d / f"{split}.csv" for d in _CSV_DIRS if (root / d / f"{split}.csv").is_file()), None)
    if source is None:
        raise SplitAbsent(f"emotic: no {split}.csv under {root} (looked in {', '.join(_CSV_DIRS)})")
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise parser_error(source, exc, ", ".join(COLUMNS) + ", Gender, Age") from None
    table.columns = [c.strip() for c in table.columns]
    absent = [c for c in COLUMNS if c not in table.columns]
    if absent:
        raise DatasetError(f"{source}: missing column(s) {absent}; expected {', '.join(COLUMNS)}, Gender, Age")
    n = len(table)
    cats = np.zeros((n, len(EMOTIC_CATEGORIES)), dtype=np.int8)
    vad = np.empty((n, 3), dtype=np.float64)
    box = np.empty((n, 4), dtype=np.float64)
    col_of = {c: j for j, c in enumerate(EMOTIC_CATEGORIES)}
    for k, (cat_text, vad_text, box_text) in enumerate(
        zip(table["Categorical_Labels"], table["Continuous_Labels"], table["BBox"])
    ):
        where = f"{source}:{k + 2}"
        for name in _literal_list(cat_text, where=where, what="Categorical_Labels"):
            canon = _CATEGORY_INDEX.get(str(name).strip().lower())
            if canon is None:
                raise LabelError(
                    f"{where}: unknown EMOTIC category {name!r}; expected one of {', '.join(EMOTIC_CATEGORIES)}",
                    dataset="emotic",
                    value=name,
                )
            cats[k, col_of[canon]] = 1
        values = _literal_list(vad_text, where=where, what="Continuous_Labels", length=3)
        try:
            vad[k] = scale_va("emotic", [float(v) for v in values], name="valence/arousal/dominance")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, LabelError):
                raise LabelError(f"{where}: {exc}", dataset="emotic", value=exc.value) from None
            raise DatasetError(f"{where}: Continuous_Labels {vad_text!r} is not 3 numbers") from None
        coords = _literal_list(box_text, where=where, what="BBox", length=4)
        try:
            x1, y1, x2, y2 = (float(c) for c in coords)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: BBox {box_text!r} is not [x1, y1, x2, y2]") from None
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(f"{where}: BBox {box_text!r} is empty; expected [x1, y1, x2, y2] with x2 > x1, y2 > y1")
        box[k] = (x1, y1, x2 - x1, y2 - y1)
    if n:
        base = _image_base(source.parent, root, table["Folder"].iloc[0].strip(), table["Filename"].iloc[0].strip())
    else:
        base = root
    paths = [os.path.normpath(os.path.join(base, f.strip(), name.strip())) for f, name in zip(table["Folder"], table["Filename"])]
    problems = Problems()
    check_inside_root(
        paths, base, allow=allow_outside(allow_outside_root), where=lambda k: f"{source}:{k + 2}", problems=problems,
        written=[f"{f.strip()}/{name.strip()}" for f, name in zip(table["Folder"], table["Filename"])],
    )
    problems.raise_if_any()
    extra = {c.lower().replace(" ", "_"): table[c].to_numpy() for c in ("Gender", "Age") if c in table.columns}
    if crop_body:
        extra.update(x=box[:, 0], y=box[:, 1], w=box[:, 2], h=box[:, 3])
    labels = canonical_table(paths, valence=vad[:, 0], arousal=vad[:, 1], dominance=vad[:, 2], **extra)
    for j, name in enumerate(EMOTIC_CATEGORIES):
        labels[name] = cats[:, j]
    space = LabelSpace(expressions=EMOTIC_CATEGORIES, va=True, multilabel=True)
    return ReadResult(labels, space)
