"""Do analysed valence/arousal track the true curves of synthetic clips, and does smoothing help?

Takes a model trained on synthetic faces and a set of synthetic clips
(``affectlab synth --sequences K --frames F``), writes each clip as an MP4 video,
analyses it with ``affectlab.analyze`` (``detector="none"``: the frames are face
crops), and compares the predicted valence/arousal with the generator's truth:
CCC per clip averaged, and over all frames. Then it picks the smoothing mu of
equation 9 by grid search over {0..10} with three-fold cross-validation over clips
(:func:`affectlab.temporal.search_mu`, the paper's protocol) and reports the held-out
CCC with the chosen mu against mu = 0.

Usage::

    affectlab synth --out clips --sequences 12 --frames 60 --size 64 --seed 7
    python benchmarks/va_tracking_synth.py --model runs/synth --clips clips
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def main(argv=None) -> None:
    import av
    from PIL import Image

    import affectlab
    from affectlab.temporal import ccc, search_mu, smooth, va_ccc_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="run directory trained on synthetic faces")
    ap.add_argument("--clips", required=True, help="folder written by affectlab synth --sequences")
    ap.add_argument("--fps", type=int, default=25)
    args = ap.parse_args(argv)
    labels = pd.read_csv(Path(args.clips) / "labels.csv")
    tmp = Path(tempfile.mkdtemp(prefix="va_tracking_"))
    videos, truths = [], []
    for vid, g in labels.groupby("video", sort=True):
        g = g.sort_values("frame")
        path = tmp / f"{vid}.mp4"
        first = np.asarray(Image.open(Path(args.clips) / g["path"].iloc[0]).convert("RGB"))
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=args.fps)
            s.width, s.height, s.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
            s.options = {"crf": "18"}
            for rel in g["path"]:
                im = np.asarray(Image.open(Path(args.clips) / rel).convert("RGB"))
                for p in s.encode(av.VideoFrame.from_ndarray(im, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        videos.append(path)
        truths.append(g[["valence", "arousal"]].to_numpy(dtype=float))
    table = affectlab.analyze(videos, args.model, detector="none", progress=False, threads=1)
    preds = [table[table["input"] == str(v)].sort_values("frame")[["valence", "arousal"]].to_numpy(dtype=float)
             for v in videos]
    per_clip = np.array([[ccc(t[:, j], p[:, j]) for j in range(2)] for t, p in zip(truths, preds)])
    allt, allp = np.concatenate(truths), np.concatenate(preds)
    print(f"{len(videos)} clips, {len(allt)} frames")
    print(f"unsmoothed: CCC valence {ccc(allt[:, 0], allp[:, 0]):.3f}, arousal {ccc(allt[:, 1], allp[:, 1]):.3f} "
          f"(all frames); per clip mean valence {np.nanmean(per_clip[:, 0]):.3f}, arousal {np.nanmean(per_clip[:, 1]):.3f}")
    res = search_mu(preds, truths, va_ccc_score)
    print(f"grid search of mu (3-fold CV over clips): fold choices {res.fold_mus}, overall best {res.best_mu:g}")
    print("held-out mean VA CCC per fold: mu=0 " + ", ".join(f"{u:.3f}" for u in res.unsmoothed_scores)
          + " | chosen mu " + ", ".join(f"{h:.3f}" for h in res.heldout_scores))
    sm = [smooth(p, res.best_mu) for p in preds]
    alls = np.concatenate(sm)
    print(f"smoothed (mu={res.best_mu:g}): CCC valence {ccc(allt[:, 0], alls[:, 0]):.3f}, "
          f"arousal {ccc(allt[:, 1], alls[:, 1]):.3f} (all frames)")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
