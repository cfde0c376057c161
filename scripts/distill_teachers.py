"""Teacher outputs for ``affectlab-base`` v2, computed once into a cache outside the repository.

For every image of ``../shared/data/facial_expressions`` (training + held-out identities),
``../shared/data/london`` and ``../shared/data/ckplus48`` (evaluation only) this writes:

* the YuNet face (box, 5 keypoints, score; the whole image when YuNet finds none),
* a *canvas*: a square crop of side ``CANVAS_SCALE`` x the box's longer side, centred on
  the box, resized to ``CANVAS_PX`` (zero padding outside the photograph, as
  :func:`affectlab.data.transforms.crop_face`); the student's framings (standard,
  tight, loose) are all sub-windows of it, so augmentation never re-reads the photograph,
* the face-api expression net's logits on the box (7 classes, no contempt;
  :mod:`affectlab.methods.faceapi`),
* the FaceLandmarker's 478 landmarks (canvas pixels) and 52 blendshapes
  (:class:`affectlab.perception.landmarks.FaceLandmarker` on the YuNet face; NaN when
  the landmarker finds no face in the ROI).

The teachers' files come from the asset hub (``affectlab models fetch`` or
``affectlab models add``; ``$AFFECTLAB_HOME`` seeded from ``../shared/models`` here).

Usage::

    python scripts/distill_teachers.py --cache /work/distill-cache

Nothing here goes into the repository (crops of real people).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
MODELS = SHARED / "models"

CANVAS_SCALE = 1.8
CANVAS_PX = 144
#: the order of the cached face-api logits: affectlab's canonical order without contempt
#: (:func:`affectlab.methods.faceapi.faceapi_label_space`)
FACEAPI_CLASSES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")


# ---------------------------------------------------------------------------------------
# teachers
# ---------------------------------------------------------------------------------------

class YuNet:
    """The largest face of a training photograph, by :class:`affectlab.perception.detectors.YuNetDetector`.

    The framing policy for these small close-ups (not the detector) lives here: the face can
    touch the border and fill the image, so the photograph is padded by a quarter on
    every side and brought to >= 320 px before detection; the detector runs plain
    (threshold 0.6, no upscale, no rotated retry, no keypoint refinement, full resolution:
    the settings the cache of the shipped model was built with).
    """

    def __init__(self, path: Path):
        from affectlab.perception.detectors import YuNetDetector

        self.det = YuNetDetector(path, score_threshold=0.6, nms_threshold=0.3, upscale_below=0, retry_angles=(),
                                 refine_above=0, detect_size=0)

    def __call__(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        pad = int(round(0.25 * max(h, w)))
        big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        s = max(1.0, 320.0 / max(big.shape[:2]))
        if s != 1.0:
            big = cv2.resize(big, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        faces = self.det(big)
        if not len(faces.boxes):
            return None
        b = faces.boxes
        i = int(np.argmax(b[:, 2] * b[:, 3] * b[:, 4]))
        box = b[i, :4] / s - np.array([pad, pad, 0, 0])
        kps = faces.keypoints[i] / s - pad
        return box, kps, float(b[i, 4])


def faceapi_input(rgb: np.ndarray, box) -> np.ndarray:
    """face-api's framing: the detection box, zero-padded to a square (centred), 112 px."""
    x, y, w, h = box
    side = max(w, h)
    cx, cy = x + w / 2, y + h / 2
    return _square(rgb, cx, cy, side, 112)


