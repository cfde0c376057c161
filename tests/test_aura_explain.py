"""affectlab explain for AURA: Table 1, diagnosis, plots, HTML; the explainer registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from affectlab.data.synth import generate
from affectlab.errors import ModelError
from affectlab.features.cache import extract_features
from affectlab.features.dataset import FeatureDataset
from affectlab.interpret import available_explainers, explain, get_explainer, register_explainer
from affectlab.methods.base import create_method
from affectlab.modelfile import save_model


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain")
    generate(root / "s", 64, size=32, seed=7, progress=False, label_noise=0.1)
    torch.manual_seed(0)
    store = extract_features(f"manifest:{root / 's' / 'labels.csv'}", "builtin:cnn-tiny", root / "f.zarr", progress=False)
    ds = FeatureDataset(store.path)
    m = create_method(
        "aura", ds.label_space, {"feature_dim": store.dim, "num_archetypes": 12, "dim": 16, "hidden": 32, "backbone": "builtin:cnn-tiny"}
    )
    x = torch.as_tensor(ds.features_array())
    data = {"features": x, "expr": torch.as_tensor(np.array(ds.expr_targets)), "va": torch.as_tensor(np.array(ds.va_targets)), "au": torch.as_tensor(np.array(ds.au_targets))}
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(30):
        b = torch.randperm(len(x))[:32]
        batch = {k: v[b] for k, v in data.items()}
        loss = m.loss(m(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    save_model(root / "run" / "model.ckpt", m)
    out = root / "out"
    result = explain(root / "run", f"features:{store.path}", out, embedding="pca", progress=False)
    return {"root": root, "store": store, "ds": ds, "model": m, "out": out, "result": result}


def test_writes_every_file(explained):
    files = explained["result"]["files"]
    for name in ("archetypes", "archetype_stats", "diagnosis", "samples", "umap", "va_archetypes", "html"):
        assert files[name].is_file() and files[name].stat().st_size > 0, name


def test_archetype_table_is_table_1(explained):
    ds, m, out = explained["ds"], explained["model"], explained["out"]
    table = pd.read_csv(out / "archetypes.csv")
    samples = pd.read_csv(out / "samples.csv")
    assert list(table.columns[:7]) == [
        "task", "group", "assigned_archetypes", "usage_min", "usage_max", "archetype_samples", "dataset_samples"
    ]
    usage = samples["archetype"].value_counts()
    own = m.archetype_predictions()["expr_prob"].argmax(1).numpy()
    expr = table[table["task"] == "expression"]
    assert list(expr["group"]) == list(ds.label_space.expressions)
    # every matched sample is counted once over the classes, and every labelled sample once
    assert expr["archetype_samples"].sum() == len(ds)
    assert expr["dataset_samples"].sum() == int((np.array(ds.expr_targets) >= 0).sum())
    for row in expr.itertuples():
        ids = [int(a) for a in str(row.archetypes).split()] if row.assigned_archetypes else []
        assert len(ids) == row.assigned_archetypes
        assert all(ds.label_space.expressions[own[a]] == row.group for a in ids)
        if ids:
            counts = [usage[a] for a in ids]
            assert (row.usage_min, row.usage_max, row.archetype_samples) == (min(counts), max(counts), sum(counts))
        given = ds.label_space.expressions.index(row.group)
        assert row.dataset_samples == int((np.array(ds.expr_targets) == given).sum())
    for task in ("arousal", "valence"):
        rows = table[table["task"] == task]
        assert len(rows) == 7 and rows["archetype_samples"].sum() == len(ds)
        assert rows["dataset_samples"].sum() == len(ds)  # synth: every sample has VA
    au = table[table["task"] == "AU12"]
    assert len(au) == 4 and au["archetype_samples"].sum() == len(ds)


def test_diagnosis_ranks_disagreements(explained):
    diag = pd.read_csv(explained["out"] / "diagnosis.csv")
    assert len(diag) > 0
    assert (diag["given"] != diag["archetype_label"]).all()
    assert diag["confidence"].is_monotonic_decreasing
    assert list(diag["rank"]) == list(range(1, len(diag) + 1))
    assert {"expression_true", "label_flipped", "path"} <= set(diag.columns)
    expected = 1 - np.sqrt(diag["p_archetype_given"] * diag["p_model_given"])
    np.testing.assert_allclose(diag["confidence"], expected, rtol=1e-5)


def test_html_has_thumbnails_and_survives_missing_images(explained, tmp_path):
    page = (explained["out"] / "archetypes.html").read_text()
    used = int((pd.read_csv(explained["out"] / "archetype_stats.csv")["usage"] > 0).sum())
    assert page.count("<tr>") == used + 1
    assert "data:image/jpeg;base64," in page
    # the explanation of a store whose images are gone still works, without thumbnails
    root = explained["root"]
    moved = tmp_path / "s"
    shutil.copytree(root / "s", moved)
    shutil.rmtree(root / "s")
    try:
        res = explain(root / "run", f"features:{explained['store'].path}", tmp_path / "o", embedding="pca", progress=False)
        text = res["files"]["html"].read_text()
        assert "image not available" in text and "base64" not in text
    finally:
        shutil.copytree(moved, root / "s")


def test_registry_dispatch(explained, tmp_path):
    assert "aura" in available_explainers()
    assert get_explainer("aura").__name__ == "explain_aura"
    calls = []
    register_explainer("test-method-x", lambda *a, **k: calls.append(a) or {"files": {}})
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("test-method-x", lambda *a, **k: {})
    with pytest.raises(ModelError, match="no explainer"):
        get_explainer("no-such-method")
    from affectlab.data.schema import EXPRESSIONS, LabelSpace

    base = create_method("baseline", LabelSpace(expressions=EXPRESSIONS), {"backbone": "builtin:cnn-tiny"})
    save_model(tmp_path / "b" / "model.ckpt", base)
    with pytest.raises(ModelError, match="no explainer for models of method 'baseline'"):
        explain(tmp_path / "b", "x", tmp_path / "o")


def test_cli_explain(explained, tmp_path, capsys):
    # UMAP (the default) JIT-compiles for tens of seconds; the CLI path is the same with PCA
    from affectlab.cli import main

    args = ["explain", "--model", str(explained["root"] / "run"), "--data", f"features:{explained['store'].path}"]
    code = main([*args, "--out", str(tmp_path / "e"), "--embedding", "pca", "-q"])
    assert code == 0
    assert (tmp_path / "e" / "umap.png").stat().st_size > 10_000
    assert "archetypes match" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "f"), "--embedding", "tsne", "-q"]) == 2
    assert "embedding" in capsys.readouterr().err


def test_summary_names_samples_by_file(explained):
    flagged = [line for line in explained["result"]["summary"] if "disagree" in line]
    assert flagged
    diag = pd.read_csv(explained["out"] / "diagnosis.csv")
    first = Path(diag["path"].iloc[0]).name
    assert f"most confident: {first} given {diag['given'].iloc[0]}" in flagged[0]
    assert "#" not in flagged[0]
