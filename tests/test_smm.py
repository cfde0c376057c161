"""SMM-EmotionNet: shapes, masking, the MSS ablation, smoothing in evaluate, the views."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from affectlab import temporal
from affectlab.data.schema import AU_SETS, LabelSpace
from affectlab.errors import ConfigError
from affectlab.methods.base import create_method
from affectlab.methods.smm import SMMMethod, sinusoidal_encoding

EXPR = ("neutral", "happiness", "sadness", "surprise")
SPACE = LabelSpace(expressions=EXPR, aus=AU_SETS["abaw12"], va=True)
CLIP_AUS = ("AU1", "AU4", "AU12", "AU26")  # a few AU spaces keep the clip tests fast


def _batch(n=4, size=64, seed=0, tasks=("expr", "va", "au"), k=12):
    g = torch.Generator().manual_seed(seed)
    b = {
        "image": torch.randn(n, 3, size, size, generator=g),
        "expr": torch.full((n,), -1, dtype=torch.long),
        "va": torch.full((n, 2), float("nan")),
        "au": torch.full((n, k), -1, dtype=torch.long),
        "index": torch.arange(n),
    }
    if "expr" in tasks:
        b["expr"] = torch.randint(0, len(EXPR), (n,), generator=g)
    if "va" in tasks:
        b["va"] = torch.rand(n, 2, generator=g) * 2 - 1
    if "au" in tasks:
        b["au"] = torch.randint(0, 2, (n, k), generator=g)
    return b


def test_roi_transformer_and_message_shapes():
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {"num_rois": 17, "roi_dim": 16})
    out = m(_batch())
    assert out.extras["roi"].shape == (4, 17, 16)
    assert out.extras["attention"].shape == (4, 17, 4, 4)  # cnn-small map at 64 px
    att = out.extras["attention"].detach()
    assert float(att.min()) >= 0 and float(att.max()) <= 1
    assert out.extras["sign"].shape == (4, 12, 16)  # H = 12 AU spaces of D = 16
    assert out.extras["message"].shape == (4, 16)
    assert out.au_logits.shape == (4, 12) and out.expr_logits.shape == (4, 4) and out.va.shape == (4, 2)
    # equation 2: one FC per AU on its own space
    sign = out.extras["sign"]
    h = 5
    manual = sign[:, h] @ m.au_weight[h] + m.au_bias[h]
    torch.testing.assert_close(out.au_logits[:, h], manual)
    # equation 3: mean over all U ROIs of A^(u) f^(u)
    roi, a = out.extras["roi"], m.message_maps["shared"]
    manual_m = torch.stack([roi[:, u] @ a[u].T for u in range(17)]).mean(0)
    torch.testing.assert_close(out.extras["message"], manual_m, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.expr_logits, m.expr_head(manual_m), rtol=1e-5, atol=1e-6)


def test_au_spaces_use_only_the_first_h_rois():
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {}).eval()
    roi = torch.randn(3, 17, 16)
    s1 = m.sign_space(roi)
    roi2 = roi.clone()
    roi2[:, 12:] = torch.randn(3, 5, 16)  # the 5 extra regions only feed the message space
    torch.testing.assert_close(m.sign_space(roi2), s1)
    assert not torch.allclose(m.message_space(roi2, "expr"), m.message_space(roi, "expr"))


def test_positional_encoding():
    pe = sinusoidal_encoding(12, 16)
    assert pe.shape == (12, 16)
    assert torch.allclose(pe[0, 0::2], torch.zeros(8)) and torch.allclose(pe[0, 1::2], torch.ones(8))
    assert torch.allclose(pe[3, 2], torch.sin(torch.tensor(3.0) * 10000 ** (-2 / 16)))


def test_masking_au_only_batch_gives_zero_expr_va_loss_and_gradients():
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {})
    b = _batch(tasks=("au",))
    terms = m.loss(m(b), b)
    assert float(terms["expr"]) == 0.0 and float(terms["va"]) == 0.0
    assert torch.isfinite(terms["loss"]) and float(terms["au"]) > 0
    torch.testing.assert_close(terms["loss"], terms["au"])
    terms["loss"].backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the expression and VA heads get no gradient from an AU-only batch
    assert m.expr_head.weight.grad is None or float(m.expr_head.weight.grad.abs().sum()) == 0.0
    assert m.va_head.weight.grad is None or float(m.va_head.weight.grad.abs().sum()) == 0.0


def test_loss_weights_follow_the_paper():
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {})
    m.set_training_stats(
        {"class_counts": np.array([10, 30, 0, 60]), "au_positive": np.full(12, 20), "au_negative": np.full(12, 60)}
    )
    torch.testing.assert_close(m.au_pos_weight, torch.full((12,), 3.0))  # P = neg / pos
    w = m.expr_weight.numpy()
    assert w[0] > w[1] > w[3] and np.isclose(w.mean(), 1.0)
    b = _batch()
    out = m(b)
    terms = m.loss(out, b)
    from affectlab import losses

    expected = losses.smm_loss(
        au_logits=out.au_logits, au_target=b["au"], expr_logits=out.expr_logits, expr_target=b["expr"],
        va_pred=out.va, va_target=b["va"], au_pos_weight=m.au_pos_weight, expr_weight=m.expr_weight,
    )
    torch.testing.assert_close(terms["loss"], expected)
    ccc_v = temporal.ccc(b["va"][:, 0].numpy(), out.va[:, 0].detach().numpy())
    ccc_a = temporal.ccc(b["va"][:, 1].numpy(), out.va[:, 1].detach().numpy())
    assert float(terms["va"]) == pytest.approx(2 - ccc_v - ccc_a, abs=1e-4)


def test_mss_has_separate_message_spaces():
    torch.manual_seed(0)
    shared = create_method("smm", SPACE, {})
    mss = create_method("smm", SPACE, {"message_space": "separate"})
    assert set(shared.message_maps) == {"shared"} and set(mss.message_maps) == {"expr", "va"}
    n_shared = sum(p.numel() for p in shared.parameters())
    n_mss = sum(p.numel() for p in mss.parameters())
    assert n_mss - n_shared == 17 * 16 * 16  # one more set of U maps A^(u)
    out = mss(_batch())
    assert "message" not in out.extras and out.extras["message_expr"].shape == (4, 16)
    assert mss.smoothing_features == {"au": "sign", "expr": "message_expr", "va": "message_va"}
    # EXPR loss does not reach the VA maps in MSS (it does in the shared space)
    b = _batch(tasks=("expr",))
    mss.loss(mss(b), b)["loss"].backward()
    assert mss.message_maps["va"].grad is None or float(mss.message_maps["va"].grad.abs().sum()) == 0.0
    assert float(mss.message_maps["expr"].grad.abs().sum()) > 0


def test_config_errors():
    with pytest.raises(ConfigError, match="num_rois"):
        create_method("smm", LabelSpace(aus=AU_SETS["ckplus23"]), {})
    with pytest.raises(ConfigError, match="transformer_heads"):
        create_method("smm", SPACE, {"transformer_heads": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        create_method("smm", SPACE, {"message": "shared"})
    with pytest.raises(ConfigError, match="message_space"):
        create_method("smm", SPACE, {"message_space": "both"})
    with pytest.raises(ConfigError, match="multi-label"):
        create_method("smm", LabelSpace(expressions=EXPR, multilabel=True), {})
    m = create_method("smm", SPACE, {})
    with pytest.raises(Exception, match="image"):
        m({"features": torch.randn(2, 16)})


def test_expression_only_space_has_no_transformer():
    m = create_method("smm", LabelSpace(expressions=EXPR), {})
    out = m(_batch(tasks=("expr",)))
    assert m.transformer is None and out.au_logits is None and out.va is None
    assert out.expr_logits.shape == (4, 4)


def test_presets_resolve():
    from affectlab.train.config import resolve_config

    cfg = resolve_config(preset="smm", sets=["message_space=separate"])
    assert cfg.method == "smm" and cfg.backbone == "torchvision:inception_v3" and cfg.image_size == 299
    assert cfg.optimizer == "sgd" and cfg.momentum == 0.9 and cfg.lr == 1e-3 and cfg.scheduler == "cosine"
    assert cfg.sampler == "multitask" and cfg.batch_size == 72
    assert cfg.method_config["message_space"] == "separate" and cfg.method_config["num_rois"] == 17
    cfg2 = resolve_config(preset="smm-synth", options={"train": ["a.csv", "b.csv", "c.csv"]})
    assert cfg2.train == ["a.csv", "b.csv", "c.csv"] and cfg2.backbone == "torchvision:mobilenet_v2"
    # ImageNet weights as in the paper, cut where a 64 px face gives a 4x4 map
    assert cfg2.method_config["pretrained"] is True and cfg2.image_size == 64
    assert cfg2.method_config["backbone_options"] == {"map_node": "features.13"}
    assert cfg2.sampler == "multitask" and cfg2.batch_size % 3 == 0  # equal parts of three uni-task sets
    cfg3 = resolve_config(preset="smm-scratch")  # offline: the built-in CNN from scratch
    assert cfg3.backbone == "builtin:cnn-grid" and not cfg3.method_config.get("pretrained", False)


@pytest.mark.slow
def test_inception_v3_path_on_cpu_learns_a_fixed_batch():
    """InceptionV3 Mixed_6e (17x17x768 at 299 px), batch 2: shapes, loss decreases (~10 s idle CPU)."""
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {"backbone": "torchvision:inception_v3", "dropout": 0.0})
    b = _batch(n=2, size=299, seed=1)
    with torch.no_grad():
        fmap = m.feature_map(b)
    assert fmap.shape == (2, 768, 17, 17)
    opt = torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9)
    m.train()
    # batch-norm statistics of 2 images are noisy; train the heads' loss on a fixed batch
    losses_seen = []
    for _ in range(3):
        out = m(b)
        loss = m.loss(out, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses_seen.append(float(loss))
    assert out.extras["attention"].shape == (2, 17, 17, 17) and out.extras["sign"].shape == (2, 12, 16)
    assert losses_seen[-1] < losses_seen[0]


# ----------------------------------------------------------------- smoothing in evaluate
@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A tiny SMM run and a tiny synthetic clip set (4 clips x 6 frames)."""
    from affectlab.data import synth
    from affectlab.modelfile import save_model

    root = tmp_path_factory.mktemp("smm")
    synth.generate(root / "clips", n=0, sequences=4, frames=6, size=48, seed=3, progress=False)
    labels = pd.read_csv(root / "clips" / "labels.csv")
    space = LabelSpace(expressions=tuple(sorted(set(labels["expression"]))), aus=CLIP_AUS, va=True)
    torch.manual_seed(0)
    m = create_method("smm", space, {"backbone_options": {"input_size": 48}})
    run = root / "run"
    save_model(run / "model.ckpt", m, preprocessing=m.preprocessing.to_dict(), transform={"eval": "eval"})
    return run, f"manifest:{root / 'clips' / 'labels.csv'}", labels


