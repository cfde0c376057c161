"""Manifest reader: any CSV / Parquet table with a ``path`` column (the lingua franca).

Columns (all but ``path`` optional): ``path`` (relative to the manifest's folder, or
absolute), ``expression`` (a name such as ``happiness`` or ``happy``; or native integer
codes with ``expression_codes="affectnet"``), ``valence`` / ``arousal`` (in [-1, 1]),
``AU<k>`` (1 / 0; -1 or empty = missing; intensities with ``au_threshold``),
``subject``, ``video``, ``frame``, ``split``, face box ``x, y, w, h``. Foreign column
names are mapped with ``columns={"img": "path", "emotion": "expression"}``. Other
columns are kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.data.datasets import ReadResult, infer_label_space, map_codes, parser_error, register_reader
from affectlab.data.schema import MISSING_AU, LabelSpace, au_name, canonical_expression
from affectlab.errors import DatasetError, LabelError

_MANIFEST_NAMES = ("labels.csv", "labels.parquet", "manifest.csv", "manifest.parquet")

# split spellings accepted for the rows of a `split` column
_SPLIT_SYNONYMS = {
    "train": {"train", "training", "train_set"},
    "val": {"val", "valid", "validation", "validation_set", "dev", "publictest"},
    "test": {"test", "testing", "test_set", "privatetest"},
}


def find_manifest(root: Path) -> Path:
    """The manifest file: ``root`` itself, or ``labels.csv`` / ``labels.parquet`` in it."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".parquet", ".pq", ".tsv"):
            raise DatasetError(f"manifest {root} must be a .csv, .tsv or .parquet file")
        return root
    for name in _MANIFEST_NAMES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"{root} is a folder without {' or '.join(_MANIFEST_NAMES[:2])}; pass the manifest file itself, "
        "or use imagefolder:PATH for <root>/<expression>/*.jpg folders"
    )


def _where(source: Path, pos: int, parquet: bool) -> str:
    return f"{source} row {pos}" if parquet else f"{source}:{pos + 2}"


@register_reader(
    "manifest",
    layout="CSV/Parquet with `path` (relative to the file) + any of expression, valence, arousal, AU<k>, "
    "subject, video, frame, split; a bare path or folder with labels.csv works too",
    reader_handles_split=True,
)
def read_manifest(
    root: Path,
    split: str | None,
    *,
    columns: Mapping[str, str] | None = None,
    expression_codes: str | None = None,
    au_threshold: float | None = None,
    expressions: Sequence[str] | None = None,
    image_root: str | os.PathLike | None = None,
) -> ReadResult:
    """Read a manifest table.

    Parameters
    ----------
    root : Path
        The manifest file, or a folder holding ``labels.csv`` / ``labels.parquet``.
    split : str, optional
        Keep the rows whose ``split`` column equals this (``train`` also matches
        ``Training`` etc.).
    columns : mapping, optional
        Foreign column name -> canonical name, e.g. ``{"img": "path"}``.
    expression_codes : str, optional
        Dataset whose integer code table the ``expression`` column uses (``affectnet``,
        ``rafdb``, ``fer2013``, ``abaw``, ``ckplus``); default: the column holds names.
    au_threshold : float, optional
        Binarize AU intensities: present when ``value >= au_threshold``.
    expressions : sequence of str, optional
        The class list of the label space (default: the classes present, canonical order).
    image_root : path, optional
        Folder the ``path`` column is relative to (default: the manifest's folder); a
        relative ``image_root`` is taken relative to the manifest's folder, e.g.
        ``image_root="images"`` for a ``labels.csv`` beside an ``images/`` folder.
    """
    source = find_manifest(root)
    parquet = source.suffix.lower() in (".parquet", ".pq")
    if parquet:
        table = pd.read_parquet(source)
    else:
        try:
            table = pd.read_csv(source, sep="\t" if source.suffix.lower() == ".tsv" else ",", low_memory=False)
        except pd.errors.ParserError as exc:
            raise parser_error(source, exc, "a header line then one row per image") from None
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{source}: empty file; expected a header line with a `path` column") from None
    table.columns = [str(c).strip() for c in table.columns]

    if columns:
        if not isinstance(columns, Mapping):
            raise DatasetError(f"columns must map foreign names to canonical ones, got {type(columns).__name__}")
        absent = [c for c in columns if c not in table.columns]
        if absent:
            raise DatasetError(f"{source}: columns {absent} named in `columns` are not in the file; it has {list(table.columns)}")
        table = table.rename(columns=dict(columns))
    if "path" not in table.columns:
        raise DatasetError(
            f"{source}: no `path` column; columns are {list(table.columns)}. Map yours with "
            "columns={'<your column>': 'path'}"
        )

    # AU columns: any spelling au_name understands ("au12", "AU 12", "AU012")
    renames = {}
    for col in table.columns:
        if col.lower().startswith("au") and col not in ("path",):
            try:
                renames[col] = au_name(col)
            except LabelError:
                continue
    canonical = [renames.get(c, c) for c in table.columns]
    clashes = sorted({c for c in canonical if canonical.count(c) > 1})
    if clashes:
        raise DatasetError(f"{source}: several columns name the same label {clashes} (e.g. 'AU12' and 'au12'); keep one")
    table = table.rename(columns=renames)

    if split is not None:
        if "split" not in table.columns:
            raise DatasetError(f"{source}: split {split!r} requested but the manifest has no `split` column")
        values = table["split"].astype(str).str.strip().str.lower()
        wanted = {split.strip().lower()} | next((s for s in _SPLIT_SYNONYMS.values() if split.strip().lower() in s), set())
        keep = values.isin(wanted).to_numpy()
        if not keep.any():
            present = sorted(table["split"].dropna().astype(str).unique())
            raise DatasetError(f"{source}: no rows with split {split!r}; valid splits: {', '.join(present)}")
    else:
        keep = np.ones(len(table), dtype=bool)

    # validate on the whole file so line numbers are the file's
    paths = table["path"]
    empty = paths.isna() | (paths.astype(str).str.strip() == "")
    if empty.any():
        pos = int(np.flatnonzero(empty.to_numpy())[0])
        raise DatasetError(f"{_where(source, pos, parquet)}: empty `path`; expected an image path relative to {source.parent}")
    base = source.parent if image_root is None else source.parent / Path(image_root)
    table["path"] = [os.path.normpath(os.path.join(base, p)) for p in paths.astype(str).str.strip()]

    if "expression" in table.columns:
        table["expression"] = _expressions(table["expression"], source, parquet, expression_codes)
    else:
        table["expression"] = None
    for col in ("valence", "arousal"):
        if col in table.columns:
            table[col] = _floats(table[col], col, source, parquet)
            bad = table[col].abs() > 1 + 1e-6
            if bad.any():
                pos = int(np.flatnonzero(bad.to_numpy())[0])
                raise LabelError(
                    f"{_where(source, pos, parquet)}: {col} {table[col].iloc[pos]:g} is outside [-1, 1]; scale native "
                    "ranges first (affectlab.data.schema.scale_va)",
                    value=float(table[col].iloc[pos]),
                )
        else:
            table[col] = np.nan
    for col in [c for c in table.columns if c in renames.values()]:
        table[col] = _aus(table[col], col, source, parquet, au_threshold)
    for col in ("subject", "video"):
        if col in table.columns:
            table[col] = table[col].astype("object").where(table[col].notna(), None).map(
                lambda v: v if v is None else str(v)
            )

    table = table.loc[keep].reset_index(drop=True)
    front = ["path", "expression", "valence", "arousal"]
    table = table[front + [c for c in table.columns if c not in front]]
    if expressions is not None:
        names = tuple(canonical_expression(e) for e in expressions)
        outside = sorted(set(table["expression"].dropna()) - set(names))
        if outside:
            raise LabelError(f"{source}: expressions {outside} are not in the given class list {list(names)}")
        space = LabelSpace(expressions=names, aus=infer_label_space(table).aus, va=infer_label_space(table).va)
    else:
        space = infer_label_space(table)
    return ReadResult(table, space)


