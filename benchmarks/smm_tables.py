"""SMM-EmotionNet experiments: Tables 1/4 of 002 on synthetic uni-task sets, temporal
smoothing on synthetic clips, and CK+ (real faces, subject-independent).

Run on demand (minutes on a CPU; one experiment at a time)::

    python benchmarks/smm_tables.py --workdir /tmp/smm_exp --epochs 10 --only table1
    python benchmarks/smm_tables.py --workdir /tmp/smm_exp --only sequences --seq-epochs 12
    python benchmarks/smm_tables.py --workdir /tmp/smm_exp --only ckplus --ck-epochs 12

Data (made with ``affectlab synth`` when missing, 64 px): three uni-task sets
``au/`` ``expr/`` ``va/`` (``--keep au|expr|va``, seeds 11/12/13, ``--n`` each), a fully
labelled test set of other identities (seed 14), and validation / test clips
(``--sequences 30 --frames 24``, seeds 21/22). Every training command is the CLI's:

* baseline: ``train --preset baseline --train au --train expr --train va --set
  sampler=multitask --lr 5e-3`` (the optimiser of smm-scratch: AdamW 5e-3, cosine);
* SMM: ``train --preset smm-scratch --train au --train expr --train va``;
* MSS: the same with ``--set message_space=separate``;

each evaluated with ``evaluate --data test --protocol abaw``. Smoothing: the SMM run is
evaluated on the test clips unsmoothed, ``--smooth auto`` is searched on the validation
clips (stored in the run), and the test clips are evaluated with ``--smooth stored``.
``sequences`` (the "must show" of temporal smoothing, with models that have signal):
SMM (``--preset smm-scratch --set sampler=shuffle``) and the baseline (``--preset
baseline``) trained on ``--seq-n`` fully labelled still images (seed 1), also scored on 1000 still images of
other identities (seed 2); for each
``--frame-noise`` level S, validation / test clips (``synth --sequences 30 --frames 24
--frame-noise S``, seeds 21 / 22, disjoint identities) are evaluated with mu = 0, mu is
searched on the validation clips (``evaluate --smooth auto``, stored in the run) and
applied to the test clips (``--smooth stored``); SMM at the features level (the paper)
and at the outputs level, the baseline at the outputs level.
CK+ (``../shared/data/ckplus48``; skipped when absent): subject-independent 80/20 split,
the AUs with >= 100 positives, baseline vs SMM (the ``baseline`` / ``smm-scratch``
presets, both ``builtin:cnn-grid``). Nothing trained on CK+ is kept beyond
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

    from affectlab.evaluate.engine import run_evaluation

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
        "SMM": ["--preset", "smm-scratch"],
        "MSS": ["--preset", "smm-scratch", "--set", "message_space=separate"],
        "baseline": ["--preset", "baseline", "--set", "embed_dim=16", "--set", "sampler=multitask", "--lr", baseline_lr],
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


def _clips(work: Path, noise: float) -> tuple[Path, Path]:
    """Validation / test clips (seeds 21 / 22) at per-frame noise ``noise``."""
    tag = "" if noise == 0 else f"_fn{noise:g}"
    dirs = work / f"seq_val{tag}", work / f"seq_test{tag}"
    for d, seed in zip(dirs, ("21", "22")):
        if not (d / "labels.csv").is_file():
            extra = [] if noise == 0 else ["--frame-noise", f"{noise:g}"]
            sh("synth", "--out", str(d), "--sequences", "30", "--frames", "24", "--seed", seed, "--size", "64",
               "-q", *extra)
    return dirs


def _task_scores(m: dict) -> dict:
    return {"expr": m.get("expr_f1_macro"), "va": m.get("va_ccc"), "au": m.get("au_f1_mean")}


def sequences(work: Path, results: dict, epochs: int, n: int, noises: list[float]) -> None:
    """Smoothing with models trained on fully labelled still images, clips at several noise levels."""
    static = work / "static"
    if not (static / "labels.csv").is_file():
        sh("synth", "--out", str(static), "--n", str(n), "--seed", "1", "--size", "64", "-q")
    common = ["--train", f"manifest:{static / 'labels.csv'}", "--epochs", str(epochs), "--batch-size", "64",
              "--seed", "0", "-q"]
    models = {
        "SMM": ["--preset", "smm-scratch", "--set", "sampler=shuffle"],
        "baseline": ["--preset", "baseline", "--set", "embed_dim=16"],
    }
    out = results.setdefault("sequences", {})
    for name, args in models.items():
        run = work / "runs" / f"seq_{name}"
        if not (run / "model.ckpt").is_file():
            t0 = time.time()
            sh("train", *args, *common, "--out", str(run))
            out.setdefault("train_s", {})[name] = round(time.time() - t0)
    # the same models on still images of new identities (what they learnt, before any smoothing)
    still = work / "static_test"
    if not (still / "labels.csv").is_file():
        sh("synth", "--out", str(still), "--n", "1000", "--seed", "2", "--size", "64", "-q")
    for name in models:
        m = _evaluate(work / "runs" / f"seq_{name}", f"manifest:{still / 'labels.csv'}", protocol="abaw").metrics
        out.setdefault("still_test", {})[name] = _row(m)
        print(name, "still images (seed 2):", out["still_test"][name], flush=True)
    for noise in noises:
        val, test = (f"manifest:{d / 'labels.csv'}" for d in _clips(work, noise))
        for name, levels in (("SMM", ("features", "outputs")), ("baseline", ("outputs",))):
            run = work / "runs" / f"seq_{name}"
            plain = _evaluate(run, test, protocol="abaw").metrics
            for level in levels:
                searched = _evaluate(run, val, protocol="abaw", smooth="auto", smooth_level=level)
                sm = _evaluate(run, test, protocol="abaw", smooth="stored", smooth_level=level).metrics
                row = {
                    "mu": searched.smoothing["mu"],
                    "cv_gain": {t: searched.metrics.get(f"smooth_cv_gain_{t}") for t in ("expr", "va", "au")},
                    "val_mu0": _task_scores(_evaluate(run, val, protocol="abaw").metrics),
                    "test_mu0": {**_task_scores(plain), "mtl": plain.get("abaw_mtl"), "expr_acc": plain.get("expr_acc")},
                    "test_smoothed": {**_task_scores(sm), "mtl": sm.get("abaw_mtl"), "expr_acc": sm.get("expr_acc")},
                }
                out[f"{name}/{level}/noise={noise:g}"] = row
                print(f"{name} {level} frame-noise {noise:g}", row, flush=True)
    print("\n| model (level) | frame noise | chosen mu expr / va / au | CV gain expr / va / au "
          "| test MTL mu = 0 | test MTL smoothed |")
    print("|---|---|---|---|---|---|")
    for key, r in out.items():
        if "/" not in key:
            continue
        name, level, noise = key.split("/")
        mu = " / ".join(f"{r['mu'].get(t, 0):g}" for t in ("expr", "va", "au"))
        gain = " / ".join("-" if r["cv_gain"][t] is None else f"{r['cv_gain'][t]:+.3f}" for t in ("expr", "va", "au"))
        print(f"| {name} ({level}) | {noise.split('=')[1]} | {mu} | {gain} | {r['test_mu0']['mtl']:.3f} "
              f"| {r['test_smoothed']['mtl']:.3f} |")


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


def ckplus(work: Path, epochs: int, results: dict, extra: list[str] = (), seeds=(0,)) -> None:
    if not CKPLUS.is_dir():
        print("CK+ not found; skipped", flush=True)
        return
    import numpy as np

    from affectlab.data.datasets import load_dataset
    from affectlab.data.schema import LabelSpace
    from affectlab.train.config import resolve_config
    from affectlab.evaluate.engine import evaluate
    from affectlab.train.engine import train

    ds = load_dataset(f"ckplus:{CKPLUS}")
    pos = (np.asarray(ds.au_targets) == 1).sum(axis=0)
    aus = tuple(a for a, p in zip(ds.label_space.aus, pos) if p >= 100)
    ds = ds.with_label_space(LabelSpace(expressions=ds.label_space.expressions, aus=aus, va=False))
    trainval, test = ds.split_by("subject", (0.8, 0.2), seed=0)
    tr, val = trainval.split_by("subject", (0.85, 0.15), seed=1)
    out = {"aus": list(aus), "n_train": len(tr), "n_val": len(val), "n_test": len(test), "seeds": list(seeds)}
    keys = ("expr_acc", "expr_f1_macro", "au_f1_mean")
    for name, preset, sets in (
        ("baseline", "baseline", ["embed_dim=16", *extra]),  # the head width these figures were measured with
        ("SMM", "smm-scratch", ["sampler=shuffle", *extra]),
    ):
        per_seed = []
        for seed in seeds:
            run = work / "runs" / (f"ckplus_{name}" if seed == 0 else f"ckplus_{name}_s{seed}")
            if not (run / "model.ckpt").is_file():
                cfg = resolve_config(preset=preset, options={"epochs": epochs, "batch_size": 48, "seed": seed},
                                     sets=sets)
                t0 = time.time()
                train(cfg, run, train_data=tr, val_data=val, progress=False)
                out.setdefault("train_s", {})[f"{name}/{seed}"] = round(time.time() - t0)
            m = evaluate(str(run), test, progress=False).metrics
            per_seed.append({**{k: m.get(k) for k in keys}, "au_f1": m.get("au_f1")})
            print(name, "seed", seed, {k: per_seed[-1][k] for k in keys}, flush=True)
        out[name] = {
            "per_seed": per_seed,
            **{k: float(np.mean([r[k] for r in per_seed])) for k in keys},
            **{f"{k}_sd": float(np.std([r[k] for r in per_seed], ddof=1)) if len(seeds) > 1 else 0.0 for k in keys},
        }
    results["ckplus"] = out
    print(f"\nCK+ {len(aus)} AUs, train/val/test {len(tr)}/{len(val)}/{len(test)} images, "
          f"mean (sd) over training seeds {list(seeds)}")
    print("| model | expression accuracy | expression macro F1 | AU F1 (mean) |\n|---|---|---|---|")
    for name in ("baseline", "SMM"):
        r = out[name]
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f} ({r[k + '_sd']:.3f})" for k in keys) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("smm_exp"))
    p.add_argument("--n", type=int, default=1500, help="images per uni-task set")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--ck-epochs", type=int, default=12)
    p.add_argument("--ck-set", dest="ck_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for both CK+ runs")
    p.add_argument("--ck-seeds", type=int, default=3, help="CK+ training seeds 0..N-1 (same split)")
    p.add_argument("--seq-n", type=int, default=3000, help="still images to train the sequences models on")
    p.add_argument("--seq-epochs", type=int, default=12)
    p.add_argument("--frame-noise", type=float, action="append", default=None,
                   help="per-frame noise of the clips (repeat; default 0 and 1)")
    p.add_argument("--batch-size", type=int, default=48, help="table1 batch (a multiple of 3)")
    p.add_argument("--baseline-lr", default="5e-3", help="table1 baseline learning rate (smm-scratch's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every table1 run, e.g. --set backbone=builtin:cnn-grid")
    p.add_argument("--only", choices=["table1", "smoothing", "sequences", "ckplus"], action="append")
    a = p.parse_args()
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = a.only or ["table1", "smoothing", "sequences", "ckplus"]
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
        elif step == "sequences":
            sequences(work, results, a.seq_epochs, a.seq_n, a.frame_noise or [0.0, 1.0])
        else:
            ckplus(work, a.ck_epochs, results, a.ck_sets, range(a.ck_seeds))
        path.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
