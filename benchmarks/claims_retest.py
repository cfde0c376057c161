"""Fair re-tests of two papers' claims on synthetic faces, several seeds (issue 15, item 9).

1. **CAGE: valence/arousal regression helps expression classification.** CAGE's combined
   loss (weighted CE + 5 MSE on VA; ``affectlab train --method cage``, preset ``cage-synth``)
   against the same model and budget without the VA term (``--set variant=discrete``), with
   ``cage-synth``'s built-in CNN from scratch and with ``smm-synth``'s ImageNet MobileNetV2
   (cut at ``features.13``), on three kinds of training data:

   * ``standard``: ``affectlab synth``; VA is the class centre scaled by the expression's
     intensity, so it says little beyond the class;
   * ``blend``: ``synth --blend 0.5`` (train and test): half the basic-expression faces are
     blends of two expressions, labelled by the larger part; VA is the same blend, so it
     tells how far and towards which class a face lies -- information beyond the class;
   * ``noisy``: ``synth --label-noise 0.3``: 30% of the training expression labels are
     wrong, the VA labels are not (tested on clean labels).

2. **SMM-EmotionNet beats a multi-task baseline of the same backbone** (Table 1 of the SMM
   paper), here with equal capacity and the same loss: the baseline's per-task heads are
   widened until its parameter count (those that receive a gradient) matches SMM's within
   1%, and its loss is SMM's equation 7 (weighted CE + weighted BCE + sum of 1 - CCC; the
   baseline's extra VA MSE off). Same data (three uni-task sets), sampler, batch,
   optimiser and epochs; with the ImageNet MobileNetV2 of ``smm-synth`` and with the
   built-in CNN from scratch of ``smm-scratch``.

Every model is trained with several seeds and scored on 1000 faces of other identities;
the tables give mean ± sd over the seeds. One command reproduces them::

    python benchmarks/claims_retest.py --workdir /tmp/claims                # seeds 0 1 2
    python benchmarks/claims_retest.py --workdir /tmp/claims --write-doc docs/methods/claims.md

Finished runs are reused (a run directory holding ``test.json``), so adding seeds later
trains only the new ones. The MobileNetV2 runs need torchvision's ImageNet weights in
torch.hub's cache (``affectlab models fetch mobilenet-v2-imagenet``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smm_default import run_command, synth_once  # noqa: E402  (64 px faces, one command runner)

#: CAGE's backbones: the recommended cage-synth's from scratch, and smm-synth's ImageNet one
CAGE_SETTINGS = {
    "scratch": [],
    "pretrained": ["--set", "backbone=torchvision:mobilenet_v2", "--set", "pretrained=true",
                   "--set", "backbone_options={map_node: features.13}"],
}
SMM_SETTINGS = {
    # name: (SMM preset, baseline --set options that give it the same backbone and input)
    "pretrained": ("smm-synth", ["backbone=torchvision:mobilenet_v2", "pretrained=true",
                                 "backbone_options={map_node: features.13}"]),
    # cnn-grid's global feature is its 4x4 map through Linear(1024, global_dim): at the
    # default 128 that layer alone exceeds SMM's heads, so the baseline keeps the grid
    # layout through a 16-wide one
    "scratch": ("smm-scratch", ["backbone=builtin:cnn-grid", "backbone_options={global_dim: 16}"]),
}


def _train_eval(exe, run: Path, train: list[Path], test: Path, options: list[str], protocol=None) -> dict:
    """Train (unless ``run`` is finished), evaluate on ``test``; the metrics and the wall time."""
    out = run / "test.json"
    if not out.is_file():
        if run.exists():
            shutil.rmtree(run)
        wall, _ = run_command([*exe, "train", *[a for t in train for a in ("--train", f"manifest:{t}")],
                               "--out", str(run), "-q", *options])
        cmd = [*exe, "evaluate", "--model", str(run), "--data", f"manifest:{test}", "--json", str(out), "-q"]
        run_command(cmd + (["--protocol", protocol] if protocol else []))
        (run / "wall.txt").write_text(f"{wall:.1f}\n")
    m = json.loads(out.read_text())
    m["wall_s"] = float((run / "wall.txt").read_text()) if (run / "wall.txt").is_file() else float("nan")
    return m


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _used_parameters(method: str, preset: str | None, sets: list[str]) -> int:
    """Parameters of a model that receive a gradient (a backbone's unused parts not counted)."""
    import torch

    from affectlab.data.schema import LabelSpace
    from affectlab.data.synth import SYNTH_AUS
    from affectlab.methods.base import create_method
    from affectlab.train.config import method_config_for, resolve_config

    # the architecture only: random weights count the same as ImageNet ones
    cfg = resolve_config(preset=preset, options={"method": method}, sets=[*sets, "pretrained=false"])
    space = LabelSpace(expressions=("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger",
                                    "contempt"), va=True, aus=tuple(f"AU{k}" for k in SYNTH_AUS))
    torch.manual_seed(0)
    m = create_method(method, space, method_config_for(cfg))
    m.train()
    size = cfg.image_size or 64
    batch = {"image": torch.randn(4, 3, size, size), "expr": torch.tensor([0, 1, 2, 3]),
             "va": torch.rand(4, 2) - 0.5, "au": torch.randint(0, 2, (4, len(SYNTH_AUS))).float()}
    m.loss(m(batch), batch)["loss"].backward()
    return sum(p.numel() for p in m.parameters() if p.grad is not None)


def _matching_embed_dim(target: int, sets: list[str]) -> tuple[int, int]:
    """The baseline head width whose parameter count is closest to ``target`` (count is linear in it)."""
    a = _used_parameters("baseline", "baseline", [*sets, "embed_dim=16"])
    b = _used_parameters("baseline", "baseline", [*sets, "embed_dim=32"])
    per_unit = (b - a) / 16
    width = max(1, round(16 + (target - a) / per_unit))
    return width, _used_parameters("baseline", "baseline", [*sets, f"embed_dim={width}"])


def cage_table(exe, work: Path, seeds, n: int, epochs: int, blend: float, settings) -> tuple[str, str]:
    test_std = synth_once(exe, work / "data" / "test", "--n", "1000", "--seed", "2")
    tag = f"blend{round(100 * blend)}"
    test_blend = synth_once(exe, work / "data" / f"test-{tag}", "--n", "1000", "--seed", "2", "--blend", str(blend))
    data = {
        "standard": (synth_once(exe, work / "data" / "standard", "--n", str(n), "--seed", "1"), test_std),
        f"blend {blend:g}": (synth_once(exe, work / "data" / tag, "--n", str(n), "--seed", "1", "--blend", str(blend)),
                             test_blend),
        "noisy": (synth_once(exe, work / "data" / "noisy", "--n", str(n), "--seed", "1", "--label-noise", "0.3"),
                  test_std),
    }
    lines = ["| backbone | training data | model | expression accuracy | expression macro F1 | VA CCC | "
             "per seed: F1 |", "|---|---|---|---|---|---|---|"]
    deltas = []
    for setting in settings:
        for name, (train, test) in data.items():
            f1 = {}
            for variant in ("discrete", "combined"):
                rows = []
                for seed in seeds:
                    run = work / "cage" / f"{setting}-{name.replace(' ', '')}-{variant}-{seed}"
                    opts = ["--method", "cage", "--epochs", str(epochs), "--set", f"variant={variant}",
                            "--set", f"seed={seed}", *CAGE_SETTINGS[setting]]
                    rows.append(_train_eval(exe, run, [train], test, opts))
                f1[variant] = [r["expr_f1_macro"] for r in rows]
                ccc = _ms([r["va_ccc"] for r in rows]) if variant == "combined" else "-"
                label = "CE (no VA term)" if variant == "discrete" else "CE + 5 MSE(VA) (CAGE combined)"
                lines.append(f"| {setting} | {name} | {label} | {_ms([r['expr_acc'] for r in rows])} | "
                             f"{_ms(f1[variant])} | {ccc} | {' / '.join(f'{v:.3f}' for v in f1[variant])} |")
            diff = [c - d for c, d in zip(f1["combined"], f1["discrete"])]
            deltas.append(f"{setting}, {name}: {_ms(diff)} (per seed {' / '.join(f'{d:+.3f}' for d in diff)})")
    summary = "Combined minus discrete, expression macro F1 (paired by seed): " + "; ".join(deltas) + "."
    return "\n".join(lines), summary


def smm_table(exe, work: Path, seeds, n: int, epochs: int, settings) -> tuple[str, str]:
    third = str(n // 3)
    train = [synth_once(exe, work / "data" / task, "--n", third, "--keep", task, "--seed", str(s))
             for task, s in (("au", 11), ("expr", 12), ("va", 13))]
    test = synth_once(exe, work / "data" / "test", "--n", "1000", "--seed", "2")
    lines = ["| backbone | model | parameters | F1-AU | F1-EXPR | CCC | ABAW MTL | per seed: MTL | train wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for setting in settings:
        preset, bb_sets = SMM_SETTINGS[setting]
        smm_params = _used_parameters("smm", preset, [])
        width, base_params = _matching_embed_dim(smm_params, bb_sets)
        common = ["--epochs", str(epochs)]
        base_opts = ["--method", "baseline", "--preset", "baseline", *common, "--batch-size", "63",
                     *[a for s in [*bb_sets, "sampler=multitask", "va_mse_weight=0", f"embed_dim={width}"]
                       for a in ("--set", s)]]
        models = {"SMM-EmotionNet": (["--method", "smm", "--preset", preset, *common], smm_params),
                  f"multi-task baseline, heads {width} wide, SMM's loss": (base_opts, base_params)}
        mtl = {}
        for label, (opts, params) in models.items():
            rows = []
            for seed in seeds:
                run = work / "smm" / f"{setting}-{label.split(',')[0].replace(' ', '_')}-{seed}"
                rows.append(_train_eval(exe, run, train, test, [*opts, "--set", f"seed={seed}"], protocol="abaw"))
            mtl[label] = [r["abaw_mtl"] for r in rows]
            walls = [r["wall_s"] for r in rows]
            lines.append(
                f"| {setting} (`{preset}`'s) | {label} | {params:,} | {_ms([r['au_f1_mean'] for r in rows])} | "
                f"{_ms([r['expr_f1_macro'] for r in rows])} | {_ms([r['va_ccc'] for r in rows])} | "
                f"{_ms(mtl[label])} | {' / '.join(f'{v:.3f}' for v in mtl[label])} | "
                f"{min(walls):.0f}-{max(walls):.0f} s |")
        smm, base = mtl.values()
        diff = [a - b for a, b in zip(smm, base)]
        notes.append(f"{setting}: {_ms(diff)} (per seed {' / '.join(f'{d:+.3f}' for d in diff)})")
    summary = "SMM minus baseline, ABAW MTL (paired by seed): " + "; ".join(notes) + "."
    return "\n".join(lines), summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=3000, help="training faces (SMM: n/3 per uni-task set)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--only", choices=("cage", "smm"), default=None)
    ap.add_argument("--blend", type=float, default=0.5, help="synth --blend of the blend data (train and test)")
    ap.add_argument("--cage-settings", nargs="+", choices=tuple(CAGE_SETTINGS), default=list(CAGE_SETTINGS))
    ap.add_argument("--smm-settings", nargs="+", choices=tuple(SMM_SETTINGS), default=list(SMM_SETTINGS))
    ap.add_argument("--write-doc", type=Path, default=None,
                    help="replace the block between <!-- claims:start --> and <!-- claims:end --> in this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    exe = [sys.executable, "-m", "affectlab"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    parts = []
    scale = (f"Scale: {args.n} synthetic training faces at 64 px, {args.epochs} epochs, training seeds "
             f"{', '.join(map(str, args.seeds))} (mean ± sd over them), test on 1000 faces of other identities; "
             "one thread on a shared 2-core CPU. Not a replication of either paper: synthetic faces, CPU-sized "
             "backbones and budgets.")
    if args.only in (None, "cage"):
        table, summary = cage_table(exe, args.workdir, args.seeds, args.n, args.epochs, args.blend, args.cage_settings)
        parts.append("**CAGE: does VA regression help expression classification?**\n\n" + table + "\n\n" + summary)
    if args.only in (None, "smm"):
        table, summary = smm_table(exe, args.workdir, args.seeds, args.n, args.epochs, args.smm_settings)
        parts.append("**SMM-EmotionNet against a multi-task baseline of equal capacity and the same loss**\n\n"
                     + table + "\n\n" + summary)
    minutes = (time.perf_counter() - t0) / 60
    text = "\n\n".join(parts) + f"\n\n{scale} Produced by `python benchmarks/claims_retest.py` ({minutes:.0f} min " \
        "for the runs not already finished)."
    print(text)
    if args.write_doc:
        doc = args.write_doc.read_text()
        block = f"<!-- claims:start -->\n{text}\n<!-- claims:end -->"
        if "<!-- claims:start -->" not in doc:
            sys.exit(f"{args.write_doc} has no <!-- claims:start --> ... <!-- claims:end --> block")
        args.write_doc.write_text(re.sub(r"<!-- claims:start -->.*?<!-- claims:end -->", lambda _: block, doc,
                                         flags=re.S))


if __name__ == "__main__":
    main()