def test_evaluate_smoothing_equals_temporal_by_hand(clip_run):
    from affectlab.evaluate.engine import evaluate

    run, spec, labels = clip_run
    raw = evaluate(run, spec, progress=False, batch_size=7)
    sm = evaluate(run, spec, progress=False, batch_size=7, smooth=3, smooth_level="outputs")
    assert sm.smoothing["mu"] == {"expr": 3.0, "va": 3.0, "au": 3.0} and sm.smoothing["level"] == "outputs"
    r = raw.predictions.sort_values("index").reset_index(drop=True)
    s = sm.predictions.sort_values("index").reset_index(drop=True)
    videos = labels["video"].to_numpy()[r["index"]]
    for cols in (["valence", "arousal"], [c for c in r.columns if c.startswith("expr_")], list(CLIP_AUS)):
        expected = temporal.smooth(r[cols].to_numpy(), 3.0, groups=videos)  # frames are in order per clip
        np.testing.assert_allclose(s[cols].to_numpy(), expected, rtol=1e-6, atol=1e-7)
    assert sm.metrics["smooth_mu_va"] == 3.0
    assert sm.metrics["valence_ccc"] != raw.metrics["valence_ccc"]


def test_evaluate_feature_level_smoothing_goes_through_the_last_fc(clip_run):
    from affectlab.runtime.hub import load_model
    from affectlab.evaluate.engine import evaluate

    run, spec, labels = clip_run
    sm = evaluate(run, spec, progress=False, smooth={"va": 2.0}, smooth_level="features")
    assert sm.smoothing["level"] == "features" and sm.smoothing["mu"]["va"] == 2.0
    assert sm.smoothing["mu"]["expr"] == 0.0
    method, _ = load_model(run)
    from affectlab.data.datasets import load_dataset
    from affectlab.data.transforms import preprocessing_transform

    ds = load_dataset(spec)
    ds = ds.with_label_space(sm.label_space)
    ds.set_transform(preprocessing_transform(method.preprocessing.to_dict(), "eval", False))
    imgs = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.inference_mode():
        msg = method({"image": imgs}).extras["message"].numpy()
    smoothed = temporal.smooth(msg, 2.0, groups=labels["video"].to_numpy())
    with torch.inference_mode():
        va = method.predict_from_features("va", torch.as_tensor(smoothed, dtype=torch.float32)).numpy()
    s = sm.predictions.sort_values("index")
    np.testing.assert_allclose(s[["valence", "arousal"]].to_numpy(), va[s["index"].to_numpy()], atol=1e-5)


