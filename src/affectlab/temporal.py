"""Temporal smoothing of per-frame predictions (equation 9 of the SMM-EmotionNet paper).

SMM-EmotionNet (section 5.2) filters high-frequency noise in a
sequence of per-frame vectors with a first-order recursive filter::

    Lambda_t = (eps_t + mu * Lambda_{t-1}) / (1 + mu)

where ``eps_t`` is the frame's vector and ``mu >= 0`` sets the smoothness (``mu = 0``
leaves the sequence unchanged). The recursion starts at ``Lambda_0 = eps_0``. It is an
exponential moving average with weight ``1 / (1 + mu)`` on the new frame, so it runs
online (:class:`OnlineSmoother`, what ``affectlab analyze --smooth`` uses per face
track) as well as over whole arrays (:func:`smooth`).

The paper picks ``mu`` from ``{0, ..., 10}`` per task by grid search with three-fold
cross-validation over videos; :func:`search_mu` does that for any score function, and
:func:`search_mu_per_task` for several tasks at once (``evaluate --smooth`` uses it).
Smoothing probabilities or valence/arousal keeps them in range: each output is a convex
combination of inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from affectlab.errors import ConfigError, check_nonnegative

#: The tasks smoothing applies to.
TASKS = ("expr", "va", "au")

#: The paper's search region for mu.
DEFAULT_MUS: tuple[int, ...] = tuple(range(11))


def _check_mu(mu) -> float:
    return check_nonnegative(mu, "smoothing mu")


def parse_smooth(value) -> str | dict[str, float] | None:
    """Normalise a ``--smooth`` value: the one grammar of ``analyze`` and ``evaluate``.

    ``MU`` (every task), ``expr=9,va=9,au=7`` (per task; tasks left out are not smoothed),
    a mapping task -> mu, ``"auto"`` or ``"stored"``. ``evaluate`` searches mu for
    ``auto`` and reuses the stored one for ``stored``; ``analyze`` has no labels to search
    with, so for it both mean the mu stored with the model.

    Returns ``None``, ``"auto"``, ``"stored"`` or a mapping task -> mu.

    Raises
    ------
    ConfigError
        For anything else, naming the value.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        items = dict(value)
    else:
        text = str(value).strip().lower()
        if text in ("auto", "stored"):
            return text
        if "=" in text:
            items = {}
            for part in text.split(","):
                key, sep, mu = part.partition("=")
                if not sep:
                    raise ConfigError(f"--smooth: expected task=mu pairs such as expr=9,va=9,au=7, got {value!r}")
                items[key.strip()] = mu.strip()
        else:
            items = {t: text for t in TASKS}
    unknown = sorted(set(items) - set(TASKS))
    if unknown:
        raise ConfigError(f"--smooth: unknown task(s) {unknown}; expected expr, va, au")
    out = {}
    for task, mu in items.items():
        try:
            out[task] = float(_check_mu(mu))
        except ConfigError:
            raise ConfigError(
                f"--smooth must be a number >= 0, 'auto', 'stored' or task=mu pairs (expr=9,va=9,au=7); "
                f"got {value!r}"
            ) from None
    return out


def _smooth_block(x: np.ndarray, mu: float) -> np.ndarray:
    """Equation 9 along axis 0 of one sequence; NaN rows pass through and keep the state."""
    out = np.empty_like(x, dtype=np.float64)
    if len(x) == 0 or mu == 0:
        out[...] = x
        return out
    a = 1.0 / (1.0 + mu)
    if np.isfinite(x).all():
        # the recursion is a first-order IIR filter; zi makes Lambda_0 = eps_0
        from scipy.signal import lfilter

        zi = (1.0 - a) * np.asarray(x[:1], dtype=np.float64)
        out[...], _ = lfilter([a], [1.0, -(1.0 - a)], x, axis=0, zi=zi)
        return out
    state = None
    for t in range(len(x)):
        eps = x[t]
        valid = np.isfinite(eps)
        if state is None:
            state = np.where(valid, eps, np.nan)
        else:
            # a component first seen now starts its own recursion at eps
            fresh = valid & ~np.isfinite(state)
            upd = a * eps + (1.0 - a) * state
            state = np.where(fresh, eps, np.where(valid, upd, state))
        out[t] = np.where(valid, state, np.nan)
    return out


