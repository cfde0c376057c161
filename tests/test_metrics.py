"""Metrics agree with scikit-learn / scipy / hand computations, mask missing labels and
reject bad input with clear errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr
from sklearn import metrics as skm

from affectlab import metrics as M
from affectlab.data.schema import AU_SETS, EXPRESSIONS, NATIVE_EXPRESSIONS, LabelSpace
from affectlab.errors import ConfigError, LabelError

TOL = 1e-6
SETTINGS = settings(max_examples=40, deadline=None)


def _ccc_reference(t, p):
    """Lin's CCC through scipy's Pearson r: 2 r s_t s_p / (s_t^2 + s_p^2 + (m_t - m_p)^2)."""
    r = pearsonr(t, p)[0]
    return 2 * r * np.std(t) * np.std(p) / (np.var(t) + np.var(p) + (np.mean(t) - np.mean(p)) ** 2)


@st.composite
def labelled_classes(draw, min_classes: int = 2):
    """(y_true with some -1, y_pred, scores, C) with at least one labelled sample."""
    c = draw(st.integers(min_classes, 6))
    n = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, c, n)
    y_true[rng.random(n) < draw(st.floats(0, 0.5))] = -1
    if (y_true < 0).all():
        y_true[0] = 0
    scores = rng.normal(size=(n, c))
    return y_true, scores.argmax(1), scores, c


# ------------------------------------------------------------------ classification


@SETTINGS
@given(labelled_classes())
def test_accuracy_matches_sklearn_on_labelled_rows(case):
    y_true, y_pred, scores, _ = case
    keep = y_true >= 0
    expected = skm.accuracy_score(y_true[keep], y_pred[keep])
    assert M.accuracy(y_true, y_pred) == pytest.approx(expected, abs=TOL)
    assert M.accuracy(y_true, scores) == pytest.approx(expected, abs=TOL)


@SETTINGS
@given(labelled_classes())
def test_precision_recall_f1_matches_sklearn(case):
    y_true, y_pred, _, c = case
    keep = y_true >= 0
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true[keep], y_pred[keep], labels=list(range(c)), zero_division=0
    )
    out = M.precision_recall_f1(y_true, y_pred, num_classes=c)
    np.testing.assert_allclose(out["precision"], p, atol=TOL)
    np.testing.assert_allclose(out["recall"], r, atol=TOL)
    np.testing.assert_allclose(out["f1"], f, atol=TOL)
    np.testing.assert_array_equal(out["support"], s)
    macro = skm.f1_score(y_true[keep], y_pred[keep], labels=list(range(c)), average="macro", zero_division=0)
    assert out["f1_macro"] == pytest.approx(macro, abs=TOL)
    # Default classes: those present, as scikit-learn does without `labels`.
    default = M.precision_recall_f1(y_true, y_pred)
    f_default = skm.f1_score(y_true[keep], y_pred[keep], average=None, zero_division=0)
    np.testing.assert_allclose(default["f1"], f_default, atol=TOL)


@SETTINGS
@given(labelled_classes())
def test_confusion_matrix_matches_sklearn(case):
    y_true, y_pred, scores, c = case
    keep = y_true >= 0
    labels = list(range(c))
    for normalize in (None, "true", "pred", "all"):
        expected = skm.confusion_matrix(y_true[keep], y_pred[keep], labels=labels, normalize=normalize)
        got = M.confusion_matrix(y_true, scores, num_classes=c, normalize=normalize)
        np.testing.assert_allclose(got, expected, atol=TOL)


def test_class_absent_from_truth_counts_as_zero_in_macro_f1():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 predicted, never true; class 3 neither
    out = M.precision_recall_f1(y_true, y_pred, num_classes=4)
    np.testing.assert_allclose(out["f1"], [2 / 3, 1.0, 0.0, 0.0])
    assert out["f1_macro"] == pytest.approx((2 / 3 + 1) / 4)
    expected = skm.f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert out["f1_macro"] == pytest.approx(expected, abs=TOL)
    by_labels = M.precision_recall_f1(y_true, y_pred, labels=[2, 0])
    np.testing.assert_allclose(by_labels["f1"], [0.0, 2 / 3])


def test_single_class():
    y = np.zeros(5, dtype=int)
    out = M.precision_recall_f1(y, y)
    np.testing.assert_array_equal(out["labels"], [0])
    assert out["f1_macro"] == 1.0
    assert M.accuracy(y, y) == 1.0
    np.testing.assert_array_equal(M.confusion_matrix(y, y), [[5]])


def test_tensor_inputs_equal_numpy_inputs():
    rng = np.random.default_rng(1)
    y = rng.integers(-1, 4, 50)
    s = rng.normal(size=(50, 4)).astype(np.float32)
    assert M.accuracy(torch.from_numpy(y), torch.from_numpy(s)) == M.accuracy(y, s)
    t = rng.normal(size=(50, 2))
    p = rng.normal(size=(50, 2))
    np.testing.assert_allclose(M.ccc(torch.from_numpy(t), torch.from_numpy(p)), M.ccc(t, p))


# ---------------------------------------------------------------------------- top-k


@SETTINGS
@given(labelled_classes(min_classes=3), st.integers(1, 5))
def test_topk_single_label_matches_sklearn(case, k):
    # (scikit-learn treats two classes as a thresholded binary problem, hence C >= 3)
    y_true, y_pred, scores, c = case
    keep = y_true >= 0
    k = min(k, c - 1)
    expected = skm.top_k_accuracy_score(y_true[keep], scores[keep], k=k, labels=list(range(c)))
    assert M.topk_accuracy(y_true, scores, k=k) == pytest.approx(expected, abs=TOL)
    assert M.topk_accuracy(y_true, scores, k=1) == pytest.approx(M.accuracy(y_true, y_pred), abs=TOL)


def test_topk_multilabel_hand_computed():
    scores = np.array(
        [
            [0.9, 0.8, 0.1, 0.0],  # top-2 {0, 1}
            [0.1, 0.2, 0.3, 0.9],  # top-2 {3, 2}
            [0.5, 0.4, 0.3, 0.2],  # top-2 {0, 1}
            [0.5, 0.4, 0.3, 0.2],  # unlabelled row, left out
        ]
    )
    y = np.array([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1], [-1, -1, -1, -1]])
    assert M.topk_accuracy(y, scores, k=2) == pytest.approx(1 / 3)
    assert M.topk_accuracy(y, scores, k=3) == pytest.approx(2 / 3)  # row 1 now hits class 1
    assert M.topk_accuracy(y, scores, k=4) == pytest.approx(1.0)  # row 2 needs class 3


# ------------------------------------------------------------------------ regression


@st.composite
def regression_case(draw):
    n = draw(st.integers(3, 60))
    d = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    t = rng.uniform(-1, 1, (n, d))
    p = 0.7 * t + rng.normal(scale=draw(st.floats(0.01, 1.0)), size=(n, d)) + draw(st.floats(-0.5, 0.5))
    missing = rng.random((n, d)) < draw(st.floats(0, 0.4))
    missing[:3] = False  # at least three labels per column
    t[missing] = np.nan
    return t, p


@SETTINGS
@given(regression_case())
def test_regression_metrics_match_references_per_column(case):
    t, p = case
    got = {f: getattr(M, f)(t, p) for f in ("ccc", "mse", "rmse", "mae", "r2", "explained_variance")}
    for j in range(t.shape[1]):
        keep = ~np.isnan(t[:, j])
        tj, pj = t[keep, j], p[keep, j]
        assert got["ccc"][j] == pytest.approx(_ccc_reference(tj, pj), abs=TOL)
        assert got["mse"][j] == pytest.approx(skm.mean_squared_error(tj, pj), abs=TOL)
        assert got["rmse"][j] == pytest.approx(np.sqrt(skm.mean_squared_error(tj, pj)), abs=TOL)
        assert got["mae"][j] == pytest.approx(skm.mean_absolute_error(tj, pj), abs=TOL)
        assert got["r2"][j] == pytest.approx(skm.r2_score(tj, pj), abs=TOL)
        assert got["explained_variance"][j] == pytest.approx(skm.explained_variance_score(tj, pj), abs=TOL)
        # 1-D input gives the scalar of that column.
        assert M.ccc(t[:, j], p[:, j]) == pytest.approx(got["ccc"][j], abs=1e-12)


def test_ccc_hand_computed():
    assert M.ccc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    # means 2 and 3, variances 2/3, covariance 2/3: 2(2/3) / (4/3 + 1) = 4/7
    assert M.ccc([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == pytest.approx(4 / 7)
    assert M.ccc([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_ccc_constant_predictions_are_defined():
    t = np.array([0.1, -0.4, 0.5, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a 0/0 either
        assert M.ccc(t, np.full(4, 0.3)) == 0.0
        assert M.ccc(np.full(4, 0.3), np.full(4, 0.3)) == 1.0
        assert M.ccc(np.full(4, 0.3), np.full(4, -0.2)) == 0.0
        assert M.ccc([0.5], [0.5]) == 1.0
        assert M.r2(np.full(4, 0.3), np.full(4, 0.3)) == skm.r2_score(np.full(4, 0.3), np.full(4, 0.3))
        assert M.r2(np.full(4, 0.3), t) == skm.r2_score(np.full(4, 0.3), t)
        assert M.explained_variance(np.full(4, 0.3), t) == skm.explained_variance_score(np.full(4, 0.3), t)


def test_nan_labels_are_masked_not_propagated():
    t = np.array([0.1, np.nan, 0.5, 0.2, np.nan])
    p = np.array([0.0, 100.0, 0.4, 0.3, -100.0])
    keep = ~np.isnan(t)
    for f in ("ccc", "mse", "rmse", "mae", "r2", "explained_variance"):
        assert getattr(M, f)(t, p) == pytest.approx(getattr(M, f)(t[keep], p[keep]), abs=1e-12)


# --------------------------------------------------------------------------- AU F1


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.3, 0.5, 0.7]))
def test_au_f1_matches_sklearn_per_au(seed, threshold):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 60)), int(rng.integers(1, 6))
    y = (rng.random((n, k)) < 0.3).astype(int)
    y[rng.random((n, k)) < 0.2] = -1
    y[0] = 0  # every AU has at least one label
    s = rng.random((n, k))
    out = M.au_f1(y, s, threshold=threshold)
    for j in range(k):
        keep = y[:, j] >= 0
        expected = skm.f1_score(y[keep, j], (s[keep, j] >= threshold).astype(int), zero_division=0)
        assert out["f1"][j] == pytest.approx(expected, abs=TOL)
    assert out["mean"] == pytest.approx(np.mean(out["f1"]), abs=TOL)


def test_au_f1_unlabelled_au_is_nan_and_left_out_of_mean():
    y = np.array([[1, -1, 0], [0, -1, 0], [1, -1, 0]])
    s = np.array([[0.9, 0.9, 0.1], [0.2, 0.1, 0.2], [0.4, 0.8, 0.3]])
    with pytest.warns(M.MissingLabelsWarning, match="column"):
        out = M.au_f1(y, s)
    assert np.isnan(out["f1"][1])
    # AU0: tp 1, fn 1, fp 0 -> 2/3. AU2: no positives, none predicted -> 0 (zero_division=0).
    np.testing.assert_allclose(out["f1"][[0, 2]], [2 / 3, 0.0])
    assert out["mean"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------ ABAW score


def test_abaw_mtl_score_is_equation_8():
    rng = np.random.default_rng(7)
    n = 200
    va_t = rng.uniform(-1, 1, (n, 2))
    va_p = np.clip(va_t + rng.normal(scale=0.3, size=(n, 2)), -1, 1)
    va_t[rng.random((n, 2)) < 0.1] = np.nan
    ex_t = rng.integers(0, 8, n)
    ex_t[rng.random(n) < 0.1] = -1
    ex_s = rng.normal(size=(n, 8)) + 2 * np.eye(8)[np.maximum(ex_t, 0)]
    au_t = (rng.random((n, 12)) < 0.3).astype(int)
    au_t[rng.random((n, 12)) < 0.1] = -1
    au_s = np.clip(0.6 * au_t + 0.5 * rng.random((n, 12)), 0, 1)

    ccc_terms = []
    for j in range(2):
        keep = ~np.isnan(va_t[:, j])
        ccc_terms.append(_ccc_reference(va_t[keep, j], va_p[keep, j]))
    keep = ex_t >= 0
    f1_expr = skm.f1_score(ex_t[keep], ex_s[keep].argmax(1), labels=list(range(8)), average="macro", zero_division=0)
    f1_au = np.mean(
        [skm.f1_score(au_t[au_t[:, j] >= 0, j], au_s[au_t[:, j] >= 0, j] >= 0.5, zero_division=0) for j in range(12)]
    )
    expected = np.mean(ccc_terms) + f1_expr + f1_au
    got = M.abaw_mtl_score(va_true=va_t, va_pred=va_p, expr_true=ex_t, expr_pred=ex_s, au_true=au_t, au_scores=au_s)
    assert got == pytest.approx(expected, abs=TOL)

    abaw_names = [NATIVE_EXPRESSIONS["abaw"][i] for i in range(8)]
    summary = M.summarize(
        expr_true=ex_t, expr_scores=ex_s, va_true=va_t, va_pred=va_p, au_true=au_t, au_scores=au_s,
        expressions=abaw_names, aus=AU_SETS["abaw12"], protocol="abaw",
    )
    assert summary["abaw_mtl"] == pytest.approx(expected, abs=TOL)


# -------------------------------------------------------------------- missing labels


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.accuracy([-1, -1], [0, 1]),
        lambda: M.precision_recall_f1([-1, -1], [0, 1], num_classes=2)["f1_macro"],
        lambda: M.topk_accuracy([-1, -1], np.zeros((2, 3)), k=1),
        lambda: M.topk_accuracy(-np.ones((2, 3)), np.zeros((2, 3)), k=1),
        lambda: M.ccc([np.nan, np.nan], [0.1, 0.2]),
        lambda: M.mse([np.nan, np.nan], [0.1, 0.2]),
        lambda: M.rmse([np.nan], [0.1]),
        lambda: M.mae([np.nan], [0.1]),
        lambda: M.r2([np.nan], [0.1]),
        lambda: M.explained_variance([np.nan], [0.1]),
        lambda: M.au_f1(-np.ones((2, 2)), np.zeros((2, 2)))["mean"],
    ],
)
def test_all_labels_missing_gives_nan_and_warning(call):
    with pytest.warns(M.MissingLabelsWarning):
        value = call()
    assert np.isnan(value)


def test_summarize_with_all_labels_missing_does_not_crash():
    with pytest.warns(M.MissingLabelsWarning):
        out = M.summarize(va_true=np.full((4, 2), np.nan), va_pred=np.zeros((4, 2)))
    assert np.isnan(out["va_ccc"]) and np.isnan(out["valence_rmse"])


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: M.accuracy([0, 1, 2], [0, 1]), ValueError, "same number of samples"),
        (lambda: M.accuracy([[0, 1]], [0]), ValueError, r"shape \[N\]"),
        (lambda: M.accuracy([0.0, np.nan], [0, 1]), LabelError, "NaN"),
        (lambda: M.accuracy([0.5, 1.0], [0, 1]), LabelError, "non-integer"),
        (lambda: M.accuracy([0, -3], [0, 1]), LabelError, "-3"),
        (lambda: M.precision_recall_f1([0, 5], [0, 1], num_classes=3), LabelError, "out of range"),
        (lambda: M.precision_recall_f1([0, 1], np.zeros((2, 4)), num_classes=3), ValueError, "num_classes"),
        (lambda: M.ccc(np.zeros(3), np.zeros(4)), ValueError, "same shape"),
        (lambda: M.ccc(np.zeros(3), [0.0, np.nan, 0.0]), ValueError, "predictions must be finite"),
        (lambda: M.mse(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))), ValueError, r"\[N, D\]"),
        (lambda: M.au_f1(np.zeros((3, 2)), np.zeros((3, 3))), ValueError, "same shape"),
        (lambda: M.au_f1(np.zeros((3, 2)), np.full((3, 2), 2.5)), ValueError, "sigmoid"),
        (lambda: M.au_f1(np.full((3, 2), 2), np.zeros((3, 2))), LabelError, "1 \\(present\\)"),
        (lambda: M.au_f1(np.full((3, 2), np.nan), np.zeros((3, 2))), LabelError, "NaN"),
        (lambda: M.topk_accuracy([0, 3], np.zeros((2, 3))), LabelError, "only 3 columns"),
        (lambda: M.topk_accuracy([0, 1], np.zeros((2, 3)), k=0), ValueError, "positive integer"),
        (lambda: M.accuracy(["a", "b"], [0, 1]), ValueError, "numeric"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_summarize_rejects_unknown_names_and_mismatches():
    y, s = np.array([0, 1]), np.eye(2)
    with pytest.raises(LabelError, match="'grumpy'"):
        M.summarize(expr_true=y, expr_scores=s, expressions=["neutral", "grumpy"])
    with pytest.raises(ValueError, match="3 expression names"):
        M.summarize(expr_true=y, expr_scores=s, expressions=["neutral", "happy", "sad"])
    with pytest.raises(LabelError, match="action unit"):
        M.summarize(au_true=np.zeros((2, 2)), au_scores=np.zeros((2, 2)), aus=["AU1", "brow"])
    with pytest.raises(ValueError, match="without expr predictions"):
        M.summarize(expr_true=y)
    with pytest.raises(ConfigError, match="protocol"):
        M.summarize(expr_true=y, expr_scores=s, protocol="fer")
    with pytest.raises(ConfigError, match="needs"):
        M.summarize(expr_true=y, expr_scores=s, protocol="abaw")
    with pytest.raises(LabelError, match="only 2 classes"):
        M.summarize(expr_true=[0, 2], expr_scores=s)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        M.summarize(va_true=np.zeros((2, 1)), va_pred=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="va_pred must have the shape of va_true"):
        M.summarize(va_true=np.zeros((2, 2)), va_pred=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="au_scores must be probabilities"):
        M.summarize(au_true=np.zeros((2, 2)), au_scores=np.full((2, 2), 3.0))
    with pytest.raises(ValueError, match="au_scores must have the shape of au_true"):
        M.summarize(au_true=np.zeros((2, 2)), au_scores=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same number of samples"):
        M.summarize(expr_true=[0, 1, 1], expr_scores=s)


# ------------------------------------------------------------------------- summarize


def test_summarize_keys_values_and_json():
    rng = np.random.default_rng(3)
    n = 120
    space = LabelSpace(expressions=EXPRESSIONS, aus=("AU1", "AU12", "AU25"), va=True)
    ex_t = rng.integers(-1, 8, n)
    ex_s = rng.normal(size=(n, 8))
    va_t = rng.uniform(-1, 1, (n, 2))
    va_t[::7, 0] = np.nan
    va_p = rng.uniform(-1, 1, (n, 2))
    au_t = rng.integers(-1, 2, (n, 3))
    au_s = rng.random((n, 3))
    out = M.summarize(
        expr_true=torch.from_numpy(ex_t), expr_scores=torch.from_numpy(ex_s).float(),
        va_true=va_t, va_pred=va_p, au_true=au_t, au_scores=au_s, label_space=space,
    )
    assert set(out) == {
        "expr_acc", "expr_f1_macro", "expr_f1", "valence_ccc", "arousal_ccc", "va_ccc",
        "valence_rmse", "arousal_rmse", "valence_mae", "arousal_mae", "au_f1", "au_f1_mean",
        "expr_precision_macro", "expr_recall_macro", "expr_precision_weighted", "expr_recall_weighted",
        "expr_f1_weighted", "valence_mse", "arousal_mse", "va_mse", "va_mae", "va_rmse", "va_ccc_pooled",
    }
    assert list(out["expr_f1"]) == list(EXPRESSIONS)
    assert list(out["au_f1"]) == ["AU1", "AU12", "AU25"]
    keep = ex_t >= 0
    assert out["expr_acc"] == pytest.approx(skm.accuracy_score(ex_t[keep], ex_s[keep].argmax(1)), abs=TOL)
    assert out["expr_f1_macro"] == pytest.approx(
        skm.f1_score(ex_t[keep], ex_s[keep].argmax(1), labels=list(range(8)), average="macro", zero_division=0),
        abs=TOL,
    )
    ccc = M.ccc(va_t, va_p)
    assert out["valence_ccc"] == pytest.approx(ccc[0]) and out["va_ccc"] == pytest.approx(ccc.mean())
    assert out["arousal_rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(va_t[:, 1], va_p[:, 1])))
    assert out["au_f1_mean"] == pytest.approx(M.au_f1(au_t, au_s)["mean"])
    text = json.dumps(out)
    assert json.loads(text) == out  # no NaN here, so the round trip is exact
    for value in [v for v in out.values() if not isinstance(v, dict)]:
        assert type(value) is float


def test_summarize_subsets_and_multilabel():
    rng = np.random.default_rng(4)
    only_va = M.summarize(va_true=rng.uniform(-1, 1, (10, 3)), va_pred=rng.uniform(-1, 1, (10, 3)))
    assert "dominance_ccc" in only_va and "expr_acc" not in only_va and "au_f1" not in only_va
    y = (rng.random((30, 5)) < 0.3).astype(int)
    s = rng.normal(size=(30, 5))
    space = LabelSpace(expressions=("Affection", "Anger", "Annoyance", "Anticipation", "Aversion"), multilabel=True)
    out = M.summarize(expr_true=y, expr_scores=s, label_space=space, topk=2)
    assert set(out) == {"topk_acc", "topk_acc_all"}
    assert out["topk_acc_all"] == pytest.approx(M.topk_accuracy(y, s, k=2, mode="all"))
    assert out["topk_acc"] == pytest.approx(M.topk_accuracy(y, s, k=2))


def test_summarize_abaw_protocol_warns_outside_abaw_label_space():
    rng = np.random.default_rng(5)
    kw = dict(
        expr_true=rng.integers(0, 3, 20), expr_scores=rng.normal(size=(20, 3)),
        va_true=rng.uniform(-1, 1, (20, 2)), va_pred=rng.uniform(-1, 1, (20, 2)),
        au_true=rng.integers(0, 2, (20, 2)), au_scores=rng.random((20, 2)),
    )
    assert "abaw_mtl" not in M.summarize(**kw)
    with pytest.warns(UserWarning, match="not comparable"):
        out = M.summarize(**kw, protocol="abaw")
    assert out["abaw_mtl"] == pytest.approx(out["va_ccc"] + out["expr_f1_macro"] + out["au_f1_mean"])


def test_summarize_names_classes_by_canonical_name_and_keeps_known_spellings():
    y, s = np.array([0, 1, 1]), np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    out = M.summarize(expr_true=y, expr_scores=s, expressions=["Happy", "angry"])
    assert list(out["expr_f1"]) == ["happiness", "anger"]
    # happiness: tp 1, fp 1, fn 0 -> 2/3; anger: tp 1, fp 0, fn 1 -> 2/3
    assert out["expr_f1"] == pytest.approx({"happiness": 2 / 3, "anger": 2 / 3})
    out = M.summarize(expr_true=y, expr_scores=s, expressions=["Anger", "Doubt/Confusion"])
    assert list(out["expr_f1"]) == ["Anger", "Doubt/Confusion"]



# ------------------------------------------------- CAGE's table metrics (001, Tables 6 and 8)
def test_weighted_and_macro_precision_recall_f1_match_sklearn():
    rng = np.random.default_rng(11)
    t = rng.integers(-1, 6, 300)
    p = rng.integers(0, 6, 300)
    p[:40] = 5  # an over-predicted class
    res = M.precision_recall_f1(t, p, num_classes=7)  # class 6 never occurs: zero_division=0
    keep = t >= 0
    for avg in ("macro", "weighted"):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(
            t[keep], p[keep], labels=list(range(7)), average=avg, zero_division=0
        )
        assert res[f"precision_{avg}"] == pytest.approx(prec, abs=TOL)
        assert res[f"recall_{avg}"] == pytest.approx(rec, abs=TOL)
        assert res[f"f1_{avg}"] == pytest.approx(f1, abs=TOL)
    # the CAGE authors' evaluation: classification_report's "weighted avg"
    report = skm.classification_report(t[keep], p[keep], labels=list(range(7)), output_dict=True, zero_division=0)
    assert res["f1_weighted"] == pytest.approx(report["weighted avg"]["f1-score"], abs=TOL)
    # one class only, predicted perfectly: everything is 1
    single = M.precision_recall_f1(np.zeros(5, int), np.zeros(5, int))
    assert single["precision_weighted"] == single["recall_weighted"] == single["f1_weighted"] == 1.0


def test_pooled_ccc_and_mse_of_the_cage_code():
    rng = np.random.default_rng(12)
    t = np.stack([rng.normal(0.3, 0.4, 200), rng.normal(-0.2, 0.2, 200)], 1)
    p = t + rng.normal(0, 0.2, t.shape)
    t[::9, 1] = np.nan
    keep = ~np.isnan(t)
    long_t, long_p = t[keep], p[keep]
    # by hand: one CCC over the concatenated columns, population moments
    mt, mp = long_t.mean(), long_p.mean()
    cov = np.mean((long_t - mt) * (long_p - mp))
    hand = 2 * cov / (long_t.var() + long_p.var() + (mt - mp) ** 2)
    assert M.ccc_pooled(t, p) == pytest.approx(hand, rel=1e-12)
    assert M.ccc_pooled(t, p) != pytest.approx(np.mean(M.ccc(t, p)), abs=1e-3)  # not the mean CCC
    assert M.mse_pooled(t, p) == pytest.approx(skm.mean_squared_error(long_t, long_p))
    # constants: equal -> 1, different -> 0 (as for ccc); nothing labelled -> NaN with a warning
    assert M.ccc_pooled(np.full((4, 2), 0.5), np.full((4, 2), 0.5)) == 1.0
    assert M.ccc_pooled(np.full((4, 2), 0.5), np.full((4, 2), 0.2)) == 0.0
    with pytest.warns(M.MissingLabelsWarning):
        assert np.isnan(M.ccc_pooled(np.full((3, 2), np.nan), np.zeros((3, 2))))
    out = M.summarize(va_true=t, va_pred=p)
    assert out["va_ccc_pooled"] == pytest.approx(hand, rel=1e-12)
    assert out["va_mse"] == pytest.approx(skm.mean_squared_error(long_t, long_p))
    assert out["va_mae"] == pytest.approx(skm.mean_absolute_error(long_t, long_p))
    assert out["va_rmse"] == pytest.approx(np.sqrt(out["va_mse"]))
    assert out["arousal_mse"] == pytest.approx(skm.mean_squared_error(t[keep[:, 1], 1], p[keep[:, 1], 1]))



def test_topk_all_requires_every_true_label_in_the_top_k():
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.1, 0.8, 0.0], [0.1, 0.2, 0.3, 0.9], [0.9, 0.8, 0.7, 0.6]])
    truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    # k = 2: rows 0 (both in the top 2), 2 (its one label first) and 3 (4 labels: top 2 are true) hit;
    # row 1 has label 1 only third
    assert M.topk_accuracy(truth, scores, k=2, mode="all") == pytest.approx(3 / 4)
    assert M.topk_accuracy(truth, scores, k=2, mode="any") == pytest.approx(1.0)
    single = np.array([0, 2, 3, 1])
    assert M.topk_accuracy(single, scores, k=2, mode="all") == M.topk_accuracy(single, scores, k=2)
    with pytest.raises(ValueError, match="mode"):
        M.topk_accuracy(truth, scores, k=2, mode="some")
