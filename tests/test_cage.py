"""CAGE (001_01df4aa5e26e8a28.txt): variants, losses by hand, EMOTIC, init_from, MaxViT-T,
cross-dataset evaluation and the Figure 9-11 plots."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from affectlab import losses
from affectlab import metrics as M
from affectlab.cli import main
from affectlab.data.schema import EMOTIC_CATEGORIES, LabelSpace
from affectlab.data.synth import generate, sample_batch
from affectlab.errors import ConfigError, ModelError
from affectlab.evaluate.plots import cumulative_abs_error, plot_abs_error_curves
from affectlab.methods.base import create_method
from affectlab.modelfile import save_model
from affectlab.runtime.hub import load_model
from affectlab.train.config import resolve_config
from affectlab.evaluate.engine import evaluate, native_va_metrics, run_evaluation
from affectlab.train.engine import train

EXPR8 = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
SPACE = LabelSpace(expressions=EXPR8, va=True)
TINY = {"backbone": "builtin:cnn-tiny", "backbone_options": {"input_size": 32}}


@pytest.fixture(scope="module")
def fixed_batch():
    """32 synthetic faces (32 px) with their expression and VA labels, as a model batch."""
    images, labels = sample_batch(32, seed=5, size=32, keep=("expr", "va"))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.25
    expr = torch.tensor([EXPR8.index(e) for e in labels["expression"]])
    va = torch.tensor(labels[["valence", "arousal"]].to_numpy(np.float32))
    return {"image": x, "expr": expr, "va": va, "index": torch.arange(32)}


def _method(variant, space=SPACE, **kw):
    return create_method("cage", space, {"variant": variant, **TINY, **kw})


# ------------------------------------------------------------------------- variants
def test_variants_predict_their_descriptors(fixed_batch):
    out = {v: _method(v)(fixed_batch) for v in ("discrete", "combined", "valence-arousal")}
    assert out["discrete"].expr_logits.shape == (32, 8) and out["discrete"].va is None
    assert out["combined"].expr_logits.shape == (32, 8) and out["combined"].va.shape == (32, 2)
    assert out["valence-arousal"].expr_logits is None and out["valence-arousal"].va.shape == (32, 2)
    assert out["combined"].va.abs().max() <= 1.0  # tanh-bounded
    assert _method("valence-arousal").label_space.tasks == ("va",)
    assert _method("combined").head.out_features == 10  # the paper's C + 2 head


def test_variant_needing_absent_labels_is_a_config_error():
    with pytest.raises(ConfigError, match="combined.*no va"):
        _method("combined", LabelSpace(expressions=EXPR8))
    with pytest.raises(ConfigError, match="valence-arousal"):
        _method("valence-arousal", LabelSpace(expressions=EXPR8))
    with pytest.raises(ConfigError, match="variant"):
        _method("both")


def test_table4_class_weights_from_training_counts():
    m = _method("discrete")
    counts = np.array([74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750])
    m.set_training_stats({"class_counts": counts, "num_samples": int(counts.sum())})
    inv = 1.0 / counts
    np.testing.assert_allclose(m.expr_weight.numpy(), inv / inv.sum(), rtol=1e-6)
    # Table 4 of 001, AffectNet-8 column, to the precision losses.class_weights documents (1.5%)
    table4 = [0.015605, 0.008709, 0.046078, 0.083078, 0.185434, 0.305953, 0.046934, 0.308210]
    np.testing.assert_allclose(m.expr_weight.numpy(), table4, rtol=0.015)
    with pytest.raises(ModelError, match="class_counts"):
        m.set_training_stats({"class_counts": counts[:7]})


# ----------------------------------------------------------------------- losses by hand
def test_combined_loss_is_weighted_ce_plus_5_mse(fixed_batch):
    m = _method("combined")
    counts = np.bincount(fixed_batch["expr"].numpy(), minlength=8) + 1
    m.set_training_stats({"class_counts": counts, "num_samples": int(counts.sum())})
    batch = dict(fixed_batch)
    batch["va"] = batch["va"].clone()
    batch["va"][:3, 0] = float("nan")  # missing valence labels are left out of the MSE
    batch["expr"] = batch["expr"].clone()
    batch["expr"][3] = -1  # a missing expression is left out of the CE
    out = m(batch)
    terms = m.loss(out, batch)
    w = torch.tensor((1.0 / counts) / (1.0 / counts).sum(), dtype=torch.float32)
    keep = batch["expr"] >= 0
    ce = F.cross_entropy(out.expr_logits[keep], batch["expr"][keep], weight=w)
    # hand-written weighted mean: sum w_y * (-log p_y) / sum w_y
    logp = torch.log_softmax(out.expr_logits[keep], dim=1)
    y = batch["expr"][keep]
    ce_hand = -(w[y] * logp[torch.arange(len(y)), y]).sum() / w[y].sum()
    ok = ~torch.isnan(batch["va"])
    mse = ((out.va[ok] - batch["va"][ok]) ** 2).mean()
    torch.testing.assert_close(ce, ce_hand)
    torch.testing.assert_close(terms["loss"], ce_hand + 5.0 * mse)
    torch.testing.assert_close(terms["mse"], mse)
    torch.testing.assert_close(
        terms["loss"], losses.cage_combined_loss(out.expr_logits, batch["expr"], out.va, batch["va"], weight=w)
    )


def _ccc_numpy(x, y):
    mx, my = x.mean(), y.mean()
    return 2 * ((x - mx) * (y - my)).mean() / (x.var() + y.var() + (mx - my) ** 2)


def test_valence_arousal_loss_is_ccc_plus_3_mse(fixed_batch):
    m = _method("valence-arousal")
    out = m(fixed_batch)
    terms = m.loss(out, fixed_batch)
    p = out.va.detach().double().numpy()
    t = fixed_batch["va"].double().numpy()
    hand = sum((1 - _ccc_numpy(p[:, d], t[:, d])) + 3.0 * ((p[:, d] - t[:, d]) ** 2).mean() for d in range(2))
    assert float(terms["loss"].detach()) == pytest.approx(hand, rel=1e-5)
    ccc_terms = sum(1 - _ccc_numpy(p[:, d], t[:, d]) for d in range(2))
    assert float(terms["ccc"].detach()) == pytest.approx(ccc_terms, rel=1e-5)
    assert set(terms) == {"loss", "ccc", "mse"}  # no cross-entropy in this variant


@pytest.mark.parametrize("variant", ["discrete", "combined", "valence-arousal"])
def test_each_variant_fits_a_fixed_batch(variant, fixed_batch):
    torch.manual_seed(0)
    m = _method(variant)
    m.set_training_stats({"class_counts": np.bincount(fixed_batch["expr"].numpy(), minlength=8) + 1})
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    history = []
    for _ in range(25):
        loss = m.loss(m(fixed_batch), fixed_batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss))
    assert np.mean(history[-3:]) < 0.6 * np.mean(history[:3]), history


# ----------------------------------------------------------------------------- EMOTIC
EMOTIC_SPACE = LabelSpace(expressions=EMOTIC_CATEGORIES, va=True, multilabel=True)


def test_emotic_pos_weights_are_inverse_occurrence_and_bce_by_hand(fixed_batch):
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 26)) < np.linspace(0.02, 0.6, 26)).astype(np.int64)
    labels[:, 5] = 0  # a category never present keeps weight 1
    m = create_method("cage", EMOTIC_SPACE, {"variant": "combined", "dominance": True, **TINY})
    m.set_training_stats({"class_counts": labels.sum(axis=0), "num_samples": 200})
    freq = labels.mean(axis=0)
    expected = np.where(freq > 0, 1.0 / np.where(freq > 0, freq, 1) - 1.0, 1.0)  # (N - n_c) / n_c
    np.testing.assert_allclose(m.expr_weight.numpy(), expected, rtol=1e-6)
    with pytest.warns(RuntimeWarning, match="no positive"):
        reference = losses.multilabel_pos_weight(labels).numpy()
    np.testing.assert_allclose(m.expr_weight.numpy(), reference, rtol=1e-6)

    target = torch.tensor(labels[:32], dtype=torch.float32)
    dom = torch.linspace(-0.8, 0.8, 32)
    batch = {"image": fixed_batch["image"], "expr": target, "va": fixed_batch["va"], "dominance": dom}
    out = m(batch)
    assert out.expr_logits.shape == (32, 26) and out.va.shape == (32, 3)
    terms = m.loss(out, batch)
    bce = F.binary_cross_entropy_with_logits(out.expr_logits, target, pos_weight=m.expr_weight)
    vad = torch.cat([fixed_batch["va"], dom[:, None]], dim=1)
    torch.testing.assert_close(terms["loss"], bce + 5.0 * ((out.va - vad) ** 2).mean())


def test_native_rmse_is_4_5_times_the_scaled_rmse():
    m = {"valence_rmse": 0.2, "arousal_rmse": 0.1, "dominance_rmse": 0.3, "valence_mae": 0.05, "va_ccc": 0.5}
    out = native_va_metrics(m, "emotic:/data/EMOTIC:test")
    assert out["valence_rmse_native"] == pytest.approx(0.9) and out["dominance_rmse_native"] == pytest.approx(1.35)
    assert out["valence_mae_native"] == pytest.approx(0.225) and "va_ccc_native" not in out
    assert native_va_metrics(m, "manifest:x/labels.csv") == {}  # canonical data: nothing added
    assert native_va_metrics(m, "affectnet:/data/AffectNet:val") == {}


def _write_emotic(root: Path, split: str, n: int, seed: int) -> None:
    images, labels = sample_batch(n, seed=seed, size=32, keep=("expr", "va"))
    folder = root / "emotic" / "synth"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        name = f"{split}_{i:04d}.jpg"
        cv2.imwrite(str(folder / name), images[i][:, :, ::-1])
        k = rng.integers(1, 4)
        cats = [EMOTIC_CATEGORIES[j] for j in rng.choice(26, size=k, replace=False)]
        vad = [int(np.clip(round(5.5 + 4.5 * labels["valence"].iloc[i]), 1, 10)),
               int(np.clip(round(5.5 + 4.5 * labels["arousal"].iloc[i]), 1, 10)), int(rng.integers(1, 11))]
        rows.append({"Filename": name, "Folder": "synth", "Image Size": "[32, 32]", "BBox": "[0, 0, 32, 32]",
                     "Categorical_Labels": str(cats), "Continuous_Labels": str(vad), "Gender": "Male", "Age": "Adult"})
    (root / "emotic_pre").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "emotic_pre" / f"{split}.csv")


@pytest.mark.slow
def test_emotic_preset_end_to_end(tmp_path):
    _write_emotic(tmp_path, "train", 32, 1)
    _write_emotic(tmp_path, "test", 16, 2)
    cfg = resolve_config(
        preset="cage-emotic",
        options={"train": f"emotic:{tmp_path}:train", "backbone": "builtin:cnn-tiny", "epochs": 1,
                 "batch_size": 16, "image_size": 32, "train_transform": "eval"},
        sets=["pretrained=false"],  # the preset starts from ImageNet weights, which cnn-tiny has none of
    )
    train(cfg, tmp_path / "run", progress=False)
    method, info = load_model(tmp_path / "run")
    assert method.output_names[-3:] == ("valence", "arousal", "dominance")
    res = run_evaluation(tmp_path / "run", f"emotic:{tmp_path}:test", progress=False, plots=tmp_path / "plots")
    m, t = res.metrics, res.predictions
    true = t[[f"{c}_true" for c in EMOTIC_CATEGORIES]].to_numpy()
    scores = t[[f"expr_{c}" for c in EMOTIC_CATEGORIES]].to_numpy()
    assert m["topk_acc"] == pytest.approx(M.topk_accuracy(true, scores, k=3))
    for dim in ("valence", "arousal", "dominance"):
        err = t[dim].to_numpy() - t[f"{dim}_true"].to_numpy()
        assert m[f"{dim}_rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-5)
        assert m[f"{dim}_rmse_native"] == pytest.approx(4.5 * m[f"{dim}_rmse"])
    # the 1..10 labels read back: native error computed directly on the 1..10 scale
    native_err = (5.5 + 4.5 * t["dominance"]) - (5.5 + 4.5 * t["dominance_true"])
    assert m["dominance_rmse_native"] == pytest.approx(np.sqrt(np.mean(native_err**2)), rel=1e-5)
    assert (tmp_path / "plots" / "abs_error.png").is_file()


# -------------------------------------------------------------------------- init_from
def test_init_from_copies_backbone_and_head_rows_by_name(tmp_path, fixed_batch):
    torch.manual_seed(1)
    combined = _method("combined")
    save_model(tmp_path / "comb" / "model.ckpt", combined)
    va = _method("valence-arousal", init_from=str(tmp_path / "comb"))
    for k, v in combined.backbone.state_dict().items():
        torch.testing.assert_close(va.backbone.state_dict()[k], v)
    torch.testing.assert_close(va.head.weight, combined.head.weight[8:10])
    torch.testing.assert_close(va.head.bias, combined.head.bias[8:10])
    torch.testing.assert_close(va(fixed_batch).va, combined(fixed_batch).va)
    # rebuilding the saved va model ignores init_from (the source may be gone)
    save_model(tmp_path / "va" / "model.ckpt", va)
    (tmp_path / "comb" / "model.ckpt").unlink()
    rebuilt, _ = load_model(tmp_path / "va")
    torch.testing.assert_close(rebuilt(fixed_batch).va, va.eval()(fixed_batch).va)
    # a different backbone cannot initialise this one
    other = create_method("cage", SPACE, {"variant": "combined", "backbone": "builtin:cnn-small"})
    save_model(tmp_path / "other" / "model.ckpt", other)
    with pytest.raises(ModelError, match="does not fit"):
        _method("valence-arousal", init_from=str(tmp_path / "other"))


# ---------------------------------------------------------------------------- MaxViT-T
@pytest.mark.slow
def test_maxvit_t_path_on_cpu():
    torch.manual_seed(0)
    m = create_method("cage", SPACE, {"variant": "combined"})  # default backbone: torchvision:maxvit_t
    assert m.config.backbone == "torchvision:maxvit_t" and m.preprocessing.input_size == 224
    x = torch.randn(2, 3, 224, 224)
    batch = {"image": x, "expr": torch.tensor([1, 4]), "va": torch.tensor([[0.5, 0.2], [-0.4, 0.6]])}
    m.eval()  # fixed batch-norm statistics, no dropout: the same function at each step
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    history = []
    for _ in range(3):
        out = m(batch)
        assert out.expr_logits.shape == (2, 8) and out.va.shape == (2, 2)
        loss = m.loss(out, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < history[0], history


# --------------------------------------------------------------------- cross-dataset
@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cage_cross")
    generate(root / "a", 64, size=32, seed=11, keep=("expr", "va"),
             expressions=["neutral", "happiness", "sadness", "surprise"], progress=False)
    generate(root / "b", 32, size=32, seed=12, keep=("expr", "va"),
             expressions=["happiness", "anger", "sadness"], progress=False)
    return root


@pytest.mark.slow
def test_cross_dataset_evaluation_maps_classes_by_name(two_sets, tmp_path):
    cfg = resolve_config(
        preset="cage-combined",
        options={"train": f"manifest:{two_sets / 'a' / 'labels.csv'}", "backbone": "builtin:cnn-tiny",
                 "epochs": 1, "batch_size": 16, "image_size": 32, "train_transform": "eval"},
        sets=["pretrained=false"],
    )
    train(cfg, tmp_path / "run", progress=False)
    method, info = load_model(tmp_path / "run")
    assert info["label_space"].expressions == ("neutral", "happiness", "sadness", "surprise")

    out_json = tmp_path / "cross.json"
    code = main(["evaluate", "--model", str(tmp_path / "run"), "--data", f"manifest:{two_sets / 'b' / 'labels.csv'}",
                 "--json", str(out_json), "--plots", str(tmp_path / "plots"), "--quiet"])
    assert code == 0
    metrics = json.loads(out_json.read_text())
    assert set(metrics["expr_f1"]) == {"happiness", "sadness"}  # shared classes only; anger is unscored

    # recompute by hand: the model's logits of the shared classes, picked by name
    res = evaluate(tmp_path / "run", f"manifest:{two_sets / 'b' / 'labels.csv'}", progress=False)
    assert res.label_space.expressions == ("happiness", "sadness")
    labels = pd.read_csv(two_sets / "b" / "labels.csv")
    from affectlab.data.datasets import load_dataset
    from affectlab.data.transforms import preprocessing_transform

    ds = load_dataset(f"manifest:{two_sets / 'b' / 'labels.csv'}")
    ds.set_transform(preprocessing_transform(info["preprocessing"], "eval", False))
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        logits = method({"image": x}).expr_logits
    cols = [info["label_space"].expressions.index(n) for n in ("happiness", "sadness")]
    pred = np.array(["happiness", "sadness"])[logits[:, cols].argmax(1).numpy()]
    shared = labels["expression"].isin(["happiness", "sadness"]).to_numpy()
    assert metrics["expr_acc"] == pytest.approx(np.mean(pred[shared] == labels["expression"].to_numpy()[shared]))
    va_true = labels[["valence", "arousal"]].to_numpy()
    with torch.no_grad():
        va_pred = method({"image": x}).va.numpy()
    assert metrics["valence_rmse"] == pytest.approx(np.sqrt(np.mean((va_pred[:, 0] - va_true[:, 0]) ** 2)), rel=1e-4)
    assert (tmp_path / "plots" / "confusion_normalized.png").is_file()
    assert (tmp_path / "plots" / "abs_error.png").is_file()


# ------------------------------------------------------------------------------ plots
def test_cumulative_abs_error_matches_hand_count(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, 500)
    p = t + rng.normal(0, 0.3, 500)
    t[:20] = np.nan
    grid, frac = cumulative_abs_error(t, p)
    err = np.abs(t - p)[20:]
    for g in (0.0, 0.1, 0.3, 1.0):
        j = int(np.argmin(np.abs(grid - g)))
        assert frac[j] == pytest.approx(np.mean(err <= grid[j]))
    assert np.all(np.diff(frac) >= 0) and frac[-1] == pytest.approx(np.mean(err <= 2.0))
    with pytest.raises(ValueError, match="same length"):
        cumulative_abs_error(t, p[:3])
    table = pd.DataFrame({"valence": p, "valence_true": t, "arousal": p, "arousal_true": t})
    path = plot_abs_error_curves({"m1": table, "m2": table}, tmp_path / "curves.png")
    assert path.is_file() and path.stat().st_size > 1000
    with pytest.raises(ConfigError, match="valence/arousal"):
        plot_abs_error_curves({"m": pd.DataFrame({"x": [1.0]})}, tmp_path / "none.png")


def test_authors_tanh_mlp_head(fixed_batch, tmp_path):
    """The head of the authors' code: Linear(D, 512) -> Tanh -> Linear(512, C + 2, no bias)."""
    torch.manual_seed(0)
    m = _method("combined", head="tanh-mlp")
    lin, act, out_layer = m.head
    assert (lin.in_features, lin.out_features) == (m.backbone.out_dim, 512) and isinstance(act, torch.nn.Tanh)
    assert out_layer.out_features == 10 and out_layer.bias is None
    m.eval()
    feat = m.backbone(fixed_batch["image"])["global"]
    raw = out_layer(torch.tanh(lin(feat)))
    out = m(fixed_batch)
    torch.testing.assert_close(out.expr_logits, raw[:, :8])
    torch.testing.assert_close(out.va, torch.tanh(raw[:, 8:]))
    assert sum(p.numel() for p in m.head.parameters()) == m.backbone.out_dim * 512 + 512 + 512 * 10
    # init_from a tanh-mlp model: the hidden layer and the VA rows carry over
    save_model(tmp_path / "comb" / "model.ckpt", m)
    va = _method("valence-arousal", head="tanh-mlp", init_from=str(tmp_path / "comb"))
    torch.testing.assert_close(va.head[0].weight, m.head[0].weight)
    torch.testing.assert_close(va.head[2].weight, m.head[2].weight[8:10])
