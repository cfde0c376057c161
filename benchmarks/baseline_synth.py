"""Multi-task baseline on synthetic faces, with the shipped ``baseline`` preset.

Runs the documented commands (docs/methods/baseline.md) in a temporary folder and
prints expression accuracy, valence/arousal CCC and AU F1 on held-out identities, with
the training's CPU and wall time::

    affectlab synth --out A --n 3000 --seed 1 --size 64
    affectlab synth --out B --n 1000 --seed 2 --size 64
    affectlab train --method baseline --preset baseline --train manifest:A/labels.csv --out RUN
    affectlab evaluate --model RUN --data manifest:B/labels.csv --json RUN/heldout.json

Usage: ``python benchmarks/baseline_synth.py [--n-train 3000] [--n-test 1000] [--keep DIR]
[-- extra train options, e.g. --set backbone=builtin:cnn-tiny]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str]) -> tuple[float, float]:
    """Run a command; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("extra", nargs="*", help="extra 'affectlab train' options (after --)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        a, b, run = work / "A", work / "B", work / "run"
        exe = [shutil.which("affectlab") or str(Path(sys.executable).with_name("affectlab"))]
        _run([*exe, "synth", "--out", str(a), "--n", str(args.n_train), "--seed", "1", "--size", "64"])
        _run([*exe, "synth", "--out", str(b), "--n", str(args.n_test), "--seed", "2", "--size", "64"])
        wall, cpu = _run([*exe, "train", "--method", "baseline", "--preset", "baseline",
                          "--train", f"manifest:{a}/labels.csv", "--out", str(run), "--quiet", *args.extra])
        out = run / "heldout.json"
        _run([*exe, "evaluate", "--model", str(run), "--data", f"manifest:{b}/labels.csv", "--json", str(out)])
        m = json.loads(out.read_text())
        m = m.get("metrics", m)
        print(f"train {args.n_train} / held-out {args.n_test} synthetic faces (disjoint identities), "
              f"options {' '.join(args.extra) or '(preset)'}")
        print(f"training: {cpu:.0f} s CPU, {wall:.0f} s wall")
        for key in ("expr_acc", "expr_f1_macro", "valence_ccc", "arousal_ccc", "va_ccc", "au_f1_mean"):
            if key in m:
                print(f"{key:14s} {float(m[key]):.3f}")


if __name__ == "__main__":
    main()
