"""Getting data and a method ready for training: label space, statistics, hold-out, preprocessing."""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError, DatasetError
from affectlab.runtime.data import dataset_name
from affectlab.train.config import TrainConfig


def training_label_space(datasets: Sequence, tasks: Sequence[str] | None) -> LabelSpace:
    """The union of the datasets' label spaces (:meth:`LabelSpace.union`), restricted to ``tasks``.

    Raises
    ------
    ConfigError
        When the data carry none of the requested descriptors.
    LabelError
        When single-label and multi-label expression sets are mixed.
    """
    full = LabelSpace.union([d.label_space for d in datasets], names=[dataset_name(d) for d in datasets])
    requested = list(tasks) if tasks else ["expr", "va", "au"]
    space = full.restrict(requested)
    where = ", ".join(dataset_name(d) for d in datasets)
    if not space.tasks:
        raise ConfigError(
            f"training data {where} carry none of the requested descriptors ({', '.join(requested)}); "
            f"they carry: {', '.join(full.tasks) or 'no labels at all'}"
        )
    absent = [t for t in requested if t not in space.tasks]
    if tasks and absent:
        warnings.warn(f"training data {where} carry no {', '.join(absent)} labels; training {', '.join(space.tasks)}")
    return space


def training_stats(datasets: Sequence, space: LabelSpace) -> dict[str, Any]:
    """Counts the methods' ``set_training_stats`` receives, from the encoded targets."""
    n = sum(len(d) for d in datasets)
    stats: dict[str, Any] = {"num_samples": int(n)}
    if space.expressions:
        c = len(space.expressions)
        counts = np.zeros(c, dtype=np.int64)
        for d in datasets:
            y = np.asarray(d.expr_targets)
            if space.multilabel:
                counts += (y == 1).sum(axis=0).astype(np.int64)
            else:
                counts += np.bincount(y[y >= 0], minlength=c)[:c]
        stats["class_counts"] = counts
    if space.aus:
        pos = np.zeros(len(space.aus), dtype=np.int64)
        neg = np.zeros(len(space.aus), dtype=np.int64)
        for d in datasets:
            a = np.asarray(d.au_targets)
            pos += (a == 1).sum(axis=0)
            neg += (a == 0).sum(axis=0)
        stats["au_positive"], stats["au_negative"] = pos, neg
    if space.va:
        stats["va_labelled"] = int(sum(np.isfinite(np.asarray(d.va_targets)).all(axis=1).sum() for d in datasets))
    return stats


def holdout_split(dataset, fraction: float, seed: int):
    """(train, validation): subject-disjoint when the labels have ``subject``, else
    video-disjoint when they have ``video`` (frames of one video never on both sides), else
    random rows."""
    labels = getattr(dataset, "labels", None)
    n = len(dataset)
    if n < 2:
        raise DatasetError(f"{dataset_name(dataset)} has {n} sample(s): too few to hold out a validation split; pass --val")
    for group in ("subject", "video"):
        if labels is not None and group in labels.columns and labels[group].nunique(dropna=True) >= 2:
            train, val = dataset.split_by(group, (1.0 - fraction, fraction), seed=seed)
            if len(train) and len(val):
                return train, val
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(int(round(fraction * n)), 1), n - 1)
    return dataset.subset(np.sort(order[k:])), dataset.subset(np.sort(order[:k]))


def model_preprocessing(method, cfg: TrainConfig) -> dict[str, Any] | None:
    """The image preprocessing the model needs: the backbone's, with config overrides."""
    if getattr(method, "input_kind", "image") != "image":
        return None
    pre = getattr(method, "preprocessing", None)
    if pre is None:
        pre = getattr(getattr(method, "backbone", None), "preprocessing", None)
    from affectlab.features.backbones import Preprocessing

    if pre is None:
        pre = Preprocessing.named(cfg.normalize or "imagenet", cfg.image_size or 64)
    pre = Preprocessing.from_dict(pre.to_dict() if hasattr(pre, "to_dict") else dict(pre))
    if cfg.normalize is not None and cfg.normalize != pre.normalize:
        pre = Preprocessing.named(cfg.normalize, pre.input_size, pre.interpolation)
    if cfg.image_size is not None:
        pre = Preprocessing.from_dict({**pre.to_dict(), "input_size": cfg.image_size})
    if cfg.framing is not None:
        from affectlab.perception.align import Framing

        spec = {"kind": cfg.framing} if isinstance(cfg.framing, str) else cfg.framing
        pre = Preprocessing.from_dict({**pre.to_dict(), "framing": Framing.from_dict(spec).to_dict()})
    return pre.to_dict()


def fill_data_keys(cls, config: dict[str, Any], sample: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill method config keys that the data determine (``feature_dim``, ``token_dim``)."""
    fields = cls.Config.model_fields
    out = dict(config)
    if sample is None:
        return out
    if "feature_dim" in fields and out.get("feature_dim") is None and "features" in sample:
        out["feature_dim"] = int(sample["features"].shape[-1])
    if "token_dim" in fields and out.get("token_dim") is None and "tokens" in sample:
        out["token_dim"] = int(sample["tokens"].shape[-1])
    return out


def concat_eval(datasets: Sequence):
    """Several validation sets as one, with unique ``index`` values per sample."""
    from torch.utils.data import Dataset

    class _Offset(Dataset):
        def __init__(self, parts):
            self.parts = list(parts)
            self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

        def __len__(self):
            return int(self.offsets[-1])

        def __getitem__(self, i):
            k = int(np.searchsorted(self.offsets, i, side="right") - 1)
            sample = self.parts[k][i - int(self.offsets[k])]
            if sample is not None:
                sample = dict(sample)
                sample["index"] = sample["index"] + int(self.offsets[k])
            return sample

    return _Offset(datasets)
