"""A dataset of cached features: samples with a ``features`` key, labels from the source dataset.

Open one with a spec ``features:FEAT.zarr`` (or a path ending in ``.zarr``) wherever a
dataset spec is accepted (``affectlab train --train features:FEAT.zarr``), or in Python::

    ds = FeatureDataset("FEAT.zarr")
    ds[0]  # {"features": float32 [D], ("tokens": [T, Dt]), "expr", "va", "au", "index"}

Only the store is read: the images the features came from may be gone.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affectlab.data.labeled import LabeledDataset
from affectlab.data.schema import LabelSpace
from affectlab.errors import DatasetError
from affectlab.features.cache import FeatureStore

SPEC_PREFIX = "features:"


def is_feature_spec(spec) -> bool:
    """True for ``features:PATH`` and for paths ending in ``.zarr``."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        return False
    text = spec.strip()
    return text.lower().startswith(SPEC_PREFIX) or text.rstrip("/\\").lower().endswith(".zarr")


def feature_store_path(spec: str | os.PathLike) -> Path:
    """The store path of a feature spec (``features:FEAT.zarr`` -> ``FEAT.zarr``)."""
    text = os.fspath(spec).strip()
    if text.lower().startswith(SPEC_PREFIX):
        text = text[len(SPEC_PREFIX):]
    if not text:
        raise DatasetError(f"feature spec {spec!r} has no path; expected features:FEAT.zarr")
    return Path(text).expanduser()


class FeatureDataset(LabeledDataset):
    """Cached backbone features with the labels of the dataset they were extracted from.

    Parameters
    ----------
    store : path or FeatureStore
        A complete store written by :func:`affectlab.features.cache.extract_features`.
    label_space : LabelSpace, optional
        Encode targets in this space (default: the source dataset's).
    tokens : bool or None
        Also yield ``tokens`` (patch tokens). ``None``: when the store has them.
    name : str, optional
        Name used in messages (default ``features:<path>``).

    Notes
    -----
    Global features are held in memory in the stored dtype (float16: 300,000 x 512
    features take 300 MB) and returned as float32. Tokens are read from the store per
    sample. Rows whose image was unreadable at extraction are dropped with a warning.
    """

    def __init__(
        self,
        store: str | os.PathLike | FeatureStore,
        label_space: LabelSpace | None = None,
        *,
        tokens: bool | None = None,
        name: str | None = None,
    ):
        if not isinstance(store, FeatureStore):
            store = FeatureStore.open(feature_store_path(store))
        labels = store.labels()
        if len(labels) != store.num_samples:
            raise DatasetError(
                f"feature store {store.path}: label table has {len(labels)} rows for {store.num_samples} features"
            )
        space = label_space if label_space is not None else store.label_space
        super().__init__(labels, space, name=name or f"{SPEC_PREFIX}{store.path}")
        self.store = store
        self._features = store.global_features()
        self.backbone = store.backbone
        self.feature_dim = store.dim
        if tokens and not store.has_tokens:
            raise DatasetError(f"feature store {store.path} has no patch tokens; extract with --patch")
        self.use_tokens = store.has_tokens if tokens is None else bool(tokens)
        self._tokens = store.tokens_array() if self.use_tokens else None
        self._row_arrays["row"] = np.arange(len(labels), dtype=np.int64)
        valid = store.valid()
        if not valid.all():
            bad = int((~valid).sum())
            warnings.warn(f"{self.name}: {bad} rows had unreadable images at extraction and are left out", UserWarning)
            self._derive_inplace(np.flatnonzero(valid))

    def _derive_inplace(self, rows: np.ndarray) -> None:
        new = self._derive(rows=rows)
        self.__dict__.update(new.__dict__)

    @property
    def rows(self) -> np.ndarray:
        """Store row of each sample."""
        return self._row_arrays["row"]

    def features_array(self) -> np.ndarray:
        """All global features of this dataset's samples, float32 [N, D]."""
        return self._features[self.rows].astype(np.float32)

    def set_transform(self, transform) -> "FeatureDataset":
        """Features are not images: image transforms do not apply (accepted and ignored)."""
        return self

    def __getitems__(self, indices) -> dict[str, Any]:
        """A whole batch at once (the DataLoader calls this instead of ``__getitem__``).

        Gathering rows with one fancy index instead of building and stacking one small
        dict per sample is what makes an epoch over 300,000 cached features take seconds.
        """
        from affectlab.data.batch import CollatedBatch

        idx = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {self.name} with {n} samples")
        idx %= max(n, 1)
        rows = self._row_arrays["row"][idx]
        batch = CollatedBatch(
            features=torch.from_numpy(self._features[rows].astype(np.float32)),
            expr=torch.from_numpy(np.ascontiguousarray(self._expr[idx])),
            va=torch.from_numpy(np.ascontiguousarray(self._va[idx])),
            au=torch.from_numpy(np.ascontiguousarray(self._au[idx])),
            index=torch.from_numpy(idx.copy()),
            skipped=torch.tensor(0),
        )
        if self._tokens is not None:
            # zarr reads increasing, distinct rows; samplers may repeat rows
            uniq, inverse = np.unique(rows, return_inverse=True)
            tok = np.asarray(self._tokens.get_orthogonal_selection((uniq, slice(None), slice(None))), dtype=np.float32)
            batch["tokens"] = torch.from_numpy(tok[inverse])
        return batch

    def _load_inputs(self, i: int) -> dict[str, Any]:
        row = int(self._row_arrays["row"][i])
        out = {"features": torch.from_numpy(self._features[row].astype(np.float32))}
        if self._tokens is not None:
            out["tokens"] = torch.from_numpy(np.asarray(self._tokens[row], dtype=np.float32))
        return out


def open_features(spec: str | os.PathLike, label_space: LabelSpace | None = None, **kw) -> FeatureDataset:
    """Open ``features:FEAT.zarr`` (or ``FEAT.zarr``) as a :class:`FeatureDataset`."""
    return FeatureDataset(feature_store_path(spec), label_space, **kw)
