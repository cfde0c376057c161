"""Predictor throughput: milliseconds per face crop for a baseline model.

Run on demand::

    python benchmarks/bench_predictor.py                       # builtin:cnn-small, 64-px crops
    python benchmarks/bench_predictor.py --backbone builtin:cnn-tiny --size 48 --threads 1

Prints the time per crop for the whole ``Predictor.predict`` call (preprocessing +
forward + probabilities), for preprocessing alone, and the CPU time the process used,
plus the machine load: on a shared machine wall time includes waiting for a core. Target: about 1 ms per 64-px crop for
``builtin:cnn-small`` on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from affectlab.data.schema import AU_SETS, EXPRESSIONS, LabelSpace
from affectlab.methods.base import create_method
from affectlab.runtime.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="builtin:cnn-small")
    ap.add_argument("--size", type=int, default=64, help="side of the input crops (model input: the backbone's)")
    ap.add_argument("--n", type=int, default=2048, help="number of crops")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    space = LabelSpace(expressions=EXPRESSIONS, aus=AU_SETS["abaw12"], va=True)
    method = create_method("baseline", space, {"backbone": args.backbone})
    pred = Predictor.from_method(method, batch_size=args.batch_size)
    crops = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    pred.predict(crops[: args.batch_size])  # warm-up: allocator, oneDNN primitives
    total, prep, cpu = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(0, args.n, args.batch_size):
            pred.preprocess(crops[i : i + args.batch_size])
        prep.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        pred.predict(crops)
        total.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    n_params = sum(p.numel() for p in method.parameters())
    print(f"backbone {args.backbone} ({n_params / 1e6:.2f} M parameters), model input {pred.input_size} px, "
          f"crops {args.size} px, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"predict:    {min(total) / args.n * 1e3:.3f} ms/crop (best of {args.repeats}), "
          f"{args.n / min(total):.0f} crops/s")
    print(f"preprocess: {min(prep) / args.n * 1e3:.3f} ms/crop")
    # CPU seconds the process used: what the wall time would be on idle cores when the
    # machine is shared (wall time then includes waiting for a core)
    print(f"predict CPU time: {min(cpu) / args.n * 1e3:.3f} ms/crop over {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
