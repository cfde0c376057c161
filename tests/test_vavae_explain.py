"""The VA-VAE explainer: the seven tasks of 003 on a small synthetic set, the probes
against hand-made latents, identity-disjoint fitting, the CLI and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from affectlab.data.schema import LabelSpace
from affectlab.errors import ModelError
from affectlab.features.backbones import Preprocessing
from affectlab.interpret.vavae_explain import (
    TASK_FILES,
    alignment_table,
    encode_dataset,
    explain_vavae,
    identity_split,
    regression_table,
)
from affectlab.methods.base import create_method
from affectlab.modelfile import save_model
from affectlab.runtime.hub import load_model

SIZE = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from affectlab.data.synth import generate

    root = tmp_path_factory.mktemp("vavae_explain")
    generate(root / "data", 64, size=SIZE, seed=5, subjects=16)
    space = LabelSpace(va=True)
    pre = Preprocessing.named("none", SIZE).to_dict()
    torch.manual_seed(0)
    reg = create_method("vavae", space, {"image_size": SIZE, "channels": [4, 8, 8, 8], "dim_v": 2, "dim_a": 2, "dim_z": 3})
    van = create_method(
        "vavae", space, {"image_size": SIZE, "channels": [4, 8, 8, 8], "regularize": False}
    )
    save_model(root / "reg" / "model.ckpt", reg, preprocessing=pre)
    save_model(root / "van" / "model.ckpt", van, preprocessing=pre)
    base = create_method("baseline", LabelSpace(va=True), {"backbone": "builtin:cnn-tiny", "backbone_options": {"input_size": SIZE}})
    save_model(root / "base" / "model.ckpt", base, preprocessing=pre)
    return root


def test_cli_explain_writes_all_seven_tasks_and_html(setup, tmp_path):
    from affectlab.cli import main

    spec = f"manifest:{setup / 'data' / 'labels.csv'}"
    out = tmp_path / "exp"
    code = main(["explain", "--model", str(setup / "reg"), "--data", spec, "--out", str(out),
                 "--compare", str(setup / "van"), "-q"])
    assert code == 0
    for name in TASK_FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for stem in ("alignment", "expression", "regression", "inverse_regression", "reconstruction"):
        assert (out / f"{stem}.md").read_text().startswith("| model |")
    page = (out / "vavae.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # the figures of tasks 1, 6 and 7
    assert "regularized (reg)" in page and "vanilla (van)" in page
    reg = pd.read_csv(out / "regression.csv")
    assert set(reg["model"]) == {"regularized (reg)", "vanilla (van)"}
    assert set(reg["task"]) == {"z_v -> V", "z_a -> A"}
    assert set(pd.read_csv(out / "inverse_regression.csv")["task"]) == {"z_v -> A", "z_a -> V"}
    expr = pd.read_csv(out / "expression.csv")
    assert {"DT", "SVM", "MLP", "chance"} <= set(expr.columns)
    assert expr[["DT", "SVM", "MLP"]].to_numpy().min() >= 0 and expr[["DT", "SVM", "MLP"]].to_numpy().max() <= 1
    align = pd.read_csv(out / "alignment.csv")
    # the regularized model also reports its projections, the vanilla one only the latents
    assert sorted(align["readout"][align["model"] == "regularized (reg)"]) == ["latent", "projection"]
    assert list(align["readout"][align["model"] == "vanilla (van)"]) == ["latent"]


def test_alignment_and_reconstruction_match_the_model(setup):
    method, info = load_model(setup / "reg")
    res = explain_vavae(method, info, f"manifest:{setup / 'data' / 'labels.csv'}", setup / "one")
    from affectlab.data.datasets import load_dataset

    ds = load_dataset(f"manifest:{setup / 'data' / 'labels.csv'}")
    labels = ds.labels
    # recompute by hand from the images
    from PIL import Image

    x = torch.from_numpy(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in labels["path"]])
    ).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = method({"image": x})
    va = labels[["valence", "arousal"]].to_numpy()
    zv = out.extras["z_v"][:, 0].numpy()
    table = res["tables"]["alignment"]
    row = table[table["readout"] == "latent"].iloc[0]
    assert row["V_mse"] == pytest.approx(np.mean((zv - va[:, 0]) ** 2), rel=1e-4)
    proj = table[table["readout"] == "projection"].iloc[0]
    assert proj["A_mae"] == pytest.approx(np.mean(np.abs(out.va[:, 1].numpy() - va[:, 1])), rel=1e-4)
    mse = np.mean((out.extras["recon"].numpy() - x.numpy()) ** 2)
    assert res["metrics"]["regularized (reg)"]["mse_per_pixel"] == pytest.approx(mse, rel=1e-4)
    assert res["va_correlation"] == pytest.approx(np.corrcoef(va[:, 0], va[:, 1])[0, 1], rel=1e-6)


def test_probes_on_known_latents():
    rng = np.random.default_rng(0)
    n = 400
    v, a = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    enc = {
        "z_v": (2 * v + 0.05 * rng.normal(size=n))[:, None],
        "z_a": (a + 0.05 * rng.normal(size=n))[:, None],
        "va": np.stack([v, a], 1),
        "proj": None,
    }
    fit = np.arange(n) < n // 2
    reg = regression_table(enc, fit, [("z_v", "V"), ("z_a", "A")])
    assert reg[["Ridge_R2", "SVR_R2", "MLP_R2"]].to_numpy().min() > 0.9
    inv = regression_table(enc, fit, [("z_v", "A"), ("z_a", "V")])
    assert np.abs(inv[["Ridge_R2", "Lasso_R2"]].to_numpy()).max() < 0.1
    al = alignment_table(enc).iloc[0]
    assert al["V_mse"] == pytest.approx(np.mean((enc["z_v"][:, 0] - v) ** 2))
    assert al["combined_mae"] == pytest.approx(al["V_mae"] + al["A_mae"])


def test_identity_split_is_identity_disjoint():
    labels = pd.DataFrame({"subject": np.repeat([f"s{i}" for i in range(10)], 5)})
    index = np.arange(50)
    fit = identity_split(labels, index, fraction=0.5, seed=1)
    assert 0 < fit.sum() < 50
    assert not set(labels["subject"][fit]) & set(labels["subject"][~fit])
    # without subjects: a random half
    assert identity_split(None, index, fraction=0.3).sum() == 15


def test_non_vae_models_are_rejected(setup, tmp_path):
    from affectlab.interpret import explain

    base, info = load_model(setup / "base")
    spec = f"manifest:{setup / 'data' / 'labels.csv'}"
    with pytest.raises(ModelError, match="not a VA-VAE"):
        explain_vavae(base, info, spec, tmp_path / "a")
    with pytest.raises(ModelError, match="not a VA-VAE"):
        explain(setup / "reg", spec, tmp_path / "b", compare=setup / "base")
    with pytest.raises(ModelError, match="not a VA-VAE"):
        encode_dataset(base, [])
