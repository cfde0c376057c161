"""Feature stores made on demand: ``affectlab train --method aura --backbone NAME --train IMAGES``.

A feature-level method (AURA) trains on vectors a frozen backbone computed once. Given
image data and a backbone, :func:`cached_features` extracts the features into a store
under the feature cache (``$AFFECTLAB_HOME/features`` by default) named after the
backbone, its weights and the dataset fingerprint (:func:`affectlab.features.cache.dataset_fingerprint`:
image paths, sizes, modification times and labels). Running the same command again
reuses a complete store, resumes an interrupted one chunk by chunk, and a changed
dataset (an edited label, a replaced image) gets a new store instead of stale features.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

from affectlab.errors import ConfigError

#: Name of the feature cache folder inside ``$AFFECTLAB_HOME``.
CACHE_DIR = "features"


def feature_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding on-demand feature stores (``$AFFECTLAB_HOME/features`` by default)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    # the same root as affectlab.runtime.assets.affectlab_home (features/ sits below runtime/)
    root = os.environ.get("AFFECTLAB_HOME")
    if root:
        return Path(root).expanduser() / CACHE_DIR
    import platformdirs

    return Path(platformdirs.user_cache_dir("affectlab", appauthor=False)) / CACHE_DIR


def is_feature_spec(spec: str) -> bool:
    """Whether a dataset spec already names a feature store (``features:FEAT.zarr``)."""
    return isinstance(spec, str) and spec.strip().lower().startswith("features:")


def store_path(dataset, backbone: str, *, weights=None, patch: bool = False, dtype: str = "float16",
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the store of ``dataset`` encoded by ``backbone`` lives in the feature cache."""
    from affectlab.features.cache import dataset_fingerprint

    key = "|".join([backbone, str(weights and Path(weights).name), str(bool(patch)), dtype, dataset_fingerprint(dataset)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", backbone).strip("-")[:60]
    return feature_cache_dir(cache_dir) / f"{slug}-{digest}.zarr"


def cached_features(spec: str, backbone: str, *, weights=None, patch: bool = False, batch_size: int = 64,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
    """Extract (or reuse) the features of an image dataset; returns ``features:STORE``.

    Parameters
    ----------
    spec : str
        Image dataset spec (``manifest:synth/labels.csv``, ``rafdb:/data/RAF-DB:train`` ...).
    backbone : str
        Registry name of the frozen encoder (``run:RUN``, ``clip:ViT-B-16@openai`` ...).
    weights : path, optional
        Local weights file for the backbone.
    patch : bool
        Also store patch tokens.
    batch_size : int
        Images per forward pass.
    cache_dir : path, optional
        Feature cache folder (default ``$AFFECTLAB_HOME/features``).
    progress : bool

    Returns
    -------
    str
        The spec of the (complete) store.
    """
    from affectlab.data.datasets import load_dataset
    from affectlab.features.cache import extract_features

    if is_feature_spec(spec):
        return spec
    from affectlab.features.cache import FeatureStore, dataset_fingerprint

    dataset = load_dataset(spec)
    path = store_path(dataset, backbone, weights=weights, patch=patch, cache_dir=cache_dir)
    if (path / "zarr.json").is_file():
        try:
            done = FeatureStore.open(path)
        except Exception:  # noqa: BLE001 - incomplete: extract_features resumes it below
            done = None
        # the name already encodes backbone, weights and fingerprint; the attrs confirm it
        if done is not None and done.attrs.get("backbone") == backbone and (
            done.attrs.get("fingerprint") == dataset_fingerprint(dataset)
        ):
            return f"features:{path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    store = extract_features(dataset, backbone, path, weights=weights, batch_size=batch_size, patch=patch,
                             progress=progress, chunk_rows=16 * batch_size)
    if not store.complete:  # pragma: no cover - extract_features completes unless max_chunks
        raise ConfigError(f"feature extraction into {path} did not finish; run the command again to resume it")
    return f"features:{path}"


def features_for_specs(specs: Sequence[str] | None, backbone: str, **kw) -> list[str] | None:
    """:func:`cached_features` of each spec (feature specs pass through unchanged)."""
    if specs is None:
        return None
    return [cached_features(s, backbone, **kw) for s in specs]
