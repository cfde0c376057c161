"""The dataset spec parser, the reader registry and :func:`load_dataset`.

A *spec* names a dataset on disk: ``FORMAT:PATH[:SPLIT]``, for example
``affectnet:/data/AffectNet:train``, ``affectnet7:/data/AffectNet:val``,
``rafdb:/data/RAF-DB:test``, ``abaw:/data/ABAW3:Validation``,
``manifest:out/labels.csv`` or ``imagefolder:/data/faces``. A bare path to a ``.csv`` /
``.parquet`` file, or to a folder holding ``labels.csv``, is a manifest.
:func:`load_dataset` parses the spec, runs the format's reader and returns an
:class:`AffectDataset`.

Every reader produces the same canonical table (``.labels``): ``path`` (absolute),
``expression`` (canonical name or missing), ``valence`` / ``arousal`` (float in [-1, 1],
NaN when missing), ``AU<k>`` (1 / 0, -1 missing) and, where known, ``subject``,
``video``, ``frame``; plus reader extras (``dominance``, the EMOTIC category columns,
``split``, face boxes ``x, y, w, h`` which are cropped at load).

The datasets themselves are :mod:`affectlab.data.labeled`; what readers share is
:mod:`affectlab.data.tables`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.data.tables import au_columns

if TYPE_CHECKING:
    from affectlab.data.labeled import AffectDataset
from affectlab.data.schema import MISSING_AU, LabelSpace
from affectlab.data.tables import ReadResult, SplitAbsent, drop_missing_images
from affectlab.errors import ConfigError, DatasetError

log = logging.getLogger("affectlab.data")


@dataclass
class ReaderInfo:
    """A registered dataset format."""

    name: str
    func: Callable[..., ReadResult]
    layout: str
    #: canonical split names, or None when the format has no fixed splits
    splits: tuple[str, ...] | None = None
    #: other spellings of splits (lower-case) -> canonical split name
    split_aliases: dict[str, str] = field(default_factory=dict)
    #: spec prefixes that select this reader with fixed options, e.g. affectnet7
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: True when the reader resolves SPLIT itself (manifest: a ``split`` column)
    reader_handles_split: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """Reader options (keyword-only parameters) and their defaults."""
        sig = inspect.signature(self.func)
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def resolve_split(self, split: str | None) -> str | None:
        if split is None or self.reader_handles_split:
            return split
        if not self.splits:
            raise DatasetError(f"format {self.name!r} has no splits (got {split!r}); use .split_by() instead")
        if split in self.splits:
            return split
        key = split.strip().lower()
        for s in self.splits:
            if s.lower() == key:
                return s
        if key in self.split_aliases:
            return self.split_aliases[key]
        valid = list(self.splits) + [a for a in self.split_aliases if a not in self.splits]
        raise DatasetError(f"unknown split {split!r} for format {self.name!r}; valid splits: {', '.join(valid)}")


#: Registered formats by name.
READERS: dict[str, ReaderInfo] = {}

# Generic options load_dataset understands for every format.
_GENERIC_OPTIONS = {"check_files": True, "image_size": None, "crop": True}


def register_reader(
    name: str,
    *,
    layout: str,
    splits: Sequence[str] | None = None,
    split_aliases: Mapping[str, str] | None = None,
    aliases: Mapping[str, Mapping[str, Any]] | None = None,
    reader_handles_split: bool = False,
):
    """Decorator registering ``func(root: Path, split: str | None, *, **options) -> ReadResult``."""

    def wrap(func):
        READERS[name] = ReaderInfo(
            name=name,
            func=func,
            layout=layout,
            splits=tuple(splits) if splits else None,
            split_aliases={k.lower(): v for k, v in (split_aliases or {}).items()},
            aliases={k: dict(v) for k, v in (aliases or {}).items()},
            reader_handles_split=reader_handles_split,
        )
        return func

    return wrap


def _ensure_readers() -> None:
    import affectlab.data.readers  # noqa: F401  (modules register themselves)


def available_formats() -> dict[str, ReaderInfo]:
    """All registered formats (name -> :class:`ReaderInfo`)."""
    _ensure_readers()
    return dict(READERS)


def _format_lookup() -> dict[str, tuple[ReaderInfo, dict[str, Any]]]:
    _ensure_readers()
    table: dict[str, tuple[ReaderInfo, dict[str, Any]]] = {}
    for info in READERS.values():
        table[info.name] = (info, {})
        for alias, fixed in info.aliases.items():
            table[alias] = (info, fixed)
    return table


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``FORMAT:PATH[:SPLIT]``."""

    format: str
    path: Path
    split: str | None = None
    #: options implied by the format alias (``affectnet7`` -> variant 7)
    fixed_options: tuple = ()
    #: the format name as written (an alias such as ``affectnet7``), for display
    prefix: str = ""
    #: reader options given in the spec after ``?`` (``abaw:/data:Train?tasks=AU&every=10``)
    options: tuple = ()

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options)
        return (f"{self.prefix or self.format}:{self.path}" + (f":{self.split}" if self.split else "")
                + (f"?{query}" if query else ""))


