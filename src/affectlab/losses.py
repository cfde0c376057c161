"""Training losses of the four methods, masked for missing labels.

Every loss takes torch tensors with a leading batch dimension and returns a scalar
tensor. Missing labels follow the schema (expression -1, valence/arousal NaN, AU -1):
masked entries are selected out before any arithmetic, so they change neither the loss
nor the gradients, and a batch in which nothing is labelled gives a loss of exactly 0
that is still connected to the graph (``backward`` works, gradients are 0), never NaN.

The weighting helpers (:func:`class_weights`, :func:`au_pos_weight`,
:func:`multilabel_pos_weight`) work on label counts or label arrays from the
training set.

References (titles and identifiers in ARCHITECTURE.md, Papers): CAGE (arXiv:2404.14975),
SMM-EmotionNet (CVPR Workshops 2022), the AURA appendix.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from affectlab.data.weights import au_pos_weight, class_weights, multilabel_pos_weight
from affectlab.errors import LabelError, ModelError

__all__ = [
    "class_weights",
    "au_pos_weight",
    "multilabel_pos_weight",
    "weighted_cross_entropy",
    "masked_mse",
    "ccc_loss",
    "cage_combined_loss",
    "cage_va_loss",
    "weighted_bce",
    "multilabel_bce",
    "smm_loss",
    "vq_loss",
]


# ------------------------------------------------------------------------- helpers


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A 0 scalar that is part of ``like``'s graph (gradients 0, never NaN)."""
    return like.reshape(-1)[:0].sum()


def _prediction(x, name: str, ndim: tuple[int, ...]) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim not in ndim:
        shapes = " or ".join({1: "[N]", 2: "[N, C]"}.get(d, f"{d}-D") for d in ndim)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(x.shape)}")
    return x


def _target(y, name: str, like: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y, device=like.device)
    if y.shape[:1] != like.shape[:1]:
        raise ValueError(
            f"{name} must have one row per sample ({like.shape[0]}), got shape {tuple(y.shape)}"
        )
    return y


def _integer_target(y, name: str, like: torch.Tensor, what: str) -> torch.Tensor:
    y = _target(y, name, like)
    if y.is_floating_point():
        if torch.isnan(y).any():
            raise LabelError(f"{name} contains NaN; {what} labels are integers and missing ones are -1")
        if (y != torch.round(y)).any():
            raise LabelError(f"{name} contains non-integer values; {what} labels are integers")
    y = y.long()
    if (y < -1).any():
        raise LabelError(f"{name} contains {int(y[y < -1][0])}; valid labels are >= 0 and -1 means missing")
    return y


def _binary_target(y, name: str, like: torch.Tensor, what: str) -> torch.Tensor:
    y = _integer_target(y, name, like, what)
    if y.shape != like.shape:
        raise ValueError(f"{name} must have the shape of the logits {tuple(like.shape)}, got {tuple(y.shape)}")
    if (y > 1).any():
        raise LabelError(f"{name} contains {int(y[y > 1][0])}; {what} labels are 1, 0 or -1 (missing)")
    return y


def _vector(w, name: str, size: int, like: torch.Tensor) -> torch.Tensor | None:
    if w is None:
        return None
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    if w.shape != (size,):
        raise ValueError(f"{name} must have shape [{size}], got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {w.tolist()}")
    return w


# -------------------------------------------------------------------------- losses


def weights_from_stats(stats: Mapping, *, num_classes: int, num_aus: int, multilabel: bool = False):
    """Loss weights from the training-set counts the engine hands to a method.

    Parameters
    ----------
    stats : mapping
        ``class_counts`` [C] (positives per class when multi-label), ``num_samples``,
        ``au_positive`` / ``au_negative`` [K] (labelled counts per AU); any may be absent.
    num_classes, num_aus : int
        Sizes of the method's label space (0 when the task is not predicted).
    multilabel : bool
        Multi-label expressions (EMOTIC): positive weights negatives/positives per class.

    Returns
    -------
    (expr_weight, au_pos_weight) : tuple of ndarray or None
        Single-label: :func:`class_weights` rescaled to mean 1 (the weighted mean of the
        cross-entropy is scale-free). AU: P = negatives / positives (eq. 4 of 002), 1 for
        an AU never positive. ``None`` where the counts are absent or all zero.

    Raises
    ------
    ModelError
        When a count vector does not match the label space.
    """
    expr_w = au_w = None
    counts = stats.get("class_counts")
    if num_classes and counts is not None:
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (num_classes,):
            raise ModelError(f"class_counts has shape {counts.shape}; the label space has {num_classes} expressions")
        if multilabel:
            n = float(stats.get("num_samples", counts.max(initial=0.0)))
            expr_w = np.divide(np.clip(n - counts, 0.0, None), counts, out=np.ones_like(counts), where=counts > 0)
        elif counts.sum() > 0:
            expr_w = class_weights(counts).numpy() * num_classes
    pos, neg = stats.get("au_positive"), stats.get("au_negative")
    if num_aus and pos is not None and neg is not None:
        pos = np.asarray(pos, dtype=np.float64)
        neg = np.asarray(neg, dtype=np.float64)
        if pos.shape != (num_aus,) or neg.shape != pos.shape:
            raise ModelError(
                f"au_positive/au_negative have shapes {pos.shape}/{neg.shape}; the label space has {num_aus} AUs"
            )
        au_w = np.divide(neg, pos, out=np.ones_like(pos), where=pos > 0)
    return expr_w, au_w


