"""What every reader checks the same way: problems collected over whole files, paths kept
inside the dataset root, duplicated rows and other notices.

A reader validates a whole annotation file before it fails, so one run lists every bad
line (``file:line: what was wrong``) instead of the first only. Paths an annotation file
gives (``../../x.jpg``, ``/home/me/x.jpg``) must stay inside the dataset's root unless the
user allows it with the reader option ``allow_outside_root=True`` (``-o
allow_outside_root=true`` on ``affectlab data check``) or the environment variable
``AFFECTLAB_ALLOW_OUTSIDE_ROOT=1`` (every command that takes a dataset spec).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

from affectlab.errors import AffectlabError, DatasetError, LabelError

log = logging.getLogger("affectlab.data")

#: environment variable that allows annotation paths outside the dataset root everywhere
ALLOW_OUTSIDE_ENV = "AFFECTLAB_ALLOW_OUTSIDE_ROOT"
#: problems shown in one error message (the rest are counted; all are in ``error.problems``)
SHOW = 10


class Problems:
    """Problems found while reading, raised together by :meth:`raise_if_any`.

    One problem is raised as it was (its own class and message); several as one error
    ``N problems: file:3: ...; file:7: ...; ... and K more`` whose ``problems``
    attribute lists every message.
    """

    def __init__(self) -> None:
        self.items: list[AffectlabError] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, message: str, cls: type[AffectlabError] = DatasetError) -> None:
        """Record one problem (``message`` names the file and line)."""
        self.items.append(cls(message))

    @contextlib.contextmanager
    def collect(self):
        """Record an affectlab error raised inside the block instead of letting it through."""
        try:
            yield
        except (DatasetError, LabelError) as exc:
            self.items.extend(getattr(exc, "problem_errors", None) or [exc])

    def raise_if_any(self) -> None:
        """Raise the problems found so far (nothing when there are none)."""
        if not self.items:
            return
        if len(self.items) == 1:
            raise self.items[0]
        kinds = {type(e) for e in self.items}
        cls = kinds.pop() if len(kinds) == 1 else DatasetError
        # in file and line order, whichever check found them
        messages = sorted((str(e) for e in self.items), key=_file_line)
        more = f"; ... and {len(messages) - SHOW} more" if len(messages) > SHOW else ""
        error = cls(f"{len(messages)} problems: " + "; ".join(messages[:SHOW]) + more)
        error.problems = messages
        error.problem_errors = list(self.items)
        raise error


def _file_line(message: str):
    m = re.match(r"(.*?):(\d+): ", message)
    return (m.group(1), int(m.group(2))) if m else (message, 0)


def notice(message: str) -> None:
    """A visible one-line notice (a :class:`UserWarning`, also logged) for something the user should know."""
    warnings.warn(message, UserWarning, stacklevel=3)
    log.warning(message)


def allow_outside(option: bool | None) -> bool:
    """The reader option ``allow_outside_root`` or, when not given, the environment variable."""
    if option is not None:
        if isinstance(option, str):
            return option.strip().lower() in ("1", "true", "yes", "on")
        return bool(option)
    return os.environ.get(ALLOW_OUTSIDE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def check_inside_root(
    paths: Sequence[str],
    root: Path,
    *,
    allow: bool,
    where: Callable[[int], str],
    problems: Problems,
    written: Sequence[str] | None = None,
) -> None:
    """Record a problem for every path (already joined and normalised) outside ``root``.

    A path that only leaves ``root`` through a symbolic link (``root`` itself resolved)
    counts as inside. ``written[k]`` is the path as the annotation file gave it.
    """
    if allow:
        return
    roots = [os.path.normpath(str(root)), os.path.realpath(str(root))]
    for k, path in enumerate(paths):
        if _inside(path, roots) or _inside(os.path.realpath(path), roots):
            continue
        given = written[k] if written is not None else path
        problems.add(
            f"{where(k)}: path {given!r} leaves the dataset root {roots[0]}; allow it with the reader option "
            f"allow_outside_root=True or {ALLOW_OUTSIDE_ENV}=1"
        )


def report_duplicates(keys: Sequence, *, source, line_of: Callable[[int], int], unit: str = "line", what: str = "") -> int:
    """Notice the rows whose key (e.g. path and labels) repeats an earlier row; returns their count.

    Duplicated rows are kept (a dataset may repeat an image on purpose), but they weigh
    twice in training and evaluation, so the notice names their lines.
    """
    seen: dict = {}
    dups: list[tuple[int, int]] = []
    for k, key in enumerate(keys):
        first = seen.setdefault(key, k)
        if first != k:
            dups.append((k, first))
    if dups:
        shown = ", ".join(f"{unit} {line_of(k)} (as {unit} {line_of(f)})" for k, f in dups[:SHOW])
        more = f", ... and {len(dups) - SHOW} more" if len(dups) > SHOW else ""
        rows = "row" if len(dups) == 1 else "rows"
        notice(f"{source}: {len(dups)} duplicated {rows} kept ({what or 'same values as an earlier row'}): {shown}{more}")
    return len(dups)
