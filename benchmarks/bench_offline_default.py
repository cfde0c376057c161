"""Benchmark of the fully offline default pipeline: ``affectlab analyze VIDEO`` with nothing downloaded.

A user with no network and an empty asset cache (``AFFECTLAB_OFFLINE=1``, an empty
``AFFECTLAB_HOME``) gets the packaged ``affectlab-base`` (expressions + AUs) behind the
Haar detector. This times that whole pipeline (decode, detect, crop, model, table, CSV) on
a 640x480 video with one face (a real photograph from ../shared/data pasted on a textured
background, drifting; :func:`bench_analyze.make_video`), in a fresh process, and prints
frames per wall-clock second. Target of issue #14: at least 40 frames/s on the 2-core
build machine.

Usage::

    python benchmarks/bench_offline_default.py                # 20-second video
    python benchmarks/bench_offline_default.py --seconds 60 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analyze import FPS, H, W, make_video  # noqa: E402


def run_one(video: str, out: str, threads: int) -> dict:
    """Analyse ``video`` with the default stack in this (offline, empty-cache) process."""
    import torch

    import affectlab

    torch.set_num_threads(threads)
    wall = time.perf_counter()
    table = affectlab.analyze(video, out=out, progress=False, keep=False, threads=threads)
    wall = time.perf_counter() - wall
    info = table.model_info
    return {"frames": info["stats"]["frames"], "faces": info["stats"]["faces"], "wall_s": wall,
            "seconds": info["stats"]["seconds"], "sources": info.get("sources", {})}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="video length")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        print(json.dumps(run_one(args.run, args.out, args.threads)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_offline_") as tmp:
        folder = Path(tmp)
        video = folder / "face.mp4"
        n = make_video(video, args.seconds / 60)
        home = folder / "empty_home"
        home.mkdir()
        env = {**os.environ, "AFFECTLAB_OFFLINE": "1", "AFFECTLAB_HOME": str(home), "OMP_NUM_THREADS": str(args.threads)}
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"{n} frames {W}x{H} @ {FPS} fps; offline, empty AFFECTLAB_HOME")
        cmd = [sys.executable, __file__, "--run", str(video), "--out", str(folder / "t.csv"), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        total = sum(res["seconds"].values())
        print(f"whole offline pipeline: {res['frames'] / res['wall_s']:.1f} frames/s wall clock "
              f"({args.threads} torch thread(s)); faces in {res['faces']} of {res['frames']} frames")
        print("time per stage: " + ", ".join(
            f"{k} {1000 * v / res['frames']:.2f} ms/frame ({100 * v / max(total, 1e-9):.0f}%)" for k, v in res["seconds"].items()))
        print("columns from: " + "; ".join(f"{k}: {v}" for k, v in res["sources"].items()))
        if proc.stderr.strip():
            print("stderr:", proc.stderr.strip().splitlines()[-3:])


if __name__ == "__main__":
    main()