def _expressions(values: pd.Series, source: Path, parquet: bool, codes: str | None) -> pd.Series:
    if codes is not None:
        present = values.notna().to_numpy()
        out = pd.Series([None] * len(values), dtype="object")
        if present.any():
            mapped = map_codes(values[present].reset_index(drop=True), codes, source=source)
            out[present] = mapped.to_numpy()
        return out
    numeric = pd.to_numeric(values, errors="coerce")
    if len(values) and values.notna().any() and numeric[values.notna()].notna().all():
        raise LabelError(
            f"{source}: the expression column holds integer codes; pass expression_codes='<dataset>' "
            "(affectnet, rafdb, fer2013, abaw, ckplus) to say which table they use, or write names"
        )
    lookup: dict = {}
    for value in values.dropna().unique():
        text = str(value).strip()
        if text == "":
            lookup[value] = None
            continue
        try:
            lookup[value] = canonical_expression(text)
        except LabelError as exc:
            pos = int(np.flatnonzero((values == value).to_numpy())[0])
            raise LabelError(f"{_where(source, pos, parquet)}: {exc}", value=value) from None
    return values.map(lookup).astype("object").where(values.notna(), None)


def _floats(values: pd.Series, col: str, source: Path, parquet: bool) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    blank = values.isna() | (values.astype(str).str.strip() == "")
    bad = numeric.isna() & ~blank
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{_where(source, pos, parquet)}: {col} {values.iloc[pos]!r} is not a number")
    return numeric.astype(np.float64)


def _aus(values: pd.Series, col: str, source: Path, parquet: bool, threshold: float | None) -> pd.Series:
    numeric = _floats(values, col, source, parquet).to_numpy()
    missing = np.isnan(numeric) | (numeric == MISSING_AU)
    if threshold is not None:
        out = np.where(numeric >= threshold, 1, 0)
    else:
        bad = ~missing & ~np.isin(numeric, (0.0, 1.0))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise LabelError(
                f"{_where(source, pos, parquet)}: {col} value {numeric[pos]:g} is not 1/0 (or -1/empty for missing); "
                "pass au_threshold=<t> to binarize intensities",
                value=float(numeric[pos]),
            )
        out = numeric
    return pd.Series(np.where(missing, MISSING_AU, out).astype(np.int8), index=values.index)
