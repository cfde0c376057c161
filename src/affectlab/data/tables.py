"""The toolkit dataset readers share: the canonical table, code mapping, VA scaling, parser errors.

A reader (:func:`affectlab.data.datasets.register_reader`) returns a :class:`ReadResult`
whose ``labels`` follow :mod:`affectlab.data.labeled`'s canonical columns.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.data.schema import ALL_EXPRESSIONS, LabelSpace, au_name, sort_aus
from affectlab.errors import DatasetError, LabelError

log = logging.getLogger("affectlab.data")

# How many missing paths a warning lists.
_SHOW_PATHS = 5

#: Columns every reader's table has (more may follow).

@dataclass
class ReadResult:
    """What a reader returns: the canonical table, its label space, optional in-memory images."""

    labels: pd.DataFrame
    label_space: LabelSpace | None = None
    images: np.ndarray | None = None
    #: rows whose image may be missing are checked by load_dataset unless False
    check_files: bool = True


class SplitAbsent(DatasetError):
    """Raised by a reader when a split's annotation files are absent (skipped when loading all splits)."""


def drop_missing_images(labels: pd.DataFrame, *, name: str) -> np.ndarray:
    """Boolean mask of rows whose image file exists; warns with the count and first paths."""
    paths = labels["path"].astype(str).tolist()
    exists = np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    n_missing = int((~exists).sum())
    if n_missing:
        first = [paths[i] for i in np.flatnonzero(~exists)[:_SHOW_PATHS]]
        msg = (
            f"{name}: {n_missing} of {len(paths)} images are missing and were dropped; first: "
            + ", ".join(first)
        )
        if n_missing == len(paths):
            raise DatasetError(f"{name}: none of the {len(paths)} images exist; first missing: " + ", ".join(first))
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning(msg)
    return exists


def canonical_table(
    path: Iterable,
    *,
    expression=None,
    valence=None,
    arousal=None,
    aus: Mapping[str, Iterable] | None = None,
    **extra,
) -> pd.DataFrame:
    """Build a canonical label table; missing columns are filled with their missing value."""
    paths = [str(p) for p in path]
    n = len(paths)
    data: dict[str, Any] = {"path": paths}
    data["expression"] = (
        pd.Series(expression, dtype="object").where(lambda s: s.notna(), None).to_numpy()
        if expression is not None
        else np.full(n, None, dtype=object)
    )
    data["valence"] = np.full(n, np.nan) if valence is None else np.asarray(valence, dtype=np.float64)
    data["arousal"] = np.full(n, np.nan) if arousal is None else np.asarray(arousal, dtype=np.float64)
    for name, values in (aus or {}).items():
        data[au_name(name)] = np.asarray(values, dtype=np.int8)
    for key, values in extra.items():
        data[key] = values
    frame = pd.DataFrame(data)
    frame["expression"] = frame["expression"].astype("object").where(frame["expression"].notna(), None)
    return frame


def map_codes(
    values: pd.Series,
    dataset: str,
    *,
    source: str | os.PathLike,
    first_line: int = 2,
    lines: Sequence[int] | None = None,
) -> pd.Series:
    """Native expression codes -> canonical names (None for dropped codes), errors name file:line.

    Row ``k`` of ``values`` is line ``lines[k]`` of ``source`` when given, else
    ``first_line + k``.
    """
    from affectlab.data.schema import expression_from_code

    values = pd.Series(values).reset_index(drop=True)
    line_of = (lambda k: int(lines[k])) if lines is not None else (lambda k: first_line + k)

    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna() | (numeric.notna() & (numeric % 1 != 0))
    if values.isna().any() or bad.any():
        pos = int(np.flatnonzero((bad | values.isna()).to_numpy())[0])
        raise DatasetError(
            f"{source}:{line_of(pos)}: expression {values.iloc[pos]!r} is not an integer code of dataset {dataset!r}"
        )
    lookup: dict[int, str | None] = {}
    for code in np.unique(numeric.to_numpy(dtype=np.int64)):
        try:
            lookup[int(code)] = expression_from_code(dataset, int(code))
        except LabelError as exc:
            pos = int(np.flatnonzero(numeric.to_numpy() == code)[0])
            raise LabelError(f"{source}:{line_of(pos)}: {exc}", dataset=dataset, value=int(code)) from None
    return numeric.astype(np.int64).map(lookup)


def scale_va_column(
    values, dataset: str, *, source: str | os.PathLike, name: str, first_line: int = 2
) -> np.ndarray:
    """:func:`~affectlab.data.schema.scale_va` of one column; errors name ``file:line`` and the value.

    Row ``k`` of ``values`` is line ``first_line + k`` of ``source``; non-numeric cells
    are an error too.
    """
    from affectlab.data.schema import scale_va

    series = pd.Series(values).reset_index(drop=True)
    numeric = pd.to_numeric(series, errors="coerce")
    blank = series.isna() | (series.astype(str).str.strip() == "")
    bad = numeric.isna() & ~blank
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{source}:{first_line + pos}: {name} {series.iloc[pos]!r} is not a number")
    arr = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return scale_va(dataset, arr, name=name)
    except LabelError as exc:
        pos = int(np.flatnonzero(arr == exc.value)[0]) if exc.value is not None and (arr == exc.value).any() else 0
        raise LabelError(f"{source}:{first_line + pos}: {exc}", dataset=dataset, value=exc.value) from None


def parser_error(source: str | os.PathLike, exc: Exception, expected: str) -> DatasetError:
    """A pandas CSV parser error rewritten as ``file:line: expected ..., saw ...``."""
    text = " ".join(str(exc).split())
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return DatasetError(f"{source}:{m.group(2)}: expected {m.group(1)} comma-separated fields ({expected}), saw {m.group(3)}")
    return DatasetError(f"{source}: malformed CSV ({text}); expected {expected}")


_AU_COLUMN = re.compile(r"^AU\d+$")


def au_columns(labels: pd.DataFrame) -> list[str]:
    """The canonical ``AU<k>`` columns of a label table, sorted by AU number."""
    return sort_aus(c for c in labels.columns if isinstance(c, str) and _AU_COLUMN.match(c))


def infer_label_space(labels: pd.DataFrame, expressions: Sequence[str] | None = None) -> LabelSpace:
    """The label space a canonical table carries.

    Parameters
    ----------
    labels : DataFrame
        Canonical label table.
    expressions : sequence of str, optional
        The dataset's class list (e.g. all eight AffectNet classes even if a split lacks
        one). Default: the classes present, in canonical order.
    """
    if expressions is None:
        present = set(labels["expression"].dropna().unique()) if "expression" in labels else set()
        expressions = tuple(e for e in ALL_EXPRESSIONS if e in present)
    va = bool(
        "valence" in labels
        and "arousal" in labels
        and (labels["valence"].notna() | labels["arousal"].notna()).any()
    )
    return LabelSpace(expressions=tuple(expressions), aus=tuple(au_columns(labels)), va=va)
