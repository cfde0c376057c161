"""Label statistics against pandas by hand, and `affectlab data check` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from affectlab import losses
from affectlab.cli import main
from affectlab.data.check import check_labels
from affectlab.data.schema import LabelSpace
from affectlab.data.stats import (
    au_positive_weights,
    au_prevalence,
    compare_splits,
    expression_class_weights,
    expression_counts,
    label_cardinality,
    missing_labels,
    summarize,
    va_by_class,
)
from affectlab.errors import DatasetError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CKPLUS = SHARED_DATA / "ckplus48"


def _frame(n=200, seed=0):
    """Random canonical table with every kind of missing label."""
    rng = np.random.default_rng(seed)
    classes = np.array(["neutral", "happiness", "sadness", "fear"], dtype=object)
    expr = classes[rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05])]
    expr[rng.random(n) < 0.1] = None
    v = rng.uniform(-1, 1, n)
    a = rng.uniform(-1, 1, n)
    v[rng.random(n) < 0.2] = np.nan
    a[rng.random(n) < 0.1] = np.nan
    au12 = rng.choice([1, 0, -1], size=n, p=[0.3, 0.5, 0.2])
    au4 = rng.choice([1, 0, -1], size=n, p=[0.1, 0.8, 0.1])
    return pd.DataFrame(
        {"path": [f"{i}.jpg" for i in range(n)], "expression": expr, "valence": v, "arousal": a,
         "AU4": au4, "AU12": au12}
    )


def test_counts_match_value_counts():
    df = _frame()
    counts = expression_counts(df)
    expected = df["expression"].value_counts()
    assert list(counts.index) == ["neutral", "happiness", "sadness", "fear"]  # canonical order
    for cls, k in expected.items():
        assert counts[cls] == k
    assert counts.sum() == df["expression"].notna().sum()
    # explicit classes: absent ones count 0, unlisted present ones are appended
    c2 = expression_counts(df, ["anger", "neutral"])
    assert c2["anger"] == 0 and c2["neutral"] == expected["neutral"]
    assert set(c2.index) == {"anger", "neutral", "happiness", "sadness", "fear"}


def test_missing_labels_by_hand():
    df = _frame()
    miss = missing_labels(df)
    assert miss.loc["expression", "missing"] == df["expression"].isna().sum()
    assert miss.loc["valence", "missing"] == df["valence"].isna().sum()
    assert miss.loc["arousal", "missing"] == df["arousal"].isna().sum()
    for au in ("AU4", "AU12"):
        assert miss.loc[au, "missing"] == (df[au] == -1).sum()
        assert miss.loc[au, "labelled"] == (df[au] >= 0).sum()
    np.testing.assert_allclose(miss["missing_share"], miss["missing"] / len(df))


def test_va_per_class_matches_groupby():
    df = _frame()
    va = va_by_class(df)
    ref = df.groupby("expression")[["valence", "arousal"]].agg(["mean", "std", "median"])
    for cls in ref.index:
        for col in ("valence", "arousal"):
            for stat in ("mean", "std", "median"):
                assert va.loc[cls, f"{col}_{stat}"] == pytest.approx(ref.loc[cls, (col, stat)])
        both = df[(df["expression"] == cls) & df["valence"].notna() & df["arousal"].notna()]
        assert va.loc[cls, "n"] == len(both)
    assert va.loc["all", "valence_mean"] == pytest.approx(df["valence"].mean())
    assert va.loc["all", "arousal_median"] == pytest.approx(df["arousal"].median())


def test_au_prevalence_and_weights_by_hand():
    df = _frame()
    prev = au_prevalence(df)
    for au in ("AU4", "AU12"):
        pos, lab = (df[au] == 1).sum(), (df[au] >= 0).sum()
        assert prev.loc[au, "positives"] == pos and prev.loc[au, "labelled"] == lab
        assert prev.loc[au, "prevalence"] == pytest.approx(pos / lab)
    pw = au_positive_weights(df)
    for au in ("AU4", "AU12"):
        neg, pos = (df[au] == 0).sum(), (df[au] == 1).sum()
        assert pw[au] == pytest.approx(neg / pos, rel=1e-6)
    np.testing.assert_allclose(pw.to_numpy(), losses.au_pos_weight(df[["AU4", "AU12"]].to_numpy()).numpy(), rtol=1e-6)


def test_class_weights_are_normalised_inverse_frequencies():
    df = _frame()
    w = expression_class_weights(df)
    counts = df["expression"].value_counts()
    inv = 1.0 / counts
    for cls in counts.index:
        assert w[cls] == pytest.approx(inv[cls] / inv.sum(), rel=1e-6)
    assert w.sum() == pytest.approx(1.0, rel=1e-6)
    # a class of the label space without samples gets weight 0
    w2 = expression_class_weights(df, ["neutral", "happiness", "sadness", "fear", "anger"])
    assert w2["anger"] == 0


def _multilabel(n=150, seed=1):
    rng = np.random.default_rng(seed)
    cats = ["Engagement", "Happiness", "Fear"]
    mat = (rng.random((n, 3)) < [0.7, 0.4, 0.1]).astype(int)
    mat[rng.random(n) < 0.05] = -1  # unlabelled rows
    df = pd.DataFrame(mat, columns=cats)
    df.insert(0, "path", [f"{i}.jpg" for i in range(n)])
    df.insert(1, "expression", None)
    df["valence"] = rng.uniform(-1, 1, n)
    df["arousal"] = rng.uniform(-1, 1, n)
    return df, LabelSpace(expressions=cats, va=True, multilabel=True)


def test_multilabel_counts_cardinality_and_va():
    df, space = _multilabel()
    cats = list(space.expressions)
    counts = expression_counts(df, label_space=space)
    for c in cats:
        assert counts[c] == (df[c] == 1).sum()
    card = label_cardinality(df, label_space=space)
    labelled = df[(df[cats] >= 0).any(axis=1)]
    ref = (labelled[cats] == 1).sum(axis=1).value_counts()
    for k, v in ref.items():
        assert card[k] == v
    assert card.sum() == len(labelled)
    va = va_by_class(df, label_space=space)
    for c in cats:
        assert va.loc[c, "valence_mean"] == pytest.approx(df.loc[df[c] == 1, "valence"].mean())
    miss = missing_labels(df, label_space=space)
    assert miss.loc["expression", "missing"] == (~(df[cats] >= 0).any(axis=1)).sum()
    stats = summarize(df, space)
    np.testing.assert_allclose(
        stats.class_weights.to_numpy(), losses.multilabel_pos_weight(df[cats].to_numpy()).numpy(), rtol=1e-6
    )


def test_compare_splits_by_hand():
    train, val = _frame(300, seed=2), _frame(120, seed=3)
    cmp = compare_splits(train, val)
    for cls in ("neutral", "fear"):
        assert cmp.classes.loc[cls, "train_share"] == pytest.approx(
            (train["expression"] == cls).sum() / train["expression"].notna().sum()
        )
        assert cmp.classes.loc[cls, "validation_share"] == pytest.approx(
            (val["expression"] == cls).sum() / val["expression"].notna().sum()
        )
    assert cmp.classes["train_share"].sum() == pytest.approx(1.0)
    assert cmp.va.loc["valence", "train_mean"] == pytest.approx(train["valence"].mean())
    assert cmp.va.loc["arousal", "validation_positive"] == pytest.approx((val["arousal"].dropna() > 0).mean())
    p_tr = (train["AU12"] == 1).sum() / (train["AU12"] >= 0).sum()
    p_va = (val["AU12"] == 1).sum() / (val["AU12"] >= 0).sum()
    assert cmp.au.loc["AU12", "prevalence_diff"] == pytest.approx(p_va - p_tr)


def test_bad_input_is_rejected():
    with pytest.raises(DatasetError, match="DataFrame"):
        expression_counts([1, 2, 3])
    df = _frame(10)
    df.loc[0, "AU4"] = 3
    with pytest.raises(DatasetError, match="AU4"):
        au_prevalence(df)
    with pytest.raises(DatasetError, match="AU99"):
        au_prevalence(_frame(10), ["AU99"])


def test_check_labels_multilabel_plots_and_no_va_note(tmp_path):
    df, space = _multilabel()
    report = check_labels(df, label_space=space, plots=tmp_path)
    names = {p.name for p in report.plots}
    assert {"label_cardinality.png", "class_distribution.png", "va_circumplex.png", "va_per_class.png"} <= names
    _pngs_ok(tmp_path, names)
    pair = check_labels(df, df.iloc[:50], label_space=space)
    card = pair.comparison.cardinality
    assert card["train_count"].sum() == report.datasets[0].stats.cardinality.sum()
    np.testing.assert_allclose(card["validation_share"].sum(), 1.0)
    no_va = _frame(50).drop(columns=["valence", "arousal"]).assign(valence=np.nan, arousal=np.nan)
    report = check_labels(no_va, plots=tmp_path / "novs")
    assert not any("va_" in p.name for p in report.plots)
    assert any("valence/arousal" in n for n in report.notes)


# --------------------------------------------------------------------------- data check CLI


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from affectlab.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root / "train", 96, size=32, seed=1, drop_labels=0.2, progress=False)
    generate(root / "val", 48, size=32, seed=2, progress=False)
    return root


def _pngs_ok(folder: Path, names):
    for name in names:
        img = mpimg.imread(folder / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01  # not blank


def test_data_check_cli_on_synth(synth_dir, tmp_path, capsys):
    plots = tmp_path / "plots"
    code = main(["data", "check", str(synth_dir / "train"), str(synth_dir / "val"), "--plots", str(plots)])
    out = capsys.readouterr().out
    assert code == 0
    labels = pd.read_csv(synth_dir / "train" / "labels.csv")
    n_expr_missing = labels["expression"].isna().sum()
    assert "samples" in out and "96" in out
    assert f"{n_expr_missing} ({100 * n_expr_missing / 96:.1f}%)" in out
    assert "valence / arousal per class" in out and "action units" in out
    assert "class share" in out and "AU prevalence" in out
    for cls, k in labels["expression"].value_counts().items():
        assert any(line.split("│")[1].strip() == cls and line.split("│")[2].strip() == str(k)
                   for line in out.splitlines() if line.count("│") > 3)
    expected = [f"{p}_{f}.png" for p in ("train", "validation")
                for f in ("class_distribution", "va_circumplex", "va_per_class", "au_prevalence")]
    expected.append("split_comparison.png")
    _pngs_ok(plots, expected)


def test_data_check_reports_missing_images(synth_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(synth_dir / "val", copy)
    first = pd.read_csv(copy / "labels.csv")["path"].iloc[:2]
    for p in first:
        (copy / p).unlink()
    code = main(["data", "check", str(copy)])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 of 48 annotated" in out
    assert "46" in out
    # reader options pass through; unchecked files are reported as such
    code = main(["data", "check", str(copy), "-o", "check_files=false"])
    out = capsys.readouterr().out
    assert code == 0 and "not checked" in out and "48" in out


def test_data_check_bad_spec_is_one_line_error(tmp_path, capsys):
    code = main(["data", "check", f"nosuchformat:{tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown dataset format" in err


@pytest.mark.realdata
@pytest.mark.skipif(not CKPLUS.is_dir(), reason="shared CK+48 data not present")
def test_data_check_on_ckplus(tmp_path, capsys):
    plots = tmp_path / "ck"
    code = main(["data", "check", f"ckplus:{CKPLUS}", "--plots", str(plots)])
    out = capsys.readouterr().out
    assert code == 0
    # class sizes documented in shared/data/README.md
    for cls, k in {"anger": 135, "contempt": 54, "disgust": 177, "fear": 75, "happiness": 207,
                   "sadness": 84, "surprise": 249}.items():
        assert any(cls in line and f" {k} " in line for line in out.splitlines()), cls
    assert "981" in out and "118" in out  # samples, subjects
    assert "no valence/arousal labels" in out  # CK+ has none: VA plots skipped with a note
    _pngs_ok(plots, ["class_distribution.png", "au_prevalence.png"])
    assert not (plots / "va_circumplex.png").exists()
