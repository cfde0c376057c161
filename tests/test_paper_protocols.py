"""AffectNet and EMOTIC fixtures in their official layouts go through the commands of
docs/methods/cage.md (only sizes shrunk), and evaluate reports the columns of the paper's
Tables 6 and 8 under their own names."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import pytest

from affectlab.cli import main
from affectlab.data.synth import sample_batch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "methods" / "cage.md"
# AffectNet codes 0-7: neutral, happy, sad, surprise, fear, disgust, anger, contempt
CODES = {"neutral": 0, "happiness": 1, "sadness": 2, "surprise": 3, "fear": 4, "disgust": 5, "anger": 6, "contempt": 7}
HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"


def _affectnet(root: Path) -> Path:
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    for name, n, seed in (("training", 48, 1), ("validation", 24, 2)):
        images, labels = sample_batch(n, seed=seed, size=32, keep=("expr", "va"))
        rows = [HEADER]
        for i in range(n):
            rel = f"{seed}/{name}_{i:03d}.jpg"
            path = root / "Manually_Annotated_Images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), images[i][:, :, ::-1])
            e = CODES[labels["expression"].iloc[i]]
            v, a = labels["valence"].iloc[i], labels["arousal"].iloc[i]
            rows.append(f"{rel},0,0,32,32,1.0;2.0,{e},{v:.4f},{a:.4f}")
        (lists / f"{name}.csv").write_text("\n".join(rows) + "\n")
    return root


def _doc_commands(start: str) -> list[list[str]]:
    text = DOC.read_text().replace("\\\n", " ")
    return [shlex.split(m) for m in re.findall(rf"^{re.escape(start)}[^\n]*", text, flags=re.M)]


def _shrink(args, replace):
    out = []
    for a in args[1:]:  # drop "affectlab"
        for old, new in replace.items():
            a = a.replace(old, new)
        out.append(a)
    return out + ["--backbone", "builtin:cnn-tiny", "--set", "pretrained=false", "--set", "image_size=32",
                  "--epochs", "1", "--batch-size", "16", "--set", "train_transform=eval", "-q"]


@pytest.mark.slow
def test_affectnet_and_emotic_through_the_documented_commands(tmp_path):
    from test_cage import _write_emotic  # the EMOTIC fixture of the CAGE tests (emotic_pre/*.csv layout)

    data = _affectnet(tmp_path / "AffectNet")
    _write_emotic(tmp_path / "EMOTIC", "train", 24, 1)
    _write_emotic(tmp_path / "EMOTIC", "val", 12, 2)
    _write_emotic(tmp_path / "EMOTIC", "test", 12, 3)
    paths = {"/data/AffectNet": str(data), "/data/EMOTIC": str(tmp_path / "EMOTIC"), "runs/": f"{tmp_path}/runs/"}
    trains = {c[c.index("--preset") + 1]: c for c in _doc_commands("affectlab train --preset cage-")}
    assert {"cage-discrete", "cage-combined", "cage-va", "cage-emotic"} <= set(trains)
    for preset in ("cage-combined", "cage-va", "cage-emotic"):  # va and emotic start from combined
        assert main(_shrink(trains[preset], paths)) == 0, preset
    ev = _doc_commands("affectlab evaluate --model runs/cage-combined --data affectnet")[0]
    ev = [a.replace(k, v) for a in ev[1:] for k, v in [("/data/AffectNet", str(data))]]
    ev = [a.replace("runs/", f"{tmp_path}/runs/").replace("m.json", str(tmp_path / "m.json"))
          .replace("figs/", str(tmp_path / "figs")) for a in ev]
    assert main([*ev, "-q"]) == 0
    table6 = json.loads((tmp_path / "m.json").read_text())
    # Table 6: precision, recall, F1 (the authors' code: weighted averages), MSE, MAE, RMSE, CCC (pooled)
    for key in ("expr_precision_weighted", "expr_recall_weighted", "expr_f1_weighted",
                "va_mse", "va_mae", "va_rmse", "va_ccc_pooled", "va_ccc", "valence_ccc", "arousal_ccc"):
        assert key in table6, key
    assert (tmp_path / "figs" / "abs_error.png").is_file()
    out = tmp_path / "t8.json"
    assert main(["evaluate", "--model", f"{tmp_path}/runs/cage-emotic", "--data", f"emotic:{tmp_path / 'EMOTIC'}:test",
                 "--json", str(out), "-q"]) == 0
    table8 = json.loads(out.read_text())
    # Table 8: top-3 accuracy, RMSE (1..10 and scaled) and CCC of valence, arousal, dominance
    for dim in ("valence", "arousal", "dominance"):
        for key in (f"{dim}_rmse", f"{dim}_rmse_native", f"{dim}_ccc"):
            assert key in table8, key
    assert "topk_acc" in table8
