"""Datasets with canonical labels: :class:`LabeledDataset` (the label contract) and :class:`AffectDataset` (images).

Every reader produces the same canonical table (``.labels``): ``path`` (absolute),
``expression`` (canonical name or missing), ``valence`` / ``arousal`` (float in [-1, 1],
NaN when missing), ``AU<k>`` (1 / 0, -1 missing) and, where known, ``subject``,
``video``, ``frame``; plus reader extras (``dominance``, the EMOTIC category columns,
``split``, face boxes ``x, y, w, h`` which are cropped at load).

Label handling lives in :class:`LabeledDataset` so a dataset of cached features can
subclass it and implement only :meth:`LabeledDataset._load_inputs`.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import logging
import re
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from affectlab.data.images import crop_box, read_image, resize_square, to_rgb
from affectlab.data.schema import (
    ALL_EXPRESSIONS,
    EXPRESSION_ALIASES,
    MISSING_AU,
    MISSING_EXPR,
    LabelSpace,
    sort_aus,
)
from affectlab.errors import ConfigError, DatasetError, LabelError

log = logging.getLogger("affectlab.data")

#: Columns every reader's table has (more may follow).
CANONICAL_COLUMNS = ("path", "expression", "valence", "arousal")
#: Columns with identity / time information, kept when a reader knows them.
META_COLUMNS = ("subject", "video", "frame")
#: Face box columns (pixels); when all four are present the image is cropped to them.
BOX_COLUMNS = ("x", "y", "w", "h")

# How many missing paths a warning lists.
_SHOW_PATHS = 5


# the label-table helpers live with the tables (no torch), re-exported here
from affectlab.data.tables import au_columns, infer_label_space  # noqa: E402,F401


# --------------------------------------------------------------------------- datasets


class LabeledDataset(Dataset, abc.ABC):
    """Rows of canonical labels and their targets in a label space; inputs are up to subclasses.

    Subclasses implement :meth:`_load_inputs` (``{"image": ...}`` or
    ``{"features": ...}``, or ``None`` when the input cannot be read). Per-row arrays a
    subclass holds (in-memory images, feature indices) go in ``self._row_arrays`` so
    :meth:`subset` and :meth:`split_by` carry them along.

    Parameters
    ----------
    labels : DataFrame
        Canonical label table (see the module docstring); its index is reset.
    label_space : LabelSpace, optional
        Targets are encoded in this space. Default: inferred from ``labels``.
    name : str
        Short name used in messages and :meth:`describe` (usually the spec).
    """

    def __init__(self, labels: pd.DataFrame, label_space: LabelSpace | None = None, *, name: str = "dataset"):
        if not isinstance(labels, pd.DataFrame):
            raise DatasetError(f"labels must be a pandas DataFrame, got {type(labels).__name__}")
        missing = [c for c in CANONICAL_COLUMNS if c not in labels.columns]
        if missing:
            raise DatasetError(
                f"{name}: label table lacks the canonical column(s) {missing}; has {list(labels.columns)}"
            )
        if label_space is not None and not isinstance(label_space, LabelSpace):
            raise DatasetError(f"label_space must be a LabelSpace, got {type(label_space).__name__}")
        self._labels = labels.reset_index(drop=True)
        self.name = str(name)
        self.label_space = label_space if label_space is not None else infer_label_space(self._labels)
        self._row_arrays: dict[str, np.ndarray] = {}
        self.skipped = 0
        self._encode_targets()

    # -- labels and targets ---------------------------------------------------------
    @property
    def labels(self) -> pd.DataFrame:
        """The canonical label table (one row per sample, row ``i`` is sample ``i``)."""
        return self._labels

    def _encode_targets(self) -> None:
        """Precompute target arrays in ``self.label_space`` (fast, allocation-free getitem)."""
        labels, space = self._labels, self.label_space
        n = len(labels)
        if space.multilabel:
            expr = np.full((n, len(space.expressions)), -1.0, dtype=np.float32)
            for j, name in enumerate(space.expressions):
                if name in labels.columns:
                    values = pd.to_numeric(labels[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                    expr[:, j] = np.where(np.isnan(values), -1.0, values)
        else:
            lookup = {c: i for i, c in enumerate(space.expressions)}
            # aliases of the space's classes too, so a space written with "happy" still maps
            for alias, canon in EXPRESSION_ALIASES.items():
                if canon in lookup and alias not in lookup:
                    lookup[alias] = lookup[canon]
            names = labels["expression"]
            codes = names.map(lookup) if n else pd.Series([], dtype=float)
            expr = codes.fillna(MISSING_EXPR).to_numpy(dtype=np.int64)
        va = np.full((n, 2), np.nan, dtype=np.float32)
        for j, col in enumerate(("valence", "arousal")):
            va[:, j] = pd.to_numeric(labels[col], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        au = np.full((n, len(space.aus)), float(MISSING_AU), dtype=np.float32)
        for j, name in enumerate(space.aus):
            if name in labels.columns:
                values = pd.to_numeric(labels[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                au[:, j] = np.where(np.isnan(values), float(MISSING_AU), values)
        self._expr, self._va, self._au = expr, va, au
        # EMOTIC's third continuous label; only datasets that have it carry the key
        self._dominance = None
        if "dominance" in labels.columns:
            self._dominance = pd.to_numeric(labels["dominance"], errors="coerce").to_numpy(
                dtype=np.float32, na_value=np.nan
            )
        # numpy arrays, not Python objects: DataLoader workers forked from this process
        # then share the pages instead of copying them as reference counts change
        self._paths = labels["path"].to_numpy(dtype=str) if n else np.array([], dtype=str)
        has_box = all(c in labels.columns for c in BOX_COLUMNS)
        self._boxes = labels[list(BOX_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan) if has_box else None

    def targets(self, i: int) -> dict[str, torch.Tensor]:
        """The label part of sample ``i``: ``expr``, ``va``, ``au``, ``index`` (batch.py contract),
        plus ``dominance`` (float32 [], NaN missing) when the labels have that column (EMOTIC)."""
        if self.label_space.multilabel:
            expr = torch.from_numpy(self._expr[i].copy())
        else:
            expr = torch.tensor(int(self._expr[i]), dtype=torch.int64)
        out = {
            "expr": expr,
            "va": torch.from_numpy(self._va[i].copy()),
            "au": torch.from_numpy(self._au[i].copy()),
            "index": torch.tensor(i, dtype=torch.int64),
        }
        if self._dominance is not None:
            out["dominance"] = torch.tensor(float(self._dominance[i]), dtype=torch.float32)
        return out

    @property
    def expr_targets(self) -> np.ndarray:
        """All expression targets: int64 [N] (-1 missing), or float32 [N, C] when multi-label."""
        return self._expr

    @property
    def va_targets(self) -> np.ndarray:
        """All valence/arousal targets, float32 [N, 2] (NaN missing)."""
        return self._va

    @property
    def au_targets(self) -> np.ndarray:
        """All AU targets in label-space order, float32 [N, K] (-1 missing)."""
        return self._au

    # -- torch Dataset --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i) -> dict[str, Any] | None:
        n = len(self)
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise TypeError(f"dataset index must be an integer, got {type(i).__name__}") from None
        if i < -n or i >= n:
            raise IndexError(f"index {i} out of range for {self.name} with {n} samples")
        i %= n
        inputs = self._load_inputs(i)
        if inputs is None:
            self.skipped += 1
            return None
        sample = dict(inputs)
        sample.update(self.targets(i))
        return sample

    @abc.abstractmethod
    def _load_inputs(self, i: int) -> dict[str, Any] | None:
        """Model inputs of row ``i`` (``{"image": ...}`` or ``{"features": ...}``), ``None`` if unreadable."""

    # -- derived datasets -----------------------------------------------------------
    def _derive(self, rows: np.ndarray | None = None, label_space: LabelSpace | None = None):
        """A copy restricted to ``rows`` and/or re-encoded in ``label_space``."""
        new = copy.copy(self)
        new.skipped = 0
        if rows is not None:
            new._labels = self._labels.iloc[rows].reset_index(drop=True)
            new._row_arrays = {k: v[rows] for k, v in self._row_arrays.items()}
        else:
            new._row_arrays = dict(self._row_arrays)
        if label_space is not None:
            new.label_space = label_space
        new._encode_targets()
        return new

    def with_label_space(self, space: LabelSpace):
        """The same samples with targets encoded in a model's label space.

        Expressions are matched by name: a class the space lacks becomes missing (-1).
        AUs are matched by name: an AU the dataset lacks becomes -1 (missing) for every
        sample. Valence/arousal are kept as they are.
        """
        if not isinstance(space, LabelSpace):
            raise LabelError(f"with_label_space expects a LabelSpace, got {type(space).__name__}")
        if space.multilabel != self.label_space.multilabel and space.expressions and self.label_space.expressions:
            kind = "multi-label" if space.multilabel else "single-label"
            raise LabelError(
                f"{self.name}: cannot encode {'single' if space.multilabel else 'multi'}-label expressions "
                f"in a {kind} label space {list(space.expressions)}"
            )
        return self._derive(label_space=space)

    def subset(self, indices: Sequence[int] | np.ndarray):
        """The samples at ``indices`` (positions or a boolean mask), as a new dataset."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DatasetError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise DatasetError(f"subset indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DatasetError(f"subset index out of range for {self.name} with {len(self)} samples")
        return self._derive(rows=idx % max(len(self), 1))

    def split_by(
        self,
        column: str = "subject",
        fractions: Sequence[float] = (0.8, 0.2),
        *,
        seed: int = 0,
    ) -> tuple:
        """Split into datasets whose ``column`` values (identities) are disjoint.

        Groups are shuffled with ``seed`` and assigned in order until each part holds
        about its fraction of the rows. Rows whose ``column`` is missing are each their
        own group.

        Parameters
        ----------
        column : str
            Grouping column, normally ``subject`` (or ``video``).
        fractions : sequence of float
            Positive fractions summing to 1, one per returned dataset.
        seed : int
            Shuffle seed (same seed, same split).

        Returns
        -------
        tuple of datasets, one per fraction.
        """
        if column not in self._labels.columns:
            raise DatasetError(
                f"{self.name} has no column {column!r} to split by; columns: {list(self._labels.columns)}"
            )
        fr = np.asarray(list(fractions), dtype=np.float64)
        if fr.ndim != 1 or fr.size < 2 or (fr <= 0).any() or not np.isclose(fr.sum(), 1.0, atol=1e-6):
            raise DatasetError(f"fractions must be >= 2 positive numbers summing to 1, got {list(fractions)}")
        codes, uniques = pd.factorize(self._labels[column], use_na_sentinel=True)
        inverse = codes.astype(np.int64)
        missing = inverse < 0
        # rows with no value are each their own group
        inverse[missing] = len(uniques) + np.arange(int(missing.sum()))
        n_groups = len(uniques) + int(missing.sum())
        rng = np.random.default_rng(seed)
        order = rng.permutation(n_groups)
        sizes = np.bincount(inverse, minlength=n_groups)[order]
        bounds = np.cumsum(fr)[:-1] * len(self)
        # a group goes to the part its midpoint falls in: parts stay near their fractions
        mids = np.cumsum(sizes) - sizes / 2.0
        part_of_ordered = np.searchsorted(bounds, mids, side="right")
        part_of_group = np.empty(n_groups, dtype=np.int64)
        part_of_group[order] = part_of_ordered
        row_part = part_of_group[inverse]
        return tuple(self.subset(np.flatnonzero(row_part == p)) for p in range(fr.size))

    # -- reporting ------------------------------------------------------------------
    def describe(self) -> str:
        """A few lines: size, classes with counts, VA and AU coverage, identities."""
        labels, space = self._labels, self.label_space
        lines = [f"{self.name}: {len(self)} samples"]
        if space.expressions:
            if space.multilabel:
                pos = (self._expr == 1).sum(axis=0)
                counts = ", ".join(f"{c} {int(k)}" for c, k in zip(space.expressions, pos))
                lines.append(f"  {len(space.expressions)} multi-label categories: {counts}")
            else:
                bc = np.bincount(self._expr[self._expr >= 0], minlength=len(space.expressions))
                counts = ", ".join(f"{c} {int(k)}" for c, k in zip(space.expressions, bc))
                miss = int((self._expr < 0).sum())
                lines.append(
                    f"  {len(space.expressions)} expressions: {counts}" + (f"; missing {miss}" if miss else "")
                )
        if space.va:
            n_va = int(np.isfinite(self._va).all(axis=1).sum())
            lines.append(f"  valence/arousal: {n_va} labelled")
        if space.aus:
            known = self._au >= 0
            prevalence = np.where(known.any(axis=0), (self._au == 1).sum(axis=0) / np.maximum(known.sum(axis=0), 1), 0)
            aus = ", ".join(f"{a} {p:.0%}" for a, p in zip(space.aus, prevalence))
            lines.append(f"  {len(space.aus)} AUs ({int(known.any(axis=1).sum())} labelled), prevalence: {aus}")
        for col in ("subject", "video"):
            if col in labels.columns and labels[col].notna().any():
                lines.append(f"  {labels[col].nunique()} {col}s")
        if self.skipped:
            lines.append(f"  {self.skipped} unreadable samples skipped so far")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, tasks={self.label_space.tasks})"

    def fingerprint(self) -> str:
        """A short stable hash of the sample paths (cache key for derived data such as features)."""
        h = hashlib.sha1()
        for p in self._labels["path"].astype(str):
            h.update(p.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()[:16]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> float32 [3, H, W] in [0, 1] (the transform used when none is given)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


class AffectDataset(LabeledDataset):
    """Face images with canonical affect labels (what :func:`load_dataset` returns).

    ``dataset[i]`` is the sample dict of :mod:`affectlab.data.batch`: ``image`` (the
    output of ``transform`` applied to the uint8 HWC RGB array; without a transform a
    float32 [3, H, W] tensor in [0, 1]), ``expr``, ``va``, ``au``, ``index``. An image
    that cannot be read gives ``None`` and increments :attr:`skipped`
    (:func:`affectlab.data.batch.collate` drops it). With DataLoader workers each worker
    counts in its own copy; use the batch's ``skipped`` entry for totals.

    Parameters
    ----------
    labels : DataFrame
        Canonical label table with absolute ``path``s. Face boxes ``x, y, w, h`` (pixels),
        when present, are cropped before the transform.
    label_space : LabelSpace, optional
        Default: inferred from ``labels``.
    transform : callable, optional
        ``uint8 [H, W, 3] RGB ndarray -> float32 tensor [3, H', W']``.
    images : ndarray, optional
        In-memory images aligned with the rows (``[N, H, W]`` gray or ``[N, H, W, 3]``),
        used instead of reading ``path`` (FER2013 pixels).
    image_size : int, optional
        Without a ``transform``: resize to ``image_size x image_size`` so samples of
        different sizes can be batched.
    crop : bool
        Crop to the face box columns when present.
    name : str
        Spec or short name, for messages.
    """

    def __init__(
        self,
        labels: pd.DataFrame,
        label_space: LabelSpace | None = None,
        *,
        transform: Callable | None = None,
        images: np.ndarray | None = None,
        image_size: int | None = None,
        crop: bool = True,
        name: str = "dataset",
    ):
        super().__init__(labels, label_space, name=name)
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform must be callable, got {type(transform).__name__}")
        if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size <= 0):
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
        self.transform = transform
        self.framer: Callable | None = None
        self.image_size = None if image_size is None else int(image_size)
        self.crop = bool(crop)
        if images is not None:
            images = np.asarray(images)
            if len(images) != len(self._labels):
                raise DatasetError(f"{name}: {len(images)} in-memory images for {len(self._labels)} label rows")
            self._row_arrays["images"] = images

    def set_transform(self, transform: Callable | None) -> "AffectDataset":
        """Replace the image transform (in place); returns ``self`` for chaining."""
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        return self

    def set_framer(self, framer: Callable | None) -> "AffectDataset":
        """Frame faces with ``framer`` instead of cropping to the box columns (in place).

        ``framer(image, key, box)`` gets the whole photograph (uint8 HWC RGB), a key that
        names the image (its path; ``"<name>#<row>"`` for in-memory images) for caching,
        and the row's face box ``x, y, w, h`` or ``None``; it returns the face crop.
        :func:`affectlab.runtime.framing.set_framing` builds one that detects faces the
        way ``affectlab analyze`` does. ``None`` restores the box crop.
        """
        if framer is not None and not callable(framer):
            raise ConfigError(f"framer must be callable, got {type(framer).__name__}")
        self.framer = framer
        return self

    def frame_key(self, i: int) -> str:
        """The name :attr:`framer` caches row ``i``'s faces under."""
        if self._row_arrays.get("images") is not None:
            return f"{self.name}#{i}"
        return str(self._paths[i])

    def read_rgb(self, i: int) -> np.ndarray | None:
        """Row ``i``'s image as uint8 HWC RGB, face box (or framer) applied, no transform; ``None`` if unreadable."""
        images = self._row_arrays.get("images")
        if images is not None:
            image = to_rgb(images[i])
        else:
            image = read_image(self._paths[i])
            if image is None:
                return None
        has_box = self.crop and self._boxes is not None and np.isfinite(self._boxes[i]).all()
        framer = getattr(self, "framer", None)
        if framer is not None:
            return framer(image, self.frame_key(i), self._boxes[i] if has_box else None)
        if has_box:
            image = crop_box(image, *self._boxes[i])
        return image

    def _load_inputs(self, i: int) -> dict[str, Any] | None:
        image = self.read_rgb(i)
        if image is None:
            log.debug("%s: skipping unreadable image %s", self.name, self._paths[i])
            return None
        if self.transform is not None:
            return {"image": self.transform(image)}
        if self.image_size is not None:
            image = resize_square(image, self.image_size)
        return {"image": image_to_tensor(image)}
