"""AffectTable (DataFrame subclass, accessors, summary, plots) and the incremental writers."""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from affectlab.analyze.table import AffectTable, table_columns
from affectlab.analyze.writers import TableWriter
from affectlab.errors import ConfigError

EXPR = ["neutral", "happiness", "sadness"]
AUS = ["AU6", "AU12"]


def _frame(n=20, seed=0):
    rng = np.random.default_rng(seed)
    cols = table_columns(EXPR, True, AUS)
    p = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({
        "input": ["clip.mp4"] * n,
        "frame": np.arange(n),
        "time_s": np.arange(n) / 10,
        "face": np.where(np.arange(n) % 5 == 4, -1, 0),
        "x": pd.array([10] * n, dtype="Int64"), "y": pd.array([20] * n, dtype="Int64"),
        "w": pd.array([30] * n, dtype="Int64"), "h": pd.array([30] * n, dtype="Int64"),
        "score": np.full(n, 0.9),
        **{f"expr_{e}": p[:, j] for j, e in enumerate(EXPR)},
        "expression": np.array(EXPR, dtype=object)[p.argmax(1)],
        "valence": rng.uniform(-1, 1, n), "arousal": rng.uniform(-1, 1, n),
        "AU6": rng.uniform(0, 1, n), "AU12": rng.uniform(0, 1, n),
    }, columns=cols)
    noface = df["face"] < 0
    df.loc[noface, ["x", "y", "w", "h"]] = pd.NA
    df.loc[noface, ["score", "valence", "arousal", "AU6", "AU12"] + [f"expr_{e}" for e in EXPR]] = np.nan
    df.loc[noface, "expression"] = None
    return df


def test_columns_follow_design():
    assert table_columns(EXPR, True, AUS) == [
        "input", "frame", "time_s", "face", "x", "y", "w", "h", "score",
        "expr_neutral", "expr_happiness", "expr_sadness", "expression", "valence", "arousal", "AU6", "AU12"]
    assert table_columns() == ["input", "frame", "time_s", "face", "x", "y", "w", "h", "score"]


def test_subclass_keeps_type_and_metadata_through_pandas_operations():
    t = AffectTable.from_frame(_frame(), EXPR, AUS, {"model": "m"})
    sub = t[t["frame"] > 3].head(5)
    assert isinstance(sub, AffectTable)
    assert sub.expression_names == EXPR and sub.au_names == AUS and sub.model_info == {"model": "m"}
    assert isinstance(t.faces, AffectTable) and (t.faces["face"] >= 0).all()
    assert list(t.expressions.columns) == EXPR
    np.testing.assert_allclose(t.faces.expressions.sum(axis=1), 1.0)
    assert list(t.va.columns) == ["valence", "arousal"]
    assert list(t.aus.columns) == AUS
    assert list(t.boxes.columns) == ["x", "y", "w", "h", "score"]
    assert t.face_ids() == [0]


def test_summary_per_face():
    df = _frame()
    s = AffectTable.from_frame(df).summary().set_index("face")
    faces = df[df["face"] == 0]
    assert s.loc[0, "frames"] == len(faces) and s.loc[-1, "frames"] == 4
    assert s.loc[0, "valence_mean"] == pytest.approx(faces["valence"].mean())
    assert s.loc[0, "mean_AU12"] == pytest.approx(faces["AU12"].mean())
    top = faces["expression"].value_counts(normalize=True)
    assert s.loc[0, "dominant"] == top.index[0] and s.loc[0, "dominant_share"] == pytest.approx(top.iloc[0])


def test_plots_draw_the_data():
    t = AffectTable.from_frame(_frame(), EXPR, AUS)
    ax = t.plot_timeline()
    assert len(ax.lines) == len(EXPR)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), t.faces["expr_happiness"].to_numpy())
    ax = t.plot_circumplex()
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], t.faces["valence"].to_numpy())
    ax = t.plot_aus()
    np.testing.assert_allclose(ax.images[0].get_array(), t.faces[AUS].to_numpy().T)
    with pytest.raises(ConfigError, match="no valence"):
        AffectTable.from_frame(_frame().drop(columns=["valence", "arousal"])).plot_circumplex()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_writers_round_trip_and_are_valid_after_each_chunk(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"t{suffix}"
    w = TableWriter(path, df.columns)
    if suffix != ".parquet":  # a Parquet file is valid once its footer is written, on close
        assert len(AffectTable.read(path)) == 0  # valid (empty) before any row
    w.write(df.iloc[:8])
    if suffix != ".parquet":
        assert len(AffectTable.read(path)) == 8
    w.write(df.iloc[8:])
    w.close()
    back = AffectTable.read(path)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    np.testing.assert_allclose(back["valence"].to_numpy(dtype=float), df["valence"].to_numpy(dtype=float), atol=1e-8)
    assert back.loc[back["face"] < 0, "x"].isna().all()
    assert back.loc[back["face"] >= 0, "x"].astype(int).eq(10).all()
    assert back["expression"].isna().sum() == 4
    if suffix == ".json":
        assert isinstance(json.loads(path.read_text()), list)


def test_writer_rejects_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match=r"\.xlsx"):
        TableWriter(tmp_path / "t.xlsx", ["input"])