def _square(rgb, cx, cy, side, px):
    """Square window of ``side`` pixels centred at (cx, cy), resized to ``px`` (zeros outside)."""
    s = px / side
    m = np.array([[s, 0, px / 2 - s * cx], [0, s, px / 2 - s * cy]], dtype=np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(rgb, m, (px, px), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------

def _items(name: str):
    import pandas as pd

    if name == "fe":
        t = pd.read_csv(DATA / "facial_expressions" / "labels.csv")
        return [(str(DATA / "facial_expressions" / "images" / p), e.strip().lower()) for p, e in zip(t["image"], t["expression"])], t
    if name == "london":
        t = pd.read_csv(DATA / "london" / "labels.csv")
        return [(str(DATA / "london" / p), e) for p, e in zip(t["path"], t["expression"])], t
    if name == "ckplus":
        t = pd.read_csv(DATA / "ckplus48" / "labels_emotion_aus.csv")
        return [(str(DATA / "ckplus48" / f), e) for f, e in zip(t["file"], t["emotion"])], t
    raise SystemExit(f"unknown set {name}")


def build(name: str, cache: Path, limit: int | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    items, table = _items(name)
    if limit:
        items, table = items[:limit], table.iloc[:limit]
    n = len(items)
    from affectlab.methods.faceapi import faceapi_label_space, load_faceapi_expression
    from affectlab.perception.landmarks import FaceLandmarker
    from affectlab.runtime.assets import asset_path

    assert faceapi_label_space().expressions == FACEAPI_CLASSES
    det = YuNet(asset_path("yunet"))
    fa = load_faceapi_expression(asset_path("faceapi-expression"), asset_path("faceapi-expression-manifest"))
    lm = FaceLandmarker(asset_path("face-landmarker"))
    canvas = np.lib.format.open_memmap(cache / f"{name}_canvas.npy", mode="w+", dtype=np.uint8,
                                       shape=(n, CANVAS_PX, CANVAS_PX, 3))
    boxes = np.zeros((n, 5), np.float32)
    kps = np.zeros((n, 5, 2), np.float32)
    found = np.zeros(n, bool)
    logits = np.zeros((n, 7), np.float32)
    marks = np.zeros((n, 478, 3), np.float32)
    mscore = np.zeros(n, np.float32)
    blend = np.zeros((n, 52), np.float32)
    t0 = time.time()
    for i, (path, _) in enumerate(items):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{path}: unreadable image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        hit = det(rgb)
        if hit is None:
            h, w = rgb.shape[:2]
            box, kp, sc = np.array([0, 0, w, h], float), np.full((5, 2), np.nan), 0.0
        else:
            box, kp, sc = hit
            found[i] = True
        boxes[i, :4], boxes[i, 4], kps[i] = box, sc, kp
        cx, cy, side = box[0] + box[2] / 2, box[1] + box[3] / 2, max(box[2], box[3])
        canvas[i] = _square(rgb, cx, cy, CANVAS_SCALE * side, CANVAS_PX)
        x = torch.from_numpy(faceapi_input(rgb, box).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            logits[i] = fa({"image": x}).expr_logits[0].numpy()
        res = lm(rgb, box[None], None if hit is None else kp[None])
        pts = res.landmarks[0].copy()
        # landmarks -> canvas pixels (a similarity: the AU geometry is scale-free)
        k = CANVAS_PX / (CANVAS_SCALE * side)
        pts[:, :2] = (pts[:, :2] - np.array([cx, cy])) * k + CANVAS_PX / 2
        pts[:, 2] *= k
        marks[i], mscore[i], blend[i] = pts, res.presence[0], res.blendshapes[0]
        if i % 500 == 0:
            print(f"{name} {i}/{n} {time.time() - t0:.0f}s", flush=True)
    canvas.flush()
    np.savez(cache / f"{name}_teachers.npz", boxes=boxes, kps=kps, found=found, faceapi_logits=logits,
             faceapi_classes=np.array(FACEAPI_CLASSES),
             landmarks=marks, landmark_score=mscore, blendshapes=blend)
    table.to_csv(cache / f"{name}_labels.csv", index=False)
    print(f"{name}: {n} images, YuNet found {found.sum()}, {time.time() - t0:.0f}s", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path("/work/distill-cache"))
    p.add_argument("--sets", nargs="+", default=["london", "ckplus", "fe"])
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    a.cache.mkdir(parents=True, exist_ok=True)
    for s in a.sets:
        build(s, a.cache, a.limit)


if __name__ == "__main__":
    main()
