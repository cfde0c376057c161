"""Temporal smoothing (equation 9 of 002_cc6a0f1ad67f694b.txt) and the grid search of mu."""

import numpy as np
import pytest

from affectlab.errors import ConfigError
from affectlab.temporal import (
    OnlineSmoother,
    ccc,
    expr_f1_score,
    search_mu,
    search_mu_per_task,
    smooth,
)


def test_equation_9_by_hand():
    # Lambda_0 = eps_0; Lambda_t = (eps_t + mu Lambda_{t-1}) / (1 + mu), mu = 1
    # 1 -> (0 + 1)/2 = 0.5 -> (0 + 0.5)/2 = 0.25 -> (4 + 0.25)/2 = 2.125
    np.testing.assert_allclose(smooth([1.0, 0.0, 0.0, 4.0], 1), [1.0, 0.5, 0.25, 2.125])
    # mu = 3: 2 -> (6 + 3*2)/4 = 3 -> (-1 + 9)/4 = 2
    np.testing.assert_allclose(smooth([2.0, 6.0, -1.0], 3), [2.0, 3.0, 2.0])


def test_mu_zero_is_identity_and_columns_are_independent():
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.testing.assert_array_equal(smooth(x, 0), x)
    both = smooth(x, 2.5)
    for j in range(3):
        np.testing.assert_allclose(both[:, j], smooth(x[:, j], 2.5))


def test_matches_a_plain_loop_and_the_online_smoother():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    mu = 7.0
    ref = np.empty_like(x)
    ref[0] = x[0]
    for t in range(1, len(x)):
        ref[t] = (x[t] + mu * ref[t - 1]) / (1 + mu)
    np.testing.assert_allclose(smooth(x, mu), ref, rtol=1e-12)
    online = OnlineSmoother(mu)
    np.testing.assert_allclose(np.stack([online.update("track", row) for row in x]), ref, rtol=1e-12)


def test_groups_are_smoothed_separately_even_interleaved():
    a = np.array([1.0, 3.0, 5.0])
    b = np.array([10.0, 0.0, 0.0])
    x = np.array([a[0], b[0], a[1], b[1], a[2], b[2]])
    g = np.array([0, 1, 0, 1, 0, 1])
    out = smooth(x, 1, groups=g)
    np.testing.assert_allclose(out[g == 0], smooth(a, 1))
    np.testing.assert_allclose(out[g == 1], smooth(b, 1))


def test_nan_rows_pass_through_and_keep_the_state():
    out = smooth([1.0, np.nan, 0.0], 1)
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [1.0, 0.5])


def test_probabilities_stay_probabilities():
    p = np.random.default_rng(2).dirichlet(np.ones(5), size=30)
    s = smooth(p, 4)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    assert (s >= 0).all() and (s <= 1).all()


@pytest.mark.parametrize("mu", [-1, float("nan"), "x", None])
def test_bad_mu_is_rejected(mu):
    with pytest.raises(ConfigError, match="mu"):
        smooth([1.0, 2.0], mu)


def _random_walk_set(n_videos, length, q, r, seed):
    rng = np.random.default_rng(seed)
    truths, noisy = [], []
    for _ in range(n_videos):
        s = np.cumsum(rng.normal(0, np.sqrt(q), length))
        truths.append(s)
        noisy.append(s + rng.normal(0, np.sqrt(r), length))
    return noisy, truths


def test_grid_search_finds_the_kalman_optimum():
    """A random walk (step variance q) seen through white noise (variance r): the
    MSE-optimal causal filter is the steady-state Kalman filter, an exponential average
    with gain K = P / (P + r), P = (q + sqrt(q^2 + 4 q r)) / 2. With q = r / 20,
    K = 0.2 = 1 / (1 + mu), so the best mu of the grid is 4."""
    q, r = 0.05, 1.0
    p = (q + np.sqrt(q * q + 4 * q * r)) / 2
    assert 1 / (p / (p + r)) - 1 == pytest.approx(4.0)
    noisy, truths = _random_walk_set(30, 300, q, r, seed=0)
    res = search_mu(noisy, truths, lambda y, yhat: -np.mean((y - yhat) ** 2))
    assert res.best_mu == 4.0
    assert res.fold_mus == [4.0, 4.0, 4.0]
    assert res.scores.shape == (11, 3)
    # the cross-validated choice beats no smoothing on every held-out fold
    assert all(h > u for h, u in zip(res.heldout_scores, res.unsmoothed_scores))


def test_grid_search_picks_zero_when_the_signal_is_white():
    rng = np.random.default_rng(3)
    truths = [rng.normal(size=200) for _ in range(9)]
    noisy = [t + 0.05 * rng.normal(size=200) for t in truths]
    res = search_mu(noisy, truths, lambda y, yhat: ccc(y, yhat))
    assert res.best_mu == 0.0


def test_per_task_search_with_default_and_custom_scores():
    rng = np.random.default_rng(4)
    noisy, truths = _random_walk_set(9, 200, 0.05, 1.0, seed=5)
    va_pred = [np.column_stack([n, n]) for n in noisy]
    va_true = [np.column_stack([t, t]) for t in truths]
    labels = [rng.integers(0, 3, 50) for _ in range(9)]
    probs = [np.eye(3)[y] * 0.9 + 0.1 / 3 for y in labels]
    out = search_mu_per_task(
        {"va": va_pred, "expr": probs, "mine": noisy},
        {"va": va_true, "expr": labels, "mine": truths},
        scores={"mine": lambda y, p: -np.mean((y - p) ** 2)},
    )
    assert set(out) == {"va", "expr", "mine"}
    assert out["va"].best_mu > 0
    assert out["mine"].best_mu == 4.0
    # perfect per-frame expressions: smoothing can only blur the class changes
    assert out["expr"].best_mu == 0.0
    assert expr_f1_score(np.concatenate(labels), np.concatenate(probs)) == pytest.approx(1.0)


def test_search_validates_its_input():
    with pytest.raises(ConfigError, match="at least 3 sequences"):
        search_mu([np.zeros(5)] * 2, [np.zeros(5)] * 2, ccc)
    with pytest.raises(ConfigError, match="sequence 1"):
        search_mu([np.zeros(5), np.zeros(4), np.zeros(5)], [np.zeros(5)] * 3, ccc)
    with pytest.raises(ConfigError, match="no score function"):
        search_mu_per_task({"other": [np.zeros(3)] * 3}, {"other": [np.zeros(3)] * 3})