def test_evaluate_smooth_auto_stores_mu_in_the_run(clip_run, tmp_path):
    import shutil

    from affectlab.analyze.pipeline import smoothing_spec
    from affectlab.runtime.hub import load_model
    from affectlab.evaluate.engine import run_evaluation

    src, spec, _ = clip_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    res = run_evaluation(run, spec, progress=False, smooth="auto")
    mu = res.smoothing["mu"]
    assert set(mu) == {"expr", "va", "au"} and all(v in temporal.DEFAULT_MUS for v in mu.values())
    assert len(res.smoothing["search"]["va"]["scores"]) == 11
    assert json.loads((run / "smoothing.json").read_text())["mu"] == mu
    _, info = load_model(run)
    assert smoothing_spec("auto", info) == mu  # what analyze --smooth auto uses
    again = run_evaluation(run, spec, progress=False, smooth="stored")
    assert again.smoothing["mu"] == mu and "search" not in again.smoothing


def test_smoothing_errors(clip_run, tmp_path):
    from affectlab.evaluate.engine import evaluate
    from affectlab.temporal import parse_smooth

    run, spec, labels = clip_run
    assert parse_smooth("expr=9,va=9,au=7") == {"expr": 9.0, "va": 9.0, "au": 7.0}
    assert parse_smooth("2") == {"expr": 2.0, "va": 2.0, "au": 2.0}
    for bad in ("-1", "x", "foo=3", "expr:3"):
        with pytest.raises(ConfigError):
            parse_smooth(bad)
    flat = labels.drop(columns=["video", "frame"])  # still images: nothing to smooth along
    clip_dir = spec.split(":", 1)[1].rsplit("/", 1)[0]
    flat.to_csv(f"{clip_dir}/still.csv", index=False)
    with pytest.raises(ConfigError, match="video"):
        evaluate(run, f"manifest:{clip_dir}/still.csv", progress=False, smooth=1)
    with pytest.raises(ConfigError, match="stores no smoothing"):
        evaluate(run, spec, progress=False, smooth="stored")


