"""AURA: contract, losses, usage-aware reset, learning against a linear probe, training
from cached features only (the image folder removed)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from affectlab.data.schema import EXPRESSIONS, LabelSpace
from affectlab.errors import ConfigError
from affectlab.features.cache import extract_features
from affectlab.features.dataset import FeatureDataset
from affectlab.methods.base import create_method

SPACE = LabelSpace(expressions=EXPRESSIONS, aus=("AU1", "AU12"), va=True)


def _batch(n=16, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    expr = torch.randint(0, 8, (n,), generator=g)
    expr[0] = -1
    va = torch.rand(n, 2, generator=g) * 2 - 1
    va[1] = float("nan")
    au = (torch.rand(n, 2, generator=g) > 0.5).float()
    au[2, 0] = -1
    return {"features": torch.randn(n, d, generator=g), "expr": expr, "va": va, "au": au, "index": torch.arange(n)}


def test_forward_outputs_and_loss_terms():
    torch.manual_seed(0)
    m = create_method("aura", SPACE, {"feature_dim": 12, "num_archetypes": 6, "dim": 8, "hidden": 16})
    assert m.input_kind == "features"
    b = _batch()
    m.eval()  # no dropout: the projection below is the one forward used
    out = m(b)
    assert out.expr_logits.shape == (16, 8) and out.va.shape == (16, 2) and out.au_logits.shape == (16, 2)
    assert out.va.abs().max() <= 1
    arch = out.extras["archetype"]
    assert arch.dtype == torch.long and arch.min() >= 0 and arch.max() < 6
    # the assignment is the nearest archetype of the projection
    z = F.normalize(m.global_proj(F.layer_norm(b["features"], (12,))), dim=1)
    d = torch.cdist(z, m.archetypes())
    torch.testing.assert_close(out.extras["archetype_distance"], d.min(1).values, rtol=1e-4, atol=1e-4)
    assert torch.equal(arch, d.argmin(1))
    m.train()
    out = m(b)
    terms = m.loss(out, b)
    assert {"loss", "refine", "proj", "vpo", "vq"} <= set(terms)
    assert torch.isfinite(terms["loss"])
    total = terms["refine"] + terms["proj"] + terms["vpo"] + terms["vq"]  # all weights 1 (A.2)
    torch.testing.assert_close(terms["loss"].detach(), total, rtol=1e-5, atol=1e-5)
    terms["loss"].backward()
    for name in ("codebook", "refine.weight", "expr_head.weight", "global_proj.0.weight"):
        assert dict(m.named_parameters())[name].grad is not None, name
    assert m.codebook.grad.abs().sum() > 0


def test_missing_labels_are_masked():
    torch.manual_seed(0)
    m = create_method("aura", SPACE, {"feature_dim": 12, "num_archetypes": 4, "dim": 8, "hidden": 16})
    m.eval()
    b = _batch()
    out = m(b)
    none = {**b, "expr": torch.full_like(b["expr"], -1), "va": torch.full_like(b["va"], float("nan")), "au": torch.full_like(b["au"], -1)}
    assert float(m.task_loss({"expr_logits": out.expr_logits, "va": out.va, "au_logits": out.au_logits}, none)) == 0.0
    # only the labelled rows count: the loss of the masked batch equals that of its labelled part
    pred = {"expr_logits": out.expr_logits}
    ref = F.cross_entropy(out.expr_logits[1:], b["expr"][1:])
    torch.testing.assert_close(m.task_loss(pred, b), ref)


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown key"):
        create_method("aura", SPACE, {"no_such_key": 1})
    with pytest.raises(ConfigError, match="dropout"):
        create_method("aura", SPACE, {"dropout": 1.5})
    m = create_method("aura", SPACE, {"feature_dim": 12})
    with pytest.raises(ConfigError, match="12-d"):
        m({"features": torch.randn(2, 5)})
    assert m.config.dropout == 0.2 and m.config.beta == 1.0  # appendix A.2 defaults


def test_reset_follows_appendix_b():
    torch.manual_seed(0)
    m = create_method("aura", SPACE, {"feature_dim": 12, "num_archetypes": 5, "dim": 8, "reset_threshold": 0.1})
    m.usage.copy_(torch.tensor([50.0, 45.0, 3.0, 2.0, 0.0], dtype=torch.float64))
    m.cluster_size.fill_(7.0)
    before = m.codebook.detach().clone()
    z = F.normalize(torch.randn(32, 8), dim=1)
    dead = m.reset_unused(z)
    assert sorted(dead.tolist()) == [2, 3, 4]  # usage ratios 0.03, 0.02, 0 < tau = 0.1
    e = m.archetypes()
    assert torch.equal(m.codebook[:2], before[:2])  # used archetypes untouched
    for i in (2, 3, 4):
        # re-seeded at a batch feature plus small noise, accumulators reset
        assert torch.cdist(e[i : i + 1], z).min() < 0.1
        torch.testing.assert_close(m.cluster_mean[i], m.codebook[i].detach())
        assert m.cluster_size[i] == 0
    assert torch.equal(m.cluster_size[:2], torch.full((2,), 7.0))
    assert float(m.usage.sum()) == 0  # u <- 0 after the reset
    assert m.resets.tolist() == [0, 0, 1, 1, 1]


def test_reset_revives_a_collapsed_codebook():
    """All samples start on one archetype; the periodic reset spreads them."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 16)) * 3
    y = rng.integers(0, 8, 2048)
    x = torch.tensor(centers[y] + rng.normal(size=(2048, 16)), dtype=torch.float32)
    yt = torch.as_tensor(y)
    space = LabelSpace(expressions=EXPRESSIONS)

    def run(reset_every):
        torch.manual_seed(1)
        cfg = {"feature_dim": 16, "num_archetypes": 16, "dim": 16, "hidden": 32, "data_init": False,
               "reset_every": reset_every, "reset_threshold": 0.01}
        m = create_method("aura", space, cfg)
        with torch.no_grad():
            # provoke collapse: one archetype near the data, the others on the far side
            z = m.project(x[:256])
            mean = F.normalize(z.mean(0), dim=0)
            m.codebook.copy_(-mean.expand(16, -1) + 0.01 * torch.randn(16, 16))
            m.codebook[0] = mean
            m.cluster_mean.copy_(m.codebook)
        used0 = len(torch.unique(m.assign(m.project(x))[0]))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        m.train()
        for step in range(150):
            idx = torch.randint(0, 2048, (64,))
            b = {"features": x[idx], "expr": yt[idx]}
            out = m(b)
            loss = m.loss(out, b)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            a = m.assign(m.project(x))[0]
        counts = torch.bincount(a, minlength=16).float()
        p = counts / counts.sum()
        perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
        return used0, int((counts > 0).sum()), perplexity, int(m.resets.sum())

    used0, used_off, perp_off, resets_off = run(0)
    assert used0 == 1  # collapsed at the start
    assert resets_off == 0 and used_off <= 2
    _, used_on, perp_on, resets_on = run(25)
    assert resets_on >= 10  # dead archetypes were re-seeded
    assert used_on >= 8 and perp_on >= 6.0  # usage spread over (at least) the 8 clusters
    assert perp_on > 3 * perp_off


