"""Label-frequency weights: inverse class frequencies and positive weights of binary labels.

Statistics of a training set that the weighted losses of :mod:`affectlab.losses` take
(and :mod:`affectlab.data.stats` reports): CAGE's Table 4 class weights, SMM-EmotionNet's
AU positive weights (equation 4), CAGE's multi-label positive weights.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import torch

from affectlab.errors import LabelError


def _counts_array(counts, name: str) -> np.ndarray:
    if isinstance(counts, Mapping):
        counts = list(counts.values())
    if torch.is_tensor(counts):
        counts = counts.detach().cpu().numpy()
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of counts, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be finite non-negative counts, got {arr.tolist()}")
    return arr


def _binary_label_matrix(labels, name: str) -> np.ndarray:
    if torch.is_tensor(labels):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [N, K], got {arr.shape}")
    if np.isnan(arr).any():
        raise LabelError(f"{name} contains NaN; labels are 1, 0 or -1 (missing)")
    if not np.isin(arr, (-1.0, 0.0, 1.0)).all():
        bad = arr[~np.isin(arr, (-1.0, 0.0, 1.0))][0]
        raise LabelError(f"{name} contains {bad:g}; labels are 1, 0 or -1 (missing)", value=float(bad))
    return arr


def _neg_over_pos(labels, name: str) -> torch.Tensor:
    arr = _binary_label_matrix(labels, name)
    pos = (arr == 1).sum(axis=0).astype(np.float64)
    neg = (arr == 0).sum(axis=0).astype(np.float64)
    none = pos == 0
    if none.any():
        warnings.warn(
            f"{name}: column(s) {np.flatnonzero(none).tolist()} have no positive labels; their positive "
            "weight is set to 1",
            RuntimeWarning,
            stacklevel=3,
        )
    weight = np.divide(neg, pos, out=np.ones_like(neg), where=~none)
    return torch.tensor(weight, dtype=torch.float32)


# ------------------------------------------------------------------------- weights


def class_weights(counts: Sequence[float] | Mapping[str, float] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Normalised inverse-frequency class weights for a weighted cross-entropy.

    ``w_c = (1 / n_c) / sum_k (1 / n_k)``: the weights of Table 4 of CAGE
    (arXiv:2404.14975), which reports them for AffectNet-8 and AffectNet-7. From
    the official AffectNet training counts (neutral 74874, happiness 134415, sadness
    25459, surprise 14090, fear 6378, disgust 3803, anger 24882, contempt 3750) this
    gives the AffectNet-7 column to 4-5 digits and the AffectNet-8 column within 1.5%.

    Parameters
    ----------
    counts : sequence, mapping (class -> count, in class order), ndarray or Tensor
        Training samples per class. A class with count 0 gets weight 0 (it never occurs
        as a target) and a warning.

    Returns
    -------
    Tensor float32 [C], summing to 1.

    Examples
    --------
    >>> class_weights([1, 3]).tolist()
    [0.75, 0.25]
    """
    n = _counts_array(counts, "counts")
    if not (n > 0).any():
        raise ValueError("counts: every class has count 0; cannot derive class weights")
    if (n == 0).any():
        warnings.warn(
            f"counts: class(es) {np.flatnonzero(n == 0).tolist()} have no samples; their weight is 0",
            RuntimeWarning,
            stacklevel=2,
        )
    inv = np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)
    return torch.tensor(inv / inv.sum(), dtype=torch.float32)


def au_pos_weight(au_labels) -> torch.Tensor:
    """Positive weight of each AU: negatives / positives (P_i^AU of eq. 4 of 002).

    SMM-EmotionNet (equation 4): "P_i^AU equals to the
    number of negative samples divided by the number of positive samples for each AU",
    computed on the training set. Missing entries (-1) are not counted. An AU with no
    positive label gets weight 1 (the positive term never fires on such data) and a
    warning.

    Parameters
    ----------
    au_labels : array-like or Tensor [N, K] of 1 / 0 / -1

    Returns
    -------
    Tensor float32 [K]
    """
    return _neg_over_pos(au_labels, "au_labels")


def multilabel_pos_weight(labels) -> torch.Tensor:
    """Positive weights of a multi-label task (EMOTIC in CAGE): negatives / positives.

    CAGE (section 4.3 and 5.4) sets "the positive weight for
    each class [to] the inverse of the overall occurrence of a label"; its reference
    code computes ``(N - count) / count``, i.e. ``1 / frequency - 1``, which is what
    this returns (same as :func:`au_pos_weight`; -1 entries are not counted).

    Parameters
    ----------
    labels : array-like or Tensor [N, C] of 1 / 0 / -1

    Returns
    -------
    Tensor float32 [C]
    """
    return _neg_over_pos(labels, "labels")
