"""SMM-EmotionNet experiments: Tables 1/4 of 002 on synthetic uni-task sets, temporal
smoothing on synthetic clips, and CK+ (real faces, subject-independent).

Run on demand (minutes on a CPU; one experiment at a time)::

    python benchmarks/smm_tables.py --workdir /tmp/smm_exp --epochs 5
    python benchmarks/smm_tables.py --workdir /tmp/smm_exp --only smoothing

Data (made with ``affectlab synth`` when missing, 64 px): three uni-task sets
``au/`` ``expr/`` ``va/`` (``--keep au|expr|va``, seeds 11/12/13, ``--n`` each), a fully
labelled test set of other identities (seed 14), and validation / test clips
(``--sequences 30 --frames 24``, seeds 21/22). Every training command is the CLI's:

* baseline: ``train --preset baseline --train au --train expr --train va --set
  sampler=multitask --lr 5e-3`` (the optimiser of smm-synth: AdamW 5e-3, cosine);
* SMM: ``train --preset smm-synth --train au --train expr --train va``;
* MSS: the same with ``--set message_space=separate``;

each evaluated with ``evaluate --data test --protocol abaw``. Smoothing: the SMM run is
evaluated on the test clips unsmoothed, ``--smooth auto`` is searched on the validation
clips (stored in the run), and the test clips are evaluated with ``--smooth stored``.
CK+ (``../shared/data/ckplus48``; skipped when absent): subject-independent 80/20 split,
the AUs with >= 100 positives, baseline vs SMM. Nothing trained on CK+ is kept beyond
the work directory. Results go to ``WORKDIR/results.json`` and are printed as tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # shared CPUs: one thread per experiment

ROOT = Path(__file__).resolve().parents[1]
CKPLUS = ROOT.parent / "shared" / "data" / "ckplus48"


def sh(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("affectlab")), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def synth(work: Path, n: int) -> None:
    sets = [
        ("au", ["--n", str(n), "--seed", "11", "--keep", "au"]),
        ("expr", ["--n", str(n), "--seed", "12", "--keep", "expr"]),
        ("va", ["--n", str(n), "--seed", "13", "--keep", "va"]),
        ("test", ["--n", str(max(n * 3 // 5, 300)), "--seed", "14"]),
        ("seq_val", ["--sequences", "30", "--frames", "24", "--seed", "21"]),
        ("seq_test", ["--sequences", "30", "--frames", "24", "--seed", "22"]),
    ]
    for name, extra in sets:
        if not (work / name / "labels.csv").is_file():
            sh("synth", "--out", str(work / name), "--size", "64", "-q", *extra)


def _evaluate(run: Path, data: str, **kw):
    import warnings

    from affectlab.train.engine import run_evaluation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # abaw_mtl on a non-ABAW label space warns
        return run_evaluation(str(run), data, progress=False, **kw)


def _row(m: dict) -> dict:
    return {k: m.get(k) for k in ("au_f1_mean", "expr_f1_macro", "valence_ccc", "arousal_ccc", "abaw_mtl", "expr_acc")}


def table1(work: Path, epochs: int, results: dict, extra: list[str] = (), batch_size: int = 48,
           baseline_lr: str = "5e-3") -> None:
    trains = [f"manifest:{work / t / 'labels.csv'}" for t in ("au", "expr", "va")]
    tr = [x for t in trains for x in ("--train", t)]
    common = [*tr, "--epochs", str(epochs), "--batch-size", str(batch_size), "-q", "--seed", "0", *extra]
    runs = {
        "SMM": ["--preset", "smm-synth"],
        "MSS": ["--preset", "smm-synth", "--set", "message_space=separate"],
        "baseline": ["--preset", "baseline", "--set", "sampler=multitask", "--lr", baseline_lr],
    }
    test = f"manifest:{work / 'test' / 'labels.csv'}"
    for name, args in runs.items():
        run = work / "runs" / name
        t0 = time.time()
        if not (run / "model.ckpt").is_file():
            sh("train", *args, *common, "--out", str(run))
        res = _evaluate(run, test, protocol="abaw")
        results.setdefault("table1", {})[name] = {**_row(res.metrics), "train_s": round(time.time() - t0)}
        print(name, results["table1"][name], flush=True)


def smoothing(work: Path, results: dict) -> None:
    run = work / "runs" / "SMM"
    val = f"manifest:{work / 'seq_val' / 'labels.csv'}"
    test = f"manifest:{work / 'seq_test' / 'labels.csv'}"
    out = {}
    plain = _evaluate(run, test, protocol="abaw")
    out["test_mu0"] = _row(plain.metrics)
    for level in ("outputs", "features"):
        searched = _evaluate(run, val, protocol="abaw", smooth="auto", smooth_level=level)
        cv = {t: s["heldout_scores"] for t, s in searched.smoothing["search"].items()}
        raw = {t: s["unsmoothed_scores"] for t, s in searched.smoothing["search"].items()}
        sm = _evaluate(run, test, protocol="abaw", smooth="stored", smooth_level=level)
        out[level] = {
            "mu": searched.smoothing["mu"],
            "val_cv_heldout": cv,
            "val_cv_mu0": raw,
            "test_smoothed": _row(sm.metrics),
        }
        print(level, out[level], flush=True)
    results["smoothing"] = out


def ckplus(work: Path, epochs: int, results: dict) -> None:
    if not CKPLUS.is_dir():
        print("CK+ not found; skipped", flush=True)
        return
    import numpy as np

    from affectlab.data.datasets import load_dataset
    from affectlab.data.schema import LabelSpace
    from affectlab.train.config import resolve_config
    from affectlab.train.engine import evaluate, train

    ds = load_dataset(f"ckplus:{CKPLUS}")
    pos = (np.asarray(ds.au_targets) == 1).sum(axis=0)
    aus = tuple(a for a, p in zip(ds.label_space.aus, pos) if p >= 100)
    ds = ds.with_label_space(LabelSpace(expressions=ds.label_space.expressions, aus=aus, va=False))
    trainval, test = ds.split_by("subject", (0.8, 0.2), seed=0)
    tr, val = trainval.split_by("subject", (0.85, 0.15), seed=1)
    out = {"aus": list(aus), "n_train": len(tr), "n_val": len(val), "n_test": len(test)}
    for name, preset, sets in (
        ("baseline", "baseline", ["lr=5e-3"]),
        ("SMM", "smm-synth", ["sampler=shuffle"]),
    ):
        run = work / "runs" / f"ckplus_{name}"
        if not (run / "model.ckpt").is_file():
            cfg = resolve_config(preset=preset, options={"epochs": epochs, "batch_size": 48, "seed": 0}, sets=sets)
            train(cfg, run, train_data=tr, val_data=val, progress=False)
        res = evaluate(str(run), test, progress=False)
        m = res.metrics
        out[name] = {"expr_acc": m.get("expr_acc"), "expr_f1_macro": m.get("expr_f1_macro"),
                     "au_f1_mean": m.get("au_f1_mean"), "au_f1": m.get("au_f1")}
        print(name, {k: v for k, v in out[name].items() if k != "au_f1"}, flush=True)
    results["ckplus"] = out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("smm_exp"))
    p.add_argument("--n", type=int, default=1500, help="images per uni-task set")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--ck-epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=48, help="table1 batch (a multiple of 3)")
    p.add_argument("--baseline-lr", default="5e-3", help="table1 baseline learning rate (smm-synth's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every table1 run, e.g. --set backbone=builtin:cnn-grid")
    p.add_argument("--only", choices=["table1", "smoothing", "ckplus"], action="append")
    a = p.parse_args()
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = a.only or ["table1", "smoothing", "ckplus"]
    # one results file per step list, so steps can run in separate processes
    path = work / ("results.json" if a.only is None else f"results_{'_'.join(steps)}.json")
    results = json.loads(path.read_text()) if path.is_file() else {}
    if "table1" in steps or "smoothing" in steps:
        synth(work, a.n)
    for step in steps:
        if step == "table1":
            table1(work, a.epochs, results, [x for kv in a.sets for x in ("--set", kv)], a.batch_size,
                   a.baseline_lr)
        elif step == "smoothing":
            smoothing(work, results)
        else:
            ckplus(work, a.ck_epochs, results)
        path.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
