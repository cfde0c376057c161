"""The evaluation figures of CAGE (arXiv:2404.14975).

* Figure 9: the expression confusion matrix with rows normalised to the true class
  (:func:`plot_confusion_normalized`);
* Figures 10-11: the share of samples whose absolute valence / arousal error is at most
  a threshold, as a function of the threshold (:func:`cumulative_abs_error`,
  :func:`plot_abs_error_curves`; Figure 11 overlays several models on one test set).

``affectlab evaluate --plots DIR`` writes both for any model
(:func:`evaluation_plots`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from affectlab.errors import ConfigError

#: the continuous dimensions a prediction table may hold (``<dim>`` and ``<dim>_true``)
DIMENSIONS = ("valence", "arousal", "dominance")


def cumulative_abs_error(y_true, y_pred, thresholds=None) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of labelled samples whose absolute error is at most each threshold.

    Parameters
    ----------
    y_true, y_pred : array-like of float [N]
        Labels (NaN = missing, left out) and predictions.
    thresholds : array-like of float, optional
        Error thresholds; default 201 points on [0, 2] (the width of [-1, 1]).

    Returns
    -------
    thresholds : ndarray [T]
    fraction : ndarray [T]
        In [0, 1], non-decreasing; NaN everywhere when no sample is labelled.

    Raises
    ------
    ValueError
        Shapes that differ, predictions that are not finite, negative thresholds.

    Examples
    --------
    >>> t, f = cumulative_abs_error([0.0, 0.5], [0.1, 0.0], thresholds=[0.0, 0.2, 0.5])
    >>> f.tolist()
    [0.0, 0.5, 1.0]
    """
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.shape[0]} and {p.shape[0]}")
    keep = ~np.isnan(t)
    if not np.isfinite(p[keep]).all():
        raise ValueError("y_pred has non-finite values where y_true is labelled")
    grid = np.linspace(0.0, 2.0, 201) if thresholds is None else np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if (grid < 0).any() or not np.isfinite(grid).all():
        raise ValueError("thresholds must be finite and non-negative")
    err = np.sort(np.abs(t[keep] - p[keep]))
    if err.size == 0:
        return grid, np.full(grid.shape, np.nan)
    return grid, np.searchsorted(err, grid, side="right") / err.size


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_confusion_normalized(confusion, names: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Figure 9 of CAGE: confusion matrix with each true-class row summing to 100%.

    Parameters
    ----------
    confusion : array-like [C, C]
        Counts, rows true, columns predicted.
    names : sequence of str
        Class names in row order.
    path : str or Path
        PNG to write.
    title : str

    Returns
    -------
    Path
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
        raise ValueError(f"confusion must be [C, C] with C = {len(names)} names, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    plt = _pyplot()
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * k, 1.0 + 0.65 * k))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_title(title or "confusion matrix (% of each true class)")
    return _save(fig, path)


def _table_dims(table) -> list[str]:
    return [d for d in DIMENSIONS if d in table.columns and f"{d}_true" in table.columns]


def plot_abs_error_curves(
    tables: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    dimensions: Sequence[str] | None = None,
    title: str = "",
    max_error: float = 2.0,
) -> Path:
    """Figures 10-11 of CAGE: share of samples within an absolute error, per dimension.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        Model (or test-set) label -> prediction table with ``valence`` / ``valence_true``
        (``arousal``..., ``dominance``...) columns, as :func:`affectlab.evaluate` returns.
        One model gives Figure 10; several models on one test set give Figure 11.
    path : str or Path
        PNG to write.
    dimensions : sequence of str, optional
        Default: those every table has among valence, arousal, dominance.
    title : str
    max_error : float
        Right end of the threshold axis.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        When no table has a continuous dimension to plot.
    """
    if not tables:
        raise ConfigError("plot_abs_error_curves needs at least one prediction table")
    dims = list(dimensions) if dimensions is not None else [
        d for d in DIMENSIONS if all(d in _table_dims(t) for t in tables.values())
    ]
    if not dims:
        raise ConfigError("no prediction table has valence/arousal predictions and labels to plot")
    grid = np.linspace(0.0, max_error, 201)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    styles = ["-", "--", ":", "-."]
    colors = {"valence": "tab:blue", "arousal": "tab:red", "dominance": "tab:green"}
    for k, (label, table) in enumerate(tables.items()):
        for d in dims:
            _, frac = cumulative_abs_error(table[f"{d}_true"].to_numpy(float), table[d].to_numpy(float), grid)
            name = d if len(tables) == 1 else f"{label}: {d}"
            ax.plot(grid, 100.0 * frac, styles[k % len(styles)], color=colors.get(d), label=name)
    ax.set_xlabel("absolute error")
    ax.set_ylabel("% of samples within the error")
    ax.set_xlim(0.0, max_error)
    ax.set_ylim(0.0, 100.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "cumulative absolute error")
    return _save(fig, path)


def evaluation_plots(result, folder: str | os.PathLike, *, label: str = "model") -> dict[str, Path]:
    """The CAGE figures of an evaluation: what ``affectlab evaluate --plots DIR`` adds.

    Parameters
    ----------
    result : EvaluationResult
        From :func:`affectlab.evaluate.engine.evaluate`.
    folder : str or Path
        Output folder (created).
    label : str
        Legend label of the model.

    Returns
    -------
    dict
        ``confusion_normalized`` -> ``confusion_normalized.png`` (single-label
        expressions) and ``abs_error`` -> ``abs_error.png`` (continuous dimensions), as
        far as the evaluation has them.
    """
    folder = Path(folder)
    files: dict[str, Path] = {}
    if result.confusion is not None:
        files["confusion_normalized"] = plot_confusion_normalized(
            result.confusion, result.label_space.expressions, folder / "confusion_normalized.png"
        )
    if _table_dims(result.predictions):
        files["abs_error"] = plot_abs_error_curves({label: result.predictions}, folder / "abs_error.png")
    return files
