"""Which framing suits the face-api expression net: YuNet box crops with several margins vs aligned crops.

Run on demand (needs ``../shared/models`` and ``../shared/data``)::

    python benchmarks/faceapi_framing.py

On the held-out identities of ``facial_expressions`` (affectlab-base's validation split,
see ``benchmarks/faceapi_expression.py``) and on ``london`` (smiling vs neutral photos of
the same 102 people), each photo's largest YuNet face is framed as ``box`` with margin
0 / 0.1 / 0.2 / 0.3, or ``aligned`` with scale 0.8 / 1.0 (:mod:`affectlab.perception.align`),
resized to 112 px and classified. Reported: accuracy and macro F1 (scikit-learn) on
facial_expressions, and on london the ROC-AUC of ``expr_happiness`` for smiling vs neutral
and the share of people whose smiling photo gets the higher happiness. Photos where
YuNet finds no face are counted and left out of every framing alike.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faceapi_expression import FACEAPI, FE, SHARED  # noqa: E402

FRAMINGS = {
    "box m0.0": {"kind": "box", "margin": 0.0},
    "box m0.1": {"kind": "box", "margin": 0.1},
    "box m0.2": {"kind": "box", "margin": 0.2},
    "box m0.3": {"kind": "box", "margin": 0.3},
    "aligned s0.8": {"kind": "aligned", "scale": 0.8},
    "aligned s1.0": {"kind": "aligned", "scale": 1.0},
}


def largest_faces(detector, paths):
    import cv2

    from affectlab.perception.detectors import as_faces

    kept = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            kept.append(None)
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = as_faces(detector(rgb))
        if not len(faces):
            kept.append(None)
            continue
        i = int(np.argmax(faces.boxes[:, 2] * faces.boxes[:, 3]))
        kept.append((rgb, faces[i]))
    return kept


def crops(found, framing):
    from affectlab.perception.align import frame_faces

    return [frame_faces(rgb, face, 112, framing)[0] for rgb, face in found]


def main() -> None:
    import pandas as pd
    import torch
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from affectlab.methods.faceapi import load_faceapi_expression
    from affectlab.perception.detectors import create_detector
    from affectlab.runtime.predictor import Predictor

    torch.set_num_threads(1)
    method = load_faceapi_expression(FACEAPI / "face_expression_model.bin",
                                     FACEAPI / "face_expression_model-weights_manifest.json")
    predictor = Predictor.from_method(method, batch_size=64)
    names = list(predictor.label_space.expressions)
    detector = create_detector("yunet", model=SHARED / "models" / "face_detection_yunet_2023mar.onnx")

    labels = pd.read_csv(FE / "labels.csv")
    labels["expression"] = labels["expression"].str.strip().str.lower()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_base_model import split  # affectlab-base's held-out identities

    val = labels[split(labels["image"])]
    fe = largest_faces(detector, [FE / "images" / n for n in val["image"]])
    fe_y = np.array([y for y, f in zip(val["expression"], fe) if f is not None])
    fe = [f for f in fe if f is not None]

    london = pd.read_csv(SHARED / "data" / "london" / "labels.csv")
    ld = largest_faces(detector, [SHARED / "data" / "london" / p for p in london["path"]])
    ok = np.array([f is not None for f in ld])
    ld = [f for f in ld if f is not None]
    ld_table = london[ok].reset_index(drop=True)

    result = {"facial_expressions_val": {"n": len(fe_y), "no_face": int(len(val) - len(fe_y))},
              "london": {"n": len(ld), "no_face": int((~ok).sum())}, "framings": {}}
    for label, framing in FRAMINGS.items():
        prob = predictor.predict(crops(fe, framing))["expr_prob"]
        pred = np.array(names)[prob.argmax(1)]
        row = {"fe_acc": round(float(accuracy_score(fe_y, pred)), 4),
               "fe_f1_macro": round(float(f1_score(fe_y, pred, labels=sorted(set(fe_y)), average="macro",
                                                   zero_division=0)), 4)}
        happy = predictor.predict(crops(ld, framing))["expr_prob"][:, names.index("happiness")]
        smiling = (ld_table["expression"] == "happiness").to_numpy()
        row["london_auc"] = round(float(roc_auc_score(smiling, happy)), 4)
        t = ld_table.assign(h=happy)
        pairs = t.pivot_table(index="subject", columns="expression", values="h").dropna()
        row["london_pairs_smile_higher"] = round(float((pairs["happiness"] > pairs["neutral"]).mean()), 4)
        result["framings"][label] = row
        print(label, row, file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