def smooth(x, mu: float, groups: Sequence[Hashable] | np.ndarray | None = None) -> np.ndarray:
    """Apply equation 9 along the first axis, separately within each group.

    Parameters
    ----------
    x : array-like, shape (T,) or (T, D)
        Per-frame values in time order (within each group).
    mu : float
        Smoothness, ``>= 0``; 0 returns ``x`` unchanged.
    groups : array-like of shape (T,), optional
        Sequence id of each row (a face track, a video). Rows of one group are smoothed
        in their order of appearance; groups need not be contiguous.

    Returns
    -------
    ndarray of float64, same shape as ``x``
        NaN entries stay NaN and do not reset the recursion.
    """
    mu = _check_mu(mu)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ConfigError(f"smooth expects a 1-D or 2-D array (time first), got shape {arr.shape}")
    squeeze = arr.ndim == 1
    arr2 = arr[:, None] if squeeze else arr
    if groups is None:
        out = _smooth_block(arr2, mu)
    else:
        g = np.asarray(groups)
        if g.shape[0] != arr2.shape[0]:
            raise ConfigError(f"groups has {g.shape[0]} entries but x has {arr2.shape[0]} rows")
        out = np.empty_like(arr2)
        _, inverse = np.unique(g, return_inverse=True)
        for k in range(inverse.max() + 1 if len(inverse) else 0):
            idx = np.flatnonzero(inverse == k)
            out[idx] = _smooth_block(arr2[idx], mu)
    return out[:, 0] if squeeze else out


