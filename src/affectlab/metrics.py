"""Evaluation metrics for expressions, valence/arousal and action units.

Every function takes numpy arrays, lists or torch tensors (converted to numpy float64
or int64 internally), masks missing labels and validates shapes:

* expression labels: int [N], ``-1`` = missing; multi-label (EMOTIC): 0/1 [N, C],
  ``-1`` = missing entry;
* valence/arousal labels: float [N] or [N, D], ``NaN`` = missing;
* AU labels: 0/1 [N, K], ``-1`` = missing entry.

Predictions are never missing: a NaN or infinite prediction is an error.

When every label of a metric is missing the metric is undefined: the function returns
``NaN`` and emits a :class:`MissingLabelsWarning` rather than failing, so an epoch in
which one descriptor happens to be unlabelled can still be summarised.

:func:`summarize` turns whatever subset of descriptors is available into the metric
names of ARCHITECTURE.md (:data:`METRIC_NAMES`) (``expr_acc``, ``valence_ccc``, ``au_f1_mean``, ``abaw_mtl`` ...).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from affectlab.data.schema import (
    ALL_EXPRESSIONS,
    AU_SETS,
    EMOTIC_CATEGORIES,
    EXPRESSION_ALIASES,
    NATIVE_EXPRESSIONS,
    LabelSpace,
    au_name,
)
from affectlab.errors import ConfigError, LabelError

#: The metric names (``metrics.json`` keys) a run and an evaluation report.
METRIC_NAMES = (
    "expr_acc",
    "expr_f1_macro",
    "expr_f1",
    "topk_acc",
    "valence_ccc",
    "arousal_ccc",
    "va_ccc",
    "valence_rmse",
    "arousal_rmse",
    "valence_mae",
    "arousal_mae",
    "au_f1",
    "au_f1_mean",
    "abaw_mtl",
)

__all__ = [
    "MissingLabelsWarning",
    "accuracy",
    "precision_recall_f1",
    "confusion_matrix",
    "ccc",
    "ccc_pooled",
    "mse",
    "mse_pooled",
    "rmse",
    "mae",
    "explained_variance",
    "r2",
    "au_f1",
    "topk_accuracy",
    "abaw_mtl_score",
    "summarize",
    "VA_NAMES",
    "ABAW_EXPRESSIONS",
    "ABAW_AUS",
]

#: Column names of a VA array, in order (EMOTIC adds dominance as a third column).
VA_NAMES: tuple[str, ...] = ("valence", "arousal", "dominance")

#: The ABAW expression classes and AUs of equation 8 of SMM-EmotionNet.
ABAW_EXPRESSIONS: tuple[str, ...] = tuple(NATIVE_EXPRESSIONS["abaw"][i] for i in range(8))
ABAW_AUS: tuple[str, ...] = AU_SETS["abaw12"]


class MissingLabelsWarning(RuntimeWarning):
    """A metric was asked for but no sample carries the labels it needs (result NaN)."""


# --------------------------------------------------------------------------- input


def _to_numpy(x, name: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name} must be numeric, got an object array (mixed or ragged values)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _int_labels(y, name: str, *, ndim: int | tuple[int, ...] = 1, what: str = "expression") -> np.ndarray:
    """Integer labels with -1 for missing; NaN or fractional values are an error."""
    arr = _to_numpy(y, name)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        shape = " or ".join({1: "[N]", 2: "[N, C]"}[d] for d in ndims)
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(arr.shape)}")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise LabelError(
                f"{name} contains NaN; {what} labels are integers and missing ones are -1 "
                f"({int(np.isnan(arr).sum())} NaN values)"
            )
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.round(arr))].ravel()[0]
            raise LabelError(f"{name} contains the non-integer value {float(bad):g}; {what} labels are integers")
    arr = arr.astype(np.int64, copy=False)
    if (arr < -1).any():
        raise LabelError(
            f"{name} contains {int(arr[arr < -1].ravel()[0])}; valid labels are >= 0 and -1 means missing",
            value=int(arr[arr < -1].ravel()[0]),
        )
    return arr


def _binary_labels(y, name: str, *, what: str = "AU") -> np.ndarray:
    arr = _int_labels(y, name, ndim=2, what=what)
    if (arr > 1).any():
        raise LabelError(
            f"{name} contains {int(arr[arr > 1].ravel()[0])}; {what} labels are 1 (present), "
            "0 (absent) or -1 (missing)",
            value=int(arr[arr > 1].ravel()[0]),
        )
    return arr


def _float_array(y, name: str, *, allow_nan: bool) -> np.ndarray:
    arr = _to_numpy(y, name).astype(np.float64, copy=False)
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values")
    if not allow_nan and np.isnan(arr).any():
        raise ValueError(
            f"{name} contains NaN ({int(np.isnan(arr).sum())} values); predictions must be finite"
        )
    return arr


def _check_len(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of samples, got {a.shape[0]} and {b.shape[0]}"
        )


def _warn_missing(metric: str, what: str) -> float:
    warnings.warn(f"{metric}: no sample carries {what} labels; the metric is NaN", MissingLabelsWarning, stacklevel=3)
    return float("nan")


def _predicted_classes(y_pred, name: str, n: int, num_classes: int | None) -> np.ndarray:
    """Class indices from labels [N] or from scores/logits [N, C] (argmax)."""
    arr = _to_numpy(y_pred, name)
    if arr.ndim == 2:
        if num_classes is not None and arr.shape[1] != num_classes:
            raise ValueError(
                f"{name} has {arr.shape[1]} score columns but num_classes is {num_classes}; "
                f"expected shape [N, {num_classes}]"
            )
        scores = _float_array(arr, name, allow_nan=False)
        pred = scores.argmax(axis=1).astype(np.int64) if scores.shape[1] else np.zeros(len(scores), np.int64)
    elif arr.ndim == 1:
        pred = _int_labels(arr, name)
        if (pred < 0).any():
            raise LabelError(f"{name} contains -1; predictions cannot be missing")
    else:
        raise ValueError(f"{name} must be class indices [N] or scores [N, C], got shape {tuple(arr.shape)}")
    if pred.shape[0] != n:
        raise ValueError(f"y_true and {name} must have the same number of samples, got {n} and {pred.shape[0]}")
    return pred


def _resolve_classes(y_true: np.ndarray, y_pred: np.ndarray, num_classes, labels) -> np.ndarray:
    if labels is not None and num_classes is not None:
        raise ValueError("give either num_classes or labels, not both")
    if labels is not None:
        out = np.asarray(labels)
        if out.ndim != 1 or out.dtype.kind not in "iu":
            raise ValueError(f"labels must be a 1-D sequence of class indices, got {labels!r}")
        if len(set(out.tolist())) != len(out):
            raise ValueError(f"labels contains duplicates: {labels!r}")
        return out.astype(np.int64)
    if num_classes is not None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        out = np.arange(int(num_classes))
        too_big = np.concatenate([y_true[y_true >= num_classes], y_pred[y_pred >= num_classes]])
        if too_big.size:
            raise LabelError(
                f"class index {int(too_big[0])} is out of range for num_classes={num_classes} "
                f"(valid 0..{int(num_classes) - 1}, -1 = missing)",
                value=int(too_big[0]),
            )
        return out
    return np.union1d(y_true, y_pred).astype(np.int64)


# ------------------------------------------------------------------ classification


def accuracy(y_true, y_pred) -> float:
    """Fraction of labelled samples whose predicted class is the true class.

    Equation 1 of the AURA appendix.

    Parameters
    ----------
    y_true : array-like of int, shape [N]
        True class indices; -1 = missing (ignored).
    y_pred : array-like, shape [N] (class indices) or [N, C] (scores or logits; argmax)

    Returns
    -------
    float
        NaN (with a :class:`MissingLabelsWarning`) when no sample is labelled.
    """
    t = _int_labels(y_true, "y_true")
    p = _predicted_classes(y_pred, "y_pred", t.shape[0], None)
    keep = t >= 0
    if not keep.any():
        return _warn_missing("accuracy", "expression")
    return float(np.mean(t[keep] == p[keep]))


def confusion_matrix(y_true, y_pred, *, num_classes: int | None = None, labels=None, normalize: str | None = None):
    """Confusion matrix, rows = true class, columns = predicted class.

    Same convention as :func:`sklearn.metrics.confusion_matrix`; samples with a missing
    true label (-1) are left out, and so are samples whose true or predicted class is
    not in ``labels``.

    Parameters
    ----------
    y_true : array-like of int, shape [N]
    y_pred : array-like, shape [N] or [N, C] (argmax)
    num_classes, labels : int or sequence of int, optional
        The classes (rows/columns) in order; default the classes present.
    normalize : {None, "true", "pred", "all"}
        Divide by row sums, column sums or the total (empty rows/columns give 0).

    Returns
    -------
    ndarray of shape [C, C] (int64, or float64 when normalised)
    """
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    t = _int_labels(y_true, "y_true")
    p = _predicted_classes(y_pred, "y_pred", t.shape[0], num_classes)
    keep = t >= 0
    t, p = t[keep], p[keep]
    classes = _resolve_classes(t, p, num_classes, labels)
    top = int(max(classes.max(initial=0), t.max(initial=0), p.max(initial=0))) + 1
    lookup = np.full(top, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    ti, pi = lookup[t], lookup[p]
    ok = (ti >= 0) & (pi >= 0)
    k = len(classes)
    cm = np.bincount(ti[ok] * k + pi[ok], minlength=k * k).reshape(k, k)
    if normalize is None:
        return cm
    cm = cm.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            cm = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            cm = cm / cm.sum(axis=0, keepdims=True)
        else:
            cm = cm / cm.sum()
    return np.nan_to_num(cm)


def precision_recall_f1(y_true, y_pred, *, num_classes: int | None = None, labels=None) -> dict[str, Any]:
    """Per-class precision, recall and F1 plus their unweighted (macro) means.

    Matches :func:`sklearn.metrics.precision_recall_fscore_support` with
    ``zero_division=0``: a class that is never predicted has precision 0, a class absent
    from the truth has recall 0 (and so F1 0), and it still counts in the macro mean
    when it is one of the requested classes. ABAW's "macro F1 over eight expressions"
    (equation 8 of SMM-EmotionNet) is ``f1_macro`` with ``num_classes=8``.

    Parameters
    ----------
    y_true : array-like of int, shape [N]
        True class indices; -1 = missing (ignored).
    y_pred : array-like, shape [N] (class indices) or [N, C] (scores; argmax)
    num_classes : int, optional
        Evaluate classes ``0..num_classes-1``.
    labels : sequence of int, optional
        Evaluate exactly these classes, in this order (like scikit-learn's ``labels``).
        Default (neither given): the classes present in ``y_true`` or ``y_pred``.

    Returns
    -------
    dict
        ``labels`` (int array [C]), ``precision``, ``recall``, ``f1`` (float arrays [C]),
        ``support`` (int array [C], labelled samples per true class), and
        ``precision_macro``, ``recall_macro``, ``f1_macro`` (unweighted means) and
        ``precision_weighted``, ``recall_weighted``, ``f1_weighted`` (means weighted by
        ``support``, scikit-learn's ``average="weighted"``); floats, NaN with a
        :class:`MissingLabelsWarning` when nothing is labelled.
    """
    t = _int_labels(y_true, "y_true")
    p = _predicted_classes(y_pred, "y_pred", t.shape[0], num_classes)
    keep = t >= 0
    t, p = t[keep], p[keep]
    classes = _resolve_classes(t, p, num_classes, labels)
    tp = np.array([np.sum((t == c) & (p == c)) for c in classes], dtype=np.float64)
    pred_pos = np.array([np.sum(p == c) for c in classes], dtype=np.float64)
    true_pos = np.array([np.sum(t == c) for c in classes], dtype=np.float64)
    precision = np.divide(tp, pred_pos, out=np.zeros_like(tp), where=pred_pos > 0)
    recall = np.divide(tp, true_pos, out=np.zeros_like(tp), where=true_pos > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    out: dict[str, Any] = {
        "labels": classes,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": true_pos.astype(np.int64),
    }
    if t.size == 0:
        nan = _warn_missing("precision_recall_f1", "expression")
        out.update(precision_macro=nan, recall_macro=nan, f1_macro=nan)
        out.update(precision_weighted=nan, recall_weighted=nan, f1_weighted=nan)
        out.update(precision=np.full(len(classes), np.nan), recall=np.full(len(classes), np.nan), f1=np.full(len(classes), np.nan))
        return out
    out.update(
        precision_macro=float(precision.mean()) if len(classes) else float("nan"),
        recall_macro=float(recall.mean()) if len(classes) else float("nan"),
        f1_macro=float(f1.mean()) if len(classes) else float("nan"),
    )
    # support-weighted means (scikit-learn's average="weighted"; what the CAGE authors'
    # evaluation prints as precision / recall / F1, from classification_report's "weighted avg")
    total = true_pos.sum()
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_weighted"] = float((values * true_pos).sum() / total) if total > 0 else 0.0
    return out


def topk_accuracy(y_true, y_score, k: int = 3, *, mode: str = "any") -> float:
    """Top-k accuracy; for multi-label targets (EMOTIC) a hit is any true label in the top k.

    CAGE (section 2 and Table 8) reports EMOTIC's "top-3
    accuracy" following Khan et al. without giving a formula. We use the standard
    definition, which reduces to :func:`sklearn.metrics.top_k_accuracy_score` for
    single-label data: a sample counts as correct when at least one of the ``k``
    highest-scored classes is among its true labels.

    Parameters
    ----------
    y_true : array-like of int
        Shape [N] (class index, -1 missing) or [N, C] multi-hot 0/1 with -1 for missing
        entries; a row whose entries are all -1 is left out. A -1 entry never counts
        as a hit.
    y_score : array-like of float, shape [N, C]
        Scores, logits or probabilities (only the ranking matters). Ties are broken in
        favour of the lower class index.
    k : int
        Number of top-ranked classes, 1 <= k.
    mode : {"any", "all"}
        ``any``: a hit when at least one true label is in the top k (the definition
        above). ``all``: a hit when every true label is in the top k (for a sample with
        more than k labels: when all k top classes are true labels) -- the strict reading
        of multi-label top-k. For single-label data both are the usual top-k accuracy.

    Returns
    -------
    float
        NaN (with a :class:`MissingLabelsWarning`) when no sample is labelled.
    """
    if mode not in ("any", "all"):
        raise ValueError(f"mode must be 'any' or 'all', got {mode!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    s = _float_array(y_score, "y_score", allow_nan=False)
    if s.ndim != 2:
        raise ValueError(f"y_score must have shape [N, C], got shape {tuple(s.shape)}")
    t = _int_labels(y_true, "y_true", ndim=(1, 2))
    _check_len(t, s, "y_true", "y_score")
    n, c = s.shape
    if t.ndim == 1:
        if (t >= c).any():
            raise LabelError(f"y_true contains class {int(t[t >= c][0])} but y_score has only {c} columns")
        keep = t >= 0
        multi = np.zeros((n, c), dtype=np.int64)
        multi[np.flatnonzero(keep), t[keep]] = 1
    else:
        if t.shape[1] != c:
            raise ValueError(f"y_true has {t.shape[1]} columns but y_score has {c}; expected the same classes")
        if (t > 1).any():
            raise LabelError("multi-label y_true must contain 1 (present), 0 (absent) or -1 (missing)")
        keep = (t >= 0).any(axis=1)
        multi = t
    if not keep.any():
        return _warn_missing("topk_accuracy", "expression")
    # Stable sort of the negated scores: equal scores keep the lower class index first.
    top = np.argsort(-s, axis=1, kind="stable")[:, : min(k, c)]
    hits = np.take_along_axis(multi, top, axis=1) == 1
    if mode == "all":
        need = np.minimum((multi == 1).sum(axis=1), top.shape[1])
        return float(np.mean((hits.sum(axis=1) >= need)[keep]))
    return float(np.mean(hits.any(axis=1)[keep]))


def _check_probabilities(s: np.ndarray, name: str) -> None:
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; got values in "
            f"[{s.min():g}, {s.max():g}] (apply a sigmoid to AU logits first)"
        )


def au_f1(y_true, y_score, *, threshold: float = 0.5) -> dict[str, Any]:
    """Per-AU F1 of binarized AU probabilities, and their mean.

    Equations 4-5 of the AURA appendix and the AU term of
    equation 8 of SMM-EmotionNet. An AU is predicted present when its
    probability is >= ``threshold``. Missing entries (-1) are left out per AU. An AU
    with labels but no true and no predicted positive has F1 0 (scikit-learn
    ``zero_division=0``); an AU with no labels at all is NaN (with a
    :class:`MissingLabelsWarning`) and is left out of the mean.

    Parameters
    ----------
    y_true : array-like, shape [N, K]
        1 present, 0 absent, -1 missing.
    y_score : array-like of float, shape [N, K]
        Probabilities in [0, 1] (apply a sigmoid to logits first), or 0/1 predictions.
    threshold : float
        Decision threshold in (0, 1].

    Returns
    -------
    dict
        ``f1`` (float array [K]) and ``mean`` (float, NaN when no AU is labelled).
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    t = _binary_labels(y_true, "y_true")
    s = _float_array(y_score, "y_score", allow_nan=False)
    if s.shape != t.shape:
        raise ValueError(f"y_true and y_score must have the same shape [N, K], got {t.shape} and {s.shape}")
    _check_probabilities(s, "y_score")
    labelled = t >= 0
    pos = t == 1
    pred = (s >= threshold) & labelled
    tp = np.sum(pos & pred, axis=0)
    denom = np.sum(pos, axis=0) + np.sum(pred, axis=0)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(t.shape[1]), where=denom > 0)
    has_labels = labelled.any(axis=0)
    f1[~has_labels] = np.nan
    missing = np.flatnonzero(~has_labels).tolist()
    if missing:
        warnings.warn(
            f"au_f1: AU column(s) {missing} carry no labels; their F1 is NaN",
            MissingLabelsWarning,
            stacklevel=2,
        )
    mean = float(f1[has_labels].mean()) if has_labels.any() else float("nan")
    return {"f1": f1, "mean": mean}


# ---------------------------------------------------------------------- regression


def _regression_pair(y_true, y_pred, metric: str):
    t = _float_array(y_true, "y_true", allow_nan=True)
    p = _float_array(y_pred, "y_pred", allow_nan=False)
    if t.ndim not in (1, 2):
        raise ValueError(f"{metric}: y_true must have shape [N] or [N, D], got shape {tuple(t.shape)}")
    if t.shape != p.shape:
        raise ValueError(f"{metric}: y_true and y_pred must have the same shape, got {t.shape} and {p.shape}")
    return t, p


def _per_column(y_true, y_pred, metric: str, fn):
    """Apply ``fn(t, p)`` to the labelled rows of each column; scalar for 1-D input."""
    t, p = _regression_pair(y_true, y_pred, metric)
    one_d = t.ndim == 1
    if one_d:
        t, p = t[:, None], p[:, None]
    out = np.empty(t.shape[1])
    for j in range(t.shape[1]):
        keep = ~np.isnan(t[:, j])
        if not keep.any():
            out[j] = _warn_missing(metric if one_d else f"{metric} (column {j})", "continuous")
        else:
            out[j] = fn(t[keep, j], p[keep, j])
    return float(out[0]) if one_d else out


def _ccc_1d(t: np.ndarray, p: np.ndarray) -> float:
    if np.ptp(t) == 0 and np.ptp(p) == 0:
        # 0/0 in the formula; two constant series agree perfectly iff they are equal.
        return 1.0 if t[0] == p[0] else 0.0
    mt, mp = t.mean(), p.mean()
    vt, vp = np.mean((t - mt) ** 2), np.mean((p - mp) ** 2)
    cov = np.mean((t - mt) * (p - mp))
    return float(2.0 * cov / (vt + vp + (mt - mp) ** 2))


def ccc(y_true, y_pred):
    """Concordance correlation coefficient (Lin, 1989).

    ``CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2)`` with population
    (1/N) moments: equation 2 of the AURA appendix, the VA
    metric of 001 and 002. NaN labels are left out.

    Always defined: constant predictions against varying labels give 0 (no
    covariance); when labels and predictions are both constant the formula is 0/0
    and the result is 1 if they are equal, else 0.

    Parameters
    ----------
    y_true : array-like of float, shape [N] or [N, D]
        Labels; NaN = missing.
    y_pred : array-like of float, same shape

    Returns
    -------
    float for 1-D input, float array [D] for 2-D input (per column). NaN (with a
    :class:`MissingLabelsWarning`) where no label is present.
    """
    return _per_column(y_true, y_pred, "ccc", _ccc_1d)


def _pooled(y_true, y_pred, metric: str):
    """The labelled entries of all columns of [N, D] arrays, as one long pair of vectors."""
    t, p = _regression_pair(y_true, y_pred, metric)
    keep = ~np.isnan(t)
    return t[keep], p[keep]


def ccc_pooled(y_true, y_pred) -> float:
    """CCC of all dimensions pooled into one series (the CAGE authors' evaluation).

    CAGE's code (``models/evaluation.py`` of the authors' repository) concatenates the
    valence and the arousal columns and computes a single CCC over the long vector;
    Tables 6 and 8 of CAGE report that number. It is not the mean
    of the per-dimension CCCs (:func:`ccc`): pooling adds the spread between the
    dimensions' means to both variances. Population (1/N) moments, as in :func:`ccc`
    (the authors' code uses an N-1 covariance over an N variance, a factor N/(N-1)).

    Parameters
    ----------
    y_true, y_pred : array-like of float, shape [N] or [N, D]
        NaN labels are left out entry by entry.

    Returns
    -------
    float
        NaN (with a :class:`MissingLabelsWarning`) when no entry is labelled.
    """
    t, p = _pooled(y_true, y_pred, "ccc_pooled")
    if t.size == 0:
        return _warn_missing("ccc_pooled", "continuous")
    return _ccc_1d(t, p)


def mse_pooled(y_true, y_pred) -> float:
    """Mean squared error over every labelled entry of all dimensions (CAGE's MSE)."""
    t, p = _pooled(y_true, y_pred, "mse_pooled")
    if t.size == 0:
        return _warn_missing("mse_pooled", "continuous")
    return float(np.mean((t - p) ** 2))


def mse(y_true, y_pred):
    """Mean squared error over labelled entries (per column for [N, D] input)."""
    return _per_column(y_true, y_pred, "mse", lambda t, p: float(np.mean((t - p) ** 2)))


def rmse(y_true, y_pred):
    """Root mean squared error over labelled entries (per column for [N, D] input)."""
    return _per_column(y_true, y_pred, "rmse", lambda t, p: float(np.sqrt(np.mean((t - p) ** 2))))


def mae(y_true, y_pred):
    """Mean absolute error over labelled entries (per column for [N, D] input)."""
    return _per_column(y_true, y_pred, "mae", lambda t, p: float(np.mean(np.abs(t - p))))


def _explained_variance_1d(t: np.ndarray, p: np.ndarray) -> float:
    num = np.var(t - p)
    den = np.var(t)
    if den == 0:
        # scikit-learn's force_finite convention: perfect -> 1, otherwise 0.
        return 1.0 if num == 0 else 0.0
    return float(1.0 - num / den)


def _r2_1d(t: np.ndarray, p: np.ndarray) -> float:
    num = np.sum((t - p) ** 2)
    den = np.sum((t - t.mean()) ** 2)
    if den == 0:
        return 1.0 if num == 0 else 0.0
    return float(1.0 - num / den)


def explained_variance(y_true, y_pred):
    """Explained variance ``1 - Var(y - y_hat) / Var(y)`` over labelled entries.

    Same as :func:`sklearn.metrics.explained_variance_score` (``force_finite=True``:
    constant labels give 1 for a perfect prediction, else 0). Per column for [N, D].
    """
    return _per_column(y_true, y_pred, "explained_variance", _explained_variance_1d)


def r2(y_true, y_pred):
    """Coefficient of determination over labelled entries.

    Same as :func:`sklearn.metrics.r2_score` (``force_finite=True``). Per column for [N, D].
    """
    return _per_column(y_true, y_pred, "r2", _r2_1d)


# --------------------------------------------------------- discrete valence / arousal


def va_bins(values, num_bins: int = 21) -> np.ndarray:
    """Canonical [-1, 1] valence / arousal -> integer bin 0..num_bins-1; NaN -> -1.

    The discrete labels of the VA-VAE report (AFEW-VA's integers -10..10 with the default
    21 bins): ``round(v * h) + h`` with ``h = (num_bins - 1) / 2``, values clipped to
    [-1, 1], ties rounded to even (as ``torch.round`` does in the model's loss).

    Raises
    ------
    ValueError
        For an even or too small ``num_bins`` (no bin centred on 0).
    """
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 3 or num_bins % 2 == 0:
        raise ValueError(f"num_bins must be an odd integer >= 3 (a bin centred on 0), got {num_bins!r}")
    v = _float_array(values, "values", allow_nan=True)
    half = (num_bins - 1) // 2
    out = np.full(v.shape, -1, dtype=np.int64)
    ok = ~np.isnan(v)
    out[ok] = np.round(np.clip(v[ok], -1.0, 1.0) * half).astype(np.int64) + half
    return out


def binned_cross_entropy(y_bins, logits) -> float:
    """Mean cross-entropy of bin logits against integer bins (VA-VAE Task 2, discrete labels).

    Same as :func:`sklearn.metrics.log_loss` on the softmax of ``logits`` with
    ``labels=range(K)`` (natural log). Rows whose bin is -1 (missing) are left out.

    Parameters
    ----------
    y_bins : array-like of int, shape [N]
        Bin index 0..K-1, -1 missing (e.g. from :func:`va_bins`).
    logits : array-like of float, shape [N, K]

    Returns
    -------
    float
        NaN (with a :class:`MissingLabelsWarning`) when no row is labelled.
    """
    z = _float_array(logits, "logits", allow_nan=False)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape [N, K] with K >= 2, got {z.shape}")
    y = _int_labels(y_bins, "y_bins", what="bin")
    _check_len(y, z, "y_bins", "logits")
    bad = (y < -1) | (y >= z.shape[1])
    if bad.any():
        raise ValueError(f"y_bins value {int(y[bad][0])} is outside 0..{z.shape[1] - 1} (or -1 for missing)")
    keep = y >= 0
    if not keep.any():
        return _warn_missing("binned_cross_entropy", "bin")
    z, y = z[keep], y[keep]
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


# ------------------------------------------------------------------------ ABAW score


def abaw_mtl_score(
    *,
    va_true,
    va_pred,
    expr_true,
    expr_pred,
    au_true,
    au_scores,
    num_classes: int = 8,
    au_threshold: float = 0.5,
) -> float:
    """ABAW multi-task performance score, equation 8 of SMM-EmotionNet.

    ``P = (CCC_V + CCC_A) / 2 + (1/8) sum_i F1(EXPR_i) + (1/12) sum_j F1(AU_j)``:
    mean CCC of valence and arousal, plus the macro F1 over the expression classes
    (``num_classes``, eight in ABAW: neutral, anger, disgust, fear, happiness, sadness,
    surprise, other), plus the mean F1 over the AU columns (twelve in ABAW). Each term
    masks its own missing labels; the score is in [-1, 3].

    Parameters
    ----------
    va_true, va_pred : array-like, shape [N, 2]
        Valence and arousal; NaN labels are missing.
    expr_true : array-like of int, shape [N]
        -1 = missing.
    expr_pred : array-like, shape [N] or [N, C] (argmax)
    au_true : array-like, shape [N, K]
        1/0/-1.
    au_scores : array-like, shape [N, K]
        AU probabilities.
    num_classes : int
        Expression classes averaged in the F1 term.
    au_threshold : float

    Returns
    -------
    float
        NaN when one of the three terms has no labels.
    """
    va_c = ccc(va_true, va_pred)
    va_c = np.atleast_1d(va_c)
    if va_c.shape[0] < 2:
        raise ValueError("abaw_mtl_score: va_true must have shape [N, 2] (valence, arousal)")
    expr_f1 = precision_recall_f1(expr_true, expr_pred, num_classes=num_classes)["f1_macro"]
    au_mean = au_f1(au_true, au_scores, threshold=au_threshold)["mean"]
    return float((va_c[0] + va_c[1]) / 2.0 + expr_f1 + au_mean)


# ----------------------------------------------------------------------- summarize

_KNOWN_CLASS_NAMES = {n.lower(): n for n in EMOTIC_CATEGORIES}
_EXACT_CLASS_NAMES = frozenset(ALL_EXPRESSIONS) | frozenset(EMOTIC_CATEGORIES)


def _class_names(names: Sequence[str]) -> tuple[str, ...]:
    out = []
    for n in names:
        if not isinstance(n, str):
            raise LabelError(f"expression names must be strings, got {n!r}", value=n)
        key = n.strip().lower()
        if n in _EXACT_CLASS_NAMES:
            out.append(n)  # keep EMOTIC's capitalised "Anger" distinct from canonical "anger"
        elif key in EXPRESSION_ALIASES:
            out.append(EXPRESSION_ALIASES[key])
        elif key in _KNOWN_CLASS_NAMES:
            out.append(_KNOWN_CLASS_NAMES[key])
        else:
            raise LabelError(
                f"unknown expression class name {n!r}; expected a canonical expression "
                f"({', '.join(dict.fromkeys(EXPRESSION_ALIASES.values()))}), an alias such as 'happy', "
                "or an EMOTIC category",
                value=n,
            )
    if len(set(out)) != len(out):
        raise LabelError(f"duplicate expression names {list(names)}")
    return tuple(out)


def _json_float(x) -> float:
    return float(x)


def summarize(
    *,
    expr_true=None,
    expr_scores=None,
    va_true=None,
    va_pred=None,
    au_true=None,
    au_scores=None,
    label_space: LabelSpace | None = None,
    expressions: Sequence[str] | None = None,
    aus: Sequence[str] | None = None,
    multilabel: bool | None = None,
    protocol: str | None = None,
    au_threshold: float = 0.5,
    topk: int = 3,
) -> dict[str, Any]:
    """All metrics of ARCHITECTURE.md for whatever descriptors are given, as a JSON-ready dict.

    Pass the arrays collected over an epoch (numpy arrays or tensors, rows = samples).
    A descriptor is evaluated when both its labels and its predictions are given;
    passing only one of the two is an error.

    Parameters
    ----------
    expr_true : array-like, optional
        Single-label: int [N], class index into ``expressions``, -1 = missing.
        Multi-label (``multilabel=True``, EMOTIC): 0/1 [N, C], -1 = missing entry.
    expr_scores : array-like of float [N, C], optional
        Expression logits or probabilities (single-label: argmax is the prediction;
        multi-label: ranked for top-k).
    va_true, va_pred : array-like of float [N, 2] (or [N, 3] with dominance), optional
        Valence, arousal (, dominance) in [-1, 1]; NaN labels = missing.
    au_true : array-like [N, K], optional
        1/0 with -1 = missing entry.
    au_scores : array-like of float [N, K], optional
        AU probabilities in [0, 1] (sigmoid of the logits).
    label_space : LabelSpace, optional
        Supplies ``expressions``, ``aus`` and ``multilabel`` unless given explicitly.
    expressions : sequence of str, optional
        Class names in column order (canonical names, aliases or EMOTIC categories);
        default ``"0"``, ``"1"``, ...
    aus : sequence of str, optional
        AU names in column order (``"AU12"``, ``12``, ``"au12"``); default ``"0"``, ...
    multilabel : bool, optional
        Expressions are multi-label; default from ``label_space`` (else False).
    protocol : {None, "abaw"}
        ``"abaw"`` adds ``abaw_mtl`` (equation 8 of SMM-EmotionNet) and
        requires all three descriptors.
    au_threshold : float
        Probability at which an AU counts as present.
    topk : int
        k of ``topk_acc`` (multi-label only; CAGE reports top-3 on EMOTIC).

    Returns
    -------
    dict
        Keys (only those whose descriptor is given), values Python floats (NaN when
        undefined, which ``json.dump`` writes as ``NaN``):

        * single-label EXPR: ``expr_acc``, ``expr_f1_macro``, ``expr_f1`` ({class: F1}),
          ``expr_precision_macro``, ``expr_recall_macro``, ``expr_precision_weighted``,
          ``expr_recall_weighted``, ``expr_f1_weighted`` (CAGE's P / R / F1 are the
          weighted ones);
        * multi-label EXPR: ``topk_acc`` (any true label in the top k) and
          ``topk_acc_all`` (every true label in the top k);
        * VA: ``valence_ccc``, ``arousal_ccc``, ``va_ccc`` (mean of the two),
          ``valence_rmse``, ``arousal_rmse``, ``valence_mae``, ``arousal_mae``
          ``valence_mse``, ``arousal_mse`` (and ``dominance_ccc``, ``dominance_rmse``,
          ``dominance_mae``, ``dominance_mse`` for 3 columns), and valence and arousal
          pooled into one series as in CAGE's code: ``va_mse``, ``va_mae``, ``va_rmse``,
          ``va_ccc_pooled`` (not the mean ``va_ccc``);
        * AU: ``au_f1`` ({AU: F1}), ``au_f1_mean``;
        * ``abaw_mtl`` when ``protocol="abaw"``.

    Raises
    ------
    LabelError
        Unknown expression or AU names, bad label values.
    ValueError
        Shapes that disagree (with each other or with the names).
    ConfigError
        Unknown ``protocol``, or ``"abaw"`` without all three descriptors.

    Examples
    --------
    >>> import numpy as np
    >>> out = summarize(expr_true=np.array([0, 1, -1]), expr_scores=np.eye(3)[:, :2],
    ...                 expressions=["neutral", "happiness"])
    >>> out["expr_acc"], out["expr_f1"]
    (1.0, {'neutral': 1.0, 'happiness': 1.0})
    """
    if protocol not in (None, "abaw"):
        raise ConfigError(f"unknown metrics protocol {protocol!r}; expected None or 'abaw'")
    for a, b, what in (
        (expr_true, expr_scores, "expr"),
        (va_true, va_pred, "va"),
        (au_true, au_scores, "au"),
    ):
        if (a is None) != (b is None):
            given, missing = ("labels", "predictions") if b is None else ("predictions", "labels")
            raise ValueError(f"summarize: {what} {given} were given without {what} {missing}")
    if label_space is not None:
        if expressions is None and label_space.expressions:
            expressions = label_space.expressions
        if aus is None and label_space.aus:
            aus = label_space.aus
        if multilabel is None:
            multilabel = label_space.multilabel
    multilabel = bool(multilabel)

    out: dict[str, Any] = {}
    expr_pred_cls = None
    if expr_true is not None:
        scores = _float_array(expr_scores, "expr_scores", allow_nan=False)
        if scores.ndim != 2:
            raise ValueError(f"expr_scores must have shape [N, C], got shape {tuple(scores.shape)}")
        c = scores.shape[1]
        names = _class_names(expressions) if expressions is not None else tuple(str(i) for i in range(c))
        if len(names) != c:
            raise ValueError(f"expr_scores has {c} columns but {len(names)} expression names were given: {list(names)}")
        if multilabel:
            out["topk_acc"] = _json_float(topk_accuracy(expr_true, scores, k=topk))
            out["topk_acc_all"] = _json_float(topk_accuracy(expr_true, scores, k=topk, mode="all"))
        else:
            t = _int_labels(expr_true, "expr_true")
            _check_len(t, scores, "expr_true", "expr_scores")
            if (t >= c).any():
                raise LabelError(
                    f"expr_true contains class {int(t[t >= c][0])} but there are only {c} classes {list(names)}",
                    value=int(t[t >= c][0]),
                )
            expr_pred_cls = scores.argmax(axis=1)
            out["expr_acc"] = _json_float(accuracy(t, expr_pred_cls))
            prf = precision_recall_f1(t, expr_pred_cls, num_classes=c)
            out["expr_f1_macro"] = _json_float(prf["f1_macro"])
            out["expr_f1"] = {n: _json_float(v) for n, v in zip(names, prf["f1"])}
            for avg in ("macro", "weighted"):
                out[f"expr_precision_{avg}"] = _json_float(prf[f"precision_{avg}"])
                out[f"expr_recall_{avg}"] = _json_float(prf[f"recall_{avg}"])
            out["expr_f1_weighted"] = _json_float(prf["f1_weighted"])

    va_c = None
    if va_true is not None:
        t = _float_array(va_true, "va_true", allow_nan=True)
        p = _float_array(va_pred, "va_pred", allow_nan=False)
        if t.ndim != 2 or t.shape[1] not in (2, 3):
            raise ValueError(f"va_true must have shape [N, 2] (valence, arousal) or [N, 3], got {tuple(t.shape)}")
        if p.shape != t.shape:
            raise ValueError(f"va_pred must have the shape of va_true {tuple(t.shape)}, got {tuple(p.shape)}")
        va_c, va_r, va_m = ccc(t, p), rmse(t, p), mae(t, p)
        for j in range(t.shape[1]):
            name = VA_NAMES[j]
            out[f"{name}_ccc"] = _json_float(va_c[j])
        out["va_ccc"] = _json_float((va_c[0] + va_c[1]) / 2.0)
        for j in range(t.shape[1]):
            out[f"{VA_NAMES[j]}_rmse"] = _json_float(va_r[j])
        for j in range(t.shape[1]):
            out[f"{VA_NAMES[j]}_mae"] = _json_float(va_m[j])
        va_mse = mse(t, p)
        for j in range(t.shape[1]):
            out[f"{VA_NAMES[j]}_mse"] = _json_float(va_mse[j])
        # CAGE's Tables 6 / 8: one MSE / MAE / RMSE / CCC over valence and arousal pooled
        t2, p2 = t[:, :2], p[:, :2]
        pooled_t, pooled_p = _pooled(t2, p2, "va_pooled")
        if pooled_t.size:
            out["va_mse"] = _json_float(np.mean((pooled_t - pooled_p) ** 2))
            out["va_mae"] = _json_float(np.mean(np.abs(pooled_t - pooled_p)))
            out["va_rmse"] = _json_float(np.sqrt(out["va_mse"]))
            out["va_ccc_pooled"] = _json_float(_ccc_1d(pooled_t, pooled_p))

    au_res = None
    if au_true is not None:
        t = _binary_labels(au_true, "au_true")
        k = t.shape[1]
        au_names = tuple(au_name(a) for a in aus) if aus is not None else tuple(str(i) for i in range(k))
        if len(set(au_names)) != len(au_names):
            raise LabelError(f"duplicate AU names {list(au_names)}")
        if len(au_names) != k:
            raise ValueError(f"au_true has {k} columns but {len(au_names)} AU names were given: {list(au_names)}")
        s = _float_array(au_scores, "au_scores", allow_nan=False)
        if s.shape != t.shape:
            raise ValueError(f"au_scores must have the shape of au_true {tuple(t.shape)}, got {tuple(s.shape)}")
        _check_probabilities(s, "au_scores")
        au_res = au_f1(t, s, threshold=au_threshold)
        out["au_f1"] = {n: _json_float(v) for n, v in zip(au_names, au_res["f1"])}
        out["au_f1_mean"] = _json_float(au_res["mean"])

    if protocol == "abaw":
        if expr_pred_cls is None or va_c is None or au_res is None:
            raise ConfigError(
                "protocol='abaw' needs single-label expressions, valence/arousal and AUs "
                "(expr_true/expr_scores, va_true/va_pred, au_true/au_scores)"
            )
        exp_names = set(_class_names(expressions)) if expressions is not None else set()
        exp_aus = {au_name(a) for a in aus} if aus is not None else set()
        if exp_names != set(ABAW_EXPRESSIONS) or exp_aus != set(ABAW_AUS):
            warnings.warn(
                "abaw_mtl: the label space is not ABAW's 8 expressions and 12 AUs; the score averages "
                "over the classes and AUs given and is not comparable with published ABAW numbers",
                UserWarning,
                stacklevel=2,
            )
        out["abaw_mtl"] = _json_float((va_c[0] + va_c[1]) / 2.0 + out["expr_f1_macro"] + au_res["mean"])
    return out
