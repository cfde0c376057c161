"""``affectlab evaluate``: agreement with the metrics module, remapping by name, reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from affectlab import metrics as M
from affectlab.cli import main
from affectlab.data.datasets import load_dataset
from affectlab.data.synth import generate
from affectlab.train.config import resolve_config
from affectlab.evaluate.engine import evaluate
from affectlab.train.engine import train
from affectlab.train.prepare import holdout_split


def _config(train_spec: str, **kw):
    options = dict(
        method="baseline", backbone="builtin:cnn-tiny", train=train_spec, epochs=2, batch_size=32,
        image_size=32, train_transform="eval", seed=0,
    )
    options.update(kw)
    return resolve_config(options=options)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    generate(root / "train", 120, size=32, seed=11, progress=False)
    generate(root / "test", 60, size=32, seed=12, progress=False)  # other identities
    # three classes only, no valence/arousal: evaluation must match classes by name
    generate(root / "subset", 30, size=32, seed=13, keep="expr,au", progress=False,
             expressions=["happiness", "sadness", "surprise"])
    train(_config(f"manifest:{root / 'train' / 'labels.csv'}"), root / "run", progress=False)
    return root


def _spec(root, name):
    return f"manifest:{root / name / 'labels.csv'}"


def test_evaluate_agrees_with_metrics_on_saved_predictions(setup, tmp_path, capsys):
    root = setup
    out_json, preds = tmp_path / "m.json", tmp_path / "pred.csv"
    code = main(["evaluate", "--model", str(root / "run"), "--data", _spec(root, "test"), "--json", str(out_json),
                 "--predictions", str(preds), "--quiet"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "expr_acc" in printed and "au_f1_mean" in printed
    reported = json.loads(out_json.read_text())
    table = pd.read_csv(preds)
    assert len(table) == 60
    labels = load_dataset(_spec(root, "test")).labels
    assert list(table["path"]) == list(labels["path"])  # rows in dataset order, with their files

    # expressions: recompute from the saved probabilities with scikit-learn
    classes = [c[len("expr_"):] for c in table.columns if c.startswith("expr_")]
    scores = table[[f"expr_{c}" for c in classes]].to_numpy()
    y_true = np.array([classes.index(v) for v in table["expression_true"]])
    y_pred = scores.argmax(axis=1)
    assert list(table["expression"]) == [classes[i] for i in y_pred]
    assert list(table["expression_true"]) == list(labels["expression"])
    assert reported["expr_acc"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert reported["expr_f1_macro"] == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=range(len(classes)), zero_division=0)
    )
    # valence/arousal: CCC by its definition
    for dim in ("valence", "arousal"):
        t, p = table[f"{dim}_true"].to_numpy(), table[dim].to_numpy()
        ccc = 2 * np.cov(t, p, bias=True)[0, 1] / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)
        assert reported[f"{dim}_ccc"] == pytest.approx(ccc, abs=1e-5)
        assert reported[f"{dim}_rmse"] == pytest.approx(np.sqrt(np.mean((t - p) ** 2)), abs=1e-5)
    # AUs: F1 at 0.5 per AU, and the whole dict through the metrics module
    aus = [c for c in table.columns if c.startswith("AU") and not c.endswith("_true")]
    for au in aus:
        f1 = f1_score(table[f"{au}_true"], (table[au] >= 0.5).astype(int), zero_division=0)
        assert reported["au_f1"][au] == pytest.approx(f1, abs=1e-6)
    direct = M.summarize(
        expr_true=y_true, expr_scores=scores, expressions=classes,
        va_true=table[["valence_true", "arousal_true"]].to_numpy(), va_pred=table[["valence", "arousal"]].to_numpy(),
        au_true=table[[f"{a}_true" for a in aus]].to_numpy(), au_scores=table[aus].to_numpy(), aus=aus,
    )
    assert direct.keys() == reported.keys()
    for key, value in direct.items():
        assert reported[key] == pytest.approx(value, abs=1e-5), key


def test_validation_metrics_of_training_equal_evaluate_on_the_held_out_split(setup):
    root = setup
    stored = json.loads((root / "run" / "metrics.json").read_text())
    from affectlab.runtime.hub import load_model

    _, info = load_model(root / "run")
    full = load_dataset(_spec(root, "train")).with_label_space(info["label_space"])
    _, held_out = holdout_split(full, 0.1, seed=0)
    # subject-disjoint: no identity of the held-out part is in the training part
    train_part, _ = holdout_split(full, 0.1, seed=0)
    assert not set(train_part.labels["subject"]) & set(held_out.labels["subject"])
    again = evaluate(root / "run", held_out, progress=False).metrics
    for key in ("expr_acc", "expr_f1_macro", "va_ccc", "arousal_mae", "au_f1_mean"):
        assert again[key] == pytest.approx(stored[key], abs=1e-5), key


def test_classes_and_aus_are_matched_by_name_and_per_class_report(setup, tmp_path, capsys):
    root = setup
    out_json = tmp_path / "sub.json"
    plots = tmp_path / "plots"
    code = main(["evaluate", "--model", str(root / "run"), "--data", _spec(root, "subset"), "--json", str(out_json),
                 "--per-class", "--plots", str(plots), "--quiet"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    reported = json.loads(out_json.read_text())
    # the model knows 8 classes, the data 3: metrics over the shared 3, no VA metrics
    assert set(reported["expr_f1"]) == {"happiness", "sadness", "surprise"}
    assert "va_ccc" not in reported and "valence_ccc" not in reported
    assert "au_f1_mean" in reported
    assert "expr_f1[happiness]" in printed and "au_f1[AU12]" in printed
    png = plots / "confusion_matrix.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = evaluate(root / "run", _spec(root, "subset"), progress=False)
    assert res.confusion.shape == (3, 3) and res.confusion.sum() == 30
    assert np.trace(res.confusion) / 30 == pytest.approx(res.metrics["expr_acc"])


def test_abaw_protocol_adds_the_multitask_score(setup):
    plain = evaluate(setup / "run", _spec(setup, "test"), progress=False).metrics
    m = evaluate(setup / "run", _spec(setup, "test"), protocol="abaw", progress=False).metrics
    assert "abaw_mtl" not in plain and "abaw_mtl" in m
    # equation 8 of 002: mean VA CCC + macro expression F1 + mean AU F1
    assert m["abaw_mtl"] == pytest.approx(
        (m["valence_ccc"] + m["arousal_ccc"]) / 2 + np.mean(list(m["expr_f1"].values())) + np.mean(list(m["au_f1"].values())),
        abs=1e-6,
    )


def test_evaluate_errors_are_one_line(setup, tmp_path, capsys):
    root = setup
    va_model = tmp_path / "va_model"
    train(_config(_spec(root, "train"), tasks=["va"], epochs=1), va_model, progress=False)
    cases = [
        (["--model", str(va_model), "--data", _spec(root, "subset")], "shares no descriptor"),
        (["--model", str(tmp_path / "missing_run"), "--data", _spec(root, "test")], "does not exist"),
        (["--model", str(root / "run" / "last.ckpt"), "--data", _spec(root, "test")], "not an affectlab model"),
        (["--model", str(root / "run"), "--data", _spec(root, "test"), "--protocol", "fer"], "unknown protocol"),
    ]
    for args, message in cases:
        code = main(["evaluate", *args, "--quiet"])
        err = " ".join(capsys.readouterr().err.split())
        assert code == 2, err
        assert err.startswith("error:") and message in err, err
