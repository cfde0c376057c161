"""Speed of the default real-face pipeline: decode -> YuNet -> landmarks/pose/AUs -> expression net -> table.

Builds a 640x480 video with one real face at run time (a London photograph, CC-BY 4.0,
DeBruine & Jones 2017, pasted on a textured background and moving a little every frame),
then, each in a fresh process (so peak memory is that run's):

* ``affectlab``: ``affectlab.analyze(video, out=table.csv)`` with no model and no detector
  given: the default stack (YuNet, the MediaPipe landmarker's pose and AUs, the face-api
  expression net when their assets are present), decode + detect one frame ahead in a
  worker thread, faces batched to the expression net;
* ``plain``: the same models written plainly in one thread — PyAV decode, YuNet, landmarker +
  pose + AUs, the expression net one face at a time, rows to a CSV at the end.

Prints frames/s (wall clock), ms per frame of each stage (``decode`` and ``detect`` run in the
worker thread, overlapping the others), and the peak resident memory, for a 1-minute and a
10-minute video (memory should not grow with length).

    python benchmarks/bench_pipeline.py                    # 1 and 10 minutes
    python benchmarks/bench_pipeline.py --minutes 0.5 --modes affectlab plain
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

SHARED = Path(__file__).resolve().parents[2] / "shared"
LONDON = SHARED / "data" / "london" / "images" / "001_neutral.jpg"
W, H, FPS = 640, 480, 30


def face_patch(side: int = 220) -> np.ndarray:
    """The London photo's face region, or a synthetic face when ../shared is absent."""
    import cv2

    if LONDON.exists():
        img = cv2.imread(str(LONDON))[:, :, ::-1]
        crop = img[60:460, 56:456]  # head and shoulders of the 512 px photo
        return np.ascontiguousarray(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA))
    from affectlab.data.synth import sample_batch

    images, _ = sample_batch(1, seed=0, size=side)
    return images[0]


def make_video(path: Path, minutes: float) -> int:
    """The London face drifting on 640x480 (the video maker of :mod:`bench_analyze`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_analyze import make_video as make

    return make(path, minutes, face=face_patch(), centre=(210, 130), amplitude=(100, 30))


def run_affectlab(video: str, out: str) -> dict:
    import torch

    import affectlab

    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), time.process_time()
    table = affectlab.analyze(video, out=out, progress=False, keep=False, threads=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = table.model_info["stats"]
    return {"frames": stats["frames"], "faces": stats["faces"], "wall_s": wall, "cpu_s": cpu, "seconds": stats["seconds"],
            "model": table.model_info["model"], "detector": table.model_info["detector"],
            "columns": len(table.columns)}


def run_plain(video: str, out: str) -> dict:
    """The same models, one thread, one face at a time, written without affectlab's pipeline."""
    import cv2
    import pandas as pd
    import torch

    from affectlab.analyze.defaults import resolve_default_model
    from affectlab.analyze.inputs import iter_frames
    from affectlab.perception.align import Framing, frame_faces
    from affectlab.perception.au import au_probabilities
    from affectlab.perception.detectors import Faces
    from affectlab.perception.landmarks import FaceLandmarker
    from affectlab.perception.pose import GEOMETRY_MEMBER, HeadPose
    from affectlab.runtime.predictor import Predictor
    from affectlab.runtime.assets import asset_path

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    predictor = Predictor.load(resolve_default_model())
    framing = Framing.from_dict(getattr(predictor.preprocessing, "framing", None), margin=0.2)
    yunet = cv2.FaceDetectorYN.create(str(asset_path("yunet")), "", (W, H), 0.6, 0.3, 50)
    landmarker = FaceLandmarker()
    pose = HeadPose(landmarker.members[GEOMETRY_MEMBER])
    seconds = dict(decode=0.0, detect=0.0, landmarks=0.0, model=0.0, table=0.0)
    rows = []
    wall, cpu = time.perf_counter(), time.process_time()
    frames = iter_frames(video)
    n = faces_n = 0
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        seconds["decode"] += t1 - t0
        if frame is None:
            break
        n += 1
        _, f = yunet.detect(np.ascontiguousarray(frame.image[:, :, ::-1]))
        f = np.zeros((0, 15)) if f is None else f
        t2 = time.perf_counter()
        seconds["detect"] += t2 - t1
        for row in f:
            faces_n += 1
            box, kp = row[None, :4], row[None, 4:14].reshape(1, 5, 2)
            t3 = time.perf_counter()
            res = landmarker(frame.image, box, kp)
            ypr = pose(res.landmarks)[0]
            aus = au_probabilities(res.blendshapes, res.landmarks)[0]
            t4 = time.perf_counter()
            crop = frame_faces(frame.image, Faces(np.c_[box, row[14:15]], kp), predictor.input_size, framing)
            prob = predictor.predict(crop, batch_size=1)["expr_prob"][0]
            t5 = time.perf_counter()
            rows.append([frame.index, *row[:5], *prob, *ypr, *aus])
            seconds["landmarks"] += t4 - t3
            seconds["model"] += t5 - t4
            seconds["table"] += time.perf_counter() - t5
    t6 = time.perf_counter()
    pd.DataFrame(rows).to_csv(out, index=False)
    seconds["table"] += time.perf_counter() - t6
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": n, "faces": faces_n, "wall_s": wall, "cpu_s": cpu, "seconds": seconds, "model": "same", "detector": "yunet"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0], help="video lengths")
    ap.add_argument("--modes", nargs="+", default=["affectlab", "plain"], choices=["affectlab", "plain"])
    ap.add_argument("--plain-minutes", type=float, default=1.0, help="run 'plain' only on videos this long")
    ap.add_argument("--run", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        mode, video, out = args.run
        res = (run_affectlab if mode == "affectlab" else run_plain)(video, out)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (before)")
    peaks = {}
    for minutes in args.minutes:
        video = folder / f"face_{minutes:g}min.mp4"
        t = time.perf_counter()
        n = make_video(video, minutes)
        print(f"\n{minutes:g}-minute video: {n} frames {W}x{H} @ {FPS} fps, built in {time.perf_counter() - t:.0f} s")
        for mode in args.modes:
            if mode == "plain" and minutes > args.plain_minutes:
                continue
            cmd = [sys.executable, __file__, "--run", mode, str(video), str(folder / f"{mode}.csv")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
            out = proc.stdout
            res = json.loads(out.strip().splitlines()[-1])
            peaks[(mode, minutes)] = res["peak_rss_mb"]
            per = ", ".join(f"{k} {1000 * v / res['frames']:.2f}" for k, v in res["seconds"].items())
            print(f"  {mode:9s}: {res['frames'] / res['wall_s']:.1f} frames/s, {1000 * res['cpu_s'] / res['frames']:.1f} "
                  f"CPU-ms/frame ({res['faces']} faces in "
                  f"{res['frames']} frames; model {res['model']}, detector {res['detector']}); "
                  f"ms/frame: {per}; peak RSS {res['peak_rss_mb']:.0f} MB; load {os.getloadavg()[0]:.1f}")
        video.unlink()
    runs = sorted(m for mode, m in peaks if mode == "affectlab")
    if len(runs) >= 2:
        a, b = peaks[("affectlab", runs[0])], peaks[("affectlab", runs[-1])]
        print(f"\npeak RSS {runs[-1]:g} min / {runs[0]:g} min: {b / a:.3f}")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
