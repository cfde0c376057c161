"""AURA speed: one training epoch over 300,000 cached 512-d features (target <= 15 s on a
2-core CPU), through the real data path (FeatureDataset + DataLoader + collate) and the
method's forward/loss/backward/AdamW step. Prints the time and the peak memory.

    python benchmarks/bench_aura.py [--n 300000] [--dim 512] [--batch-size 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from affectlab.data.batch import collate
from affectlab.data.schema import EXPRESSIONS, LabelSpace
from affectlab.features.cache import write_features
from affectlab.features.dataset import FeatureDataset
from affectlab.methods.base import create_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    space = LabelSpace(expressions=EXPRESSIONS, va=True)
    labels = pd.DataFrame(
        {
            "path": [f"img/{i:06d}.jpg" for i in range(args.n)],
            "expression": np.asarray(EXPRESSIONS)[rng.integers(0, 8, args.n)],
            "valence": rng.uniform(-1, 1, args.n),
            "arousal": rng.uniform(-1, 1, args.n),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        feats = rng.standard_normal((args.n, args.dim), dtype=np.float32).astype(np.float16)
        store = write_features(Path(tmp) / "bench.zarr", feats, labels, space)
        del feats
        print(f"wrote {store.describe()} in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        ds = FeatureDataset(store.path)
        print(f"opened the store (features in memory) in {time.perf_counter() - t:.1f} s")
        m = create_method("aura", space, {"feature_dim": args.dim})
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4)
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, collate_fn=collate, drop_last=True)
        m.train()
        cpu = time.process_time()
        t = time.perf_counter()
        t_data = 0.0
        steps = 0
        t_fetch = time.perf_counter()
        for batch in loader:
            t_data += time.perf_counter() - t_fetch
            out = m(batch)
            loss = m.loss(out, batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            t_fetch = time.perf_counter()
        epoch = time.perf_counter() - t
        cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"one AURA epoch: {args.n} x {args.dim}-d features, batch {args.batch_size}, {steps} steps, "
        f"{args.threads} thread(s): {epoch:.1f} s wall ({t_data:.1f} s loading batches), {cpu:.1f} s CPU "
        f"(on a busy machine, CPU / threads estimates the wall time when idle); peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
