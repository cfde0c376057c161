"""The face-api.js expression net ported to PyTorch: accuracy on real faces and ms per face.

Run on demand (needs ``../shared/models/face-api`` and ``../shared/data``)::

    python benchmarks/faceapi_expression.py              # CK+48 + facial_expressions held-out
    python benchmarks/faceapi_expression.py --skip-fe    # CK+48 only (fast)

* **CK+48** (981 grayscale 48x48 face crops, already framed faces): the crop is the input
  (upscaled to 112 px). Scored two ways: argmax over the net's 7 classes (as face-api
  reports them; the 54 contempt images can never be right), and restricted to the
  classes CK+ and the net share, which is what ``affectlab evaluate`` computes.
* **facial_expressions held-out identities**: the validation split of affectlab-base
  (``scripts/train_base_model.py``: identity = file name without ``_NNNN``, 15% of the
  identities, seed 0), framed as affectlab-base was (largest Haar face, margin 0.2; the
  whole photograph when no face is found). Accuracy and macro F1 over the 8 canonical
  classes present in the labels (contempt counts with F1 0: the net has no contempt).
* **Speed**: ``Predictor.predict`` on 112-px crops, one thread, batch 64.

Metrics are computed with scikit-learn. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FACEAPI = SHARED / "models" / "face-api"
CKPLUS = SHARED / "data" / "ckplus48"
FE = SHARED / "data" / "facial_expressions"
_CK_NAMES = {"anger": "anger", "contempt": "contempt", "disgust": "disgust", "fear": "fear", "happy": "happiness",
             "sadness": "sadness", "surprise": "surprise"}


def _scores(y, pred, labels):
    from sklearn.metrics import accuracy_score, f1_score

    return {"n": int(len(y)), "acc": round(float(accuracy_score(y, pred)), 4),
            "f1_macro": round(float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)), 4)}


def ckplus(predictor) -> dict:
    from PIL import Image

    files = sorted(CKPLUS.glob("CK+48/*/*.png"))
    y = np.array([_CK_NAMES[f.parent.name] for f in files])
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    prob = predictor.predict(images)["expr_prob"]
    classes = np.array(predictor.label_space.expressions)
    pred7 = classes[prob.argmax(1)]
    shared = [c for c in classes if c in set(y)]
    cols = [list(classes).index(c) for c in shared]
    pred_shared = np.array(shared)[prob[:, cols].argmax(1)]
    keep = np.isin(y, shared)
    data_labels = sorted(set(y))
    return {
        "argmax7_all981": _scores(y, pred7, data_labels),
        "argmax7_no_contempt": _scores(y[keep], pred7[keep], shared),
        "shared_classes_no_contempt": _scores(y[keep], pred_shared[keep], shared),
    }


def facial_expressions(predictor) -> dict:
    import cv2
    import pandas as pd

    from affectlab.perception.align import crop_faces
    from affectlab.perception.detectors import HaarDetector

    labels = pd.read_csv(FE / "labels.csv")
    labels["expression"] = labels["expression"].str.strip().str.lower()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_base_model import split  # affectlab-base's held-out identities

    val = labels[split(labels["image"])]
    cv2.setNumThreads(1)
    detector = HaarDetector(min_face=0.3)
    crops, y, found = [], [], 0
    for name, expr in zip(val["image"], val["expression"]):
        bgr = cv2.imread(str(FE / "images" / name), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        detector.reset()
        boxes = np.asarray(detector(rgb), dtype=np.float64).reshape(-1, 5)
        if len(boxes):
            box, margin = boxes[np.argmax(boxes[:, 2] * boxes[:, 3])][None], 0.2
            found += 1
        else:
            h, w = rgb.shape[:2]
            box, margin = np.array([[0.0, 0.0, w, h, 1.0]]), 0.0
        crops.append(crop_faces(rgb, box, 112, margin)[0])
        y.append(expr)
    y = np.array(y)
    prob = predictor.predict(crops)["expr_prob"]
    pred = np.array(predictor.label_space.expressions)[prob.argmax(1)]
    out = _scores(y, pred, sorted(set(y)))
    out.update(identities=len(held), haar_found=found)
    return out


def speed(predictor, n: int = 512, repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)
    crops = list(rng.integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8))
    predictor.predict(crops[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        predictor.predict(crops)
        best = min(best, time.perf_counter() - t)
    return {"ms_per_face": round(1000 * best / n, 2), "batch_size": predictor.batch_size, "threads": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-fe", action="store_true", help="skip the facial_expressions held-out set")
    args = ap.parse_args()
    import torch

    from affectlab.methods.faceapi import load_faceapi_expression
    from affectlab.runtime.predictor import Predictor

    torch.set_num_threads(1)
    method = load_faceapi_expression(FACEAPI / "face_expression_model.bin",
                                     FACEAPI / "face_expression_model-weights_manifest.json")
    predictor = Predictor.from_method(method, batch_size=64)
    result = {"ckplus48": ckplus(predictor)}
    if not args.skip_fe:
        result["facial_expressions_val"] = facial_expressions(predictor)
    result["speed"] = speed(predictor)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
