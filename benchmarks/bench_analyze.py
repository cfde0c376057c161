"""Benchmark of ``affectlab analyze``: whole-pipeline frames/s, time per stage, peak memory.

Generates 640x480 videos with one face (a real photograph from ../shared/data pasted on
a textured background and drifting slowly, or a synthetic face when that folder is
absent), then analyses each in a fresh process with the default detector (Haar) and a
small model (the baseline on the built-in ``cnn-small`` backbone; untrained unless
``--model`` names a run: the cost is the same), writing a CSV as the CLI does.

Prints frames/s (wall clock and per CPU second), the split of time between decode,
detect, crop, model, table and write, and the peak resident memory of each run, so
videos of 1 and 10 minutes show whether memory grows with length.

Usage::

    python benchmarks/bench_analyze.py                 # 1-minute and 10-minute videos
    python benchmarks/bench_analyze.py --minutes 0.5   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "facial_expressions" / "images"
W, H, FPS = 640, 480, 30


def face_patch(side: int = 200) -> np.ndarray:
    """A face photograph the frontal cascade finds, or a synthetic face."""
    import cv2
    from PIL import Image

    if FACES.is_dir():
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        for p in sorted(FACES.glob("*.jpg"))[:50]:
            im = np.asarray(Image.open(p).convert("RGB").resize((side, side)))
            if len(cascade.detectMultiScale(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), 1.1, 4, minSize=(80, 80))):
                return im
    from affectlab.data.synth import sample_batch

    images, _ = sample_batch(1, seed=0, size=side)
    return images[0]


def make_video(path: Path, minutes: float, face: np.ndarray | None = None, centre=(220, 140),
               amplitude=(120, 40)) -> int:
    """A 640x480 video of ``face`` (default :func:`face_patch`) drifting slowly on a textured
    background, ``centre`` +- ``amplitude`` pixels (top-left corner); returns its frame count."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    background = np.stack([(xx * 0.2 + 40), (yy * 0.25 + 60), 120 + 20 * np.sin(xx / 37.0)], axis=-1)
    background = np.clip(background + rng.normal(0, 6, background.shape), 0, 255).astype(np.uint8)
    face = face_patch() if face is None else face
    n = int(round(minutes * 60 * FPS))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for k in range(n):
            frame = background.copy()
            x = int(centre[0] + amplitude[0] * np.sin(k / 90.0))  # slow drift left and right
            y = int(centre[1] + amplitude[1] * np.sin(k / 55.0))
            frame[y : y + face.shape[0], x : x + face.shape[1]] = face
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return n


def run_one(video: str, model: str | None, out: str, threads: int | None = None) -> dict:
    """Analyse one video in this process and return the figures (called in a subprocess)."""
    import torch

    import affectlab
    from affectlab.data.schema import AU_SETS, EXPRESSIONS, LabelSpace
    from affectlab.methods.base import create_method
    from affectlab.runtime.predictor import Predictor

    if model:
        predictor = Predictor.load(model)
    else:
        torch.manual_seed(0)
        space = LabelSpace(EXPRESSIONS, AU_SETS["synth"], va=True)
        predictor = Predictor.from_method(create_method("baseline", space, {"backbone": "builtin:cnn-small"}))
    wall, cpu = time.perf_counter(), time.process_time()
    table = affectlab.analyze(video, predictor, out=out, progress=False, keep=False, threads=threads)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = table.model_info["stats"]
    return {
        "frames": stats["frames"],
        "rows": stats["rows"],
        "faces": stats["faces"],
        "wall_s": wall,
        "cpu_s": cpu,
        "seconds": stats["seconds"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": threads or torch.get_num_threads(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0], help="video lengths")
    ap.add_argument("--model", default=None, help="run directory (default: untrained cnn-small baseline)")
    ap.add_argument("--threads", type=int, nargs="+", default=[0], help="torch threads to compare (0: default)")
    ap.add_argument("--keep", default=None, help="folder to keep the generated videos and tables in")
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        print(json.dumps(run_one(args.run, args.model, args.out, args.threads[0] or None)))
        return
    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench_analyze_"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    results = []
    for minutes in args.minutes:
        video = folder / f"face_{minutes:g}min.mp4"
        t = time.perf_counter()
        n = make_video(video, minutes)
        print(f"\n{minutes:g}-minute video: {n} frames {W}x{H} @ {FPS} fps written in {time.perf_counter() - t:.0f} s")
        for threads in args.threads:
            cmd = [sys.executable, __file__, "--run", str(video), "--out", str(folder / f"face_{minutes:g}min.csv"),
                   "--threads", str(threads)]
            if args.model:
                cmd += ["--model", args.model]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            results.append((minutes, threads, res))
            _print(res)
        if not args.keep:
            video.unlink()
    for threads in args.threads:
        runs = [(m, r) for m, t, r in results if t == threads]
        if len(runs) >= 2:
            (m0, a), (m1, b) = runs[0], runs[-1]
            ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
            print(f"\npeak RSS {m1:g} min / {m0:g} min (threads {threads or 'default'}): {ratio:.3f} "
                  f"({'within' if abs(ratio - 1) <= 0.10 else 'NOT within'} 10%)")
    if not args.keep:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def _print(res: dict) -> None:
    total = sum(res["seconds"].values())
    print(f"  whole pipeline: {res['frames'] / res['wall_s']:.1f} frames/s wall clock, "
          f"{res['frames'] / res['cpu_s']:.1f} frames per CPU-second ({res['torch_threads']} torch threads); "
          f"faces found in {res['faces']} of {res['frames']} frames")
    print("  time per stage: " + ", ".join(
        f"{k} {1000 * v / res['frames']:.2f} ms/frame ({100 * v / total:.0f}%)" for k, v in res["seconds"].items()))
    print(f"  peak RSS: {res['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
