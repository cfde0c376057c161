"""Balanced class sampling and equal-part multi-dataset batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from affectlab.data.samplers import BalancedClassSampler, MultiTaskBatchSampler
from affectlab.errors import ConfigError

# 70% of class 0, a long tail, one class with 5 samples
IMBALANCED = np.repeat([0, 1, 2, 3], [700, 200, 95, 5])


def test_balanced_sampler_equalises_classes():
    s = BalancedClassSampler(IMBALANCED, num_samples=8000, seed=1)
    drawn = IMBALANCED[list(s)]
    counts = np.bincount(drawn, minlength=4)
    assert counts.sum() == 8000
    # uniform over classes: chi-square goodness of fit does not reject
    assert chisquare(counts).pvalue > 0.001
    assert np.all(np.abs(counts / 8000 - 0.25) < 0.03)
    # the unbalanced input would fail the same test
    assert chisquare(np.bincount(IMBALANCED)).pvalue < 1e-10


def test_balanced_sampler_is_deterministic_per_seed_and_epoch():
    a = list(BalancedClassSampler(IMBALANCED, seed=7))
    b = list(BalancedClassSampler(IMBALANCED, seed=7))
    c = list(BalancedClassSampler(IMBALANCED, seed=8))
    assert a == b and a != c
    s = BalancedClassSampler(IMBALANCED, seed=7)
    s.set_epoch(1)
    assert list(s) != a
    assert len(a) == len(IMBALANCED)


def test_balanced_sampler_missing_labels():
    labels = np.concatenate([IMBALANCED, np.full(500, -1)])
    excl = BalancedClassSampler(labels, num_samples=4000, seed=0)
    assert np.all(labels[list(excl)] >= 0)
    share = BalancedClassSampler(labels, num_samples=8000, seed=0, missing="share", missing_share=0.2)
    drawn = labels[list(share)]
    assert abs(np.mean(drawn == -1) - 0.2) < 0.03
    counts = np.bincount(drawn[drawn >= 0], minlength=4)
    assert chisquare(counts).pvalue > 0.001
    # default share keeps the natural frequency of unlabelled rows (500 / 1500)
    natural = BalancedClassSampler(labels, num_samples=6000, seed=0, missing="share")
    assert abs(np.mean(labels[list(natural)] == -1) - 1 / 3) < 0.03


def test_balanced_sampler_accepts_class_names_with_na():
    names = pd.Series(["happiness"] * 90 + ["fear"] * 10 + [None] * 5)
    s = BalancedClassSampler(names, num_samples=4000, seed=0)
    drawn = names.iloc[list(s)]
    assert drawn.notna().all()
    assert abs((drawn == "fear").mean() - 0.5) < 0.04


def test_balanced_sampler_shards_across_ranks():
    full = list(BalancedClassSampler(IMBALANCED, num_samples=100, seed=3, num_replicas=1, rank=0))
    r0 = list(BalancedClassSampler(IMBALANCED, num_samples=100, seed=3, num_replicas=2, rank=0))
    r1 = list(BalancedClassSampler(IMBALANCED, num_samples=100, seed=3, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == 50
    assert r0 == full[0::2] and r1 == full[1::2]


def test_balanced_sampler_validates_input():
    with pytest.raises(ConfigError, match="missing"):
        BalancedClassSampler([-1, -1])
    with pytest.raises(ConfigError, match="missing"):
        BalancedClassSampler([0, 1], missing="drop")
    with pytest.raises(ConfigError, match="integer"):
        BalancedClassSampler([0.5, 1])
    with pytest.raises(ConfigError):
        BalancedClassSampler([0, 1], num_samples=0)


SIZES = [100, 37, 250]


@pytest.mark.parametrize("epoch_length", ["max", "min", 7])
def test_multitask_batches_have_equal_parts_in_range(epoch_length):
    s = MultiTaskBatchSampler(SIZES, batch_size=72, seed=0, epoch_length=epoch_length)
    expected = {"max": -(-250 // 24), "min": -(-37 // 24), 7: 7}[epoch_length]
    batches = list(s)
    assert len(batches) == len(s) == expected
    bounds = np.cumsum([0] + SIZES)
    for b in batches:
        assert len(b) == 72
        parts = np.asarray(b).reshape(3, 24)
        for d in range(3):
            assert np.all((parts[d] >= bounds[d]) & (parts[d] < bounds[d + 1]))


def test_multitask_covers_largest_dataset_and_cycles_others():
    s = MultiTaskBatchSampler(SIZES, batch_size=72, seed=0)
    idx = np.asarray(list(s)).reshape(-1, 3, 24)
    largest = idx[:, 2].ravel() - 137
    assert set(largest.tolist()) == set(range(250))  # every sample of the largest dataset
    small = idx[:, 1].ravel() - 100
    first_pass = small[:37]
    assert sorted(first_pass.tolist()) == list(range(37))  # a pass is a permutation


def test_multitask_deterministic_and_epoch_dependent():
    a = list(MultiTaskBatchSampler(SIZES, batch_size=72, seed=5))
    b = list(MultiTaskBatchSampler(SIZES, batch_size=72, seed=5))
    assert a == b
    s = MultiTaskBatchSampler(SIZES, batch_size=72, seed=5)
    s.set_epoch(3)
    assert list(s) != a


def test_multitask_with_concat_dataset_and_dataloader():
    parts = [TensorDataset(torch.full((n,), float(k))) for k, n in enumerate(SIZES)]
    concat = ConcatDataset(parts)
    sampler = MultiTaskBatchSampler(concat, batch_size=9, seed=0)
    loader = DataLoader(concat, batch_sampler=sampler)
    for (values,) in loader:
        assert values.tolist() == [0.0] * 3 + [1.0] * 3 + [2.0] * 3


def test_multitask_shards_for_ddp():
    r0 = list(MultiTaskBatchSampler(SIZES, batch_size=6, seed=2, epoch_length=5, num_replicas=2, rank=0))
    r1 = list(MultiTaskBatchSampler(SIZES, batch_size=6, seed=2, epoch_length=5, num_replicas=2, rank=1))
    # 5 batches rounded up to 6 so both ranks take 3 steps; together they are the
    # single-process epoch of 6 batches, split round-robin
    assert len(r0) == len(r1) == 3
    full = list(MultiTaskBatchSampler(SIZES, batch_size=6, seed=2, epoch_length=6, num_replicas=1, rank=0))
    assert r0 == full[0::2] and r1 == full[1::2]


def test_multitask_validates_input():
    with pytest.raises(ConfigError, match="multiple"):
        MultiTaskBatchSampler(SIZES, batch_size=71)
    with pytest.raises(ConfigError, match="empty"):
        MultiTaskBatchSampler([10, 0], batch_size=4)
    with pytest.raises(ConfigError, match="epoch_length"):
        MultiTaskBatchSampler(SIZES, batch_size=72, epoch_length="all")


def test_balanced_sampler_on_a_dataset(tmp_path):
    from affectlab.data.datasets import load_dataset

    rows = ["happiness"] * 40 + ["fear"] * 8 + [""] * 4
    (tmp_path / "labels.csv").write_text("path,expression\n" + "\n".join(f"{i}.jpg,{e}" for i, e in enumerate(rows)))
    ds = load_dataset(tmp_path / "labels.csv", check_files=False)
    s = BalancedClassSampler(ds, num_samples=3000, seed=0)
    codes = ds.expr_targets[list(s)]
    assert np.all(codes >= 0)
    assert abs(np.mean(codes == ds.label_space.expression_index("fear")) - 0.5) < 0.04


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    per=st.integers(1, 7),
    world=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_multitask_property_equal_parts_in_range(sizes, per, world, seed):
    k = len(sizes)
    bounds = np.cumsum([0] + sizes)
    batches = [
        b
        for rank in range(world)
        for b in MultiTaskBatchSampler(sizes, batch_size=per * k, seed=seed, num_replicas=world, rank=rank)
    ]
    assert len(batches) % world == 0
    assert len(batches) >= -(-max(sizes) // per)
    for b in batches:
        parts = np.asarray(b).reshape(k, per)
        for d in range(k):
            assert np.all((parts[d] >= bounds[d]) & (parts[d] < bounds[d + 1]))
    # over all ranks, the largest dataset is covered completely
    big = int(np.argmax(sizes))
    seen = {i for b in batches for i in np.asarray(b).reshape(k, per)[big]}
    assert seen == set(range(bounds[big], bounds[big + 1]))


def test_balanced_subset_is_a_new_balanced_subset_per_epoch_without_repeats():
    from affectlab.data.samplers import BalancedSubsetSampler

    labels = np.array([0] * 50 + [1] * 10 + [2] * 20 + [-1] * 5)
    s = BalancedSubsetSampler(labels, seed=3)
    first = list(s)
    assert len(first) == len(s) == 30 and len(set(first)) == 30  # no image twice in an epoch
    assert np.bincount(labels[first], minlength=3).tolist() == [10, 10, 10]  # the smallest class's size
    s.set_epoch(1)
    second = list(s)
    assert set(second) != set(first) and np.bincount(labels[second]).tolist() == [10, 10, 10]
    s.set_epoch(0)
    assert list(s) == first  # reproducible
    capped = BalancedSubsetSampler(labels, per_class=15, seed=0)
    assert np.bincount(labels[list(capped)]).tolist() == [15, 10, 15]  # a small class gives all it has
    # two ranks split one subset
    parts = [list(BalancedSubsetSampler(labels, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(first)
