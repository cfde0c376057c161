"""`affectlab demo` end to end, at a tiny size: every artefact a newcomer is promised exists."""

import json

import pandas as pd

from affectlab.cli import main


def test_demo_writes_run_metrics_table_report_and_video(tmp_path, capsys):
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
    assert "held-out synthetic identities" in capsys.readouterr().out
    # a second run into the same folder refuses instead of mixing runs
    assert main(["demo", "--out", str(out), "--n-train", "60", "--n-test", "20", "--epochs", "1"]) == 2
