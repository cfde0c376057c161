"""Train the multi-task baseline on synthetic faces and evaluate it on other identities.

Prints the wall time of training and the held-out metrics (expression accuracy / macro
F1, valence/arousal CCC, mean AU F1). Run on demand::

    python benchmarks/bench_train.py --n 2000 --epochs 8 --size 64 --backbone builtin:cnn-small

The test set is generated with another seed, so its identities never occur in training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="training images")
    ap.add_argument("--n-test", type=int, default=500, help="test images (other identities)")
    ap.add_argument("--size", type=int, default=64, help="image side")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--backbone", default="builtin:cnn-small")
    ap.add_argument("--transform", default="default", help="training transform preset")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--workdir", default=None, help="keep data and run here (default: a temp dir)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from affectlab.data.synth import generate
    from affectlab.train.config import resolve_config
    from affectlab.evaluate.engine import evaluate
    from affectlab.train.engine import train

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_train_"))
    t0 = time.perf_counter()
    if not (root / "train" / "labels.csv").exists():
        generate(root / "train", args.n, size=args.size, seed=101, progress=False)
        generate(root / "test", args.n_test, size=args.size, seed=202, progress=False)
    t_data = time.perf_counter() - t0
    cfg = resolve_config(
        preset="baseline",
        options=dict(
            train=f"manifest:{root / 'train' / 'labels.csv'}", backbone=args.backbone, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, image_size=args.size, train_transform=args.transform,
        ),
    )
    run = root / f"run_{int(time.time())}"
    t0 = time.perf_counter()
    result = train(cfg, run, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = evaluate(run, f"manifest:{root / 'test' / 'labels.csv'}", progress=False).metrics
    t_eval = time.perf_counter() - t0
    print(f"data: {args.n} train / {args.n_test} test images at {args.size}px, generated in {t_data:.1f} s")
    print(f"train: {args.backbone}, {args.epochs} epochs, {t_train:.1f} s ({t_train / args.epochs:.1f} s/epoch), "
          f"best epoch {result.best_epoch}, torch threads {torch.get_num_threads()}")
    print(f"evaluate: {t_eval:.1f} s")
    for key in ("expr_acc", "expr_f1_macro", "valence_ccc", "arousal_ccc", "va_ccc", "au_f1_mean"):
        print(f"  test {key:14s} {test[key]:.3f}")


if __name__ == "__main__":
    main()
