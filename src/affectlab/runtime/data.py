"""Opening data for a model: one opener for dataset specs, cached features and dataset objects.

``FORMAT:PATH[:SPLIT]`` specs go to :func:`affectlab.data.datasets.load_dataset`;
``features:FEAT.zarr`` (backbone features written by ``affectlab extract``) to
:func:`affectlab.features.dataset.open_features`; a dataset object passes through.
Training, evaluation, explanation and ``affectlab.load_dataset`` all open data here, so a
spec means the same thing in every command.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from affectlab.errors import ConfigError


def load_dataset(spec, **options):
    """A dataset from a spec: ``FORMAT:PATH[:SPLIT]``, a manifest path or ``features:FEAT.zarr``.

    Parameters
    ----------
    spec : str or Path
        See :func:`affectlab.data.datasets.load_dataset` for the formats;
        ``features:FEAT.zarr`` opens cached backbone features.
    **options
        Reader options (or :class:`~affectlab.features.dataset.FeatureDataset` options
        for a feature store).

    Returns
    -------
    AffectDataset or FeatureDataset

    Raises
    ------
    DatasetError, LabelError, ConfigError
        As the reader raises them (the message names the file and line).

    Examples
    --------
    >>> ds = load_dataset("features:feats.zarr")  # doctest: +SKIP
    >>> ds[0]["features"].shape  # doctest: +SKIP
    """
    from affectlab.features.dataset import is_feature_spec, open_features

    if is_feature_spec(spec):
        return open_features(spec, **options)
    from affectlab.data.datasets import load_dataset as read_dataset

    return read_dataset(spec, **options)


def open_dataset(data, what: str = "data"):
    """A dataset from a spec string / path (see :func:`load_dataset`), or the dataset object itself.

    Raises
    ------
    ConfigError
        ``data`` is neither a spec nor a dataset (``what`` names the option, e.g. ``--train``).
    """
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data)
    if data is None or not hasattr(data, "label_space"):
        raise ConfigError(f"{what} must be a dataset spec such as 'manifest:DIR/labels.csv', got {data!r}")
    return data


def dataset_name(ds) -> str:
    """The name a dataset is shown by in messages (its spec, when opened from one)."""
    return str(getattr(ds, "name", type(ds).__name__))


def set_transform(dataset, transform) -> None:
    """Give ``dataset`` an image transform (feature datasets and plain datasets ignore it)."""
    setter = getattr(dataset, "set_transform", None)
    if callable(setter):
        setter(transform)


def first_sample(datasets: Sequence, tries: int = 8) -> Mapping[str, Any] | None:
    """The first readable sample among the first ``tries`` of each dataset, or None."""
    for d in datasets:
        for i in range(min(len(d), tries)):
            sample = d[i]
            if sample is not None:
                return sample
    return None


def check_inputs(method_cls, datasets: Sequence) -> Mapping[str, Any] | None:
    """Check that the data give what the method works on (images or features); return a sample.

    Raises
    ------
    ConfigError
        An image method on feature data or the reverse (the message says how to fix it).
    """
    kind = getattr(method_cls, "input_kind", "image")
    sample = first_sample(datasets)
    if sample is None:
        return None
    if kind not in sample:
        have = [k for k in ("image", "features") if k in sample]
        hint = " (extract features first: affectlab extract)" if kind == "features" else ""
        raise ConfigError(
            f"method {method_cls.name!r} works on {kind} but {dataset_name(datasets[0])} yields "
            f"{', '.join(have) or 'neither images nor features'}{hint}"
        )
    return sample