def weighted_cross_entropy(logits: torch.Tensor, target, weight=None, *, reduction: str = "mean") -> torch.Tensor:
    """Class-weighted cross-entropy over labelled samples.

    ``L_WeightedCE`` of CAGE (section 4.1, weights of Table 4)
    and the EXPR loss of SMM-EmotionNet (equation 5:
    ``-sum_i P_i y_i log softmax_i``). Samples with target -1 are ignored.

    Parameters
    ----------
    logits : Tensor [N, C]
    target : Tensor or array-like of int [N]
        Class index; -1 = missing.
    weight : Tensor or array-like [C], optional
        Per-class weights (e.g. :func:`class_weights`).
    reduction : {"mean", "sum"}
        ``"mean"`` is PyTorch's weighted mean ``sum_n w_{y_n} l_n / sum_n w_{y_n}``
        (what ``torch.nn.CrossEntropyLoss(weight=...)`` computes, so the scale of the
        weights does not matter); ``"sum"`` is ``sum_n w_{y_n} l_n``.

    Returns
    -------
    Tensor scalar (0 when no sample is labelled).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    logits = _prediction(logits, "logits", (2,))
    target = _integer_target(target, "target", logits, "expression")
    if target.ndim != 1:
        raise ValueError(f"target must have shape [N], got {tuple(target.shape)}")
    c = logits.shape[1]
    if (target >= c).any():
        raise LabelError(f"target contains class {int(target[target >= c][0])} but logits have {c} classes")
    weight = _vector(weight, "weight", c, logits)
    keep = target >= 0
    if not keep.any():
        return _zero(logits)
    per = F.cross_entropy(logits[keep], target[keep], reduction="none")
    if weight is None:
        return per.mean() if reduction == "mean" else per.sum()
    w = weight[target[keep]]
    total = (w * per).sum()
    if reduction == "sum":
        return total
    denom = w.sum()
    return total / denom if denom > 0 else _zero(logits)


def masked_mse(pred: torch.Tensor, target, *, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error over the entries whose target is not NaN.

    Parameters
    ----------
    pred : Tensor [N] or [N, D]
    target : Tensor [same shape], NaN = missing
    reduction : {"mean", "sum", "none"}
        ``"mean"``: over all labelled entries; ``"sum"``: their sum; ``"none"``: per
        column [D] (0 for a column with no labels).

    Returns
    -------
    Tensor scalar (or [D] for ``"none"``).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    pred = _prediction(pred, "pred", (1, 2))
    target = _target(target, "target", pred).to(pred.dtype)
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    keep = ~torch.isnan(target)
    if reduction == "none":
        p2 = pred if pred.ndim == 2 else pred[:, None]
        t2 = target if target.ndim == 2 else target[:, None]
        k2 = keep if keep.ndim == 2 else keep[:, None]
        cols = []
        for j in range(p2.shape[1]):
            m = k2[:, j]
            cols.append(((p2[m, j] - t2[m, j]) ** 2).mean() if m.any() else _zero(pred))
        return torch.stack(cols)
    if not keep.any():
        return _zero(pred)
    sq = (pred[keep] - target[keep]) ** 2
    return sq.mean() if reduction == "mean" else sq.sum()


def ccc_loss(pred: torch.Tensor, target, *, reduction: str = "mean", eps: float = 1e-8) -> torch.Tensor:
    """``1 - CCC`` per dimension, NaN targets masked per dimension.

    The VA loss of SMM-EmotionNet (equation 6:
    ``1 - CCC^V + 1 - CCC^A``, i.e. ``reduction="sum"``) and the ``L_CCC`` term of CAGE
    (CAGE, equation 2). CCC uses population (1/N) moments as in
    :func:`affectlab.metrics.ccc`; the denominator is clamped at ``eps`` so
    near-constant series give a finite loss and gradient, and predictions equal to a
    constant target count as perfect (loss 0), as in the metric. A dimension with fewer
    than two labelled samples has no defined CCC and contributes 0.

    Parameters
    ----------
    pred : Tensor [N] or [N, D]
    target : Tensor [same shape], NaN = missing
    reduction : {"mean", "sum", "none"}
        Over the dimensions that have at least two labels (``"none"``: [D], 0 where
        undefined).
    eps : float

    Returns
    -------
    Tensor scalar (or [D]). Perfect predictions give 0.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    pred = _prediction(pred, "pred", (1, 2))
    target = _target(target, "target", pred).to(pred.dtype)
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    p2 = pred if pred.ndim == 2 else pred[:, None]
    t2 = target if target.ndim == 2 else target[:, None]
    terms, defined = [], []
    for j in range(p2.shape[1]):
        m = ~torch.isnan(t2[:, j])
        if int(m.sum()) < 2:
            terms.append(_zero(pred))
            defined.append(False)
            continue
        x, y = p2[m, j], t2[m, j]
        mx, my = x.mean(), y.mean()
        vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
        cov = ((x - mx) * (y - my)).mean()
        denom = vx + vy + (mx - my) ** 2
        # denom == 0 only when predictions equal a constant target: perfect, as in metrics.ccc
        ccc = torch.where(denom > 0, 2.0 * cov / denom.clamp_min(eps), torch.ones_like(denom))
        terms.append(1.0 - ccc)
        defined.append(True)
    stacked = torch.stack(terms)
    if reduction == "none":
        return stacked
    if not any(defined):
        return _zero(pred)
    mask = torch.tensor(defined, device=pred.device)
    return stacked[mask].sum() if reduction == "sum" else stacked[mask].mean()