# ----------------------------------------------------------------------------- views
def test_explainer_writes_its_pngs(clip_run, tmp_path):
    from affectlab.interpret import explain

    run, spec, _ = clip_run
    res = explain(run, spec, tmp_path / "views", batch_size=8, max_samples=24, progress=False)
    for key in ("sign_space", "message", "table"):
        assert res["files"][key].is_file() and res["files"][key].stat().st_size > 1000
    assert res["files"]["sign_space"].name == "sign_space_tsne.png"
    stats = res["message"]["message"]
    table = pd.read_csv(res["files"]["table"])
    assert len(table) == 24 and {"message_x", "message_y", "valence_true"} <= set(table.columns)
    # the reported angle and fits are those of linear fits of the written view
    from affectlab.interpret.smm_views import linear_gradient

    z = table[["message_x", "message_y"]].to_numpy()
    wv, r2v = linear_gradient(z, table["valence_true"].to_numpy())
    wa, _ = linear_gradient(z, table["arousal_true"].to_numpy())
    angle = np.degrees(np.arccos(wv @ wa / (np.linalg.norm(wv) * np.linalg.norm(wa))))
    assert stats["va_gradient_angle_deg"] == pytest.approx(angle, abs=1e-3)
    assert stats["valence_fit_r2"] == pytest.approx(r2v, abs=1e-6)


