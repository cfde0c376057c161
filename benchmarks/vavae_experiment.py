"""The VA-VAE experiment of 003_9ad920e56393e222.txt on synthetic faces, end to end.

Steps (each writes into ``--workdir``; existing synthetic sets and models are reused):

1. ``affectlab synth``: a training set (seed A), a held-out set of other identities
   (seed B) and a transfer target (seed C), ``--size`` pixels.
2. Train the regularized and the vanilla VA-VAE on set A (plain loop over images held
   in memory: the same method, loss and optimiser settings as the ``vavae`` presets,
   without re-decoding JPEGs every epoch), and save them as affectlab model files.
3. Run the seven evaluation tasks on set B (``explain_vavae`` with ``compare``).
4. Annotation transfer: fit the anchor ellipses on set A, give set C (VA columns
   dropped) transferred VA (``transfer_va``), train the regularized VAE on it and
   report the CCC of its VA predictions on set B against the true VA.
5. If ``--real`` points at a folder with ``labels.csv`` (e.g.
   ``/work/shared/data/facial_expressions``), transfer VA from set A to it and print
   the anchor's per-class means (no image of it is written to the work dir beyond the
   manifest).

Run::

    python benchmarks/vavae_experiment.py --workdir /tmp/vavae_exp --epochs 12

It prints every table as Markdown (copy them into docs/methods/vavae.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from affectlab.interpret.vavae_explain import _markdown


def synth(out: Path, n: int, seed: int, size: int) -> Path:
    if not (out / "labels.csv").is_file():
        subprocess.run(
            [sys.executable, "-m", "affectlab", "synth", "--out", str(out), "--n", str(n), "--seed", str(seed),
             "--size", str(size), "-q"],
            check=True,
        )
    return out / "labels.csv"


def load_images(root: Path, size: int, labels: pd.DataFrame | None = None):
    from PIL import Image

    labels = pd.read_csv(root / "labels.csv") if labels is None else labels
    imgs = []
    for p in labels["path"]:
        im = Image.open(root / p).convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        imgs.append(np.asarray(im))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    return x, labels


def train_vae(x, va, cfg: dict, epochs: int, *, lr: float, batch_size: int, seed: int, tag: str, flip: bool = False):
    from rich.progress import Progress

    from affectlab.data.schema import LabelSpace
    from affectlab.methods.base import create_method

    torch.manual_seed(seed)
    m = create_method("vavae", LabelSpace(va=True), cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    log = []
    with Progress(transient=True) as bar:
        task = bar.add_task(f"training {tag}", total=steps)
        for ep in range(epochs):
            m.train()
            perm = torch.randperm(len(x), generator=g)
            sums: dict[str, float] = {}
            for i in range(0, len(x), batch_size):
                idx = perm[i : i + batch_size]
                xb = x[idx]
                if flip:
                    # the faces are left-right symmetric in expression: flips add views, not label noise
                    mask = (torch.rand(len(idx), generator=g) < 0.5)[:, None, None, None]
                    xb = torch.where(mask, xb.flip(-1), xb)
                b = {"image": xb, "va": va[idx]}
                terms = m.loss(m(b), b)
                opt.zero_grad()
                terms["loss"].backward()
                opt.step()
                sched.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
                bar.advance(task)
            row = {"epoch": ep, **{k: v / len(x) for k, v in sums.items()}}
            log.append(row)
            print(tag, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    return m.eval(), log


def save(m, path: Path, size: int, log) -> Path:
    from affectlab.features.backbones import Preprocessing
    from affectlab.modelfile import save_model

    pre = Preprocessing.named("none", size).to_dict()
    return save_model(path, m, preprocessing=pre, transform={"eval": "eval"}, train_info={"log": log})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vavae_exp"))
    ap.add_argument("--size", type=int, default=64, help="image side (the method's default is 64 px)")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-target", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs=3, default=(11, 12, 13))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", type=str, default="32,64,128,256")
    ap.add_argument("--dims", type=str, default="1,1,14", help="dim_v,dim_a,dim_z")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--va-weight", type=float, default=100.0, help="va_weight = arousal_weight")
    ap.add_argument("--flip", action="store_true", help="random horizontal flips while training")
    ap.add_argument("--models", type=str, default="models", help="sub-folder of --workdir for the model files")
    ap.add_argument("--only", choices=["all", "reg", "vanilla", "transfer", "explain"], default="all")
    ap.add_argument("--real", type=Path, default=None, help="expression-only folder with labels.csv (transfer target)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)
    sa, sb, sc = args.seeds
    synth(wd / "trainA", args.n_train, sa, 64)
    synth(wd / "testB", args.n_test, sb, 64)
    synth(wd / "targetC", args.n_target, sc, 64)
    dv, da, dz = (int(v) for v in args.dims.split(","))
    cfg = {"image_size": args.size, "channels": [int(c) for c in args.channels.split(",")], "dim_v": dv, "dim_a": da, "dim_z": dz,
           "va_weight": args.va_weight, "arousal_weight": args.va_weight}
    models = wd / args.models
    t0 = time.time()

    if args.only in ("all", "reg", "vanilla"):
        x, lab = load_images(wd / "trainA", args.size)
        va = torch.tensor(lab[["valence", "arousal"]].to_numpy(np.float32))
        for reg in ((True, False) if args.only == "all" else (args.only == "reg",)):
            tag = "regularized" if reg else "vanilla"
            m, log = train_vae(x, va, {**cfg, "regularize": reg}, args.epochs, lr=args.lr,
                               batch_size=args.batch_size, seed=0, tag=tag, flip=args.flip)
            save(m, models / f"{tag}.ckpt", args.size, log)
            print(f"saved {models / f'{tag}.ckpt'} after {time.time() - t0:.0f} s", flush=True)

    if args.only in ("all", "transfer"):
        from affectlab.data.datasets import load_dataset
        from affectlab.data.va_transfer import transfer_va
        from affectlab.metrics import ccc

        target = pd.read_csv(wd / "targetC" / "labels.csv")
        hidden = target.drop(columns=["valence", "arousal"])
        hidden.to_csv(wd / "targetC" / "labels_hidden.csv", index=False)
        anchor = load_dataset(f"manifest:{wd / 'trainA' / 'labels.csv'}").labels
        tgt = load_dataset(f"manifest:{wd / 'targetC' / 'labels_hidden.csv'}").labels
        manifest, ell = transfer_va(tgt, wd / "targetC_va.csv", anchor=anchor, seed=0)
        # the manifest's rows follow the hidden table's, whose paths were made absolute by the reader
        print("\nanchor ellipses (synthetic set A):\n" + _markdown(ell))
        truth = target.set_index("path").loc[hidden["path"], ["valence", "arousal"]].to_numpy()
        got = manifest[["valence", "arousal"]].to_numpy()
        print("CCC of transferred vs true VA on set C:", np.round(ccc(truth, got), 3))
        x, _ = load_images(wd / "targetC", args.size, target)
        va = torch.tensor(got.astype(np.float32))
        m, log = train_vae(x, va, {**cfg, "regularize": True}, args.epochs, lr=args.lr,
                           batch_size=args.batch_size, seed=0, tag="transfer", flip=args.flip)
        save(m, models / "transfer.ckpt", args.size, log)
        xb, lb = load_images(wd / "testB", args.size)
        with torch.no_grad():
            pred = torch.cat([m({"image": xb[i : i + 256]}).va for i in range(0, len(xb), 256)]).numpy()
        c = ccc(lb[["valence", "arousal"]].to_numpy(), pred)
        print(f"VAE trained on transferred VA, held-out set B vs true VA: valence CCC {c[0]:.3f}, arousal CCC {c[1]:.3f}")
        if (models / "regularized.ckpt").is_file():
            # the reference: the same VAE trained on set A's true VA
            from affectlab.runtime.hub import load_model

            ref, _ = load_model(models / "regularized.ckpt")
            with torch.no_grad():
                pred = torch.cat([ref({"image": xb[i : i + 256]}).va for i in range(0, len(xb), 256)]).numpy()
            c = ccc(lb[["valence", "arousal"]].to_numpy(), pred)
            print(f"reference, VAE trained on set A's true VA, set B: valence CCC {c[0]:.3f}, arousal CCC {c[1]:.3f}")

    if args.real is not None and args.only in ("all", "transfer"):
        from affectlab.data.datasets import load_dataset
        from affectlab.data.va_transfer import transfer_va

        # facial_expressions: `image` column of file names under images/ (manifest option image_root)
        real = load_dataset(f"manifest:{args.real / 'labels.csv'}", columns={"image": "path"}, image_root="images").labels
        anchor = load_dataset(f"manifest:{wd / 'trainA' / 'labels.csv'}").labels
        keep = real[real["expression"].isin(set(anchor["expression"]))]
        manifest, ell = transfer_va(keep, wd / "real_va.csv", anchor=anchor, seed=0)
        print(f"\nreal target {args.real}: {len(manifest)} images given VA; per-class means of the anchor used:")
        counts = manifest["expression"].value_counts()
        print(_markdown(ell.assign(targets=[int(counts.get(e, 0)) for e in ell["expression"]])))

    if args.only in ("all", "explain"):
        from affectlab.interpret.vavae_explain import explain_vavae
        from affectlab.runtime.hub import load_model

        m, info = load_model(models / "regularized.ckpt")
        res = explain_vavae(m, info, f"manifest:{wd / 'testB' / 'labels.csv'}", wd / "explain",
                            compare=models / "vanilla.ckpt", progress=True)
        for name, table in res["tables"].items():
            print(f"\n### {name}\n" + _markdown(table))
        print("\n".join(res["summary"]))
        print("files:", {k: str(v) for k, v in res["files"].items()})
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