def test_checkpoint_round_trip(tmp_path):
    from affectlab.modelfile import save_model
    from affectlab.runtime.hub import load_model

    torch.manual_seed(0)
    m = create_method("aura", SPACE, {"feature_dim": 12, "num_archetypes": 6, "dim": 8, "hidden": 16})
    m.train()
    b = _batch()
    for _ in range(3):
        m.loss(m(b), b)["loss"].backward()
    save_model(tmp_path / "model.ckpt", m)
    m2, info = load_model(tmp_path)
    m.eval()
    assert info["method"] == "aura"
    torch.testing.assert_close(m2(b).expr_logits, m(b).expr_logits)
    assert torch.equal(m2.usage, m.usage) and torch.equal(m2.steps, m.steps)


# -- learning on synthetic features with known ground truth --------------------------------
# (the same claims on features of a CNN trained on other `affectlab synth` images are
# measured by benchmarks/bench_aura.py: rendering and training a CNN take minutes)

LEARN_SPACE = LabelSpace(expressions=EXPRESSIONS, aus=("AU1", "AU2", "AU4", "AU6", "AU12", "AU25"), va=True)


def synthetic_features(n, seed, *, label_noise=0.0, d=48, modes=3):
    """Features with known structure: every class has ``modes`` appearance modes; valence,
    arousal and AUs are linearly encoded; ``label_noise`` flips that share of the labels."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(1234)  # the same "backbone" for every call
    c, k = 8, 6
    centers = world.normal(size=(c, modes, d)) * 0.9
    angle = world.uniform(0, 2 * np.pi, size=c)
    au_rate = np.where(world.random((c, k)) < 0.4, 0.9, 0.08)
    w_va, w_au = world.normal(size=(2, d)), world.normal(size=(k, d)) * 0.7
    y = rng.integers(0, c, n)
    mode = rng.integers(0, modes, n)
    radius = 0.3 + 0.2 * mode + rng.normal(0, 0.05, n)
    va = np.clip(np.stack([np.cos(angle[y]), np.sin(angle[y])], 1) * radius[:, None] + rng.normal(0, 0.05, (n, 2)), -1, 1)
    au = (rng.random((n, k)) < au_rate[y]).astype(np.float32)
    x = centers[y, mode] + va @ w_va + au @ w_au + rng.normal(size=(n, d)) * 1.2
    given = y.copy()
    flipped = rng.random(n) < label_noise
    given[flipped] = (y[flipped] + rng.integers(1, c, flipped.sum())) % c
    return {
        "features": torch.tensor(x, dtype=torch.float32),
        "expr": torch.as_tensor(given),
        "va": torch.tensor(va, dtype=torch.float32),
        "au": torch.as_tensor(au),
        "true": y,
        "flipped": flipped,
    }


def fit_aura(data, epochs, *, lr=1e-3, seed=0, space=LEARN_SPACE, **cfg):
    """AURA trained with a plain loop (what the engine does, without Lightning)."""
    torch.manual_seed(seed)
    x = data["features"]
    m = create_method("aura", space, {"feature_dim": x.shape[1], **cfg})
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=1e-4)
    m.train()
    keys = ("features", "expr", "va", "au")
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - 127, 128):
            b = perm[i : i + 128]
            batch = {key: data[key][b] for key in keys}
            loss = m.loss(m(batch), batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval()


@pytest.mark.slow
def test_aura_matches_a_linear_probe():
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from affectlab import metrics as M

    torch.set_num_threads(1)
    train, test = synthetic_features(1600, seed=1), synthetic_features(800, seed=2)
    xtr, xte = train["features"].numpy(), test["features"].numpy()
    sc = StandardScaler().fit(xtr)
    probe = LogisticRegression(max_iter=3000).fit(sc.transform(xtr), train["expr"].numpy())
    probe_acc = probe.score(sc.transform(xte), test["expr"].numpy())
    va_probe = Ridge(alpha=1.0).fit(sc.transform(xtr), train["va"].numpy()).predict(sc.transform(xte))
    au_probe = np.stack(
        [
            LogisticRegression(max_iter=2000).fit(sc.transform(xtr), train["au"][:, j].numpy()).predict_proba(sc.transform(xte))[:, 1]
            for j in range(6)
        ],
        axis=1,
    )
    m = fit_aura(train, epochs=15, num_archetypes=32, reset_every=30)
    with torch.no_grad():
        out = m({"features": test["features"]})
    acc = float((out.expr_logits.argmax(1) == test["expr"]).float().mean())
    ccc = float(np.mean(M.ccc(test["va"].numpy(), out.va.numpy())))
    ccc_probe = float(np.mean(M.ccc(test["va"].numpy(), va_probe)))
    f1 = M.au_f1(test["au"].numpy(), torch.sigmoid(out.au_logits).numpy())["mean"]
    f1_probe = M.au_f1(test["au"].numpy(), au_probe)["mean"]
    print(f"AURA acc {acc:.3f} vs probe {probe_acc:.3f}; VA CCC {ccc:.3f} vs {ccc_probe:.3f}; AU F1 {f1:.3f} vs {f1_probe:.3f}")
    assert 0.5 < probe_acc < 0.99  # informative but not trivially separable features
    assert acc >= probe_acc - 0.02
    assert ccc >= ccc_probe - 0.05
    assert f1 > 0.8  # chance-level F1 for these AU rates is about 0.4
    # predictions come from archetypes: the archetype's own class is the refined
    # prediction for most samples, and several archetypes serve each class
    own = m.archetype_predictions()["expr_prob"].argmax(1)
    assert (own[out.extras["archetype"]] == out.expr_logits.argmax(1)).float().mean() > 0.9
    assert len(torch.unique(out.extras["archetype"])) >= 16  # several archetypes per class


@pytest.mark.slow
def test_diagnosis_finds_flipped_labels():
    """With 10% of the expressions flipped, the top-K of the diagnosis are mostly flips."""
    from affectlab.interpret.aura_explain import diagnosis_table

    torch.set_num_threads(1)
    data = synthetic_features(1600, seed=3, label_noise=0.1)
    m = fit_aura(data, epochs=10, num_archetypes=32, reset_every=30)
    labels = pd.DataFrame({"path": [f"s{i}.jpg" for i in range(1600)], "label_flipped": data["flipped"].astype(int)})

    class View:  # what diagnosis_table reads of a dataset
        expr_targets = data["expr"].numpy()

    View.labels = labels
    with torch.no_grad():
        out = m({"features": data["features"]})
    res = {"archetype": out.extras["archetype"].numpy(), "distance": out.extras["archetype_distance"].numpy(),
           "expr_prob": torch.softmax(out.expr_logits, 1).numpy()}
    table = diagnosis_table(m, View, res)
    k = int(data["flipped"].sum())
    precision = table.head(k)["label_flipped"].mean()
    print(f"diagnosis: K={k}, precision@K {precision:.3f}, flagged {len(table)}")
    assert precision >= 0.7  # chance: 0.1
    assert table["confidence"].is_monotonic_decreasing
    assert (table["given"] != table["archetype_label"]).all()


def test_training_never_decodes_an_image(tmp_path):
    """Extract, delete the images, train AURA with the engine from the store alone."""
    from affectlab.data.synth import generate
    from affectlab.train.config import resolve_config
    from affectlab.evaluate.engine import evaluate
    from affectlab.train.engine import train

    generate(tmp_path / "s", 48, size=32, seed=5, progress=False)
    store = extract_features(f"manifest:{tmp_path / 's' / 'labels.csv'}", "builtin:cnn-tiny", tmp_path / "f.zarr", progress=False)
    shutil.rmtree(tmp_path / "s")
    cfg = resolve_config(
        preset="aura",
        options={"train": f"features:{store.path}", "epochs": 2, "batch_size": 16},
        sets=["num_archetypes=8", "dim=16", "hidden=32"],
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.ckpt").is_file()
    assert result.label_space.tasks == ("expr", "va", "au")
    ev = evaluate(tmp_path / "run", f"features:{store.path}", progress=False)
    assert ev.skipped == 0 and len(ev.predictions) == 48
    pred = ev.predictions
    assert ev.metrics["expr_acc"] == pytest.approx(float((pred["expression"] == pred["expression_true"]).mean()))


# ------------------------------------ each loss term and reset detail of the appendix is there
# (every test below was checked to fail with its component removed from aura.py)
def _only(**weights):
    base = {"feature_dim": 12, "num_archetypes": 6, "dim": 8, "hidden": 16, "dropout": 0.0,
            "lambda_proj": 0.0, "lambda_vpo": 0.0, "lambda_refine": 0.0, "beta": 0.0}
    return {**base, **weights}


def _zq(m, b):
    z = m.project(b["features"])
    idx, _ = m.assign(z)
    return z, m.archetypes()[idx]


def test_vq_codebook_term_moves_the_archetypes_only():
    """||sg[z] - e_k||^2: with every other weight 0 it is the whole loss, it reaches the
    codebook and (stop-gradient) not the projector."""
    torch.manual_seed(0)
    m = create_method("aura", SPACE, _only())
    b = _batch()
    m.train()
    out = m(b)  # first step seeds the archetypes from z (data_init), then assigns
    z, e_k = out._aura_state
    terms = m.loss(out, b)
    expected = ((z - e_k) ** 2).sum(1).mean()
    assert float(expected.detach()) > 1e-4
    torch.testing.assert_close(terms["vq"], expected.detach())
    torch.testing.assert_close(terms["loss"].detach(), expected.detach())
    terms["loss"].backward()
    assert float(m.codebook.grad.abs().sum()) > 0
    assert m.global_proj[0].weight.grad is None or float(m.global_proj[0].weight.grad.abs().sum()) == 0.0
    # beta = 1 adds the commitment term of equal value, which reaches the projector
    m2 = create_method("aura", SPACE, _only(beta=1.0))
    m2.load_state_dict(m.state_dict())
    m2.train()
    out2 = m2(b)
    t2 = m2.loss(out2, b)
    z2, e2 = out2._aura_state
    torch.testing.assert_close(t2["vq"], 2 * ((z2 - e2) ** 2).sum(1).mean().detach())
    t2["loss"].backward()
    assert float(m2.global_proj[0].weight.grad.abs().sum()) > 0


def test_ema_pull_term_draws_live_archetypes_to_their_cluster_means():
    """L_vpo's ||e_i - sg[c_i]||^2 over live archetypes: with labels absent it is all of
    L_vpo, it equals the hand-computed mean, and a gradient step moves e_i towards c_i."""
    torch.manual_seed(0)
    m = create_method("aura", SPACE, _only(lambda_vpo=1.0, data_init=False, reset_every=0))
    b = _batch()
    nolabel = {"features": b["features"], "index": b["index"]}
    m.train()
    with torch.no_grad():
        target = F.normalize(torch.randn(6, 8), dim=1)
    out = m(nolabel)  # updates the accumulators with this batch ...
    m.cluster_mean.copy_(target)  # ... which the test then replaces by known means
    m.cluster_size.copy_(torch.tensor([5.0, 5.0, 0.0, 5.0, 0.0, 5.0]))
    live = m.cluster_size > 1e-3
    terms = m.loss(out, nolabel)
    e = m.archetypes()
    expected = ((e[live] - target[live]) ** 2).sum(1).mean()
    assert float(expected.detach()) > 0.1
    torch.testing.assert_close(terms["vpo"], expected.detach())
    # the gradient reaching the codebook is that of the pull plus the codebook term
    z, _ = out._aura_state
    idx = out.extras["archetype"]
    hand = ((z.detach() - e[idx]) ** 2).sum(1).mean() + ((e[live] - target[live]) ** 2).sum(1).mean()
    (g_hand,) = torch.autograd.grad(hand, m.codebook, retain_graph=True)
    (g_loss,) = torch.autograd.grad(terms["loss"], m.codebook)
    torch.testing.assert_close(g_loss, g_hand)
    # a step down that gradient, on the pull alone, moves live archetypes towards c_i
    (g_pull,) = torch.autograd.grad(((m.archetypes()[live] - target[live]) ** 2).sum(1).mean(), m.codebook)
    assert float(g_pull[~live].abs().sum()) == 0.0  # dead archetypes are not pulled


def test_projection_loss_trains_the_projector_through_z():
    """L_proj = L_task(heads(z)): the only term (besides the stop-gradient codebook term)
    that reaches the projector when refinement, VPO and commitment are off."""
    torch.manual_seed(0)
    m = create_method("aura", SPACE, _only(lambda_proj=1.0))
    b = _batch()
    m.train()
    out = m(b)
    z, _ = out._aura_state
    terms = m.loss(out, b)
    torch.testing.assert_close(terms["proj"], m.task_loss(m._heads(z), b).detach())
    assert float(terms["proj"]) > 0.1
    terms["loss"].backward()
    assert float(m.global_proj[0].weight.grad.abs().sum()) > 0
    assert float(m.expr_head.weight.grad.abs().sum()) > 0


def test_reseeded_archetypes_get_gaussian_noise():
    """Appendix B: e_i <- z_j + N(0, sigma^2). Seeded from one repeated feature, the new
    archetypes differ from it and from each other by about sigma * sqrt(dim)."""
    torch.manual_seed(0)
    dim, sigma = 64, 0.05
    cfg = {"feature_dim": 12, "num_archetypes": 10, "dim": dim, "reset_noise": sigma, "normalize": False}
    m = create_method("aura", SPACE, cfg)
    z = torch.randn(1, dim).repeat(20, 1)
    m.seed_archetypes(z, torch.arange(10))
    e = m.archetypes().detach()
    dist = (e - z[0]).norm(dim=1)
    expected = sigma * dim**0.5
    assert ((dist > 0.6 * expected) & (dist < 1.4 * expected)).all(), dist
    pair = torch.pdist(e)
    assert pair.min() > 0.6 * expected * 2**0.5 * 0.5
    noise = (e - z[0]).flatten()
    assert abs(float(noise.std()) - sigma) < 0.2 * sigma and abs(float(noise.mean())) < 0.2 * sigma