def test_view_helpers_against_numpy():
    from affectlab.interpret.smm_views import covariance_ellipse, linear_gradient

    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2)) * [3.0, 1.0]
    centre, width, height, angle = covariance_ellipse(z)
    assert width == pytest.approx(4 * 3.0, rel=0.15) and height == pytest.approx(4 * 1.0, rel=0.15)
    assert abs(np.sin(np.radians(angle))) < 0.1  # major axis along x
    y = 2.0 * z[:, 0] - 1.0 * z[:, 1] + 0.5
    w, r2 = linear_gradient(z, y)
    np.testing.assert_allclose(w, [2.0, -1.0], atol=1e-9)
    assert r2 == pytest.approx(1.0)


# ------------------------------------------------- each component of Figure 1 is there
# (every test below was checked to fail with its component removed from smm.py)
def test_sign_space_uses_the_positional_encoding():
    """Without PE a Transformer encoder is permutation-equivariant over the AU tokens;
    with it, permuting the ROI features does not merely permute the AU spaces."""
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {"dropout": 0.0}).eval()
    roi = torch.randn(3, 17, 16)
    perm = torch.randperm(12)
    with torch.no_grad():
        s = m.sign_space(roi)
        roi_p = roi.clone()
        roi_p[:, :12] = roi[:, perm]
        s_p = m.sign_space(roi_p)
        assert (s_p - s[:, perm]).abs().max() > 1e-3
        # and exactly equation 1: Phi(F + PE)
        torch.testing.assert_close(s, m.transformer(roi[:, :12] + sinusoidal_encoding(12, 16)))


def test_sign_space_goes_through_a_transformer():
    """Self-attention mixes the AU tokens: AU 1's space depends on ROI 0's feature
    (a per-token map, e.g. the Transformer left out, would not)."""
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {"dropout": 0.0}).eval()
    roi = torch.randn(3, 17, 16)
    roi2 = roi.clone()
    roi2[:, 0] = torch.randn(3, 16)
    with torch.no_grad():
        s1, s2 = m.sign_space(roi), m.sign_space(roi2)
    assert (s1[:, 1:] - s2[:, 1:]).abs().max() > 1e-3
    assert sum(p.numel() for p in m.transformer.parameters()) > 0
    assert isinstance(m.transformer, torch.nn.TransformerEncoder)


def test_roi_features_are_attention_weighted():
    """f^(u) = mean_hw ReLU(a_u * (W_u F + b_u)): an attention map that is zero outside
    one location leaves only that location's response."""
    torch.manual_seed(0)
    m = create_method("smm", SPACE, {})
    rois = m.rois
    fmap = torch.randn(2, rois.attention.in_channels, 4, 4)
    with torch.no_grad():
        feats, att = rois(fmap)
        proj = torch.einsum("bchw,udc->budhw", fmap, rois.weight) + rois.bias[None, :, :, None, None]
        torch.testing.assert_close(feats, torch.relu(att[:, :, None] * proj).mean(dim=(3, 4)))
        # attention switched off everywhere (sigmoid(-30) ~ 0): the ROI features vanish
        rois.attention.weight.zero_()
        rois.attention.bias.fill_(-30.0)
        off, _ = rois(fmap)
        assert off.abs().max() < 1e-6 and feats.abs().max() > 1e-2
        # fully open (sigmoid(30) ~ 1): the plain spatial mean of ReLU(W F + b)
        rois.attention.bias.fill_(30.0)
        on, _ = rois(fmap)
        torch.testing.assert_close(on, torch.relu(proj).mean(dim=(3, 4)))
