"""Speed of the preprocessing presets, the samplers and the label statistics on one core.

Run: ``python benchmarks/bench_transforms.py [--images 300] [--size 224] [--rows 287651]``.
Prints

* images per second of :func:`affectlab.data.transforms.build_transform` for each preset
  (``eval``, ``default``, ``cage`` with ``train=True``) on 160 x 160 RGB uint8 images
  resized to ``--size`` (CAGE's MaxViT-T and CLIP ViT-B/16 take 224);
* indices per second of :class:`BalancedClassSampler` and batches per second of
  :class:`MultiTaskBatchSampler` (SMM's 72 = 3 x 24) over AffectNet-sized label vectors;
* the time of :func:`affectlab.data.stats.summarize` on an AffectNet-sized label table
  (``--rows``: 287,651 manually annotated training images) with VA and 12 AUs.

Targets: ``eval`` >= 300 and ``default`` >= 100 images/s per core at 224 px; ``cage``
>= 50 (its hue jitter, rotation and perspective warp are torchvision's own cost, about
9 + 4 + 6 ms per image; a GPU run feeds CAGE's batch of 128 with 4-8 DataLoader
workers); samplers >= 1e6 indices/s (never a bottleneck);
``summarize`` on the AffectNet table under 5 s. Times are process CPU times
(``time.process_time``), so they measure the cost on one core of a shared machine.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from affectlab.data.samplers import BalancedClassSampler, MultiTaskBatchSampler  # noqa: E402
from affectlab.data.stats import summarize  # noqa: E402
from affectlab.data.transforms import build_transform, list_presets  # noqa: E402

# AffectNet-8 training counts (neutral ... contempt), the imbalance CAGE analyses
AFFECTNET_COUNTS = np.array([74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750])


def bench_transforms(n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(min(n, 64), 160, 160, 3), dtype=np.uint8)
    for preset in list_presets():
        t = build_transform(preset, size, "imagenet", train=True)
        t(images[0])  # warm-up
        start = time.process_time()
        for i in range(n):
            t(images[i % len(images)])
        dt = time.process_time() - start
        print(f"transform {preset:8s} {size}px: {n / dt:8.1f} images/s")


def bench_samplers(rows: int) -> None:
    labels = np.repeat(np.arange(8), np.round(AFFECTNET_COUNTS / AFFECTNET_COUNTS.sum() * rows).astype(int))
    start = time.process_time()
    s = BalancedClassSampler(labels, seed=0)
    drawn = np.fromiter(iter(s), dtype=np.int64, count=len(s))
    dt = time.process_time() - start
    share = np.bincount(labels[drawn], minlength=8) / len(drawn)
    print(f"BalancedClassSampler: {len(drawn) / dt:,.0f} indices/s; class shares {np.round(share, 3).tolist()}")
    sizes = [rows, rows // 2, rows // 4]
    start = time.process_time()
    m = MultiTaskBatchSampler(sizes, batch_size=72, seed=0)
    count = sum(1 for _ in m)
    dt = time.process_time() - start
    print(f"MultiTaskBatchSampler: {count / dt:,.0f} batches/s ({count} batches of 72 per epoch)")


def bench_stats(rows: int) -> None:
    rng = np.random.default_rng(0)
    names = np.array(["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"])
    p = AFFECTNET_COUNTS / AFFECTNET_COUNTS.sum()
    frame = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(rows)],
            "expression": names[rng.choice(8, size=rows, p=p)],
            "valence": rng.uniform(-1, 1, rows),
            "arousal": rng.uniform(-1, 1, rows),
        }
    )
    for k in (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26):
        frame[f"AU{k}"] = rng.choice([1, 0, -1], size=rows, p=[0.2, 0.7, 0.1]).astype(np.int8)
    start = time.process_time()
    stats = summarize(frame)
    dt = time.process_time() - start
    print(f"summarize: {rows:,} rows, {len(stats.counts)} classes, {len(stats.au)} AUs in {dt:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rows", type=int, default=287651)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_transforms(args.images, args.size)
    bench_samplers(args.rows)
    bench_stats(args.rows)


if __name__ == "__main__":
    main()
