"""Teacher outputs for ``affectlab-base`` v2, computed once into a cache outside the repository.

For every image of ``../shared/data/facial_expressions`` (training + held-out identities),
``../shared/data/london`` and ``../shared/data/ckplus48`` (evaluation only) this writes:

* the YuNet face (box, 5 keypoints, score; the whole image when YuNet finds none),
* a *canvas*: a square crop of side ``CANVAS_SCALE`` x the box's longer side, centred on
  the box, resized to ``CANVAS_PX`` (zero padding outside the photograph, as
  :func:`affectlab.data.transforms.crop_face`); the student's framings (standard,
  tight, loose) are all sub-windows of it, so augmentation never re-reads the photograph,
* the face-api expression net's logits on the box (7 classes, no contempt),
* the FaceLandmarker's 478 landmarks (canvas pixels) and 52 blendshapes.

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
#: face-api order (its manifest); no contempt
FACEAPI_CLASSES = ("neutral", "happiness", "sadness", "anger", "fear", "disgust", "surprise")


# ---------------------------------------------------------------------------------------
# teachers (the shared modules replace these when they land: see _teachers())
# ---------------------------------------------------------------------------------------

class YuNet:
    """Largest-score YuNet face of a photograph (small photographs are padded and upscaled)."""

    def __init__(self, path: Path):
        self.det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold=0.6, nms_threshold=0.3)

    def __call__(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        # close-ups: the face can touch the border and be tiny in pixels; pad a quarter and
        # bring the longer side to >= 320 px so YuNet's anchors fit
        pad = int(round(0.25 * max(h, w)))
        big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        s = max(1.0, 320.0 / max(big.shape[:2]))
        if s != 1.0:
            big = cv2.resize(big, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(big, cv2.COLOR_RGB2BGR)
        self.det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.det.detect(bgr)
        if faces is None or len(faces) == 0:
            return None
        f = faces[np.argmax(faces[:, 2] * faces[:, 3] * faces[:, 14])].astype(np.float64)
        box = f[:4] / s - np.array([pad, pad, 0, 0])
        kps = f[4:14].reshape(5, 2) / s - pad
        return box, kps, float(f[14])


def faceapi_net(bin_path: Path, manifest_path: Path):
    """face-api.js FaceExpressionNet as a torch module returning its 7 logits."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    manifest = json.loads(manifest_path.read_text())
    raw = np.frombuffer(bin_path.read_bytes(), dtype=np.uint8)
    tensors, off = {}, 0
    for spec in manifest[0]["weights"]:
        n = int(np.prod(spec["shape"]))
        q = spec.get("quantization")
        if q:
            vals = raw[off : off + n].astype(np.float32) * q["scale"] + q["min"]
            off += n
        else:
            vals = raw[off : off + 4 * n].view(np.float32).copy()
            off += 4 * n
        tensors[spec["name"]] = torch.from_numpy(vals.reshape(spec["shape"]))

    def same_pad(x, stride):
        # TensorFlow 'same' padding (3x3): the extra row/column goes bottom/right
        if stride == 1:
            return F.pad(x, (1, 1, 1, 1))
        h = x.shape[-1]
        total = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
        return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = {k: v for k, v in tensors.items()}

        def sep(self, x, p, stride):
            dw = self.t[p + "/depthwise_filter"].permute(2, 3, 0, 1)  # [C,1,3,3]
            pw = self.t[p + "/pointwise_filter"].permute(3, 2, 0, 1)  # [O,C,1,1]
            x = F.conv2d(same_pad(x, stride), dw, stride=stride, groups=x.shape[1])
            return F.conv2d(x, pw) + self.t[p + "/bias"].view(1, -1, 1, 1)

        def block(self, x, name, first):
            if first:
                w = self.t[name + "/conv0/filters"].permute(3, 2, 0, 1)
                out1 = F.conv2d(same_pad(x, 2), w, stride=2) + self.t[name + "/conv0/bias"].view(1, -1, 1, 1)
            else:
                out1 = self.sep(x, name + "/conv0", 2)
            out1 = F.relu(out1)
            out2 = self.sep(out1, name + "/conv1", 1)
            out3 = self.sep(F.relu(out1 + out2), name + "/conv2", 1)
            out4 = self.sep(F.relu(out1 + out2 + out3), name + "/conv3", 1)
            return F.relu(out1 + out2 + out3 + out4)

        def forward(self, x):  # x: [B,3,112,112] RGB 0..255
            mean = torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)
            x = (x - mean) / 255.0
            for i in range(4):
                x = self.block(x, f"dense{i}", i == 0)
            x = F.avg_pool2d(x, 7, 2).flatten(1)
            return x @ self.t["fc/weights"] + self.t["fc/bias"]

    return Net().eval()


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


