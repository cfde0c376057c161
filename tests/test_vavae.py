"""The VA-aligned VAE (003_9ad920e56393e222.txt): shapes, loss terms by hand, vanilla
variant, masking, presets and a learning test on synthetic faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError, ModelError
from affectlab.methods.base import create_method
from affectlab.methods.vavae import NUM_BINS, VAVAEMethod, kl_normal, va_to_bins

SPACE = LabelSpace(expressions=("neutral", "happiness", "sadness"), va=True)
SMALL = {"image_size": 32, "channels": [4, 8, 8, 8], "dim_v": 2, "dim_a": 3, "dim_z": 4}


def _batch(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    va = torch.rand(n, 2, generator=g) * 2 - 1
    return {"image": torch.rand(n, 3, size, size, generator=g), "va": va, "expr": torch.arange(n) % 3}


def test_registered_and_shapes():
    m = create_method("vavae", SPACE, SMALL)
    assert isinstance(m, VAVAEMethod)
    m.eval()
    with torch.no_grad():
        out = m(_batch())
    assert out.va.shape == (6, 2)
    assert out.extras["z_v"].shape == (6, 2)
    assert out.extras["z_a"].shape == (6, 3)
    assert out.extras["z_z"].shape == (6, 4)
    assert out.extras["recon"].shape == (6, 3, 32, 32)
    r = out.extras["recon"]
    assert float(r.min()) >= 0.0 and float(r.max()) <= 1.0
    assert out.expr_logits is None and out.au_logits is None
    # the engine feeds it un-normalised pixels of the configured size
    assert m.preprocessing.normalize == "none" and m.preprocessing.input_size == 32
    assert m.preprocessing.mean == (0.0, 0.0, 0.0) and m.preprocessing.std == (1.0, 1.0, 1.0)


def test_default_is_64_px_with_1_1_14_split():
    m = create_method("vavae", SPACE)
    m.eval()
    out = m(_batch(2, size=64))
    assert out.extras["recon"].shape == (2, 3, 64, 64)
    assert (out.extras["z_v"].shape[1], out.extras["z_a"].shape[1], out.extras["z_z"].shape[1]) == (1, 1, 14)
    convs = [l for l in m.encoder.modules() if isinstance(l, torch.nn.Conv2d)]
    deconvs = [l for l in m.decoder.modules() if isinstance(l, torch.nn.ConvTranspose2d)]
    assert len(convs) == 4 and len(deconvs) == 4


def test_eval_uses_posterior_mean_and_projection():
    m = create_method("vavae", SPACE, SMALL).eval()
    b = _batch()
    out = m(b)
    mu, _ = m.encode(b["image"])
    torch.testing.assert_close(out.extras["z_v"], mu[:, :2])
    torch.testing.assert_close(out.extras["z_a"], mu[:, 2:5])
    torch.testing.assert_close(out.extras["z_z"], mu[:, 5:])
    torch.testing.assert_close(out.extras["recon"], m.decode(mu))
    expected = torch.stack([m.proj_v(mu[:, :2])[:, 0], m.proj_a(mu[:, 2:5])[:, 0]], 1).clamp(-1, 1)
    torch.testing.assert_close(out.va, expected)


def test_loss_terms_by_hand():
    torch.manual_seed(0)
    cfg = {**SMALL, "va_weight": 3.0, "arousal_weight": 5.0, "kl_weight": 0.5, "recon_weight": 2.0}
    m = create_method("vavae", SPACE, cfg).train()
    b = _batch()
    b["va"][1, 0] = float("nan")  # one missing valence is masked
    out = m(b)
    terms = m.loss(out, b)
    x, r = b["image"], out.extras["recon"]
    recon = ((r - x) ** 2).sum(dim=(1, 2, 3)).mean()
    mu, lv = out.extras["mu"], out.extras["logvar"]

    def kl(sl):
        return np.mean([sum(-0.5 * (1 + lv[i, j] - mu[i, j] ** 2 - lv[i, j].exp()).item() for j in sl) for i in range(6)])

    keep = torch.tensor([True, False, True, True, True, True])
    val = ((out.extras["proj_v"][keep, 0] - b["va"][keep, 0]) ** 2).mean()
    aro = ((out.extras["proj_a"][:, 0] - b["va"][:, 1]) ** 2).mean()
    assert terms["recon"].item() == pytest.approx(recon.item(), rel=1e-5)
    assert terms["kl_v"].item() == pytest.approx(kl(range(0, 2)), rel=1e-4)
    assert terms["kl_a"].item() == pytest.approx(kl(range(2, 5)), rel=1e-4)
    assert terms["kl_z"].item() == pytest.approx(kl(range(5, 9)), rel=1e-4)
    assert terms["valence"].item() == pytest.approx(val.item(), rel=1e-5)
    assert terms["arousal"].item() == pytest.approx(aro.item(), rel=1e-5)
    total = 2.0 * recon + 0.5 * (terms["kl_v"] + terms["kl_a"] + terms["kl_z"]) + 3.0 * val + 5.0 * aro
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_kl_normal_matches_torch_distributions():
    mu, lv = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * lv).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    ref = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert kl_normal(mu, lv).item() == pytest.approx(ref.item(), rel=1e-5)


def test_vanilla_has_no_projection_terms():
    m = create_method("vavae", SPACE, {**SMALL, "regularize": False}).train()
    assert m.proj_v is None and m.proj_a is None
    assert not any("proj" in k for k in m.state_dict())
    b = _batch()
    out = m(b)
    terms = m.loss(out, b)
    assert set(terms) == {"loss", "recon", "kl_v", "kl_a", "kl_z"}
    assert terms["loss"].item() == pytest.approx(
        (terms["recon"] + terms["kl_v"] + terms["kl_a"] + terms["kl_z"]).item(), rel=1e-6
    )
    # the VA labels do not change the vanilla loss at all
    b2 = {**b, "va": torch.zeros_like(b["va"])}
    torch.manual_seed(1)
    out1 = m(b)
    torch.manual_seed(1)
    out2 = m(b2)
    assert m.loss(out1, b)["loss"].item() == pytest.approx(m.loss(out2, b2)["loss"].item())
    # its va output is the raw latent means (the paper's Task 2 reads them directly)
    m.eval()
    out = m(b)
    torch.testing.assert_close(out.va, torch.stack([out.extras["z_v"][:, 0], out.extras["z_a"][:, 0]], 1))
    # and it trains on data without VA
    m2 = create_method("vavae", LabelSpace(expressions=("neutral", "happiness")), {**SMALL, "regularize": False})
    assert m2(b).va is None


def test_all_va_missing_gives_zero_projection_terms():
    m = create_method("vavae", SPACE, SMALL).train()
    b = _batch()
    b["va"][:] = float("nan")
    terms = m.loss(m(b), b)
    assert terms["valence"].item() == 0.0 and terms["arousal"].item() == 0.0
    assert math.isfinite(terms["loss"].item())


@pytest.mark.parametrize("kind", ["ce", "bce"])
def test_discrete_terms_by_hand(kind):
    m = create_method("vavae", SPACE, {**SMALL, "va_loss": kind}).eval()
    b = _batch()
    out = m(b)
    assert out.extras["proj_v"].shape == (6, NUM_BINS)
    bins_v = torch.round(b["va"][:, 0] * 10).long() + 10
    logits = out.extras["proj_v"]
    if kind == "ce":
        ref = F.cross_entropy(logits, bins_v)
    else:
        onehot = torch.zeros(6, NUM_BINS)
        onehot[torch.arange(6), bins_v] = 1
        p = torch.sigmoid(logits)
        ref = -(onehot * p.log() + (1 - onehot) * (1 - p).log()).mean()
    assert m.loss(out, b)["valence"].item() == pytest.approx(ref.item(), rel=1e-4)
    # the reported value is the expected bin value / 10
    centers = torch.arange(-10, 11).float() / 10
    torch.testing.assert_close(out.va[:, 0], (logits.softmax(1) * centers).sum(1))


def test_va_to_bins():
    v = torch.tensor([-1.0, -0.96, -0.04, 0.0, 0.25, 0.94, 1.0, 1.7])
    assert va_to_bins(v).tolist() == [0, 0, 10, 10, 12, 19, 20, 20]


def test_bad_inputs_and_configs():
    m = create_method("vavae", SPACE, SMALL)
    with pytest.raises(ModelError, match=r"\[B, 3, 32, 32\]"):
        m({"image": torch.rand(2, 3, 64, 64)})
    with pytest.raises(ModelError, match="batch\\['image'\\]"):
        m({"features": torch.rand(2, 16)})
    with pytest.raises(ConfigError, match="multiple of 16"):
        create_method("vavae", SPACE, {"image_size": 40})
    with pytest.raises(ConfigError, match="4 positive integers"):
        create_method("vavae", SPACE, {"channels": [8, 8]})
    with pytest.raises(ConfigError, match="unknown key"):
        create_method("vavae", SPACE, {"hidden": 3})
    with pytest.raises(ConfigError, match="regularize=false"):
        create_method("vavae", LabelSpace(expressions=("neutral", "happiness")), SMALL)


def test_presets_resolve():
    from affectlab.train.config import resolve_config

    cfg = resolve_config(preset="vavae")
    assert cfg.method == "vavae" and cfg.normalize == "none" and cfg.method_config["regularize"] is True
    van = resolve_config(preset="vavae-vanilla")
    assert van.method_config["regularize"] is False
    disc = resolve_config(preset="vavae-discrete", sets=["dim_v=2"])
    assert disc.method_config["va_loss"] == "bce" and disc.method_config["dim_v"] == 2
    assert resolve_config(preset="vavae", sets=["regularize=false"]).method_config["regularize"] is False


@pytest.mark.slow
def test_regularized_latent_tracks_valence_better_than_vanilla():
    """32 px synthetic faces of three classes whose valence differs (neutral, happiness,
    sadness): 600 train images, 200 held-out identities, 12 epochs per model.

    The regularized VAE's 1-d z_v must correlate with valence on held-out identities,
    clearly more than the vanilla VAE's z_v (whose sign is arbitrary: |r| is compared).
    """
    from affectlab.data.synth import sample_batch

    torch.manual_seed(0)
    size, classes = 32, ("neutral", "happiness", "sadness")
    tr_img, tr_lab = sample_batch(600, seed=21, size=size, expressions=classes)
    te_img, te_lab = sample_batch(200, seed=22, size=size, expressions=classes)
    assert not set(tr_lab["subject"]) & set(te_lab["subject"])
    x = torch.from_numpy(tr_img).permute(0, 3, 1, 2).float() / 255
    va = torch.tensor(tr_lab[["valence", "arousal"]].to_numpy(np.float32))
    xt = torch.from_numpy(te_img).permute(0, 3, 1, 2).float() / 255
    vt = te_lab["valence"].to_numpy()
    cfg = {"image_size": size, "channels": [16, 32, 32, 64], "va_weight": 300.0, "arousal_weight": 300.0}
    corr = {}
    for reg in (True, False):
        torch.manual_seed(0)
        m = create_method("vavae", SPACE, {**cfg, "regularize": reg})
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        for _ in range(12):
            m.train()
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 50):
                idx = perm[i : i + 50]
                b = {"image": x[idx], "va": va[idx]}
                loss = m.loss(m(b), b)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
        m.eval()
        with torch.no_grad():
            z_v = m({"image": xt}).extras["z_v"][:, 0].numpy()
        corr[reg] = abs(np.corrcoef(z_v, vt)[0, 1])
    assert corr[True] >= 0.6, corr
    assert corr[True] > corr[False] + 0.2, corr
