"""What the command line says (issue 17, item 15): help without misleading placeholders,
the same short options everywhere, the first command, plurals, rates that agree, one-line
device errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from affectlab.cli import app, main, plural

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands():
    """(path, click command) of every command, subcommands included."""
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        if getattr(cmd, "commands", None):  # a group (typer has its own click)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(root, [])
    return out


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def test_flags_show_no_value_placeholder_and_stay_flags(wide, capsys, tmp_path):
    for path, _ in _commands():
        assert main([*path, "--help"]) == 0
        text = capsys.readouterr().out
        assert "<bool>" not in text, f"{' '.join(path)} --help shows <bool>"
    assert main(["synth", "--help"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "--overwrite" in ln and "Replace" in ln)
    assert "<" not in line
    # a flag takes no value: "--overwrite true" leaves "true" as an unexpected argument
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "1", "--overwrite", "true"]) == 2


def test_help_keeps_angle_bracket_words(wide, capsys):
    for path, cmd in _commands():
        words = {w for p in cmd.params for w in re.findall(r"<[a-z_]+>", getattr(p, "help", None) or "")}
        if not words:
            continue
        assert main([*path, "--help"]) == 0
        text = capsys.readouterr().out
        for w in words:
            assert w in text, f"{' '.join(path)} --help drops {w}"
    assert main(["models", "import", "--help"]) == 0
    text = capsys.readouterr().out
    assert "emotiefflib:<model>" in text and "clip:<arch>" in text


def test_short_m_is_model_everywhere():
    seen = []
    for path, cmd in _commands():
        for p in cmd.params:
            if "-m" in getattr(p, "opts", []):
                assert p.name == "model", f"{' '.join(path)}: -m is --{p.name}"
                seen.append(" ".join(path))
    assert {"analyze", "evaluate", "explain"} <= set(seen)


def test_first_command_is_the_demo_in_help_and_readme(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    first_help = re.search(r"affectlab [a-z-]+", text.split("Usage:", 1)[1].split("╭")[0]).group(0)
    assert first_help == "affectlab demo"
    readme = README.read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    first_readme = re.search(r"\baffectlab [a-z-]+", block).group(0)
    assert first_readme == "affectlab demo"


def test_demo_says_where_its_report_is(monkeypatch, tmp_path, capsys):
    import affectlab.demo as demo

    out = tmp_path / "d"

    def fake_demo(path, **kwargs):
        return demo.DemoResult(out=out, run=out / "run", metrics={"expr_acc": 0.5}, table=out / "analysis.csv",
                               report=out / "report", video=out / "analysis.mp4", rows=1)

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"Open the report in a browser: {out / 'report' / 'index.html'}" in text
    assert "(1 row)" in text


def test_plural():
    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert plural(1, "input") == "1 input" and plural(3, "match", "matches") == "3 matches"


def test_one_photo_in_singular_and_the_bar_rate_is_the_summary_rate(tmp_path, capsys):
    photo = tmp_path / "one.jpg"
    Image.fromarray(np.full((48, 48, 3), 120, dtype=np.uint8)).save(photo)
    assert main(["analyze", str(photo), "--detector", "none", "--out", str(tmp_path / "t.csv")]) == 0
    err = capsys.readouterr().err
    summary = re.search(r"1 row from 1 frame of 1 input \(([\d.]+) frames/s\)", err)
    assert summary, err
    bar = re.findall(r"1 image\b.*?([\d.]+) frames/s", err)
    assert bar, err
    assert float(bar[-1]) == pytest.approx(float(summary.group(1)), abs=0.051)


def test_cuda_without_a_gpu_is_one_affectlab_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    photo = tmp_path / "one.jpg"
    Image.fromarray(np.full((48, 48, 3), 120, dtype=np.uint8)).save(photo)
    assert main(["analyze", str(photo), "--device", "cuda", "--out", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: --device cuda: no CUDA GPU") and "--device cpu" in err
    assert main(["train", "--accelerator", "gpu", "--train", "manifest:x.csv", "--method", "baseline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --accelerator gpu: no CUDA GPU") and len(err.splitlines()) == 1


def test_a_notice_is_one_warning_line(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("path,expression\na.png,happy\nb.png,sad\na.png,happy\n")
    assert main(["datasets", f"manifest:{tmp_path / 'labels.csv'}"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "duplicated" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "line 4 (as line 2)" in lines[0], err
    assert "UserWarning" not in err and ".py:" not in err
