"""EmotioNet reader: the public AU annotation table (image URL or path, AU columns 1 / 0 / 999).

Layout (what affectlab assumes of the public release, since EmotioNet ships a table of image
URLs, not the images): one annotation file in the root, ``*.csv`` (comma) or ``*.tsv`` / ``*.txt``
(tab), pick one with ``file=NAME`` when there are several. The first line is a header: the
image column (``URL``, ``url``, ``path``, ``image`` or, failing those, the first column) and one
column per AU (``AU1``, ``AU 1``, ``au01`` ...); other columns are ignored. AU values are
``1`` (present), ``0`` (absent) or ``999`` (not annotated, kept as missing ``-1``). Images are
local: a URL's file name is looked up in ``images/`` (``http://x/y/abc.jpg`` ->
``images/abc.jpg``, the folder a downloader writes), a relative path is taken from the root.
The AUs kept are the 11 of the EmotioNet challenge (``aus="emotionet11"``: AU1, 2, 4, 5, 6, 9,
12, 17, 20, 25, 26) or any other set or list of AU names present in the header. The release
has no fixed splits (use ``split_by``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlparse

import numpy as np

from affectlab.data.datasets import register_reader
from affectlab.data.readers.common import Problems, allow_outside, check_inside_root, report_duplicates
from affectlab.data.schema import LabelSpace, au_name, au_number, au_set
from affectlab.data.tables import ReadResult, canonical_table
from affectlab.errors import ConfigError, DatasetError, LabelError

IMAGE_DIR = "images"
#: the code EmotioNet uses for "not annotated"
UNKNOWN = 999
_IMAGE_COLUMNS = ("url", "path", "image", "file", "filename")
_SUFFIXES = (".csv", ".tsv", ".txt")


def _annotation_file(root: Path, file: str | None) -> Path:
    if file is not None:
        path = root / file
        if not path.is_file():
            raise DatasetError(f"emotionet: annotation file {path} not found")
        return path
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not found:
        raise DatasetError(f"emotionet: no annotation table (*.csv, *.tsv) in {root}; expected a header 'URL,AU1,AU2,...' "
                           "and rows of 1 / 0 / 999")
    if len(found) > 1:
        raise ConfigError(f"emotionet: several annotation tables in {root} ({', '.join(p.name for p in found)}); "
                          "choose one with the reader option file=NAME")
    return found[0]


def _local_name(cell: str) -> str:
    if "://" in cell:
        return os.path.join(IMAGE_DIR, os.path.basename(unquote(urlparse(cell).path)))
    return cell


def _parse_aus(aus) -> tuple[str, ...]:
    if isinstance(aus, str) and "," in aus:
        return tuple(au_name(a) for a in aus.split(",") if a.strip())
    if isinstance(aus, str):
        return au_set(aus)
    return tuple(au_name(a) for a in aus)


@register_reader(
    "emotionet",
    layout="one table (*.csv / *.tsv) with header 'URL,AU1,AU2,...' and AU values 1 / 0 / 999 (not annotated); "
    "images/<file name of the URL> or a path relative to the root; 11 AUs by default",
)
def read_emotionet(
    root: Path,
    split: str | None,
    *,
    file: str | None = None,
    aus: str | Sequence[str] = "emotionet11",
    allow_outside_root: bool | None = None,
) -> ReadResult:
    """Read the EmotioNet AU table.

    Parameters
    ----------
    file : str, optional
        The annotation table inside the root (default: the only ``*.csv`` / ``*.tsv`` / ``*.txt``).
    aus : str or sequence
        AU set name (``emotionet11``), comma-separated AU names or a sequence of names;
        every one must be a column of the table.
    allow_outside_root : bool, optional
        Accept image paths that leave the dataset root; default: refused unless
        ``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1``.
    """
    if not root.is_dir():
        raise DatasetError(f"emotionet: {root} is not a folder")
    chosen = _parse_aus(aus)
    if not chosen:
        raise ConfigError("emotionet: aus is empty")
    source = _annotation_file(root, file)
    with open(source, encoding="utf-8-sig", errors="replace", newline="") as fh:
        lines = fh.read().splitlines()
    if not lines or not lines[0].strip():
        raise DatasetError(f"{source}:1: empty file; expected a header 'URL,AU1,AU2,...'")
    delimiter = "\t" if "\t" in lines[0] else ","
    header = [h.strip() for h in next(csv.reader([lines[0]], delimiter=delimiter))]
    lowered = [h.lower() for h in header]
    image_col = next((lowered.index(c) for c in _IMAGE_COLUMNS if c in lowered), 0)
    au_cols: dict[str, int] = {}
    for j, h in enumerate(header):
        if j == image_col:
            continue
        try:
            au_cols.setdefault(au_name(h), j)
        except LabelError:
            continue  # not an AU column (e.g. an expression or a comment)
    absent = [a for a in chosen if a not in au_cols]
    if absent:
        raise DatasetError(f"{source}:1: no column for {', '.join(absent)}; the header has AUs "
                           f"{', '.join(sorted(au_cols, key=au_number)) or 'none'}")
    problems = Problems()
    rows: list[tuple[int, str, list[int]]] = []
    for lineno, fields in enumerate(csv.reader(lines[1:], delimiter=delimiter), start=2):
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.add(f"{source}:{lineno}: {len(fields)} fields, expected {len(header)} ({delimiter.join(header[:4])}...)")
            continue
        cell = fields[image_col].strip()
        if not cell:
            problems.add(f"{source}:{lineno}: empty image column {header[image_col]!r}")
            continue
        values, ok = [], True
        for name in chosen:
            text = fields[au_cols[name]].strip()
            try:
                value = int(float(text))
            except ValueError:
                value = None
            if value not in (0, 1, UNKNOWN) or (value is not None and float(text) != value):
                problems.add(f"{source}:{lineno}: {name} value {text!r} is not 1, 0 or {UNKNOWN} (not annotated)", LabelError)
                ok = False
                continue
            values.append(-1 if value == UNKNOWN else value)
        if ok:
            rows.append((lineno, cell, values))
    written = [_local_name(cell) for _, cell, _ in rows]
    paths = [os.path.normpath(os.path.join(root, w)) for w in written]
    check_inside_root(paths, root, allow=allow_outside(allow_outside_root), where=lambda k: f"{source}:{rows[k][0]}",
                      problems=problems, written=written)
    problems.raise_if_any()
    if not rows:
        raise DatasetError(f"{source}: no annotated rows after the header")
    report_duplicates([(p, tuple(v)) for p, (_, _, v) in zip(paths, rows)], source=source, line_of=lambda k: rows[k][0])
    matrix = np.asarray([v for _, _, v in rows], dtype=np.int8).reshape(len(rows), len(chosen))
    labels = canonical_table(paths, aus={n: matrix[:, j] for j, n in enumerate(chosen)})
    return ReadResult(labels, LabelSpace(aus=chosen))