def cage_combined_loss(
    expr_logits: torch.Tensor,
    expr_target,
    va_pred: torch.Tensor,
    va_target,
    *,
    weight=None,
    alpha: float = 5.0,
) -> torch.Tensor:
    """CAGE's combined loss ``L_WeightedCE + alpha * L_MSE`` (equation 1 of 001).

    CAGE, equation 1, with ``alpha = 5`` (Table 5). The MSE is the
    mean over all labelled valence/arousal entries (:func:`masked_mse`), the
    cross-entropy is :func:`weighted_cross_entropy` with the Table 4 weights
    (:func:`class_weights`).

    Parameters
    ----------
    expr_logits : Tensor [N, C]
    expr_target : int [N], -1 = missing
    va_pred : Tensor [N, 2]
    va_target : [N, 2], NaN = missing
    weight : [C], optional
    alpha : float

    Returns
    -------
    Tensor scalar
    """
    return weighted_cross_entropy(expr_logits, expr_target, weight) + alpha * masked_mse(va_pred, va_target)


def cage_va_loss(va_pred: torch.Tensor, va_target, *, beta: float = 3.0) -> torch.Tensor:
    """CAGE's valence-arousal loss ``L_CCC + beta * L_MSE`` (equation 2 of 001).

    CAGE, equation 2, with ``beta = 3`` (Table 5). As in the
    authors' reference implementation both terms are summed over the dimensions:
    ``sum_d (1 - CCC_d) + beta * sum_d MSE_d`` (it writes ``-CCC_v - CCC_a + 3 MSE_v +
    3 MSE_a``, the same up to the constant 2), each masked for NaN targets.

    Parameters
    ----------
    va_pred : Tensor [N, D]
    va_target : [N, D], NaN = missing
    beta : float

    Returns
    -------
    Tensor scalar (0 for perfect predictions).
    """
    return ccc_loss(va_pred, va_target, reduction="sum") + beta * masked_mse(va_pred, va_target, reduction="none").sum()


def weighted_bce(logits: torch.Tensor, target, pos_weight=None) -> torch.Tensor:
    """Positive-weighted binary cross-entropy over labelled entries (eq. 4 of 002).

    SMM-EmotionNet's AU loss (equation 4):
    ``-(1/U) sum_i [P_i y_i log sigma(x_i) + (1 - y_i) log(1 - sigma(x_i))]``, averaged
    here over every labelled (sample, AU) entry; entries with target -1 are left out.
    Equals ``torch.nn.BCEWithLogitsLoss(pos_weight=P)`` on fully labelled data.

    Parameters
    ----------
    logits : Tensor [N, K]
    target : [N, K] of 1 / 0 / -1
    pos_weight : [K], optional
        ``P_i`` (see :func:`au_pos_weight`); default 1.

    Returns
    -------
    Tensor scalar (0 when nothing is labelled).
    """
    logits = _prediction(logits, "logits", (2,))
    target = _binary_target(target, "target", logits, "binary")
    pos_weight = _vector(pos_weight, "pos_weight", logits.shape[1], logits)
    keep = target >= 0
    if not keep.any():
        return _zero(logits)
    pw = None if pos_weight is None else pos_weight.expand_as(logits)[keep]
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep].to(logits.dtype), pos_weight=pw)


