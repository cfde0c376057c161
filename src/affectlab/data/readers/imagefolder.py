"""Image-folder reader: ``<root>/<expression>/*.jpg``.

Folder names are expression names in any spelling the schema knows (``happy``,
``Angry``, ``neutral`` ...). With a SPLIT, the classes are read from ``<root>/<SPLIT>/``
(the common ``train/ val/ test/`` arrangement).
"""

from __future__ import annotations

import os
from pathlib import Path

from affectlab.data.datasets import register_reader
from affectlab.data.tables import ReadResult, infer_label_space, canonical_table
from affectlab.data.images import is_image_file
from affectlab.data.schema import ALL_EXPRESSIONS, EXPRESSION_ALIASES
from affectlab.errors import DatasetError


@register_reader(
    "imagefolder",
    layout="<root>/<expression>/*.jpg (folder names like happy, Angry, neutral); SPLIT reads <root>/<SPLIT>/",
    reader_handles_split=True,
)
def read_imagefolder(root: Path, split: str | None, *, recursive: bool = False) -> ReadResult:
    """Read ``<root>/<expression>/*`` images; ``recursive=True`` also takes images in sub-folders."""
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder; expected <root>/<expression>/*.jpg")
    if split is not None:
        sub = root / split
        if not sub.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise DatasetError(f"imagefolder: no split folder {split!r} in {root}; valid splits: {', '.join(present)}")
        root = sub
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    unknown = [p.name for p in folders if p.name.strip().lower() not in EXPRESSION_ALIASES]
    if unknown:
        raise DatasetError(
            f"imagefolder {root}: folder name(s) {unknown} are not expressions; expected folders named "
            f"{', '.join(ALL_EXPRESSIONS)} (or aliases such as happy, angry, sad, surprised)"
        )
    paths, names = [], []
    for folder in folders:
        canon = EXPRESSION_ALIASES[folder.name.strip().lower()]
        if recursive:
            files = sorted(
                os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if is_image_file(f) and not f.startswith(".")
            )
        else:
            files = sorted(str(f) for f in folder.iterdir() if f.is_file() and is_image_file(f.name) and not f.name.startswith("."))
        paths.extend(files)
        names.extend([canon] * len(files))
    if not paths:
        raise DatasetError(f"imagefolder {root}: no images found; expected <root>/<expression>/*.jpg")
    table = canonical_table(paths, expression=names)
    return ReadResult(table, infer_label_space(table), check_files=False)
