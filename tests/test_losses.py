"""Losses match the papers' equations and PyTorch references, and masked labels change
neither the loss nor the gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from affectlab import losses as L
from affectlab import metrics as M
from affectlab.data.schema import EXPRESSIONS
from affectlab.errors import LabelError

SETTINGS = settings(max_examples=30, deadline=None)

#: Official AffectNet training counts per class, canonical (AffectNet 0-7) order.
AFFECTNET_TRAIN_COUNTS = {
    "neutral": 74874,
    "happiness": 134415,
    "sadness": 25459,
    "surprise": 14090,
    "fear": 6378,
    "disgust": 3803,
    "anger": 24882,
    "contempt": 3750,
}
#: Table 4 of 001_01df4aa5e26e8a28.txt (CAGE), same class order.
CAGE_TABLE4_AFFECTNET8 = [0.015605, 0.008709, 0.046078, 0.083078, 0.185434, 0.305953, 0.046934, 0.308210]
CAGE_TABLE4_AFFECTNET7 = [0.022600, 0.012589, 0.066464, 0.120094, 0.265305, 0.444943, 0.068006]


def _leaf(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(True)


# ------------------------------------------------------------------------- weights


def test_class_weights_reproduce_cage_table4():
    assert list(AFFECTNET_TRAIN_COUNTS) == list(EXPRESSIONS)
    w8 = L.class_weights(AFFECTNET_TRAIN_COUNTS)
    np.testing.assert_allclose(w8.numpy(), CAGE_TABLE4_AFFECTNET8, rtol=0.02)
    w7 = L.class_weights(list(AFFECTNET_TRAIN_COUNTS.values())[:7])
    np.testing.assert_allclose(w7.numpy(), CAGE_TABLE4_AFFECTNET7, rtol=0.02)
    assert float(w8.sum()) == pytest.approx(1.0, abs=1e-6)
    # The rarest class gets the largest weight, the most frequent the smallest.
    assert int(w8.argmax()) == EXPRESSIONS.index("contempt")
    assert int(w8.argmin()) == EXPRESSIONS.index("happiness")


def test_class_weights_edge_cases():
    np.testing.assert_allclose(L.class_weights([1, 3]).numpy(), [0.75, 0.25])
    with pytest.warns(RuntimeWarning, match="no samples"):
        w = L.class_weights(np.array([0, 2, 2]))
    np.testing.assert_allclose(w.numpy(), [0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="every class has count 0"):
        L.class_weights([0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        L.class_weights([3, -1])
    with pytest.raises(ValueError, match="1-D"):
        L.class_weights([[1, 2]])


def test_au_pos_weight_is_negatives_over_positives_ignoring_missing():
    labels = np.array([[1, 0, -1], [0, 0, 1], [0, 1, 1], [-1, 0, 0], [1, 0, 1]])
    # AU0: 2 pos, 2 neg -> 1; AU1: 1 pos, 4 neg -> 4; AU2: 3 pos, 1 neg -> 1/3.
    np.testing.assert_allclose(L.au_pos_weight(labels).numpy(), [1.0, 4.0, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(L.au_pos_weight(torch.tensor(labels, dtype=torch.float32)).numpy(), [1.0, 4.0, 1 / 3], rtol=1e-6)
    with pytest.warns(RuntimeWarning, match="no positive"):
        w = L.au_pos_weight(np.array([[0, 1], [0, 0]]))
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0])
    with pytest.raises(LabelError, match="NaN"):
        L.au_pos_weight(np.array([[np.nan, 1.0]]))
    with pytest.raises(LabelError, match="contains 2"):
        L.au_pos_weight(np.array([[2, 1]]))


def test_multilabel_pos_weight_matches_cage_reference_formula():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < np.linspace(0.05, 0.6, 6)).astype(int)
    counts = y.sum(0)
    np.testing.assert_allclose(L.multilabel_pos_weight(y).numpy(), (len(y) - counts) / counts, rtol=1e-6)


# ------------------------------------------------------------- weighted cross-entropy


def test_weighted_cross_entropy_matches_torch_and_masks():
    rng = np.random.default_rng(1)
    logits = _leaf(rng.normal(size=(12, 4)))
    target = torch.tensor(rng.integers(0, 4, 12))
    target[[2, 5, 9]] = -1
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    keep = target >= 0
    loss = L.weighted_cross_entropy(logits, target, w)
    ref_logits = logits.detach()[keep].clone().requires_grad_(True)
    ref = F.cross_entropy(ref_logits, target[keep], weight=w)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-10)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad[keep], ref_logits.grad)
    assert torch.all(logits.grad[~keep] == 0)


def test_weighted_cross_entropy_hand_computed_equation_5():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    target = torch.tensor([0, 1])
    w = torch.tensor([1.0, 3.0])
    l0, l1 = math.log(2), math.log(1 + math.exp(2))  # -log softmax of the true class
    assert L.weighted_cross_entropy(logits, target, w, reduction="sum").item() == pytest.approx(l0 + 3 * l1, rel=1e-6)
    assert L.weighted_cross_entropy(logits, target, w).item() == pytest.approx((l0 + 3 * l1) / 4, rel=1e-6)
    assert L.weighted_cross_entropy(logits, target).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_masked_entries_do_not_change_the_loss_whatever_their_outputs():
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.normal(size=(6, 3)))
    target = torch.tensor([0, -1, 2, -1, 1, 1])
    base = L.weighted_cross_entropy(logits, target)
    changed = logits.clone()
    changed[[1, 3]] = torch.tensor([1e6, -1e6, 3.0], dtype=torch.float64)
    assert L.weighted_cross_entropy(changed, target).item() == float(base)


def test_cross_entropy_bad_targets():
    logits = torch.zeros(3, 4)
    with pytest.raises(LabelError, match="class 4"):
        L.weighted_cross_entropy(logits, torch.tensor([0, 4, 1]))
    with pytest.raises(LabelError, match="NaN"):
        L.weighted_cross_entropy(logits, torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="one row per sample"):
        L.weighted_cross_entropy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"weight must have shape \[4\]"):
        L.weighted_cross_entropy(logits, torch.tensor([0, 1, 2]), torch.ones(3))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        L.weighted_cross_entropy(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="floating-point"):
        L.weighted_cross_entropy(torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------------- CCC / MSE


def test_ccc_loss_of_perfect_predictions_is_zero():
    x = torch.randn(50, 2, dtype=torch.float64)
    assert L.ccc_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert L.cage_va_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)


@SETTINGS
@given(st.integers(0, 2**31 - 1))
def test_ccc_loss_is_one_minus_metric_ccc_per_dimension(seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, (40, 2))
    p = 0.5 * t + rng.normal(scale=0.4, size=(40, 2))
    t[rng.random((40, 2)) < 0.3] = np.nan
    t[:2] = 0.1 * np.arange(2)[:, None]  # at least two labels per dimension
    expected = 1 - M.ccc(t, p)
    got = L.ccc_loss(torch.tensor(p), torch.tensor(t), reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)
    assert L.ccc_loss(torch.tensor(p), torch.tensor(t), reduction="sum").item() == pytest.approx(expected.sum())
    assert L.ccc_loss(torch.tensor(p), torch.tensor(t)).item() == pytest.approx(expected.mean())


def test_ccc_loss_masks_nan_targets_in_value_and_gradient():
    rng = np.random.default_rng(3)
    t = torch.tensor(rng.uniform(-1, 1, (20, 2)))
    t[[1, 4, 7], 0] = float("nan")
    t[[2, 4], 1] = float("nan")
    p = _leaf(rng.uniform(-1, 1, (20, 2)))
    loss = L.ccc_loss(p, t, reduction="sum")
    loss.backward()
    assert torch.isfinite(p.grad).all()
    assert torch.all(p.grad[[1, 4, 7], 0] == 0) and torch.all(p.grad[[2, 4], 1] == 0)
    for j in range(2):
        keep = ~torch.isnan(t[:, j])
        sub = p.detach()[keep, j].clone().requires_grad_(True)
        ref = L.ccc_loss(sub, t[keep, j])
        ref.backward()
        torch.testing.assert_close(p.grad[keep, j], sub.grad)


def test_ccc_loss_constant_predictions_are_finite():
    p = torch.full((8, 2), 0.2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(np.random.default_rng(4).uniform(-1, 1, (8, 2)))
    loss = L.ccc_loss(p, t)
    loss.backward()
    assert loss.item() == pytest.approx(1.0)  # CCC 0 for constant predictions
    assert torch.isfinite(p.grad).all()
    const_t = torch.full((8, 2), 0.2, dtype=torch.float64)
    p2 = torch.full((8, 2), 0.2, dtype=torch.float64, requires_grad=True)
    loss2 = L.ccc_loss(p2, const_t)
    loss2.backward()
    assert loss2.item() == 0.0 and torch.isfinite(p2.grad).all()  # equal constants: perfect
    p3 = torch.full((8, 2), -0.5, dtype=torch.float64, requires_grad=True)
    loss3 = L.ccc_loss(p3, const_t)
    loss3.backward()
    assert loss3.item() == pytest.approx(1.0) and torch.isfinite(p3.grad).all()


def test_masked_mse_hand_computed():
    p = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    t = torch.tensor([[1.0, float("nan")], [0.0, 0.5]])
    assert L.masked_mse(p, t).item() == pytest.approx((1 + 4 + 0.25) / 3)
    assert L.masked_mse(p, t, reduction="sum").item() == pytest.approx(5.25)
    np.testing.assert_allclose(L.masked_mse(p, t, reduction="none").numpy(), [2.5, 0.25])


# ------------------------------------------------------------------- CAGE losses


def test_cage_combined_loss_is_equation_1():
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.normal(size=(16, 8)))
    target = torch.tensor(rng.integers(0, 8, 16))
    va_p = torch.tensor(rng.uniform(-1, 1, (16, 2)))
    va_t = torch.tensor(rng.uniform(-1, 1, (16, 2)))
    w = L.class_weights(list(AFFECTNET_TRAIN_COUNTS.values())).double()
    expected = F.cross_entropy(logits, target, weight=w) + 5.0 * F.mse_loss(va_p, va_t)
    got = L.cage_combined_loss(logits, target, va_p, va_t, weight=w)
    assert got.item() == pytest.approx(float(expected), rel=1e-9)
    # alpha scales only the regression term.
    got2 = L.cage_combined_loss(logits, target, va_p, va_t, weight=w, alpha=1.0)
    assert float(got - got2) == pytest.approx(4.0 * float(F.mse_loss(va_p, va_t)), rel=1e-9)


def test_cage_va_loss_is_equation_2_as_in_the_reference_code():
    rng = np.random.default_rng(6)
    p = torch.tensor(rng.uniform(-1, 1, (30, 2)))
    t = torch.tensor(rng.uniform(-1, 1, (30, 2)))
    ccc = M.ccc(t.numpy(), p.numpy())
    mse = ((p - t) ** 2).mean(0).numpy()
    expected = (1 - ccc).sum() + 3.0 * mse.sum()
    assert L.cage_va_loss(p, t).item() == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------- BCE


def test_weighted_bce_is_equation_4():
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.normal(size=(10, 5)))
    y = torch.tensor((rng.random((10, 5)) < 0.3).astype(float))
    pw = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0], dtype=torch.float64)
    s = torch.sigmoid(x)
    by_hand = -(pw * y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()
    assert L.weighted_bce(x, y, pw).item() == pytest.approx(float(by_hand), rel=1e-9)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x, y)
    assert L.weighted_bce(x, y, pw).item() == pytest.approx(float(ref), rel=1e-9)


def test_weighted_bce_masks_missing_aus_in_value_and_gradient():
    rng = np.random.default_rng(8)
    x = _leaf(rng.normal(size=(10, 4)))
    y = torch.tensor((rng.random((10, 4)) < 0.4).astype(float))
    y[rng.random((10, 4)) < 0.3] = -1
    pw = torch.tensor([2.0, 1.0, 0.5, 3.0], dtype=torch.float64)
    keep = y >= 0
    loss = L.weighted_bce(x, y, pw)
    loss.backward()
    assert torch.all(x.grad[~keep] == 0)
    sub = x.detach()[keep].clone().requires_grad_(True)
    ref = F.binary_cross_entropy_with_logits(sub, y[keep], pos_weight=pw.expand(10, 4)[keep])
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(x.grad[keep], sub.grad)


def test_multilabel_bce_with_emotic_style_weights():
    rng = np.random.default_rng(9)
    y = (rng.random((64, 26)) < 0.15).astype(float)
    y[0] = 1  # every category occurs
    pw = L.multilabel_pos_weight(y).double()
    x = torch.tensor(rng.normal(size=(64, 26)))
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x, torch.tensor(y))
    assert L.multilabel_bce(x, torch.tensor(y), pw).item() == pytest.approx(float(ref), rel=1e-9)
    y_missing = torch.tensor(y)
    y_missing[5] = -1  # an unlabelled sample
    keep = torch.ones(64, dtype=torch.bool)
    keep[5] = False
    ref2 = torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x[keep], torch.tensor(y)[keep])
    assert L.multilabel_bce(x, y_missing, pw).item() == pytest.approx(float(ref2), rel=1e-9)


def test_bce_bad_targets():
    with pytest.raises(LabelError, match="contains 2"):
        L.weighted_bce(torch.zeros(2, 2), torch.tensor([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="shape of the logits"):
        L.weighted_bce(torch.zeros(2, 2), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    with pytest.raises(LabelError, match="NaN"):
        L.weighted_bce(torch.zeros(1, 2), torch.tensor([[0.0, float("nan")]]))


# ---------------------------------------------------------------------- SMM (eq. 7)


def test_smm_loss_is_the_unweighted_sum_and_masks_uni_task_samples():
    """A batch mixing AU-only, EXPR-only and VA-only samples, as SMM trains on Aff-Wild2."""
    rng = np.random.default_rng(10)
    n = 30
    au_x = _leaf(rng.normal(size=(n, 12)))
    ex_x = _leaf(rng.normal(size=(n, 8)))
    va_x = _leaf(rng.uniform(-1, 1, (n, 2)))
    task = np.arange(n) % 3  # 0 = AU sample, 1 = EXPR sample, 2 = VA sample
    au_t = torch.tensor((rng.random((n, 12)) < 0.5).astype(float))
    au_t[0] = 1  # sample 0 is an AU sample: every AU has a positive
    au_t[task != 0] = -1
    ex_t = torch.tensor(rng.integers(0, 8, n))
    ex_t[task != 1] = -1
    va_t = torch.tensor(rng.uniform(-1, 1, (n, 2)))
    va_t[task != 2] = float("nan")
    pw = L.au_pos_weight(au_t[task == 0]).double()
    cw = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    terms = L.smm_loss(
        au_logits=au_x, au_target=au_t, expr_logits=ex_x, expr_target=ex_t, va_pred=va_x, va_target=va_t,
        au_pos_weight=pw, expr_weight=cw, return_terms=True,
    )
    a, e, v = task == 0, task == 1, task == 2
    ref_au = F.binary_cross_entropy_with_logits(au_x.detach()[a], au_t[a], pos_weight=pw)
    ref_ex = F.cross_entropy(ex_x.detach()[e], ex_t[e], weight=cw)
    ref_va = 2 - M.ccc(va_t[v].numpy(), va_x.detach()[v].numpy()).sum()
    assert terms["au"].item() == pytest.approx(float(ref_au), rel=1e-9)
    assert terms["expr"].item() == pytest.approx(float(ref_ex), rel=1e-9)
    assert terms["va"].item() == pytest.approx(ref_va, rel=1e-9)
    assert terms["loss"].item() == pytest.approx(float(ref_au + ref_ex) + ref_va, rel=1e-9)
    terms["loss"].backward()
    assert torch.all(au_x.grad[~a] == 0) and torch.all(ex_x.grad[~e] == 0) and torch.all(va_x.grad[~v] == 0)
    assert au_x.grad[a].abs().sum() > 0 and ex_x.grad[e].abs().sum() > 0 and va_x.grad[v].abs().sum() > 0


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_losses_are_never_nan_and_zero_with_grad_when_nothing_is_labelled(seed, missing_rate):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    au_x = _leaf(rng.normal(size=(n, 3)))
    ex_x = _leaf(rng.normal(size=(n, 4)))
    va_x = _leaf(rng.uniform(-1, 1, (n, 2)))
    au_t = torch.tensor((rng.random((n, 3)) < 0.5).astype(float))
    au_t[torch.tensor(rng.random((n, 3)) < missing_rate)] = -1
    ex_t = torch.tensor(rng.integers(0, 4, n))
    ex_t[torch.tensor(rng.random(n) < missing_rate)] = -1
    va_t = torch.tensor(rng.uniform(-1, 1, (n, 2)))
    va_t[torch.tensor(rng.random((n, 2)) < missing_rate)] = float("nan")
    loss = L.smm_loss(au_logits=au_x, au_target=au_t, expr_logits=ex_x, expr_target=ex_t, va_pred=va_x, va_target=va_t)
    loss = loss + L.cage_combined_loss(ex_x, ex_t, va_x, va_t) + L.cage_va_loss(va_x, va_t)
    loss.backward()
    assert torch.isfinite(loss)
    for x in (au_x, ex_x, va_x):
        assert torch.isfinite(x.grad).all()
    nothing = L.smm_loss(
        au_logits=au_x, au_target=torch.full((n, 3), -1.0), expr_logits=ex_x, expr_target=torch.full((n,), -1),
        va_pred=va_x, va_target=torch.full((n, 2), float("nan")),
    )
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_smm_loss_argument_errors():
    with pytest.raises(ValueError, match="at least one"):
        L.smm_loss()
    with pytest.raises(ValueError, match="together"):
        L.smm_loss(au_logits=torch.zeros(2, 3))


# ------------------------------------------------------------------------- VQ loss


def test_vq_loss_value_and_stop_gradients():
    rng = np.random.default_rng(11)
    z = _leaf(rng.normal(size=(6, 4)))
    e = _leaf(rng.normal(size=(6, 4)))
    beta = 0.25
    loss = L.vq_loss(z, e, beta=beta)
    diff = (z - e).detach()
    assert loss.item() == pytest.approx((1 + beta) * float((diff**2).mean()), rel=1e-12)
    loss.backward()
    # Codebook term moves only e, commitment term moves only z (scaled by beta).
    torch.testing.assert_close(e.grad, -2 * diff / diff.numel())
    torch.testing.assert_close(z.grad, beta * 2 * diff / diff.numel())
    with pytest.raises(ValueError, match="same shape"):
        L.vq_loss(torch.zeros(2, 3), torch.zeros(2, 4))