def multilabel_bce(logits: torch.Tensor, target, pos_weight=None) -> torch.Tensor:
    """Multi-label BCE with positive weights: CAGE's ``L_WeightedBCE`` on EMOTIC.

    CAGE, section 4.3: "a positive-weighted binary cross-entropy
    (BCE) loss, where the positive weights are defined as the inverse of the occurrence
    of each label" (:func:`multilabel_pos_weight`). The same masked computation as
    :func:`weighted_bce`; -1 entries (unlabelled samples) are left out.

    Parameters
    ----------
    logits : Tensor [N, C]
    target : [N, C] multi-hot 1 / 0, -1 = missing
    pos_weight : [C], optional

    Returns
    -------
    Tensor scalar
    """
    return weighted_bce(logits, target, pos_weight)


def smm_loss(
    *,
    au_logits: torch.Tensor | None = None,
    au_target=None,
    expr_logits: torch.Tensor | None = None,
    expr_target=None,
    va_pred: torch.Tensor | None = None,
    va_target=None,
    au_pos_weight=None,
    expr_weight=None,
    return_terms: bool = False,
):
    """SMM-EmotionNet's multi-task loss ``L = L^AU + L^EXPR + L^VA`` (eq. 7 of 002).

    SMM-EmotionNet, equation 7, an unweighted sum of
    :func:`weighted_bce` (equation 4), :func:`weighted_cross_entropy` (equation 5) and
    :func:`ccc_loss` summed over valence and arousal (equation 6). Each term masks its
    own missing labels, which is how one batch can mix samples from uni-task datasets;
    a task whose outputs are not given is left out.

    Parameters
    ----------
    au_logits, au_target : Tensor [N, K] and 1/0/-1 [N, K], optional
    expr_logits, expr_target : Tensor [N, C] and int [N] (-1 missing), optional
    va_pred, va_target : Tensor [N, 2] and float [N, 2] (NaN missing), optional
    au_pos_weight : [K], optional
        ``P^AU`` (:func:`au_pos_weight`).
    expr_weight : [C], optional
        ``P^EXPR`` (e.g. :func:`class_weights`).
    return_terms : bool
        Return ``{"loss", "au", "expr", "va"}`` (present terms only) instead of the total.

    Returns
    -------
    Tensor scalar, or dict of Tensors when ``return_terms``.
    """
    pairs = {"au": (au_logits, au_target), "expr": (expr_logits, expr_target), "va": (va_pred, va_target)}
    for name, (out, tgt) in pairs.items():
        if (out is None) != (tgt is None):
            raise ValueError(f"smm_loss: {name} outputs and targets must be given together")
    if all(out is None for out, _ in pairs.values()):
        raise ValueError("smm_loss: give at least one of au, expr or va outputs with their targets")
    terms: dict[str, torch.Tensor] = {}
    if au_logits is not None:
        terms["au"] = weighted_bce(au_logits, au_target, au_pos_weight)
    if expr_logits is not None:
        terms["expr"] = weighted_cross_entropy(expr_logits, expr_target, expr_weight)
    if va_pred is not None:
        terms["va"] = ccc_loss(va_pred, va_target, reduction="sum")
    total = sum(terms.values())
    if return_terms:
        return {"loss": total, **terms}
    return total


def vq_loss(z: torch.Tensor, e: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Vector-quantisation loss ``||sg[z] - e||^2 + beta ||z - sg[e]||^2`` (AURA).

    The archetype (codebook) update term pulls the selected archetypes ``e`` towards
    the stopped-gradient features; the commitment term pulls the features ``z``
    towards the stopped-gradient archetypes. AURA (appendix
    A.2) sets ``beta = 1``. Squared norms are averaged over all elements (the usual
    VQ-VAE implementation).

    Parameters
    ----------
    z : Tensor [N, D]
        Encoder features.
    e : Tensor [N, D]
        The archetype selected for each row of ``z``.
    beta : float
        Commitment weight.

    Returns
    -------
    Tensor scalar
    """
    z = _prediction(z, "z", tuple(range(1, 8)))
    e = _prediction(e, "e", tuple(range(1, 8)))
    if z.shape != e.shape:
        raise ValueError(f"z and e must have the same shape, got {tuple(z.shape)} and {tuple(e.shape)}")
    return F.mse_loss(e, z.detach()) + beta * F.mse_loss(z, e.detach())
