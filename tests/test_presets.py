"""Presets: every method's recommended setting is what `affectlab train --method M` uses
without --preset, and every preset the docs name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from affectlab import presets
from affectlab.cli import _default_preset_options, main
from affectlab.data.synth import generate
from affectlab.methods.base import available_methods
from affectlab.train.config import TrainConfig, available_presets, load_preset, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_method_has_an_existing_recommended_and_paper_preset():
    for method in available_methods():
        if method == "aura-head":  # attached to a trained model, never trained on its own
            continue
        name = presets.recommended_preset(method)
        assert name in available_presets(), method
        assert load_preset(name)["method"] == method
        for paper in presets.PAPER[method]:
            assert load_preset(paper)["method"] == method, paper
    assert presets.recommended_preset(None) == "baseline"  # the default method


def test_no_preset_is_the_recommended_preset(tmp_path, capsys):
    """`affectlab train --method baseline` (no --preset) writes the config of --preset baseline."""
    generate(tmp_path / "s", 40, size=32, seed=1, progress=False)
    spec = f"manifest:{tmp_path / 's' / 'labels.csv'}"
    args = ["train", "--method", "baseline", "--train", spec, "--epochs", "1", "--set", "image_size=32", "-q"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    from affectlab.cli import _default_preset_note

    note = _default_preset_note("smm", "smm-synth")  # what the CLI prints after the run summary
    assert "'smm-synth', the recommended setting of --method smm" in note and "--preset smm" in note
    saved = TrainConfig(**yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()))
    expected = resolve_config(
        preset="baseline", options={"method": "baseline", "train": spec, "epochs": 1}, sets=["image_size=32"]
    )
    assert saved == expected
    assert saved.backbone == "builtin:cnn-grid" and saved.lr == 1e-2  # not the bare defaults
    assert TrainConfig().lr != saved.lr


def test_recommended_preset_adapts_to_the_data():
    # smm-synth composes batches of several uni-task sets; one --train set shuffles instead
    name, extra = _default_preset_options("smm", None, None, ["manifest:a.csv"], ())
    assert name == "smm-synth" and extra == {"sampler": "shuffle"}
    name, extra = _default_preset_options("smm", None, None, ["manifest:a.csv", "manifest:b.csv"], ())
    assert name == "smm-synth" and extra == {}
    # an explicit --set wins, --preset none means no preset, an explicit preset is kept as is
    assert _default_preset_options("smm", None, None, ["a"], ("sampler=multitask",)) == ("smm-synth", {})
    assert _default_preset_options("smm", "none", None, ["a"], ()) == (None, {})
    assert _default_preset_options("smm", "smm", None, ["a"], ()) is None
    assert _default_preset_options("smm", None, "runs/x", None, ()) is None  # a resumed run keeps its config


def test_documented_presets_exist():
    """Every `--preset NAME` in the README and docs names a shipped preset."""
    names = set(available_presets()) | {"none"}
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    seen = set()
    for path in texts:
        for name in re.findall(r"--preset[ =]([A-Za-z0-9_.-]+)", path.read_text()):
            if name.endswith((".yaml", ".yml")) or name in ("NAME", "FILE"):
                continue
            seen.add(name)
            assert name in names, f"{path.relative_to(ROOT)} names --preset {name}, which does not exist"
    assert {"baseline", "smm", "cage-combined"} <= seen


def test_global_batch_is_split_over_the_processes():
    from affectlab.errors import ConfigError
    from affectlab.train.datamodule import AffectDataModule

    cfg = resolve_config(preset="smm", options={"train": ["a", "b", "c"]})
    assert cfg.global_batch_size == 72  # SMM-EmotionNet's 24 + 24 + 24 on any number of GPUs
    dm = AffectDataModule([list(range(10))] * 3, list(range(4)), cfg)
    assert [dm.per_process_batch(w) for w in (1, 8, 24)] == [72, 9, 3]
    with pytest.raises(ConfigError, match="does not split over 5 processes"):
        dm.per_process_batch(5)
    # an explicit per-process batch replaces the preset's global one
    own = resolve_config(preset="smm", options={"batch_size": 12})
    assert own.global_batch_size is None and AffectDataModule([[0]] * 2, [0], own).per_process_batch(4) == 12
