"""One output name per input: distinct, stable and safe as a file name.

Several inputs of a run often share a file name (``day1/clip.mp4``, ``day2/clip.mp4``);
every per-input output is named here, so no output overwrites another:

* :func:`unique_output_names` -- readable names for the outputs of one run (annotated
  videos, report pages): the file stem, with parent folders only where stems clash. The
  same inputs always get the same names (a resumed run names its files as the first run).
* :func:`stable_output_name` -- a name that depends on the input alone (stem plus a hash
  of its absolute path), for outputs that must keep their name whatever the other inputs
  are: the per-input Parquet tables of a corpus run, added to over many runs.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "input"


def _candidates(path: str) -> list[str]:
    """Names of growing length for one input: its stem, with its extension (``clip.mp4``
    vs ``clip.mkv``), with 1, 2, ... parent folders in front, with all of them."""
    p = Path(os.path.abspath(os.fspath(path)))
    stem = p.stem or p.name
    dirs = [d for d in p.parent.parts if d not in ("/", "\\") and not d.endswith((":", ":\\"))]
    ext = p.suffix.lstrip(".")
    out = [_safe(stem)] + ([_safe(f"{stem}_{ext}")] if ext else [])
    for k in range(1, len(dirs) + 1):
        out.append(_safe("_".join(dirs[-k:] + [stem])))
    if ext:
        out.append(_safe("_".join(dirs + [stem, ext])))
    return out


def unique_output_names(inputs: Sequence[str | os.PathLike], reserved: Iterable[str] = ()) -> dict[str, str]:
    """A distinct file-name stem (no extension) for each input.

    An input keeps its file stem (``clip`` for ``videos/clip.mp4``) unless another input
    has the same one; then its extension is added (``clip_mp4``, ``clip_mkv``), then
    parent folders are put in front, one at a time, until the names differ
    (``day1_clip``, ``day2_clip``), and as a last resort a number (``clip_2``). Names compare case-insensitively (macOS
    and Windows file systems do) and avoid ``reserved`` ones (e.g. ``index`` for a
    report's ``index.html``). The result depends only on the list of inputs, so the same
    inputs always get the same names. Use it for every per-input output: append the
    suffix yourself (``names[p] + ".html"``).

    Parameters
    ----------
    inputs : sequence of path-like
        The inputs of the run (duplicates get one name).
    reserved : iterable of str
        Stems that must not be used.

    Returns
    -------
    dict
        ``str(input)`` -> stem made of letters, digits, ``.``, ``_`` and ``-`` only.

    Examples
    --------
    >>> unique_output_names(["/data/day1/clip.mp4", "/data/day2/clip.mp4", "/data/x.mp4"])
    {'/data/day1/clip.mp4': 'day1_clip', '/data/day2/clip.mp4': 'day2_clip', '/data/x.mp4': 'x'}
    """
    keys = list(dict.fromkeys(os.fspath(p) for p in inputs))
    reserved_l = {r.lower() for r in reserved}
    cands = {k: _candidates(k) for k in keys}
    level = {k: 0 for k in keys}
    while True:
        groups: dict[str, list[str]] = defaultdict(list)
        for k in keys:
            groups[cands[k][level[k]].lower()].append(k)
        moved = False
        for name, members in groups.items():
            if len(members) > 1 or name in reserved_l:
                for k in members:
                    if level[k] + 1 < len(cands[k]):
                        level[k] += 1
                        moved = True
        if not moved:
            break
    names: dict[str, str] = {}
    used = set(reserved_l)
    for k in keys:
        base = cands[k][level[k]]
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name.lower())
        names[k] = name
    return names


def stable_output_name(path: str | os.PathLike) -> str:
    """``<stem>-<8 hex of the absolute path>``: distinct per input path, whatever the other inputs.

    Examples
    --------
    >>> stable_output_name("/data/day1/clip.mp4")[:5]
    'clip-'
    """
    absolute = os.path.abspath(os.fspath(path))
    digest = hashlib.sha1(absolute.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(absolute).stem)[:60] or "input"
    return f"{stem}-{digest}"