class Landmarker:
    """FaceLandmarker's landmark + blendshape models (LiteRT) on a face crop."""

    SUBSET = np.array([
        0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67,
        70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148,
        149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191,
        195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297,
        300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374,
        375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415,
        454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
    ])

    def __init__(self, task: Path, tmp: Path):
        import zipfile

        from ai_edge_litert.interpreter import Interpreter

        tmp.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(task) as z:
            for name in ("face_landmarks_detector.tflite", "face_blendshapes.tflite"):
                (tmp / name).write_bytes(z.read(name))
        self.lm = Interpreter(model_path=str(tmp / "face_landmarks_detector.tflite"), num_threads=1)
        self.bs = Interpreter(model_path=str(tmp / "face_blendshapes.tflite"), num_threads=1)
        self.lm.allocate_tensors()
        self.bs.allocate_tensors()
        self.lm_in = self.lm.get_input_details()[0]["index"]
        outs = self.lm.get_output_details()
        self.lm_out = next(d["index"] for d in outs if d["shape"][-1] == 1434)
        self.lm_score = next(d["index"] for d in outs if tuple(d["shape"]) == (1, 1, 1, 1))
        self.bs_in = self.bs.get_input_details()[0]["index"]
        self.bs_out = self.bs.get_output_details()[0]["index"]

    def __call__(self, crop256: np.ndarray):
        """478 x 3 landmarks (crop pixels), presence score, 52 blendshapes."""
        self.lm.set_tensor(self.lm_in, (crop256.astype(np.float32) / 255.0)[None])
        self.lm.invoke()
        pts = self.lm.get_tensor(self.lm_out).reshape(478, 3).copy()
        score = float(1 / (1 + np.exp(-self.lm.get_tensor(self.lm_score).ravel()[0])))
        self.bs.set_tensor(self.bs_in, pts[self.SUBSET, :2][None].astype(np.float32))
        self.bs.invoke()
        return pts, score, self.bs.get_tensor(self.bs_out).ravel().copy()


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
    det = YuNet(MODELS / "face_detection_yunet_2023mar.onnx")
    fa = faceapi_net(MODELS / "face-api" / "face_expression_model.bin",
                     MODELS / "face-api" / "face_expression_model-weights_manifest.json")
    lm = Landmarker(MODELS / "face_landmarker.task", cache / "litert")
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
        x = torch.from_numpy(faceapi_input(rgb, box).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            logits[i] = fa(x)[0].numpy()
        # the landmarker's ROI: the box enlarged 1.5x (margin 0.25), 256 px
        crop = _square(rgb, cx, cy, 1.5 * side, 256)
        pts, ms, bs = lm(crop)
        # landmarks -> canvas pixels (both are squares centred on the box centre)
        k = (CANVAS_PX / (CANVAS_SCALE * side)) * (1.5 * side / 256)
        pts[:, :2] = (pts[:, :2] - 128) * k + CANVAS_PX / 2
        marks[i], mscore[i], blend[i] = pts, ms, bs
        if i % 500 == 0:
            print(f"{name} {i}/{n} {time.time() - t0:.0f}s", flush=True)
    canvas.flush()
    np.savez(cache / f"{name}_teachers.npz", boxes=boxes, kps=kps, found=found, faceapi_logits=logits,
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
