"""Face detection on hard and easy frames built from ``../shared/data``: recall, false boxes, ms/frame.

Run on demand (needs ``../shared/data`` and ``../shared/models``)::

    python benchmarks/bench_detect.py                  # YuNet (default settings), plain YuNet, Haar
    python benchmarks/bench_detect.py --n 150 --seed 13 --sets hard

The sets are built in memory by ``tests/detect_sets.py`` (never saved): 640x480 frames,
one real face each; *hard*: faces 48-260 px, rotated up to +-40 degrees, gamma 0.6-2.2,
on noise / pattern / clutter / photo-part backgrounds; *easy*: upright 100-300 px faces.
A detection counts when it overlaps a true face with IoU >= 0.4 (greedy by score); any
other detection is a false box. Times are per frame with one OpenCV thread: CPU time of
this process (what the detector costs) and wall time (includes waiting for a core on a
shared machine); the load average is printed beside them.

Detectors: ``yunet`` (affectlab's default: score >= 0.7, small frames upscaled, frames
searched downscaled to 320 px first, then at full resolution with a +-30 degree re-try when
nothing is found), ``yunet-full`` (the same at full resolution throughout: ``detect_size=0``), ``yunet-level`` (the same, and tilted
faces re-detected upright for level keypoints: what a model with aligned framing gets),
``yunet-plain`` (one pass, no re-try), ``haar`` (OpenCV cascades, the fallback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import detect_sets  # noqa: E402


def detectors(which):
    from affectlab.perception.detectors import HaarDetector, YuNetDetector

    table = {
        "yunet": lambda: YuNetDetector(detect_sets.YUNET),
        "yunet-full": lambda: YuNetDetector(detect_sets.YUNET, detect_size=0),
        "yunet-level": lambda: YuNetDetector(detect_sets.YUNET, refine_above=1.5),
        "yunet-plain": lambda: YuNetDetector(detect_sets.YUNET, retry_angles=(), refine_above=0),
        "haar": lambda: HaarDetector(),
    }
    return {name: table[name]() for name in which}


def run(det, frames) -> tuple[list[np.ndarray], float, float]:
    out = []
    w0, c0 = time.perf_counter(), time.process_time()
    for frame in frames:
        if hasattr(det, "reset"):
            det.reset()  # independent frames: no tracking window
        found = det(frame)
        out.append(np.asarray(getattr(found, "boxes", found)).reshape(-1, 5))
    n = max(len(frames), 1)
    return out, (time.process_time() - c0) / n * 1e3, (time.perf_counter() - w0) / n * 1e3


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=150, help="frames per set")
    ap.add_argument("--seed", type=int, default=None, help="set seed (default: the tests' 13 hard, 14 easy)")
    ap.add_argument("--sets", nargs="+", default=["hard", "easy"], choices=["hard", "easy"])
    ap.add_argument("--detectors", nargs="+", default=["yunet", "yunet-full", "yunet-level", "yunet-plain", "haar"],
                    choices=["yunet", "yunet-full", "yunet-level", "yunet-plain", "haar"])
    args = ap.parse_args()
    if not detect_sets.available():
        sys.exit(f"needs {detect_sets.LONDON} and {detect_sets.YUNET}")
    cv2.setNumThreads(1)
    dets = detectors(args.detectors)
    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; one OpenCV thread; IoU >= {detect_sets.IOU}")
    print(f"{'set':5} {'detector':12} {'found':>9} {'recall':>7} {'false':>6} {'cpu ms/frame':>13} {'wall ms/frame':>14}")
    for name in args.sets:
        build = detect_sets.hard_set if name == "hard" else detect_sets.easy_set
        data = build(args.n) if args.seed is None else build(args.n, args.seed)
        for det_name, det in dets.items():
            run(det, data.frames[:3])  # warm-up
            boxes, cpu, wall = run(det, data.frames)
            s = detect_sets.score(boxes, data.truth)
            print(f"{name:5} {det_name:12} {s['found']:>4}/{s['total']:<4} {s['recall']:7.3f} {s['false']:6d} "
                  f"{cpu:13.1f} {wall:14.1f}")


if __name__ == "__main__":
    main()