class OnlineSmoother:
    """Equation 9 applied frame by frame, one state per key (e.g. a face track id).

    Memory is one vector per live key, so it suits streaming analysis of long videos.

    Parameters
    ----------
    mu : float
        Smoothness, ``>= 0``.
    """

    def __init__(self, mu: float):
        self.mu = _check_mu(mu)
        self._alpha = 1.0 / (1.0 + self.mu)
        self._state: dict[Hashable, np.ndarray] = {}

    def update(self, key: Hashable, eps) -> np.ndarray:
        """Fold the new vector ``eps`` of ``key`` into its state and return the smoothed vector."""
        eps = np.asarray(eps, dtype=np.float64)
        prev = self._state.get(key)
        if prev is None or prev.shape != eps.shape:
            new = eps.copy()
        else:
            new = self._alpha * eps + (1.0 - self._alpha) * prev
        self._state[key] = new
        return new.copy()

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop the state of keys that will not come back (ended tracks)."""
        for k in keys:
            self._state.pop(k, None)

    def reset(self) -> None:
        self._state.clear()


# --------------------------------------------------------------------------- search


def ccc(y_true, y_pred) -> float:
    """Lin's concordance correlation coefficient of two 1-D arrays (NaN pairs dropped)."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if len(t) < 2:
        return float("nan")
    mt, mp = t.mean(), p.mean()
    cov = np.mean((t - mt) * (p - mp))
    denom = t.var() + p.var() + (mt - mp) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def va_ccc_score(y_true, y_pred) -> float:
    """Mean CCC over columns (valence, arousal); the VA task's selection score."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    t2, p2 = (t[:, None], p[:, None]) if t.ndim == 1 else (t, p)
    return float(np.nanmean([ccc(t2[:, j], p2[:, j]) for j in range(t2.shape[1])]))


def expr_f1_score(y_true, y_prob) -> float:
    """Macro F1 of the argmax of smoothed probabilities (labels -1 ignored)."""
    from sklearn.metrics import f1_score

    y = np.asarray(y_true).astype(np.int64).ravel()
    pred = np.asarray(y_prob).argmax(axis=1)
    keep = y >= 0
    return float(f1_score(y[keep], pred[keep], average="macro", zero_division=0))


def au_f1_score(y_true, y_prob, threshold: float = 0.5) -> float:
    """Mean per-AU F1 of smoothed probabilities thresholded at ``threshold`` (-1 ignored)."""
    from sklearn.metrics import f1_score

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64) >= threshold
    scores = []
    for j in range(y.shape[1]):
        keep = y[:, j] >= 0
        if keep.any():
            scores.append(f1_score(y[keep, j].astype(int), p[keep, j].astype(int), zero_division=0))
    return float(np.mean(scores)) if scores else float("nan")


#: Default score per task for :func:`search_mu_per_task` (higher is better).
TASK_SCORES: dict[str, Callable] = {"va": va_ccc_score, "expr": expr_f1_score, "au": au_f1_score}


@dataclass
class MuSearch:
    """Result of a grid search of mu.

    Attributes
    ----------
    best_mu : float
        The mu with the best mean score over the folds.
    mus : tuple of float
        The grid.
    scores : ndarray [len(mus), n_folds]
        Score of each mu on each fold (each fold's sequences smoothed separately, then
        concatenated and scored).
    fold_mus : list of float
        For each fold, the mu chosen on the other folds (the cross-validated choice).
    heldout_scores : list of float
        Score of ``fold_mus[k]`` on fold ``k``: an unbiased estimate of the gain.
    unsmoothed_scores : list of float
        Score of mu = 0 on each fold, for comparison.
    """

    best_mu: float
    mus: tuple[float, ...]
    scores: np.ndarray
    fold_mus: list[float] = field(default_factory=list)
    heldout_scores: list[float] = field(default_factory=list)
    unsmoothed_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "best_mu": self.best_mu,
            "mus": list(self.mus),
            "scores": self.scores.tolist(),
            "fold_mus": list(self.fold_mus),
            "heldout_scores": list(self.heldout_scores),
            "unsmoothed_scores": list(self.unsmoothed_scores),
        }


def _fold_ids(n: int, n_folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % n_folds
    rng.shuffle(ids)
    return ids


def search_mu(
    predictions: Sequence,
    targets: Sequence,
    score: Callable[[np.ndarray, np.ndarray], float],
    *,
    mus: Sequence[float] = DEFAULT_MUS,
    n_folds: int = 3,
    seed: int = 0,
) -> MuSearch:
    """Grid search of mu by cross-validation over sequences (videos).

    Parameters
    ----------
    predictions : list of arrays [T_i, D] or [T_i]
        Per-frame predictions of each sequence, in time order.
    targets : list of arrays
        Ground truth of each sequence, aligned with ``predictions`` rows.
    score : callable ``score(y_true, y_pred) -> float``
        Higher is better, computed on the concatenation of a fold's sequences.
    mus : sequence of float
        The grid (default the paper's ``0..10``).
    n_folds : int
        Number of folds over sequences (the paper uses 3).
    seed : int
        Seed of the assignment of sequences to folds.

    Returns
    -------
    MuSearch
    """
    if len(predictions) != len(targets):
        raise ConfigError(f"{len(predictions)} prediction sequences but {len(targets)} target sequences")
    if n_folds < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    if len(predictions) < n_folds:
        raise ConfigError(
            f"cross-validating mu over {n_folds} folds needs at least {n_folds} sequences, got {len(predictions)}"
        )
    if len(mus) == 0:
        raise ConfigError("the grid of mu values is empty")
    grid = tuple(_check_mu(m) for m in mus)
    preds = [np.asarray(p, dtype=np.float64) for p in predictions]
    targs = [np.asarray(t) for t in targets]
    for i, (p, t) in enumerate(zip(preds, targs)):
        if len(p) != len(t):
            raise ConfigError(f"sequence {i}: {len(p)} predictions but {len(t)} targets")
    folds = _fold_ids(len(preds), n_folds, seed)
    scores = np.full((len(grid), n_folds), np.nan)
    for i, mu in enumerate(grid):
        smoothed = [smooth(p, mu) for p in preds]
        for k in range(n_folds):
            idx = np.flatnonzero(folds == k)
            y = np.concatenate([targs[j] for j in idx])
            yhat = np.concatenate([smoothed[j] for j in idx])
            scores[i, k] = score(y, yhat)
    mean = np.nanmean(scores, axis=1)
    best = grid[int(np.nanargmax(mean))]
    fold_mus, heldout = [], []
    for k in range(n_folds):
        others = np.nanmean(np.delete(scores, k, axis=1), axis=1)
        i = int(np.nanargmax(others))
        fold_mus.append(grid[i])
        heldout.append(float(scores[i, k]))
    unsmoothed = list(map(float, scores[grid.index(0.0)])) if 0.0 in grid else []
    return MuSearch(best, grid, scores, fold_mus, heldout, unsmoothed)


def search_mu_per_task(
    predictions: Mapping[str, Sequence],
    targets: Mapping[str, Sequence],
    scores: Mapping[str, Callable] | None = None,
    **kwargs,
) -> dict[str, MuSearch]:
    """:func:`search_mu` for each task (``va``, ``expr``, ``au`` or any named score).

    ``scores`` maps a task to its score function; tasks not given use
    :data:`TASK_SCORES`. Keyword arguments go to :func:`search_mu`.
    """
    scores = dict(scores or {})
    out = {}
    for task, preds in predictions.items():
        if task not in targets:
            raise ConfigError(f"task {task!r} has predictions but no targets")
        fn = scores.get(task, TASK_SCORES.get(task))
        if fn is None:
            raise ConfigError(f"no score function for task {task!r}; pass scores={{{task!r}: fn}}")
        out[task] = search_mu(preds, targets[task], fn, **kwargs)
    return out
