"""An AURA head attached to an image model: archetype columns in analysis.

A tiny image model (builtin:cnn-tiny) and an AURA head on its features are built here;
the archetype of every face and the label statistics of every archetype are checked
against the nearest codebook vector and the member counts computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from affectlab.cli import main
from affectlab.data.schema import EXPRESSIONS, LabelSpace
from affectlab.errors import ModelError
from affectlab.methods.base import create_method
from affectlab.modelfile import save_model

COLUMNS = ["archetype", "archetype_label", "archetype_purity", "archetype_size", "archetype_distance"]
SPACE = LabelSpace(expressions=EXPRESSIONS)
N_ARCH = 6

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FACES = DATA / "facial_expressions"


def _nearest(z: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codebook row of each z (plain numpy: squared distances, argmin)."""
    d2 = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    idx = d2.argmin(1)
    return idx, np.sqrt(d2[np.arange(len(z)), idx])


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Image model, AURA head on its features, member store, combined model file."""
    from affectlab.data.synth import generate
    from affectlab.features.cache import extract_features
    from affectlab.features.dataset import FeatureDataset
    from affectlab.interpret.attach import attach_aura

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("aura_head")
    generate(root / "train", 40, size=32, seed=0, keep="expr", progress=False)
    generate(root / "test", 6, size=32, seed=1, keep="expr", progress=False)
    base = create_method("baseline", SPACE, {"backbone": "builtin:cnn-tiny"}).eval()
    base_file = save_model(root / "base.ckpt", base, preprocessing=base.preprocessing.to_dict())
    store = root / "train.zarr"
    extract_features(f"manifest:{root / 'train' / 'labels.csv'}", f"run:{base_file}", store, dtype="float32", progress=False)
    members = FeatureDataset(store)
    head = create_method("aura", SPACE, {"feature_dim": base.backbone.out_dim, "dim": 16, "hidden": 16, "num_archetypes": N_ARCH})
    head.eval()
    with torch.no_grad():
        # archetypes on member projections, so several of them have members
        z = head.project(torch.from_numpy(members.features_array()))
        head.seed_archetypes(z[:: max(1, len(z) // N_ARCH)][:N_ARCH], torch.arange(N_ARCH))
    head_file = save_model(root / "head.ckpt", head)
    combined = root / "with_aura.ckpt"
    summary = attach_aura(base_file, head_file, combined, members=f"features:{store}")
    return {
        "root": root, "base": base, "head": head, "base_file": base_file, "head_file": head_file,
        "members": members, "combined": combined, "summary": summary,
    }


def _by_hand_members(parts):
    head, members = parts["head"], parts["members"]
    with torch.no_grad():
        z = head.project(torch.from_numpy(members.features_array())).numpy()
    idx, _ = _nearest(z, head.archetypes().detach().numpy())
    labels = np.asarray(members.expr_targets)
    count = np.bincount(idx, minlength=N_ARCH)
    hist = np.stack([np.bincount(labels[idx == a], minlength=len(EXPRESSIONS)) for a in range(N_ARCH)])
    return count, hist


def test_archetype_is_the_nearest_codebook_vector(parts):
    import cv2

    from affectlab.runtime.predictor import Predictor

    files = sorted((parts["root"] / "test").rglob("*.jpg"))
    assert len(files) == 6
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    predictor = Predictor.load(parts["combined"])
    table = predictor.predict_table(images)
    assert list(table.columns[-len(COLUMNS):]) == COLUMNS
    base, head = parts["base"], parts["head"]
    with torch.no_grad():
        x = predictor.preprocess(images)
        z = head.project(base.backbone(x)["global"]).numpy()
        expected_prob = torch.softmax(base(dict(image=x)).expr_logits, 1).numpy()
    idx, dist = _nearest(z, head.archetypes().detach().numpy())
    np.testing.assert_array_equal(table["archetype"].to_numpy(dtype=int), idx)
    np.testing.assert_allclose(table["archetype_distance"].to_numpy(dtype=float), dist, atol=1e-4)
    # predict="base": the image model's probabilities are untouched
    np.testing.assert_allclose(table[[f"expr_{e}" for e in EXPRESSIONS]].to_numpy(dtype=float), expected_prob, atol=1e-5)


def test_label_statistics_are_the_members_counts(parts):
    from affectlab.runtime.predictor import Predictor

    count, hist = _by_hand_members(parts)
    model = Predictor.load(parts["combined"]).method
    np.testing.assert_array_equal(model.member_count.numpy(), count)
    assert parts["summary"]["used_archetypes"] == int((count > 0).sum()) >= 2
    assert parts["summary"]["members"] == len(parts["members"]) == count.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = hist.max(1) / hist.sum(1)
    np.testing.assert_allclose(model.member_purity.numpy(), purity, equal_nan=True)
    for a in range(N_ARCH):
        label = int(model.member_label[a])
        if count[a] == 0:
            assert label == -1
        else:
            # the majority label (any of them when tied)
            assert hist[a, label] == hist[a].max()


def test_analyze_with_a_head_adds_the_archetype_columns(parts, tmp_path):
    out = tmp_path / "faces.csv"
    folder = parts["root"] / "test"
    assert main(["analyze", str(folder), "--model", str(parts["combined"]), "--detector", "none", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 6 and set(COLUMNS) <= set(table.columns)
    count, hist = _by_hand_members(parts)
    arch = table["archetype"].to_numpy(dtype=int)
    np.testing.assert_array_equal(table["archetype_size"].to_numpy(dtype=int), count[arch])
    for a, label, purity in zip(arch, table["archetype_label"], table["archetype_purity"]):
        assert hist[a, EXPRESSIONS.index(label)] == hist[a].max()
        assert purity == pytest.approx(hist[a].max() / hist[a].sum())
    # Parquet keeps the types (integer ids, string labels)
    pq = tmp_path / "faces.parquet"
    assert main(["analyze", str(folder), "--model", str(parts["combined"]), "--detector", "none", "--out", str(pq), "--quiet"]) == 0
    back = pd.read_parquet(pq)
    assert str(back["archetype"].dtype) == "Int64"
    np.testing.assert_array_equal(back["archetype"].to_numpy(dtype=int), arch)


def test_python_api_rows_without_a_face_have_empty_archetype(parts, tmp_path):
    import cv2

    import affectlab

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    table = affectlab.analyze([str(blank)], model=str(parts["combined"]), progress=False)
    assert list(table["face"]) == [-1]
    assert table["archetype"].isna().all() and table["archetype_label"].isna().all()


def test_a_model_without_a_head_has_no_archetype_columns(parts, tmp_path):
    out = tmp_path / "faces.csv"
    folder = parts["root"] / "test"
    assert main(["analyze", str(folder), "--model", str(parts["base_file"]), "--detector", "none", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 6 and not any(c.startswith("archetype") for c in table.columns)


def test_head_of_another_feature_width_fails_with_one_line(parts, tmp_path, capsys):
    from affectlab.interpret.attach import attach_aura

    wrong = create_method("aura", SPACE, {"feature_dim": 7, "dim": 8, "hidden": 8, "num_archetypes": 4})
    wrong_file = save_model(tmp_path / "wrong.ckpt", wrong)
    with pytest.raises(ModelError, match="7-d features") as err:
        attach_aura(parts["base_file"], wrong_file, tmp_path / "x.ckpt", members=f"features:{parts['root'] / 'train.zarr'}")
    assert "\n" not in str(err.value) and f"{parts['base'].backbone.out_dim}-d" in str(err.value)
    code = main(["models", "attach-aura", "--model", str(parts["base_file"]), "--head", str(wrong_file), "--out", str(tmp_path / "x.ckpt")])
    assert code == 2
    assert "7-d features" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def test_a_head_that_is_not_aura_is_refused(parts, tmp_path):
    from affectlab.interpret.attach import attach_aura

    with pytest.raises(ModelError, match="not an AURA head"):
        attach_aura(parts["base_file"], parts["base_file"], tmp_path / "x.ckpt", members=f"features:{parts['root'] / 'train.zarr'}")


@pytest.mark.realdata
@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/facial_expressions is absent")
def test_default_model_explains_a_real_face(tmp_path, monkeypatch):
    from affectlab.runtime.hub import BASE_MODEL_FILE
    from affectlab.modelfile import read_payload

    if not BASE_MODEL_FILE.is_file():
        pytest.skip("packaged weights not built in this checkout")
    assert read_payload(BASE_MODEL_FILE)["method"] == "aura-head"
    labels = pd.read_csv(FACES / "labels.csv")
    name = labels[labels["expression"].str.lower() == "happiness"]["image"].iloc[0]
    out = tmp_path / "face.csv"
    monkeypatch.setenv("AFFECTLAB_HOME", str(tmp_path / "home"))
    assert main(["analyze", str(FACES / "images" / name), "--detector", "none", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 1 and set(COLUMNS) <= set(table.columns)
    row = table.iloc[0]
    assert row["archetype_label"] in EXPRESSIONS
    assert 0 < row["archetype_purity"] <= 1 and row["archetype_size"] >= 1


def test_explain_runs_the_aura_explainer_on_the_attached_head(parts, tmp_path):
    out = tmp_path / "explain"
    spec = f"manifest:{parts['root'] / 'train' / 'labels.csv'}"
    assert main(["explain", "--model", str(parts["combined"]), "--data", spec, "--out", str(out), "--embedding", "pca", "--quiet"]) == 0
    stats = pd.read_csv(out / "archetype_stats.csv")
    count, hist = _by_hand_members(parts)
    # the same members, encoded again by the model's own encoder: the same archetypes
    np.testing.assert_array_equal(stats["usage"].to_numpy(), count)


def test_members_default_to_the_store_the_head_was_trained_on(parts, tmp_path):
    from affectlab.errors import ConfigError
    from affectlab.interpret.attach import attach_aura
    from affectlab.runtime.predictor import Predictor

    with pytest.raises(ConfigError, match="does not record a feature store"):
        attach_aura(parts["base_file"], parts["head_file"], tmp_path / "x.ckpt")
    recorded = save_model(
        tmp_path / "head.ckpt", parts["head"], train_info={"config": {"train": f"features:{parts['root'] / 'train.zarr'}"}}
    )
    attach_aura(parts["base_file"], recorded, tmp_path / "y.ckpt")
    count, _ = _by_hand_members(parts)
    np.testing.assert_array_equal(Predictor.load(tmp_path / "y.ckpt").method.member_count.numpy(), count)


def test_evaluate_predictions_carry_the_archetype_columns(parts, tmp_path):
    from affectlab.runtime.predictor import Predictor
    from affectlab.evaluate.engine import evaluate

    res = evaluate(parts["combined"], f"manifest:{parts['root'] / 'test' / 'labels.csv'}", progress=False)
    table = res.predictions
    assert list(table.columns[-len(COLUMNS):]) == COLUMNS
    assert str(table["archetype"].dtype) == "Int64"
    import cv2

    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in table["path"]]
    direct = Predictor.load(parts["combined"]).predict_table(images)
    np.testing.assert_array_equal(table["archetype"].to_numpy(dtype=int), direct["archetype"].to_numpy(dtype=int))
    assert table["archetype_label"].tolist() == direct["archetype_label"].tolist()


def test_reports_list_the_nearest_archetypes(parts, tmp_path):
    from analyze_media import write_video
    from PIL import Image

    import affectlab

    frames = [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sorted((parts["root"] / "test").rglob("*.jpg"))]
    video = write_video(tmp_path / "clip.mp4", frames * 2)
    table = affectlab.analyze(video, str(parts["combined"]), detector="none", report=tmp_path / "rep", progress=False)
    page = (tmp_path / "rep" / "clip.html").read_text()
    assert "Nearest archetypes" in page
    top = table["archetype"].value_counts()
    assert f"<td>{int(top.index[0])}</td>" in page and f"<td>{int(top.iloc[0])}</td>" in page
    still = affectlab.analyze(parts["root"] / "test", str(parts["combined"]), detector="none", report=tmp_path / "rep2",
                              progress=False)
    images = (tmp_path / "rep2" / "images.html").read_text()
    labels = still.loc[still["face"] >= 0, "archetype_label"].dropna()
    assert len(still) == 6 and len(labels) and all(f"nearest archetype: {label}" in images for label in set(labels))
