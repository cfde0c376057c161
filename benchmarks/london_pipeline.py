"""The default analyze pipeline on the London face set: faces found, AU12 and happiness contrasts.

``../shared/data/london``: 102 adults photographed neutral and smiling (CC-BY 4.0; DeBruine &
Jones 2017, doi:10.6084/m9.figshare.5047666.v5). Runs ``affectlab.analyze`` with no model
and no detector given (the default stack of ``affectlab.analyze.defaults``) and prints:

* photos with a face (at least one row with ``face >= 0``);
* for each person, whether AU12 (landmarker) of the smiling photo is above the neutral one;
* ROC-AUC (scikit-learn) of ``expr_happiness`` for smiling vs neutral photos;
* the same for AU12 and the share of faces with landmarks.

    python benchmarks/london_pipeline.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def london_figures(data: Path, progress: bool = False) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    import affectlab

    labels = pd.read_csv(data / "labels.csv")
    paths = [str(data / p) for p in labels.path]
    table = affectlab.analyze(paths, progress=progress)
    faces = table[table.face >= 0]
    # one face per photo: the surest
    best = faces.sort_values("score", ascending=False).drop_duplicates("input").set_index("input")
    labels = labels.rename(columns={"expression": "label"})
    labels["input"] = paths
    rows = labels.join(best, on="input")
    found = rows.face.notna()
    smiling = (rows.label == "happiness").to_numpy()
    pairs = rows.pivot_table(index="subject", columns="label", values="AU12", aggfunc="first").dropna()
    return {
        "photos": len(rows),
        "with_face": int(found.sum()),
        "with_landmarks": int(np.isfinite(rows.pose_yaw.to_numpy(dtype=float)).sum()) if "pose_yaw" in rows else 0,
        "au12_pairs": len(pairs),
        "au12_smile_above_neutral": float((pairs["happiness"] > pairs["neutral"]).mean()),
        "happiness_auc": float(roc_auc_score(smiling[found], rows.expr_happiness[found].fillna(0))),
        "au12_auc": float(roc_auc_score(smiling[found], rows.AU12[found].fillna(0))),
        "model": table.model_info["model"],
        "detector": table.model_info["detector"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "london")
    args = ap.parse_args()
    for k, v in london_figures(args.data, progress=True).items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
