"""Per-AU ROC-AUC and F1 of ``affectlab.perception.au`` against CK+ FACS codes.

CK+48 images (48x48 grey crops of the last three frames of each sequence) are upscaled to
256 px and padded, run through YuNet + the MediaPipe landmarker, and the AU probabilities
compared with the AUs coded at the sequence's peak frame (``labels_emotion_aus.csv``;
the codes describe the last frame exactly and the two before it approximately).
CK+ is only measured here: nothing is fitted on it. ROC-AUC and F1 (at
``AU_THRESHOLD``) come from scikit-learn; the table is printed as Markdown, also for AUs the
module does not report (scored with the candidate mappings of ``CANDIDATES``).

    python benchmarks/au_ckplus.py [--last-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from calibrate_au import landmark_faces  # noqa: E402

from affectlab.perception.au import AU_THRESHOLD, AUS, au_probabilities  # noqa: E402
from affectlab.perception.landmarks import BLENDSHAPE_NAMES  # noqa: E402

#: Scores tried for the AUs that are not reported (why they are not: their AUC here).
CANDIDATES = {
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU24": ("mouthPressLeft", "mouthPressRight"),
    "AU26": ("jawOpen",),
    "AU9 (noseSneer)": ("noseSneerLeft", "noseSneerRight"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ckplus48")
    ap.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument("--last-only", action="store_true", help="only the peak (last) frame of each sequence")
    args = ap.parse_args()
    df = pd.read_csv(args.data / "labels_emotion_aus.csv")
    if args.last_only:
        df = df[df.is_last_frame == 1].reset_index(drop=True)
    coded = df.aus.fillna("").str.split()
    L, B = landmark_faces([args.data / f for f in df.file], args.models)
    ok = np.isfinite(B[:, 0])
    print(f"{ok.sum()}/{len(df)} CK+ images with landmarks; {df.subject.nunique()} subjects\n")
    prob = au_probabilities(B[ok], L[ok])
    rows = []
    for j, au in enumerate(AUS):
        y = np.array([au in c for c in coded])[ok]
        if y.sum() == 0:
            rows.append((au, 0, np.nan, np.nan, "reported"))
            continue
        rows.append((au, int(y.sum()), roc_auc_score(y, prob[:, j]),
                     f1_score(y, prob[:, j] >= AU_THRESHOLD), "reported"))
    for au, names in CANDIDATES.items():
        y = np.array([au.split()[0] in c for c in coded])[ok]
        score = B[ok][:, [BLENDSHAPE_NAMES.index(n) for n in names]].mean(axis=1)
        rows.append((au, int(y.sum()), roc_auc_score(y, score), np.nan, "not reported: " + "+".join(names)))
    print("| AU | positives | ROC-AUC | F1 | |")
    print("|---|---|---|---|---|")
    for au, n, auc, f1, note in rows:
        f1s = "" if not np.isfinite(f1) else f"{f1:.3f}"
        print(f"| {au} | {n} | {auc:.3f} | {f1s} | {note} |")
    rep = [r for r in rows if r[4] == "reported" and np.isfinite(r[2])]
    print(f"\nmean over the {len(rep)} reported AUs: ROC-AUC {np.mean([r[2] for r in rep]):.3f}, "
          f"F1 {np.mean([r[3] for r in rep]):.3f}")


if __name__ == "__main__":
    main()
