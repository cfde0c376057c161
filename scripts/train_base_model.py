"""Reproduce the packaged ``affectlab-base`` model from ``../shared/data/facial_expressions``.

Steps (each one is also runnable alone)::

    python scripts/train_base_model.py prepare   # detector crops + subject-disjoint manifests
    python scripts/train_base_model.py train     # affectlab train (the documented command)
    python scripts/train_base_model.py evaluate  # held-out + CK+ metrics, confusion matrices
    python scripts/train_base_model.py ship      # copy the weights into src/affectlab/models/
    python scripts/train_base_model.py all       # the four in order

Everything is written under ``--work`` (default ``build/affectlab-base``; never commit it:
it holds face crops). Crops are made by affectlab's own analysis code
(:class:`affectlab.analyze.detectors.HaarDetector` + :func:`crop_faces`, the margin and
size ``affectlab analyze`` uses), so training sees the framing analysis produces. When
the detector finds no face the whole photograph is used as the crop (these images are
already tight face photographs; ``affectlab analyze --detector none`` frames them the
same way), and the manifest records ``detected = 0`` for those rows.

The validation split holds out 15% of the identities (file name without the trailing
``_NNNN``), drawn with a fixed seed, so the metrics are on people never seen in training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCE = DATA / "facial_expressions"
CKPLUS = DATA / "ckplus48"
SHIPPED = ROOT / "src" / "affectlab" / "models" / "affectlab-base.pt"

SIZE = 64          # crop side written to disk (the model resizes to its 48 px input)
MARGIN = 0.2       # affectlab analyze's crop margin
VAL_FRACTION = 0.15
SPLIT_SEED = 0
MAX_PER_CLASS = 1500  # training images kept per class (only neutral and happiness have more)

#: The documented training command (``{work}`` is replaced by the work folder).
TRAIN_ARGS = [
    "train", "--method", "baseline", "--preset", "baseline",
    "--train", "manifest:{work}/train.csv", "--val", "manifest:{work}/val.csv",
    "--out", "{work}/{run}", "--tasks", "expr", "--epochs", "10", "--seed", "0",
    "--set", "sampler=balanced", "--set", "train_transform=faces", "--set", "monitor=expr_f1_macro",
    "--set", "class_weighted=false", "--quiet",
]


def identity(name: str) -> str:
    """``George_W_Bush_0001.jpg`` -> ``George_W_Bush`` (the rule of the data README)."""
    stem = Path(name).stem
    head, sep, tail = stem.rpartition("_")
    return head if sep and tail.isdigit() else stem


_DETECTOR = None


def _crop_one(item: tuple[str, str, str]) -> dict | None:
    """Detect the largest face of one photograph, crop it as ``affectlab analyze`` does, save it."""
    import cv2

    from affectlab.analyze.detectors import HaarDetector, crop_faces

    global _DETECTOR
    if _DETECTOR is None:
        cv2.setNumThreads(1)
        # min_face 0.3: these photographs are face close-ups; the boxes equal those of the
        # default 0.1 (checked on a sample) at half the search cost
        _DETECTOR = HaarDetector(min_face=0.3)
    name, expr, crops = item
    bgr = cv2.imread(str(SOURCE / "images" / name), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    _DETECTOR.reset()  # independent photographs: no tracking between them
    boxes = np.asarray(_DETECTOR(rgb), dtype=np.float64).reshape(-1, 5)
    if len(boxes):
        # the largest face: these photographs are centred on one person
        box, margin, found = boxes[np.argmax(boxes[:, 2] * boxes[:, 3])][None], MARGIN, 1
    else:
        h, w = rgb.shape[:2]
        box, margin, found = np.array([[0.0, 0.0, w, h, 1.0]]), 0.0, 0
    crop = crop_faces(rgb, box, SIZE, margin)[0]
    out = Path(crops) / (Path(name).stem + ".png")
    cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return {"path": f"crops/{out.name}", "expression": expr, "subject": identity(name), "detected": found}


def prepare(work: Path) -> None:
    """Detect, crop and write ``train.csv`` / ``val.csv`` manifests under ``work``."""
    from multiprocessing import Pool

    import pandas as pd
    from tqdm import tqdm

    labels = pd.read_csv(SOURCE / "labels.csv")
    labels["expression"] = labels["expression"].str.strip().str.lower()
    crops = work / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    items = [(n, e, str(crops)) for n, e in zip(labels["image"], labels["expression"])]
    with Pool(2) as pool:
        rows = [r for r in tqdm(pool.imap(_crop_one, items, chunksize=64), total=len(items), desc="crop", unit="img")
                if r is not None]
    table = pd.DataFrame(rows)
    subjects = np.array(sorted(table["subject"].unique()))
    rng = np.random.default_rng(SPLIT_SEED)
    held = set(rng.choice(subjects, size=int(round(VAL_FRACTION * len(subjects))), replace=False))
    table["split"] = np.where(table["subject"].isin(held), "val", "train")
    write_manifests(work, table)
    summary = {
        "images": int(len(table)),
        "detected": int(table["detected"].sum()),
        "subjects": int(len(subjects)),
        "val_subjects": len(held),
        "counts": {s: table[table["split"] == s]["expression"].value_counts().to_dict() for s in ("train", "val")},
    }
    (work / "prepare.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def write_manifests(work: Path, table) -> None:
    """``train.csv`` (majority classes capped at :data:`MAX_PER_CLASS`, seeded) and ``val.csv``."""
    import pandas as pd

    train = table[table["split"] == "train"]
    # neutral and happiness outnumber the rest 20:1; a capped, seeded subsample keeps the
    # run within the CPU budget and loses little (the balanced sampler would see each
    # majority image less than once per epoch anyway)
    parts = [
        g.sample(n=min(len(g), MAX_PER_CLASS), random_state=SPLIT_SEED) for _, g in train.groupby("expression", sort=True)
    ]
    pd.concat(parts).sort_values("path").to_csv(work / "train.csv", index=False)
    table[table["split"] == "val"].to_csv(work / "val.csv", index=False)


RUN = "run"  # run folder under --work (``--run`` changes it, e.g. to retrain beside the first run)


def train(work: Path) -> None:
    """Run the documented ``affectlab train`` command."""
    if (work / RUN).exists():
        shutil.rmtree(work / RUN)
    args = [a.replace("{work}", str(work)).replace("{run}", RUN) for a in TRAIN_ARGS]
    # one intra-op thread: the same arithmetic on every machine, and no spinning OpenMP
    # workers on a shared CPU
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "affectlab.cli", *args], check=True, env=env)


def _evaluate(model: Path, data: str, out: Path) -> dict:
    subprocess.run(
        [sys.executable, "-m", "affectlab.cli", "evaluate", "--model", str(model), "--data", data,
         "--json", str(out / "metrics.json"), "--per-class", "--plots", str(out)],
        check=True,
    )
    return json.loads((out / "metrics.json").read_text())


def evaluate(work: Path) -> None:
    """Held-out identities and CK+ (never trained on) with ``affectlab evaluate``; prints a summary."""
    model = work / RUN
    results = {"val": _evaluate(model, f"manifest:{work}/val.csv", work / f"eval_val_{RUN}")}
    if CKPLUS.is_dir():
        results["ckplus"] = _evaluate(model, f"ckplus:{CKPLUS}", work / f"eval_ckplus_{RUN}")
    (work / f"evaluation_{RUN}.json").write_text(json.dumps(results, indent=2))
    for name, res in results.items():
        flat = res.get("metrics", res)
        keys = [k for k in flat if isinstance(flat[k], (int, float)) and k.startswith("expr_")]
        print(name, {k: round(float(flat[k]), 4) for k in keys})


def ship(work: Path) -> None:
    """Copy the trained model file into the package (``src/affectlab/models/affectlab-base.pt``)."""
    src = work / RUN / "model.ckpt"
    size = src.stat().st_size
    if size > 10 * 1024 * 1024:
        raise SystemExit(f"{src} is {size / 2**20:.1f} MB, over the 10 MB budget of a packaged model")
    shutil.copyfile(src, SHIPPED)
    print(f"shipped {SHIPPED} ({size / 2**20:.2f} MB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "train", "evaluate", "ship", "all"])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "affectlab-base")
    parser.add_argument("--run", default=RUN, help="Run folder under --work (default: run).")
    args = parser.parse_args(argv)
    globals()["RUN"] = args.run
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = ["prepare", "train", "evaluate", "ship"] if args.step == "all" else [args.step]
    for step in steps:
        globals()[step](work)


if __name__ == "__main__":
    main()
