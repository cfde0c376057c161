"""Manifest reader: any CSV / Parquet table with a ``path`` column (the lingua franca).

Columns (all but ``path`` optional): ``path`` (relative to the manifest's folder, or
absolute inside it; paths that leave it need ``allow_outside_root=True``), ``expression`` (a name such as ``happiness`` or ``happy``; or native integer
codes with ``expression_codes="affectnet"``), ``valence`` / ``arousal`` (in [-1, 1]),
``AU<k>`` (1 / 0; -1 or empty = missing; intensities with ``au_threshold``),
``subject``, ``video``, ``frame``, ``split``, face box ``x, y, w, h``. Foreign column
names are mapped with ``columns={"img": "path", "emotion": "expression"}``. Other
columns are kept.

The whole file is checked before anything fails, and the error lists every bad line
(``labels.csv:7: 2 fields, expected 3 (path,expression,valence)``): a row with too few
fields is an error (its labels would be lost), a trailing comma on every line is
accepted, exactly duplicated rows are kept with a notice naming their lines.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, infer_label_space, map_codes, parser_error
from affectlab.data.readers.common import Problems, allow_outside, check_inside_root, report_duplicates
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


class _Where:
    """``file:line`` of table row ``pos`` (``file row pos`` for Parquet)."""

    def __init__(self, source: Path, lines: list[int] | None):
        self.source = source
        self.lines = lines

    def line(self, pos: int) -> int:
        return self.lines[pos] if self.lines is not None else pos

    def __call__(self, pos: int) -> str:
        return f"{self.source}:{self.lines[pos]}" if self.lines is not None else f"{self.source} row {pos}"


def _scan_csv(source: Path, sep: str, problems: Problems) -> tuple[int, list[int], np.ndarray]:
    """Check every record's field count; returns (header fields, line of each record, record ok).

    A record with fewer fields than the header would lose its last labels (pandas fills
    them as missing), one with more would shift them; both are problems. Empty fields
    past the header's end (a trailing comma) are accepted, on the header too.
    """
    with open(source, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError(f"{source}: empty file; expected a header line with a `path` column") from None
        names = [h.strip() for h in header]
        while names and names[-1] == "":
            names.pop()
        width = len(names)
        if width == 0:
            raise DatasetError(f"{source}:1: empty header; expected a header line with a `path` column")
        lines: list[int] = []
        ok: list[bool] = []
        prev = reader.line_num
        for row in reader:
            start = prev + 1
            prev = reader.line_num
            if not row or all(not f.strip() for f in row) and len(row) <= 1:
                continue  # blank line: pandas skips it too
            lines.append(start)
            good = True
            if len(row) < width:
                problems.add(
                    f"{source}:{start}: {len(row)} field{'s' if len(row) != 1 else ''}, expected {width} "
                    f"({','.join(names)}); a row with too few fields would lose its labels"
                )
                good = False
            elif len(row) > width and any(f.strip() for f in row[width:]):
                problems.add(f"{source}:{start}: {len(row)} fields, expected {width} ({','.join(names)})")
                good = False
            ok.append(good)
    return width, lines, np.array(ok, dtype=bool)


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
    allow_outside_root: bool | None = None,
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
    allow_outside_root : bool, optional
        Accept paths that leave the image root (``../x.jpg``, an absolute path elsewhere).
        Default: refused, unless the environment variable ``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1``
        is set.

    Raises
    ------
    DatasetError, LabelError
        Listing every bad line of the file (``file:line: ...``), not only the first.
    """
    source = find_manifest(root)
    parquet = source.suffix.lower() in (".parquet", ".pq")
    problems = Problems()
    if parquet:
        table = pd.read_parquet(source)
        where = _Where(source, None)
        ok = np.ones(len(table), dtype=bool)
    else:
        sep = "\t" if source.suffix.lower() == ".tsv" else ","
        width, lines, ok = _scan_csv(source, sep, problems)
        try:
            # index_col=False: a trailing comma on every row must not turn the first column into the index
            table = pd.read_csv(source, sep=sep, low_memory=False, index_col=False, usecols=range(width))
        except pd.errors.ParserError as exc:
            raise parser_error(source, exc, "a header line then one row per image") from None
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{source}: empty file; expected a header line with a `path` column") from None
        if len(table) != len(lines):  # the scan and pandas disagree on records: fall back to row + 2
            lines, ok = list(range(2, len(table) + 2)), np.ones(len(table), dtype=bool)
        where = _Where(source, lines)
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
    raw = table.copy() if len(table) else table

    # validate the whole file (line numbers are the file's); rows with a wrong field
    # count are reported once, not again for the values they lack
    paths = table["path"]
    written = paths.fillna("").astype(str).str.strip()
    empty = (paths.isna() | (written == "")).to_numpy()
    for pos in np.flatnonzero(empty & ok):
        problems.add(f"{where(pos)}: empty `path`; expected an image path relative to {source.parent}")
    base = source.parent if image_root is None else source.parent / Path(image_root)
    table["path"] = [os.path.normpath(os.path.join(base, p)) for p in written]
    rows = np.flatnonzero(ok & ~empty)
    check_inside_root(
        [table["path"].iat[k] for k in rows],
        base,
        allow=allow_outside(allow_outside_root),
        where=lambda k: where(int(rows[k])),
        problems=problems,
        written=[written.iat[k] for k in rows],
    )

    if "expression" in table.columns:
        table["expression"] = _expressions(table["expression"], where, expression_codes, ok, problems)
    else:
        table["expression"] = None
    for col in ("valence", "arousal"):
        if col in table.columns:
            table[col] = _floats(table[col], col, where, ok, problems)
            bad = (table[col].abs() > 1 + 1e-6).to_numpy() & ok
            for pos in np.flatnonzero(bad):
                problems.add(
                    f"{where(pos)}: {col} {table[col].iloc[pos]:g} is outside [-1, 1]; scale native "
                    "ranges first (affectlab.data.schema.scale_va)",
                    LabelError,
                )
        else:
            table[col] = np.nan
    for col in [c for c in table.columns if c in renames.values()]:
        table[col] = _aus(table[col], col, where, au_threshold, ok, problems)
    problems.raise_if_any()
    for col in ("subject", "video"):
        if col in table.columns:
            table[col] = table[col].astype("object").where(table[col].notna(), None).map(
                lambda v: v if v is None else str(v)
            )

    kept = np.flatnonzero(keep)
    if len(kept) > 1:
        hashes = pd.util.hash_pandas_object(raw.iloc[kept], index=False).to_numpy()
        report_duplicates(
            hashes, source=source, line_of=lambda k: where.line(int(kept[k])), unit="row" if parquet else "line",
            what="the same path and labels as an earlier row",
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


def _expressions(values: pd.Series, where: _Where, codes: str | None, ok: np.ndarray, problems: Problems) -> pd.Series:
    source = where.source
    if codes is not None:
        present = (values.notna().to_numpy()) & ok
        out = pd.Series([None] * len(values), dtype="object")
        if present.any():
            with problems.collect():
                lines = [where.line(int(k)) for k in np.flatnonzero(present)]
                mapped = map_codes(values[present].reset_index(drop=True), codes, source=source, lines=lines)
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
            lookup[value] = None
            for pos in np.flatnonzero((values == value).to_numpy() & ok):
                problems.add(f"{where(pos)}: {exc}", LabelError)
    return values.map(lookup).astype("object").where(values.notna(), None)


def _floats(values: pd.Series, col: str, where: _Where, ok: np.ndarray, problems: Problems) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    blank = values.isna() | (values.astype(str).str.strip() == "")
    bad = (numeric.isna() & ~blank).to_numpy() & ok
    for pos in np.flatnonzero(bad):
        problems.add(f"{where(pos)}: {col} {values.iloc[pos]!r} is not a number")
    return numeric.astype(np.float64)


def _aus(
    values: pd.Series, col: str, where: _Where, threshold: float | None, ok: np.ndarray, problems: Problems
) -> pd.Series:
    numeric = _floats(values, col, where, ok, problems).to_numpy()
    missing = np.isnan(numeric) | (numeric == MISSING_AU)
    if threshold is not None:
        out = np.where(numeric >= threshold, 1, 0)
    else:
        bad = ~missing & ~np.isin(numeric, (0.0, 1.0)) & ok
        for pos in np.flatnonzero(bad):
            problems.add(
                f"{where(pos)}: {col} value {numeric[pos]:g} is not 1/0 (or -1/empty for missing); "
                "pass au_threshold=<t> to binarize intensities",
                LabelError,
            )
        out = numeric
    return pd.Series(np.where(missing, MISSING_AU, out).astype(np.int8), index=values.index)
