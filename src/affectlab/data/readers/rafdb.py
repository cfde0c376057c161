"""RAF-DB (basic) reader.

Layout: ``EmoLabel/list_patition_label.txt`` (sic) with lines ``train_00001.jpg 5`` /
``test_0001.jpg 1``; images ``Image/aligned/train_00001_aligned.jpg`` (``aligned=True``,
the 100x100 aligned faces) or ``Image/original/train_00001.jpg``. Codes are 1-based:
1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral. The
``basic/`` folder of the distribution may be given as the root or its parent.
"""

from __future__ import annotations

import os
from pathlib import Path

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, SplitAbsent, canonical_table
from affectlab.data.readers.common import Problems, allow_outside, check_inside_root
from affectlab.data.schema import ALL_EXPRESSIONS, LabelSpace, expression_from_code, native_expressions
from affectlab.errors import DatasetError, LabelError

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"


def _base(root: Path) -> Path:
    for cand in (root, root / "basic"):
        if (cand / LABEL_FILE).is_file():
            return cand
    raise SplitAbsent(f"rafdb: {root / LABEL_FILE} not found; expected EmoLabel/list_patition_label.txt under {root}")


def read_partition(source: Path) -> list[tuple[int, str, str]]:
    """``(line, file name, canonical expression)`` for every line of the partition file."""
    out = []
    problems = Problems()
    with open(source, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                problems.add(f"{source}:{lineno}: expected '<name>.jpg <code 1-7>' like 'train_00001.jpg 5', got {text!r}")
                continue
            try:
                name = expression_from_code("rafdb", int(parts[1]))
            except LabelError as exc:
                problems.add(f"{source}:{lineno}: {exc}", LabelError)
                continue
            out.append((lineno, parts[0], name))
    problems.raise_if_any()
    return out


@register_reader(
    "rafdb",
    layout="EmoLabel/list_patition_label.txt ('train_00001.jpg 5', 1-based: 1 surprise .. 7 neutral) + "
    "Image/aligned/*_aligned.jpg (or Image/original/)",
    splits=("train", "test"),
    split_aliases={"training": "train", "testing": "test"},
    aliases={"raf-db": {}, "raf": {}},
)
def read_rafdb(root: Path, split: str, *, aligned: bool = True, allow_outside_root: bool | None = None) -> ReadResult:
    """Read one RAF-DB split.

    Parameters
    ----------
    aligned : bool
        False uses the original (uncropped) images.
    allow_outside_root : bool, optional
        Accept image paths that leave the dataset root (``../x.jpg``, absolute paths
        elsewhere); default: refused unless ``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1``.
    """
    base = _base(root)
    rows = [r for r in read_partition(base / LABEL_FILE) if r[1].startswith(f"{split}_")]
    if not rows:
        raise SplitAbsent(f"rafdb: no '{split}_*' lines in {base / LABEL_FILE}")
    if aligned:
        folder = base / "Image" / "aligned"
        files = [f"{os.path.splitext(name)[0]}_aligned.jpg" for _, name, _ in rows]
    else:
        folder = base / "Image" / "original"
        files = [name for _, name, _ in rows]
    paths = [os.path.normpath(os.path.join(folder, f)) for f in files]
    problems = Problems()
    check_inside_root(
        paths, base, allow=allow_outside(allow_outside_root), where=lambda k: f"{base / LABEL_FILE}:{rows[k][0]}",
        problems=problems, written=[name for _, name, _ in rows],
    )
    problems.raise_if_any()
    labels = canonical_table(
        paths,
        expression=[e for _, _, e in rows],
    )
    # RAF-DB's classes are the 7 basic ones (no contempt), in canonical order
    classes = tuple(e for e in ALL_EXPRESSIONS if e in set(native_expressions("rafdb")))
    return ReadResult(labels, LabelSpace(expressions=classes))
