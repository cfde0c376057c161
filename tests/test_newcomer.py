"""What a new user reads and runs first (issue 17, items 10 and 11): accessors that say
what is missing, help and README without the developers' files, a light CPU install."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer

from affectlab.analyze.table import AffectTable
from affectlab.cli import app, main
from affectlab.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def _expressions_only_table() -> AffectTable:
    df = pd.DataFrame({"input": ["a.jpg"], "frame": [0], "time_s": [0.0], "face": [0], "x": [0.0], "y": [0.0],
                       "w": [8.0], "h": [8.0], "score": [1.0], "expr_neutral": [0.7], "expr_happiness": [0.3],
                       "expression": ["neutral"]})
    return AffectTable.from_frame(df, model_info={"model": "affectlab-base"})


def test_accessors_of_absent_descriptors_say_what_is_missing():
    table = _expressions_only_table()
    assert list(table.expressions.columns) == ["neutral", "happiness"]
    with pytest.raises(ConfigError, match=r"no valence/arousal columns: the model 'affectlab-base' predicts expressions"):
        table.va.describe()
    with pytest.raises(ConfigError, match=r"no action unit columns"):
        table.aus
    with pytest.raises(ConfigError, match=r"no expression columns"):
        AffectTable.from_frame(table.drop(columns=["expr_neutral", "expr_happiness"])).expressions
    both = table.assign(valence=[0.1], arousal=[-0.2])
    np.testing.assert_allclose(both.va.to_numpy(), [[0.1, -0.2]])


def _all_help(capsys) -> str:
    root = typer.main.get_command(app)
    paths = [[]]

    def walk(cmd, path):
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            paths.append([*path, name])
            walk(sub, [*path, name])

    walk(root, [])
    texts = []
    for path in paths:
        assert main([*path, "--help"]) == 0
        texts.append(capsys.readouterr().out)
    return "\n".join(texts)


def test_help_and_readme_cite_nothing_a_user_lacks(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    for name, text in (("--help", _all_help(capsys)), ("README.md", README.read_text())):
        assert "DESIGN.md" not in text, name
        assert "../shared" not in text and "shared/data" not in text, name


def test_readme_install_is_light_and_has_a_cpu_only_way():
    text = README.read_text()
    setup = text.split("## Setup", 1)[1].split("\n## ", 1)[0]
    first = re.search(r"```bash\n(.*?)```", setup, re.S).group(1)
    lines = [ln for ln in first.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    cpu = next(i for i, ln in enumerate(lines) if "download.pytorch.org/whl/cpu" in ln)
    install = next(i for i, ln in enumerate(lines) if "pip install -e ." in ln)
    assert cpu < install, "the CPU build of torch must come before affectlab (else pip takes the CUDA one)"
    assert "[dev]" not in first and "affectlab demo" in lines[install]


def test_public_api_docstrings_cite_nothing_a_user_lacks():
    import affectlab
    from affectlab.runtime.predictor import Predictor

    for obj in (affectlab.load_dataset, affectlab.evaluate, Predictor.predict):
        doc = obj.__doc__ or ""
        assert "DESIGN.md" not in doc and "../shared" not in doc, obj.__qualname__
