"""Samplers for imbalanced and multi-dataset training.

:class:`BalancedClassSampler`
    Draws sample indices so every expression class is equally likely (CAGE trains
    valence/arousal on class-balanced draws of AffectNet, whose training set is 70%
    happiness + neutral). A :class:`torch.utils.data.Sampler`: pass it as ``sampler=``.
:class:`MultiTaskBatchSampler`
    Fills every batch with equal parts from several datasets concatenated in a
    :class:`torch.utils.data.ConcatDataset` (SMM-EmotionNet: batch 72 = 24 AU + 24 EXPR
    + 24 VA frames). A batch sampler: pass it as ``batch_sampler=``.

Both are deterministic given ``seed`` and the epoch (:meth:`set_epoch`), and both shard
for distributed data parallel training: with ``num_replicas``/``rank`` (taken from
:mod:`torch.distributed` when it is initialised) every rank draws the same global
sequence and keeps its own share, as :class:`torch.utils.data.DistributedSampler` does.
With Lightning, build the DataLoader with these samplers and set
``Trainer(use_distributed_sampler=False)`` so Lightning does not wrap them again.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from affectlab.errors import ConfigError

__all__ = ["BalancedClassSampler", "MultiTaskBatchSampler", "dataset_sizes"]


def _dist_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """World size and rank: given values, else torch.distributed's, else (1, 0)."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
        raise ConfigError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
        raise ConfigError(f"rank must be an integer in [0, {num_replicas - 1}], got {rank!r}")
    return int(num_replicas), int(rank)


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def _generator(seed: int, epoch: int) -> torch.Generator:
    g = torch.Generator()
    # Distinct, reproducible streams per epoch.
    g.manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))
    return g


