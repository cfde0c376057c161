"""`affectlab demo` end to end, at a tiny size: every artefact a newcomer is promised exists."""

import json
import sys

import pandas as pd

from affectlab.cli import main


# the optional extras (pyproject.toml): the demo, a newcomer's first command, needs none
EXTRAS = ("open_clip", "timm", "umap", "onnxruntime", "onnx", "ray")


def test_demo_writes_run_metrics_table_report_and_video(tmp_path, capsys, monkeypatch):
    for name in EXTRAS:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-train", "60", "--n-test", "20", "--epochs", "1"])
    assert code == 0, capsys.readouterr().err
    for name in ("config.yaml", "model.ckpt", "metrics.json", "log.csv"):
        assert (out / "run" / name).is_file(), name
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert {"expr_acc", "va_ccc", "au_f1_mean"} <= set(metrics)
    table = pd.read_csv(out / "analysis.csv")
    assert len(table) == 60 and table["frame"].tolist() == list(range(60))
    assert table["expression"].notna().all() and table["valence"].between(-1, 1).all()
    assert (out / "analysis.mp4").stat().st_size > 0
    assert any((out / "report").rglob("*.html"))
    said = capsys.readouterr().out
    assert "held-out synthetic identities" in said
    assert f"Open the report in a browser: {out / 'report' / 'index.html'}" in said
    assert (out / "report" / "index.html").is_file()
    # a second run into the same folder refuses instead of mixing runs
    assert main(["demo", "--out", str(out), "--n-train", "60", "--n-test", "20", "--epochs", "1"]) == 2