def _parse_query(spec: str, query: str) -> tuple:
    """``tasks=AU&every=10`` -> (("every", 10), ("tasks", "AU")); values are YAML scalars."""
    import yaml

    out = {}
    for item in query.split("&"):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise DatasetError(f"dataset spec {spec!r}: reader option {item!r} is not key=value (e.g. ?tasks=AU&every=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return tuple(sorted(out.items()))


def parse_spec(spec: str | os.PathLike) -> DatasetSpec:
    """Parse ``FORMAT:PATH[:SPLIT]`` (or a bare manifest path).

    Raises
    ------
    DatasetError
        For an unknown format (the message lists the valid ones) or an empty path.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"a dataset spec must be a non-empty string like 'affectnet:/data/AffectNet:train', got {spec!r}")
    text = spec.strip()
    query: tuple = ()
    if "?" in text and not Path(text).exists():
        text, _, q = text.partition("?")
        query = _parse_query(spec, q)
    lookup = _format_lookup()
    head, sep, rest = text.partition(":")
    fmt_key = head.strip().lower()
    # "C:\data" is a Windows drive, not a format
    is_drive = len(head) == 1 and head.isalpha() and rest.startswith(("\\", "/"))
    if sep and not is_drive and fmt_key in lookup:
        info, fixed = lookup[fmt_key]
        path_text, split = _split_path_and_split(rest)
        if not path_text:
            raise DatasetError(f"dataset spec {spec!r} has no path; expected FORMAT:PATH[:SPLIT]")
        return DatasetSpec(info.name, Path(path_text).expanduser(), split, tuple(sorted(fixed.items())), fmt_key, query)
    if sep and not is_drive and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+\-]*", head) and not Path(text).exists():
        raise DatasetError(
            f"unknown dataset format {head!r} in spec {spec!r}; valid formats: {', '.join(sorted(lookup))} "
            "(or a bare path to a .csv/.parquet manifest or a folder with labels.csv)"
        )
    # bare path: a manifest file or a folder with labels.csv, optionally ":SPLIT"
    path_text, split = _split_path_and_split(text) if not Path(text).exists() else (text, None)
    return DatasetSpec("manifest", Path(path_text).expanduser(), split, options=query)


def _split_path_and_split(rest: str) -> tuple[str, str | None]:
    """``/data/x:train`` -> (``/data/x``, ``train``) unless the whole thing is an existing path."""
    if ":" in rest and not Path(rest).exists():
        path_text, _, split = rest.rpartition(":")
        if split and not any(c in split for c in "/\\") and path_text:
            return path_text, split
    return rest, None


def load_dataset(
    spec: str | os.PathLike | DatasetSpec,
    *,
    transform: Callable | None = None,
    **options,
) -> AffectDataset:
    """Read a dataset from its official layout into an :class:`AffectDataset`.

    Parameters
    ----------
    spec : str
        ``FORMAT:PATH[:SPLIT]``, e.g. ``affectnet:/data/AffectNet:train``,
        ``affectnet7:/data/AffectNet:val``, ``rafdb:/data/RAF-DB:test``,
        ``abaw:/data/ABAW3:Validation``, ``manifest:out/labels.csv``,
        ``imagefolder:/data/faces``, ``ckplus:data/ckplus48``, with reader options
        after ``?`` (``abaw:/data/ABAW3:Train?tasks=AU&every=10``); or a bare path to
        a ``.csv`` / ``.parquet`` manifest or a folder holding ``labels.csv``. Without
        SPLIT, a format with fixed splits loads all of them (column ``split`` tells them
        apart). ``affectlab datasets`` lists the formats, splits and options.
    transform : callable, optional
        ``uint8 HWC RGB ndarray -> float32 tensor [3, H, W]``. Default: to a tensor in [0, 1].
    **options
        Reader options (``variant=7`` for AffectNet, ``tasks=["VA", "EXPR"]`` for ABAW,
        ``threshold=2`` for DISFA, ``columns={"img": "path"}`` for manifests, ...) and the
        generic ``check_files=True`` (drop rows whose image file is missing, with a
        warning), ``image_size=None`` (resize when no transform is given) and
        ``crop=True`` (crop to face boxes when the format has them).

    Returns
    -------
    AffectDataset

    Raises
    ------
    DatasetError, LabelError, ConfigError
        Unknown format, split or option; a malformed file (message names file:line and
        the expected form); unknown label codes; no readable rows.

    Examples
    --------
    >>> ds = load_dataset("ckplus:data/ckplus48")  # doctest: +SKIP
    >>> ds.label_space.expressions  # doctest: +SKIP
    ('happiness', 'sadness', 'surprise', 'fear', 'disgust', 'anger', 'contempt')
    """
    parsed = spec if isinstance(spec, DatasetSpec) else parse_spec(spec)
    _ensure_readers()
    info = READERS[parsed.format]
    for k, v in parsed.options:  # options in the spec; explicit keyword options win
        options.setdefault(k, v)
    reader_defaults = info.options
    unknown = sorted(set(options) - set(reader_defaults) - set(_GENERIC_OPTIONS))
    if unknown:
        valid = sorted(set(reader_defaults) | set(_GENERIC_OPTIONS))
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for format {parsed.format!r}; "
            f"valid options: {', '.join(valid)}"
        )
    generic = {k: options.pop(k, v) for k, v in _GENERIC_OPTIONS.items()}
    reader_opts = dict(parsed.fixed_options)
    for k, v in options.items():
        if k in reader_opts and reader_opts[k] != v:
            raise ConfigError(
                f"option {k}={v!r} contradicts the format alias in {str(parsed)!r} ({k}={reader_opts[k]!r})"
            )
        reader_opts[k] = v
    root = parsed.path
    if not root.exists():
        raise DatasetError(f"{parsed.format}: path {str(root)!r} does not exist")
    root = root.resolve()
    split = info.resolve_split(parsed.split)

    if split is None and info.splits and not info.reader_handles_split:
        parts, absent = [], []
        for s in info.splits:
            try:
                part = info.func(root, s, **reader_opts)
            except SplitAbsent as exc:
                absent.append(str(exc))
                continue
            part.labels.insert(len(part.labels.columns), "split", s)
            parts.append(part)
        if not parts:
            raise DatasetError(
                f"{parsed.format}: found none of the splits {', '.join(info.splits)} under {root}: " + "; ".join(absent)
            )
        result = _concat_results(parts)
    else:
        result = info.func(root, split, **reader_opts)

    name = str(parsed) if split is None else f"{parsed.prefix or parsed.format}:{parsed.path}:{split}"
    labels = result.labels
    images = result.images
    if generic["check_files"] and result.check_files and images is None:
        keep = drop_missing_images(labels, name=name)
        if not keep.all():
            labels = labels.loc[keep]
    if len(labels) == 0:
        raise DatasetError(f"{name}: no samples left to load (check the path and the split)")
    from affectlab.data.labeled import AffectDataset  # torch: only when a dataset is loaded

    return AffectDataset(
        labels,
        result.label_space,
        transform=transform,
        images=images,
        image_size=generic["image_size"],
        crop=generic["crop"],
        name=name,
    )



def _concat_results(parts: list[ReadResult]) -> ReadResult:
    labels = pd.concat([p.labels for p in parts], ignore_index=True, sort=False)
    for col in au_columns(labels):
        labels[col] = labels[col].fillna(MISSING_AU).astype(np.int8)
    spaces = [p.label_space for p in parts]
    space = None if any(sp is None for sp in spaces) else LabelSpace.union(spaces)
    images = None
    if all(p.images is not None for p in parts):
        images = np.concatenate([p.images for p in parts])
    return ReadResult(labels, space, images, check_files=all(p.check_files for p in parts))


def format_rows() -> list[dict[str, str]]:
    """One row per format for listings: ``format``, ``aliases``, ``splits``, ``options``, ``layout``."""
    rows = []
    for name, info in sorted(available_formats().items()):
        if info.splits:
            splits = ", ".join(info.splits)
        elif info.reader_handles_split:
            splits = "any (split column/folder)"
        else:
            splits = "none (use split_by)"
        options = ", ".join(f"{k}={v!r}" for k, v in info.options.items())
        rows.append(
            {
                "format": name,
                "aliases": ", ".join(info.aliases),
                "splits": splits,
                "options": options,
                "layout": info.layout,
            }
        )
    return rows
