"""Fit the AU calibration of ``affectlab.perception.au`` on neutral faces of facial_expressions.

For every AU score (blendshape or geometry), its median and 95th percentile over faces
labelled ``neutral`` in ``../shared/data/facial_expressions`` (no AU labels are used, and
no CK+). Prints the ``CALIBRATION`` dict to paste into ``src/affectlab/perception/au.py``.

    python scripts/calibrate_au.py --n 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from affectlab.perception.au import AUS, au_scores
from affectlab.perception.landmarks import FaceLandmarker

ROOT = Path(__file__).resolve().parents[1]


def prepare(image_bgr: np.ndarray, longest: int = 256, pad: int = 64) -> np.ndarray:
    """A small face photo upscaled and padded (replicated border) so the ROI fits inside; RGB."""
    import cv2

    s = longest / max(image_bgr.shape[:2])
    img = cv2.resize(image_bgr, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(img[:, :, ::-1])


def landmark_faces(paths, models: Path, gray: bool = False):
    """YuNet's most confident face + landmarks + blendshapes of each image (NaN if none)."""
    import cv2

    det = cv2.FaceDetectorYN.create(str(models / "face_detection_yunet_2023mar.onnx"), "", (320, 320), 0.5, 0.3, 50)
    lm = FaceLandmarker(models / "face_landmarker.task")
    L = np.full((len(paths), 478, 3), np.nan)
    B = np.full((len(paths), 52), np.nan)
    for i, p in enumerate(paths):
        raw = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if raw is None:
            continue
        img = prepare(raw)
        det.setInputSize((img.shape[1], img.shape[0]))
        _, d = det.detect(np.ascontiguousarray(img[:, :, ::-1]))
        if d is None or not len(d):
            continue
        d = d[np.argmax(d[:, -1])]
        r = lm(img, d[None, :4], d[None, 4:14].reshape(1, 5, 2))
        L[i], B[i] = r.landmarks[0], r.blendshapes[0]
    return L, B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "facial_expressions")
    ap.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument("--n", type=int, default=2000, help="neutral faces to sample")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    df = pd.read_csv(args.data / "labels.csv")
    neutral = df[df.expression.str.lower() == "neutral"]
    neutral = neutral.sample(min(args.n, len(neutral)), random_state=args.seed)
    L, B = landmark_faces([args.data / "images" / f for f in neutral.image], args.models)
    ok = np.isfinite(B[:, 0])
    s = au_scores(B[ok], L[ok])
    print(f"# {ok.sum()} neutral faces of {len(neutral)} with landmarks")
    print("CALIBRATION: dict[str, tuple[float, float]] = {")
    for j, au in enumerate(AUS):
        print(f'    "{au}": ({np.median(s[:, j]):.5g}, {np.quantile(s[:, j], 0.95):.5g}),')
    print("}")


if __name__ == "__main__":
    main()
