"""What training and evaluation tell the user (issue 17, items 8 and 9): affectlab's own
lines only, counts of what was skipped or not scored, a hint after Ctrl-C, no dead end
after an early kill, one line for a damaged checkpoint or a model that does not fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from affectlab.cli import main
from affectlab.data.synth import generate

FAST = ["--method", "baseline", "--backbone", "builtin:cnn-tiny", "--batch-size", "16", "--set", "image_size=32",
        "--set", "train_transform=eval", "--epochs", "1"]
# what Lightning, torch and Python print on their own; none of it is affectlab's
FOREIGN = ("GPU available", "TPU available", "Tip", "litlogger", "LeafSpec", "weights_only", "site-packages",
           "Warning", "Trainer.fit", "LOCAL_RANK", "Loading `train_dataloader`")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainout")
    generate(root / "s", 48, size=32, seed=1, progress=False)
    labels = pd.read_csv(root / "s" / "labels.csv")
    # two unreadable images in the training set
    for name in labels["path"].iloc[:2]:
        (root / "s" / name).write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    assert main(["train", "--train", f"manifest:{data / 's' / 'labels.csv'}", "--out", str(out), *FAST, "-q"]) == 0
    return out


def _spec(data):
    return f"manifest:{data / 's' / 'labels.csv'}"


def test_training_prints_affectlab_lines_only_and_counts_unreadable_images(data, tmp_path, capsys):
    assert main(["train", "--train", _spec(data), "--out", str(tmp_path / "r"), *FAST]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    for foreign in FOREIGN:
        assert foreign not in text, f"{foreign!r} in the training output:\n{text}"
    assert text.count("run written to") == 1
    assert "2 unreadable images skipped" in text


def test_quiet_training_prints_nothing(data, tmp_path, capsys):
    assert main(["train", "--train", _spec(data), "--out", str(tmp_path / "q"), *FAST, "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "", captured


def test_resume_prints_nothing_foreign(run, tmp_path, capsys):
    copy = tmp_path / "c"
    shutil.copytree(run, copy)
    assert main(["train", "--resume", str(copy), "--epochs", "2", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "", captured


def test_one_class_training_set_is_refused(data, tmp_path, capsys):
    labels = pd.read_csv(data / "s" / "labels.csv").iloc[2:]
    one = labels[labels["expression"] == labels["expression"].iloc[0]]
    one.to_csv(data / "s" / "one_class.csv", index=False)  # beside the images: paths stay inside its folder
    spec = f"manifest:{data / 's' / 'one_class.csv'}"
    assert main(["train", "--train", spec, "--out", str(tmp_path / "r"), *FAST, "-q", "--tasks", "expr"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "one expression class" in err and one["expression"].iloc[0] in err


def test_evaluate_says_how_many_samples_it_scores(run, data, tmp_path, capsys):
    labels = pd.read_csv(data / "s" / "labels.csv").iloc[2:].reset_index(drop=True)
    labels.loc[:9, "expression"] = "other"  # a class the model does not know
    labels.to_csv(data / "s" / "with_other.csv", index=False)
    assert main(["evaluate", "--model", str(run), "--data", f"manifest:{data / 's' / 'with_other.csv'}", "-q"]) == 0
    text = " ".join(capsys.readouterr().err.split())
    assert f"expression scored on {len(labels) - 10} of {len(labels)} samples" in text, text
    assert "other" in text


def test_ctrl_c_in_training_gives_a_resume_hint(data, tmp_path, capsys, monkeypatch):
    import lightning.pytorch as pl

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.Trainer, "fit", interrupted)
    for quiet in ([], ["-q"]):
        out = tmp_path / f"r{len(quiet)}"
        assert main(["train", "--train", _spec(data), "--out", str(out), *FAST, *quiet]) == 130
        err = capsys.readouterr().err.strip()
        assert err.splitlines()[-1].endswith(f"continue with: affectlab train --resume {out}"), err
        assert len(err.splitlines()) == 1


def test_run_killed_in_its_first_epoch_can_be_resumed(run, tmp_path, capsys):
    early = tmp_path / "early"
    early.mkdir()
    shutil.copy(run / "config.yaml", early / "config.yaml")  # what a kill before the first epoch's end leaves
    assert main(["train", "--resume", str(early), "-q"]) == 0, capsys.readouterr().err
    assert (early / "model.ckpt").is_file() and (early / "last.ckpt").is_file()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_last_checkpoint_is_one_line_naming_it(run, tmp_path, capsys, damage):
    copy = tmp_path / "c"
    shutil.copytree(run, copy)
    last = copy / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    assert main(["train", "--resume", str(copy), "--epochs", "2", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(last) in err and "weights_only" not in err


def test_label_space_that_does_not_fit_the_weights_is_one_line(run, data, tmp_path, capsys):
    payload = torch.load(run / "model.ckpt", map_location="cpu", weights_only=True)
    payload["label_space"]["expressions"] = list(payload["label_space"]["expressions"])[:-1]
    bad = tmp_path / "bad.ckpt"
    torch.save(payload, bad)
    assert main(["evaluate", "--model", str(bad), "--data", _spec(data), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(bad) in err and "label space" in err
