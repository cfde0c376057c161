"""The README's ABAW3 (SMM-EmotionNet) cluster command runs as printed on a tiny Aff-Wild2
fixture (CPU, one process; only sizes and the device count are shrunk)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest

from affectlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
AU_HEADER = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"


def _abaw(root: Path) -> Path:
    rng = np.random.default_rng(0)
    ann = root / "Third ABAW Annotations"
    tasks = {"AU": "AU_Detection_Challenge", "EXPR": "EXPR_Classification_Challenge", "VA": "VA_Estimation_Challenge"}
    videos = {("Train", "AU"): ["a1", "a2"], ("Train", "EXPR"): ["e1", "e2"], ("Train", "VA"): ["v1", "v2"],
              ("Validation", "AU"): ["m1"], ("Validation", "EXPR"): ["m1"], ("Validation", "VA"): ["m1"]}
    for (split, task), vids in videos.items():
        folder = ann / tasks[task] / f"{split}_Set"
        folder.mkdir(parents=True, exist_ok=True)
        for vid in vids:
            n = 8
            for k in range(1, n + 1):
                path = root / "cropped_aligned" / vid / f"{k:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    cv2.imwrite(str(path), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            if task == "AU":
                rows = [",".join(map(str, rng.integers(0, 2, 12))) for _ in range(n)]
                head = AU_HEADER
            elif task == "EXPR":
                rows = [str(k % 8) for k in range(n)]
                head = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
            else:
                rows = [f"{rng.uniform(-1, 1):.3f},{rng.uniform(-1, 1):.3f}" for _ in range(n)]
                head = "valence,arousal"
            (folder / f"{vid}.txt").write_text(head + "\n" + "\n".join(rows) + "\n")
    return root


def _readme_command(start: str) -> list[str]:
    """The README command line that starts with ``start`` (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^{re.escape(start)}.*?(?<!\\)$", text, flags=re.M | re.S)
    assert m, f"README has no command starting with {start!r}"
    return shlex.split(m.group(0).replace("\\\n", " "))


def _shrink(args: list[str], data: Path, out: Path) -> list[str]:
    """Paths to the fixture; one CPU process; a tiny model and budget instead of InceptionV3."""
    args = [a.replace("/data/ABAW3", str(data)).replace("runs/smm", str(out)) for a in args]
    for opt, value in (("--devices", "1"), ("--num-nodes", "1"), ("--strategy", "auto"), ("--max-steps", "2"),
                       ("--global-batch-size", "6")):
        args[args.index(opt) + 1] = value
    return args + ["--epochs", "1", "--backbone", "builtin:cnn-tiny", "--set", "pretrained=false",
                   "--set", "image_size=32", "--accelerator", "cpu", "-q"]


@pytest.mark.slow
def test_readme_abaw3_commands_run_as_printed(tmp_path):
    data = _abaw(tmp_path / "ABAW3")
    srun = _readme_command("srun affectlab train")
    assert srun[:3] == ["srun", "affectlab", "train"]
    torchrun = _readme_command("torchrun --nnodes")
    start = torchrun.index("affectlab.cli")
    assert torchrun[start + 1:] == srun[2:]  # the two launchers run the same training command
    args = _shrink(srun[2:], data, tmp_path / "smm")
    assert main(args) == 0
    cfg = (tmp_path / "smm" / "config.yaml").read_text()
    assert "sampler: multitask" in cfg and "max_steps: 2" in cfg and "global_batch_size: 6" in cfg
    log = (tmp_path / "smm" / "log.csv").read_text().splitlines()
    assert len(log) == 2  # one epoch, stopped by the step budget
    code = main(["evaluate", "--model", str(tmp_path / "smm"), "--data", f"abaw:{data}:Validation?tasks=MTL",
                 "--protocol", "abaw", "--json", str(tmp_path / "m.json"), "-q"])
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"abaw_mtl", "va_ccc", "expr_f1_macro", "au_f1_mean"} <= set(metrics)


def test_validation_split_is_video_disjoint_without_val(tmp_path):
    from affectlab.data.datasets import load_dataset
    from affectlab.train.prepare import holdout_split

    data = _abaw(tmp_path / "ABAW3")
    ds = load_dataset(f"abaw:{data}:Train?tasks=MTL")
    train, val = holdout_split(ds, 0.3, seed=0)
    assert len(val) and len(train)
    assert not set(train.labels["video"]) & set(val.labels["video"])