class BalancedClassSampler(Sampler[int]):
    """Sample indices so every expression class is drawn equally often in expectation.

    Each draw first picks a class uniformly among the classes present, then a sample of
    that class uniformly (with replacement), so rare classes are repeated and frequent
    ones subsampled.

    Parameters
    ----------
    labels : array-like of int, shape (n,), Series or dataset
        Expression index per sample, ``-1`` (or NaN) for a missing label; a
        :class:`pandas.Series` of class names with NA for missing; or a single-label
        dataset with ``expr_targets`` (an :class:`~affectlab.data.datasets.AffectDataset`).
    num_samples : int, optional
        Draws per epoch over all ranks. Default: the number of samples (``len(labels)``),
        so an epoch has the usual length.
    seed : int
        Seed; the same seed and epoch give the same order.
    missing : {"exclude", "share"}
        What to do with unlabelled samples (e.g. VA-only rows of a multi-task set).
        ``"exclude"`` never draws them. ``"share"`` draws them as a separate group with
        probability ``missing_share``; the classes split the rest equally.
    missing_share : float, optional
        Probability of drawing an unlabelled sample with ``missing="share"``. Default:
        their share of the data, so unlabelled rows keep their natural frequency and
        only the labelled part is rebalanced.
    num_replicas, rank : int, optional
        Distributed sharding (default: from :mod:`torch.distributed`, else 1 and 0).
        Each rank yields ``ceil(num_samples / num_replicas)`` indices.

    Attributes
    ----------
    classes_ : ndarray
        The class values present (sorted).
    class_probabilities_ : dict
        Probability of drawing each class (and ``"missing"`` if drawn).

    Examples
    --------
    >>> s = BalancedClassSampler([0, 0, 0, 0, 1], num_samples=1000, seed=0)
    >>> counts = np.bincount([[0, 0, 0, 0, 1][i] for i in s])
    >>> bool(abs(counts[0] - counts[1]) < 150)
    True
    """

    def __init__(
        self,
        labels,
        num_samples: int | None = None,
        *,
        seed: int = 0,
        missing: str = "exclude",
        missing_share: float | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        codes = self._codes(labels)
        n = len(codes)
        if n == 0:
            raise ConfigError("BalancedClassSampler needs at least one sample, got an empty label vector")
        if missing not in ("exclude", "share"):
            raise ConfigError(f"missing must be 'exclude' or 'share', got {missing!r}")
        known = codes >= 0
        if not known.any():
            raise ConfigError("BalancedClassSampler: every label is missing; there is no class to balance")
        self.seed = _check_seed(seed)
        self.num_samples = n if num_samples is None else int(num_samples)
        if self.num_samples <= 0:
            raise ConfigError(f"num_samples must be positive, got {num_samples!r}")
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.missing = missing
        self.epoch = 0

        self.classes_, class_counts = np.unique(codes[known], return_counts=True)
        n_missing = int((~known).sum())
        labelled_mass = 1.0
        self.class_probabilities_: dict = {}
        weights = np.zeros(n, dtype=np.float64)
        if missing == "share" and n_missing:
            share = n_missing / n if missing_share is None else float(missing_share)
            if not 0.0 <= share < 1.0:
                raise ConfigError(f"missing_share must be in [0, 1), got {missing_share!r}")
            weights[~known] = share / n_missing
            labelled_mass = 1.0 - share
            self.class_probabilities_["missing"] = share
        per_class = labelled_mass / len(self.classes_)
        for c, k in zip(self.classes_, class_counts):
            weights[codes == c] = per_class / k
            self.class_probabilities_[int(c)] = per_class
        self.weights = torch.as_tensor(weights, dtype=torch.float64)

    @staticmethod
    def _codes(labels) -> np.ndarray:
        import pandas as pd

        targets = getattr(labels, "expr_targets", None)
        if targets is not None:
            targets = np.asarray(targets)
            if targets.ndim != 1:
                raise ConfigError(
                    "BalancedClassSampler balances single-label expressions; this dataset is multi-label "
                    f"(targets of shape {targets.shape})"
                )
            labels = targets
        if isinstance(labels, pd.Series) and not pd.api.types.is_numeric_dtype(labels):
            # Class names: factorize keeps NA as -1.
            codes, _ = pd.factorize(labels, sort=True)
            return codes.astype(np.int64)
        arr = np.asarray(labels, dtype=np.float64).ravel()
        if arr.size and np.any(np.isfinite(arr) & (arr != np.round(arr))):
            raise ConfigError("BalancedClassSampler expects integer class indices (-1 for missing)")
        return np.where(np.isfinite(arr), arr, -1).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Use a new, reproducible draw for ``epoch`` (call it before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        per_rank = len(self)
        total = per_rank * self.num_replicas
        g = _generator(self.seed, self.epoch)
        draws = torch.multinomial(self.weights, total, replacement=True, generator=g)
        return iter(draws[self.rank :: self.num_replicas].tolist())


class BalancedSubsetSampler(Sampler[int]):
    """A new expression-balanced subset every epoch, drawn without replacement.

    CAGE (section 5.3) "reduced the training dataset by
    balancing according to the discrete expression labels": every class contributes the
    same number of samples, ``per_class`` (default: the size of the smallest class), drawn
    without replacement from that class, so no image repeats within an epoch and the
    epoch is ``per_class x classes`` long. Each epoch draws another subset (``set_epoch``),
    so over the epochs the frequent classes are not thrown away. Unlabelled samples are
    never drawn. A class smaller than ``per_class`` contributes all its samples.

    Parameters
    ----------
    labels : array-like of int, Series or dataset
        As for :class:`BalancedClassSampler`.
    per_class : int, optional
        Samples per class and epoch.
    seed : int
    num_replicas, rank : int, optional
        Distributed sharding: each rank yields an equal share of the same subset.
    """

    def __init__(self, labels, per_class: int | None = None, *, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None):
        codes = BalancedClassSampler._codes(labels)
        known = codes >= 0
        if not known.any():
            raise ConfigError("BalancedSubsetSampler: every label is missing; there is no class to balance")
        self.seed = _check_seed(seed)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.classes_, counts = np.unique(codes[known], return_counts=True)
        self.members_ = [np.flatnonzero(codes == c) for c in self.classes_]
        if per_class is not None and (int(per_class) != per_class or per_class < 1):
            raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")
        self.per_class = int(counts.min()) if per_class is None else int(per_class)
        self.subset_size = int(sum(min(self.per_class, len(m)) for m in self.members_))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw another subset for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.subset_size / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        g = _generator(self.seed, self.epoch)
        parts = []
        for members in self.members_:
            take = min(self.per_class, len(members))
            parts.append(members[torch.randperm(len(members), generator=g)[:take].numpy()])
        subset = np.concatenate(parts)[torch.randperm(self.subset_size, generator=g).numpy()]
        per_rank = len(self)
        # pad by wrapping so every rank gets the same number of indices
        padded = np.resize(subset, per_rank * self.num_replicas)
        return iter(padded[self.rank :: self.num_replicas].tolist())


def dataset_sizes(datasets) -> list[int]:
    """Lengths of the parts of a :class:`~torch.utils.data.ConcatDataset` (or sequence of datasets/ints)."""
    parts = getattr(datasets, "datasets", datasets)
    sizes = [int(p) if isinstance(p, (int, np.integer)) else len(p) for p in parts]
    return sizes


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches made of equal parts from several datasets.

    The datasets are the parts of a :class:`torch.utils.data.ConcatDataset` (pass the
    ConcatDataset or the list of part sizes); yielded indices are global, offset by the
    cumulative sizes, so ``DataLoader(concat, batch_sampler=sampler)`` works as is.
    Every batch holds exactly ``batch_size // len(sizes)`` indices of each dataset, in
    dataset order (the first part from dataset 0, ...).

    Each dataset is read as an endless stream of shuffled passes: a new permutation
    starts whenever one is used up, so within a pass no index repeats and every index
    is seen once per pass.

    Parameters
    ----------
    datasets : ConcatDataset or sequence of int / Dataset
        The datasets, or their sizes.
    batch_size : int
        Total batch size, a multiple of the number of datasets (SMM: 72 = 3 x 24).
    epoch_length : {"max", "min"} or int
        Batches per epoch over all ranks. ``"max"`` (default): enough batches to cover
        the largest dataset once, ``ceil(max_size / per_dataset)`` (smaller datasets are
        cycled, larger ones see each sample once). ``"min"``: cover the smallest dataset
        once (the others are subsampled). An int: that many batches (iteration-based
        schedules such as SMM's 3e5 iterations).
    shuffle : bool
        Shuffle each pass (default). False reads each dataset in order, cyclically.
    seed : int
        Seed; the same seed and epoch give the same batches.
    num_replicas, rank : int, optional
        Distributed sharding (default: from :mod:`torch.distributed`). Ranks take
        batches ``rank, rank + num_replicas, ...``; the epoch is rounded up to a multiple
        of ``num_replicas`` so all ranks run the same number of steps.

    Examples
    --------
    >>> s = MultiTaskBatchSampler([100, 50, 10], batch_size=6, seed=0)
    >>> len(s)
    50
    >>> b = next(iter(s)); [0 <= i < 100 for i in b[:2]] + [100 <= i < 150 for i in b[2:4]]
    [True, True, True, True]
    """

    def __init__(
        self,
        datasets,
        batch_size: int = 72,
        *,
        epoch_length: str | int = "max",
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        self.sizes = dataset_sizes(datasets)
        if not self.sizes:
            raise ConfigError("MultiTaskBatchSampler needs at least one dataset")
        empty = [i for i, s in enumerate(self.sizes) if s <= 0]
        if empty:
            raise ConfigError(f"MultiTaskBatchSampler: dataset(s) {empty} are empty (sizes {self.sizes})")
        k = len(self.sizes)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0 or batch_size % k:
            raise ConfigError(
                f"batch_size must be a positive multiple of the number of datasets ({k}), got {batch_size!r}"
            )
        self.batch_size = int(batch_size)
        self.per_dataset = self.batch_size // k
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.shuffle = bool(shuffle)
        self.seed = _check_seed(seed)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.epoch = 0
        if epoch_length == "max":
            batches = math.ceil(max(self.sizes) / self.per_dataset)
        elif epoch_length == "min":
            batches = math.ceil(min(self.sizes) / self.per_dataset)
        elif isinstance(epoch_length, (int, np.integer)) and not isinstance(epoch_length, bool) and epoch_length > 0:
            batches = int(epoch_length)
        else:
            raise ConfigError(f"epoch_length must be 'max', 'min' or a positive int, got {epoch_length!r}")
        self.epoch_length = epoch_length
        self.num_batches = math.ceil(batches / self.num_replicas) * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use new, reproducible permutations for ``epoch`` (call it before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches // self.num_replicas

    def _stream(self, size: int, count: int, g: torch.Generator) -> np.ndarray:
        """``count`` local indices of one dataset: concatenated passes, each a permutation."""
        passes = math.ceil(count / size)
        if self.shuffle:
            chunks = [torch.randperm(size, generator=g).numpy() for _ in range(passes)]
        else:
            chunks = [np.arange(size)] * passes
        return np.concatenate(chunks)[:count]

    def __iter__(self) -> Iterator[list[int]]:
        g = _generator(self.seed, self.epoch)
        count = self.num_batches * self.per_dataset
        # columns: dataset; rows: batch -> (num_batches, k, per_dataset) of global indices
        parts = np.stack(
            [
                (self._stream(size, count, g) + off).reshape(self.num_batches, self.per_dataset)
                for size, off in zip(self.sizes, self.offsets)
            ],
            axis=1,
        )
        for b in range(self.rank, self.num_batches, self.num_replicas):
            yield parts[b].reshape(-1).tolist()
