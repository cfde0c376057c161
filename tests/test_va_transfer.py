import numpy as np
import pandas as pd
import pytest

from affectlab.data import va_transfer as vt
from affectlab.errors import DatasetError, LabelError

CENTRES = {"happiness": (0.7, 0.4), "sadness": (-0.6, -0.3), "anger": (-0.5, 0.6), "neutral": (0.0, 0.0)}
SPREAD = {"happiness": (0.15, 0.2), "sadness": (0.1, 0.15), "anger": (0.2, 0.1), "neutral": (0.1, 0.1)}


def _anchor(n_per_class=400, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for name, (cv, ca) in CENTRES.items():
        sv, sa = SPREAD[name]
        v = np.clip(rng.normal(cv, sv, n_per_class), -1, 1)
        a = np.clip(rng.normal(ca, sa, n_per_class), -1, 1)
        rows += [(f"/data/a/{name}_{i}.png", name, v[i], a[i]) for i in range(n_per_class)]
    return pd.DataFrame(rows, columns=["path", "expression", "valence", "arousal"])


def test_fit_ellipses_matches_pandas():
    anchor = _anchor()
    anchor.loc[0, "valence"] = np.nan  # ignored row
    table = vt.fit_ellipses(anchor).set_index("expression")
    kept = anchor.dropna()
    for name, group in kept.groupby("expression"):
        assert table.loc[name, "mean_valence"] == pytest.approx(group["valence"].mean())
        assert table.loc[name, "std_arousal"] == pytest.approx(group["arousal"].std(ddof=0))
        assert table.loc[name, "n"] == len(group)


def test_transfer_keeps_class_means_and_stays_inside(tmp_path):
    anchor = _anchor()
    target = anchor.sample(frac=1.0, random_state=1).reset_index(drop=True)[["path", "expression"]]
    manifest, table = vt.transfer_va(target, tmp_path / "t.csv", anchor=anchor, seed=3)
    t = table.set_index("expression")
    for name, group in manifest.groupby("expression"):
        # uniform in an ellipse: the mean converges to the centre
        assert abs(group["valence"].mean() - t.loc[name, "mean_valence"]) < 0.05
        assert abs(group["arousal"].mean() - t.loc[name, "mean_arousal"]) < 0.05
    assert vt.inside_ellipses(manifest["expression"], manifest[["valence", "arousal"]].to_numpy(), table).all()
    assert manifest[["valence", "arousal"]].abs().max().max() <= 1
    # the manifest is relative to its own folder and the ellipse table sits beside it
    assert manifest["path"].iloc[0].startswith("..")
    assert (tmp_path / "t.ellipses.csv").exists()


def test_same_seed_same_labels_and_reuse_of_ellipses(tmp_path):
    anchor = _anchor(50)
    target = anchor[["path", "expression"]].head(60)
    m1, table = vt.transfer_va(target, tmp_path / "a.csv", anchor=anchor, seed=7)
    m2, _ = vt.transfer_va(target, tmp_path / "b.csv", ellipses=vt.read_ellipses(vt.ellipse_path(tmp_path / "a.csv")), seed=7)
    np.testing.assert_allclose(m1[["valence", "arousal"]], m2[["valence", "arousal"]])
    m3, _ = vt.transfer_va(target, tmp_path / "c.csv", anchor=anchor, seed=8)
    assert not np.allclose(m1["valence"], m3["valence"])


def test_discrete_samples_integer_points_inside_scaled_ellipse(tmp_path):
    anchor = _anchor()
    target = anchor[["path", "expression"]]
    manifest, table = vt.transfer_va(target, tmp_path / "d.csv", anchor=anchor, discrete=True, seed=0)
    ints = manifest[["valence_int", "arousal_int"]].to_numpy(dtype=float)
    np.testing.assert_allclose(ints / 10, manifest[["valence", "arousal"]].to_numpy())
    assert np.all(np.abs(ints) <= 10)
    assert vt.inside_ellipses(manifest["expression"], ints / 10, table, tol=1e-6).all()
    # several distinct integer points per class, not only the centre
    points = manifest["valence_int"].astype(str) + "," + manifest["arousal_int"].astype(str)
    assert points.groupby(manifest["expression"]).nunique().min() >= 2


def test_degenerate_discrete_ellipse_gives_nearest_integer():
    table = pd.DataFrame(
        [("neutral", 0.02, -0.03, 0.001, 0.001, 5)], columns=list(vt.ELLIPSE_COLUMNS)
    )
    va = vt.sample_va(["neutral"] * 4, table, discrete=True)
    np.testing.assert_allclose(va, 0.0)


def test_missing_classes_are_named():
    anchor = _anchor(20)
    anchor = anchor[anchor["expression"] != "anger"]
    table = vt.fit_ellipses(anchor)
    with pytest.raises(LabelError, match="anger") as err:
        vt.sample_va(["happiness", "anger", "fear"], table)
    assert "fear" in str(err.value)


def test_missing_target_expression_gets_nan():
    table = vt.fit_ellipses(_anchor(20))
    va = vt.sample_va(["happiness", None, ""], table)
    assert np.isfinite(va[0]).all() and np.isnan(va[1:]).all()


def test_bad_inputs():
    with pytest.raises(DatasetError, match="missing column"):
        vt.fit_ellipses(pd.DataFrame({"expression": ["happiness"]}))
    with pytest.raises(DatasetError, match="at least 2"):
        vt.fit_ellipses(pd.DataFrame({"expression": ["happiness"], "valence": [0.1], "arousal": [0.2]}))
    with pytest.raises(DatasetError, match="exactly one"):
        vt.transfer_va(pd.DataFrame({"path": [], "expression": []}), "x.csv")


def test_read_ellipses_validates(tmp_path):
    bad = tmp_path / "e.csv"
    pd.DataFrame([("happiness", 0.5, 0.3, -0.1, 0.2, 3)], columns=list(vt.ELLIPSE_COLUMNS)).to_csv(bad, index=False)
    with pytest.raises(DatasetError, match=r"e.csv:2"):
        vt.read_ellipses(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        vt.read_ellipses(tmp_path / "none.csv")


def test_continuous_points_are_uniform_inside_the_ellipse():
    """Uniform in the ellipse (003): the squared normalised radius d is U(0, 1) and each
    coordinate's variance is axis^2 / 4. A constant centre, points on the boundary or a
    Gaussian draw all fail this (checked by replacing the sampler with each)."""
    from scipy import stats

    table = pd.DataFrame(
        [("neutral", 0.1, -0.2, 0.3, 0.15, 100)], columns=list(vt.ELLIPSE_COLUMNS)
    )
    va = vt.sample_va(["neutral"] * 4000, table, seed=0)
    d = ((va[:, 0] - 0.1) / 0.3) ** 2 + ((va[:, 1] + 0.2) / 0.15) ** 2
    assert d.max() <= 1 + 1e-9
    assert stats.kstest(d, "uniform").pvalue > 0.01
    np.testing.assert_allclose(va.std(axis=0), [0.3 / 2, 0.15 / 2], rtol=0.05)
    np.testing.assert_allclose(va.mean(axis=0), [0.1, -0.2], atol=0.01)


def test_cli_manifest_written_away_from_its_images_says_how_to_load_it(tmp_path, capsys):
    """Readers refuse paths leaving a manifest's folder; transfer-va says how to load its output."""
    from affectlab.cli import main
    from affectlab.data.datasets import load_dataset
    from affectlab.data.synth import generate

    generate(tmp_path / "faces", n=40, size=32, seed=1, progress=False)
    out = tmp_path / "elsewhere" / "va.csv"
    out.parent.mkdir()
    assert main(["transfer-va", "--anchor", f"manifest:{tmp_path / 'faces' / 'labels.csv'}",
                 "--target", f"manifest:{tmp_path / 'faces' / 'labels.csv'}", "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    spec = f"manifest:{out}?allow_outside_root=true"
    assert spec in said
    with pytest.raises(DatasetError, match="leaves the dataset root"):
        load_dataset(f"manifest:{out}")
    assert len(load_dataset(spec)) == 40
