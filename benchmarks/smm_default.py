"""SMM-EmotionNet with no preset (its recommended ``smm-synth``) on 3,000 synthetic faces, 5 epochs.

Issue 15's target: ABAW multi-task score >= 1.5 on unseen identities. Runs in a
temporary folder (or ``--keep DIR``)::

    # three uni-task sets of 1000 (the SMM paper's setting), and one set of 3000 with
    # each descriptor dropped with probability 0.67
    affectlab synth --out au   --n 1000 --size 64 --keep au   --seed 11
    affectlab synth --out expr --n 1000 --size 64 --keep expr --seed 12
    affectlab synth --out va   --n 1000 --size 64 --keep va   --seed 13
    affectlab synth --out drop --n 3000 --size 64 --drop-labels 0.67 --seed 1
    affectlab synth --out test --n 1000 --size 64 --seed 2          # other identities
    affectlab train --method smm --train manifest:au/labels.csv --train manifest:expr/labels.csv \\
        --train manifest:va/labels.csv --epochs 5 --set seed=S --out RUN
    affectlab evaluate --model RUN --data manifest:test/labels.csv --protocol abaw --json RUN/test.json

and prints F1-AU, F1-EXPR, CCC and ``abaw_mtl`` per seed with their mean and sd. The
recommended preset starts from torchvision's ImageNet MobileNetV2: it must be in torch.hub's
cache (``affectlab models fetch mobilenet-v2-imagenet``, or ``TORCH_HOME`` pointing at a
folder holding ``hub/checkpoints/mobilenet_v2-b0353104.pth``).

Usage: ``python benchmarks/smm_default.py [--seeds 0 1 2] [--data uni drop] [--epochs 5]
[--keep DIR] [-- extra train options, e.g. --preset smm-scratch]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("au_f1_mean", "expr_f1_macro", "expr_acc", "va_ccc", "abaw_mtl")


def run_command(cmd: list[str]) -> tuple[float, float]:
    """Run a command, stopping with its stderr if it fails; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def synth_once(exe, out: Path, *args: str) -> Path:
    """``affectlab synth`` of 64 px faces into ``out`` unless already there; its labels.csv."""
    if not (out / "labels.csv").is_file():
        run_command([*exe, "synth", "--out", str(out), "--size", "64", "-q", *args])
    return out / "labels.csv"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", nargs="+", choices=("uni", "drop"), default=["uni", "drop"])
    ap.add_argument("--n", type=int, default=3000, help="training faces in all (uni: n/3 per set)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("extra", nargs="*", help="extra 'affectlab train' options (after --)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    exe = [sys.executable, "-m", "affectlab"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        third = str(args.n // 3)
        specs = {}
        if "uni" in args.data:
            for task, seed in (("au", 11), ("expr", 12), ("va", 13)):
                synth_once(exe, work / task, "--n", third, "--keep", task, "--seed", str(seed))
            specs["uni"] = [f"manifest:{work / t}/labels.csv" for t in ("au", "expr", "va")]
        if "drop" in args.data:
            synth_once(exe, work / "drop", "--n", str(args.n), "--drop-labels", "0.67", "--seed", "1")
            specs["drop"] = [f"manifest:{work / 'drop'}/labels.csv"]
        synth_once(exe, work / "test", "--n", "1000", "--seed", "2")
        print(f"SMM, train options: {' '.join(args.extra) or '(none: the recommended preset)'}; "
              f"{args.n} training faces, {args.epochs} epochs, test: 1000 faces of other identities")
        print(f"{'data':5s} {'seed':>4s} " + " ".join(f"{k:>13s}" for k in KEYS) + "   wall s    CPU s")
        for name, train in specs.items():
            rows = []
            for seed in args.seeds:
                run = work / f"run-{name}-{seed}"
                shutil.rmtree(run, ignore_errors=True)
                cmd = [*exe, "train", "--method", "smm", *[a for s in train for a in ("--train", s)],
                       "--epochs", str(args.epochs), "--set", f"seed={seed}", "--out", str(run), "-q", *args.extra]
                if name == "drop":
                    # one set: shuffled batches (what no preset does by itself; an explicit preset needs it said)
                    cmd += ["--set", "sampler=shuffle"]
                wall, cpu = run_command(cmd)
                run_command([*exe, "evaluate", "--model", str(run), "--data", f"manifest:{work / 'test'}/labels.csv",
                             "--protocol", "abaw", "--json", str(run / "test.json"), "-q"])
                m = json.loads((run / "test.json").read_text())
                rows.append([float(m[k]) for k in KEYS])
                print(f"{name:5s} {seed:4d} " + " ".join(f"{v:13.3f}" for v in rows[-1]) + f" {wall:8.0f} {cpu:8.0f}")
            if len(rows) > 1:
                cols = list(zip(*rows))
                print(f"{name:5s} mean " + " ".join(f"{statistics.mean(c):13.3f}" for c in cols))
                print(f"{name:5s}   sd " + " ".join(f"{statistics.stdev(c):13.3f}" for c in cols))


if __name__ == "__main__":
    main()
