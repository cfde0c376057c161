"""Benchmark of corpus runs: ``analyze --engine local|ray --out DIR`` on several videos.

Makes ``--videos`` 640x480 videos of ``--seconds`` each (one face drifting on a textured
background, as :mod:`bench_analyze` makes them), then times, each in a fresh process
through the CLI (one PyTorch / OpenCV thread per worker):

* ``--engine local`` (one process; decoding and detection run a thread ahead, so it uses two cores),
* ``--engine ray --workers 1`` (each worker one core: every stage in its one thread),
* ``--engine ray --workers 2`` (and more with ``--workers``),

and prints wall seconds, frames/s, the speed-up of the most workers over one, the Ray
path against the local engine at equal cores, and the peak resident memory per worker
(from ``index.csv``). Ray's own start-up (a few seconds) is inside the wall time.

Usage::

    python benchmarks/bench_corpus.py                      # 8 videos of 20 s, workers 1 and 2
    python benchmarks/bench_corpus.py --videos 4 --seconds 5 --model default
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

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import make_video  # noqa: E402


def run(videos, out: Path, engine: str, workers: int | None, model: str | None) -> dict:
    cmd = [sys.executable, "-m", "affectlab", "analyze", *map(str, videos), "--engine", engine, "--out", str(out),
           "--threads", "1", "-q"]
    if model:
        cmd += ["--model", model]
    if workers:
        cmd += ["--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    index = pd.read_csv(out / "index.csv")
    frames = int(index["frames"].sum())
    return {"engine": engine, "workers": workers or 1, "wall_s": round(wall, 1), "frames": frames,
            "fps": round(frames / wall, 1), "busy_s": round(float(index["seconds"].sum()), 1),
            "peak_rss_mb_per_worker": float(index.groupby("worker")["peak_rss_mb"].max().max())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default=None, help="model name or run (default: the packaged default model)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = []
        for k in range(args.videos):
            folder = tmp / "videos" / f"day{k % 2}"  # same file names in two folders, as in real corpora
            folder.mkdir(parents=True, exist_ok=True)
            videos.append(folder / f"session{k // 2}.mp4")
            make_video(videos[-1], args.seconds / 60)
        rows = [run(videos, tmp / "local", "local", None, args.model)]
        for w in args.workers:
            rows.append(run(videos, tmp / f"ray{w}", "ray", w, args.model))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    one = table[(table.engine == "ray") & (table.workers == min(args.workers))].iloc[0]
    most = table[(table.engine == "ray") & (table.workers == max(args.workers))].iloc[0]
    local = table[table.engine == "local"].iloc[0]
    # the local engine uses two cores (decode and detection run a thread ahead); a Ray worker one
    two = table[(table.engine == "ray") & (table.workers == 2)]
    summary = {"speedup": round(one.wall_s / most.wall_s, 2),
               "ray2_vs_local_wall": round(float(two.wall_s.iloc[0]) / local.wall_s, 2) if len(two) else None}
    print(f"speed-up, {max(args.workers)} workers over {min(args.workers)}: {summary['speedup']}x; "
          f"Ray with 2 workers / local engine (both 2 cores), wall: {summary['ray2_vs_local_wall']}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, **summary}, indent=1))


if __name__ == "__main__":
    main()
