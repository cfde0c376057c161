"""CK+ reader for the CK+48 export: ``labels_emotion_aus.csv`` + ``CK+48/<emotion>/*.png``.

``labels_emotion_aus.csv`` has ``file, subject, sequence, frame, is_last_frame, emotion,
netfacs_emotion, aus`` where ``aus`` lists the AUs coded at the sequence's peak frame
(``AU4 AU7 AU17``). Each row gets ``AU<k>`` = 1 for the listed AUs and 0 for the other
AUs of the CK+ 23-AU set. ``video`` is the sequence. CK+ has no official split: split
by subject (``dataset.split_by("subject")``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, canonical_table, parser_error
from affectlab.data.readers.common import Problems, allow_outside, check_inside_root
from affectlab.data.schema import ALL_EXPRESSIONS, LabelSpace, au_name, au_set, canonical_expression
from affectlab.errors import DatasetError, LabelError

LABEL_FILE = "labels_emotion_aus.csv"
_REQUIRED = ("file", "subject", "sequence", "frame", "emotion", "aus")


@register_reader(
    "ckplus",
    layout="labels_emotion_aus.csv (file, subject, sequence, frame, emotion, aus) + CK+48/<emotion>/*.png; "
    "AUs over the CK+ 23-AU set; no splits (split by subject)",
    aliases={"ck+": {}, "ckplus48": {}},
)
def read_ckplus(root: Path, split: str | None, *, aus: str = "ckplus23", allow_outside_root: bool | None = None) -> ReadResult:
    """Read CK+48 with expression and AU labels.

    Parameters
    ----------
    aus : str
        AU set whose members become ``AU<k>`` columns (listed AUs outside it are an error).
    allow_outside_root : bool, optional
        Accept image paths that leave the dataset root (``../x.jpg``, absolute paths
        elsewhere); default: refused unless ``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1``.
    """
    source = root / LABEL_FILE if root.is_dir() else root
    if not source.is_file():
        raise DatasetError(f"ckplus: {source} not found; expected {LABEL_FILE} next to the CK+48/ folder")
    try:
        table = pd.read_csv(source, dtype={"subject": str, "sequence": str, "aus": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise parser_error(source, exc, ", ".join(_REQUIRED)) from None
    absent = [c for c in _REQUIRED if c not in table.columns]
    if absent:
        raise DatasetError(f"{source}: missing column(s) {absent}; expected header {', '.join(_REQUIRED)}, ...")
    au_names = au_set(aus)
    index = {a: j for j, a in enumerate(au_names)}
    present = np.zeros((len(table), len(au_names)), dtype=np.int8)
    for k, text in enumerate(table["aus"].fillna("")):
        for token in str(text).split():
            try:
                name = au_name(token)
            except LabelError:
                raise LabelError(f"{source}:{k + 2}: {token!r} is not an AU code; expected e.g. 'AU4 AU7 AU17'", value=token) from None
            if name not in index:
                raise LabelError(
                    f"{source}:{k + 2}: {name} is not in the CK+ AU set {aus} ({', '.join(au_names)})",
                    dataset="ckplus",
                    value=token,
                )
            present[k, index[name]] = 1
    names = {}
    for value in table["emotion"].dropna().unique():
        try:
            names[value] = canonical_expression(value, "ckplus")
        except LabelError as exc:
            pos = int(np.flatnonzero((table["emotion"] == value).to_numpy())[0])
            raise LabelError(f"{source}:{pos + 2}: {exc}", dataset="ckplus", value=value) from None
    base = source.parent
    extra = {c: table[c].to_numpy() for c in table.columns if c not in ("file", "emotion", "aus", "sequence")}
    paths = [os.path.normpath(os.path.join(base, f)) for f in table["file"].astype(str)]
    problems = Problems()
    check_inside_root(
        paths, base, allow=allow_outside(allow_outside_root), where=lambda k: f"{source}:{k + 2}", problems=problems,
        written=list(table["file"].astype(str)),
    )
    problems.raise_if_any()
    labels = canonical_table(
        paths,
        expression=table["emotion"].map(names),
        aus={a: present[:, j] for j, a in enumerate(au_names)},
        video=table["sequence"].to_numpy(),
        **extra,
    )
    expressions = tuple(e for e in ALL_EXPRESSIONS if e in set(labels["expression"].dropna()))
    return ReadResult(labels, LabelSpace(expressions=expressions, aus=au_names, va=False))
