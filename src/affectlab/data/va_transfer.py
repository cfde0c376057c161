"""Valence/arousal annotation transfer by ellipse sampling (the VA-VAE report; ARCHITECTURE.md, Papers).

A dataset that has only expression labels gets valence/arousal from an *anchor* dataset
that has both: for each expression class of the anchor, an ellipse centred at
(mean valence, mean arousal) with semi-axes (std valence, std arousal); every target
sample gets a point drawn uniformly inside the ellipse of its class. With
``discrete=True`` the ellipse is scaled to [-10, 10] and an integer point inside it is
drawn uniformly (the paper's discrete labels, as in AFEW-VA).

affectlab's choices where the paper is silent: points outside the valid square
[-1, 1]^2 are re-drawn (rejection), so every label is valid and still inside the
ellipse; a discrete ellipse that contains no integer point gives the integer point
nearest its centre.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from affectlab.data.schema import canonical_expression
from affectlab.errors import DatasetError, LabelError

ELLIPSE_COLUMNS = ("expression", "mean_valence", "mean_arousal", "std_valence", "std_arousal", "n")


def fit_ellipses(labels: pd.DataFrame, *, source: str = "anchor") -> pd.DataFrame:
    """Per-class VA ellipses of an anchor dataset.

    Parameters
    ----------
    labels : DataFrame
        Canonical labels with ``expression``, ``valence`` and ``arousal`` columns.
        Rows missing any of the three are ignored.
    source : str
        Name used in error messages.

    Returns
    -------
    DataFrame
        One row per class: ``expression, mean_valence, mean_arousal, std_valence,
        std_arousal, n`` (population standard deviations).
    """
    missing = [c for c in ("expression", "valence", "arousal") if c not in labels.columns]
    if missing:
        raise DatasetError(
            f"{source}: needs expression, valence and arousal labels; missing column(s) {missing}"
        )
    rows = labels[["expression", "valence", "arousal"]].copy()
    rows["valence"] = pd.to_numeric(rows["valence"], errors="coerce")
    rows["arousal"] = pd.to_numeric(rows["arousal"], errors="coerce")
    rows = rows.dropna()
    if rows.empty:
        raise DatasetError(f"{source}: no sample has expression, valence and arousal together")
    rows["expression"] = [canonical_expression(e, source) for e in rows["expression"]]
    out = []
    for name, group in rows.groupby("expression", sort=True):
        if len(group) < 2:
            raise DatasetError(
                f"{source}: class {name!r} has {len(group)} sample with valence/arousal; at least 2 are "
                "needed to estimate its ellipse"
            )
        out.append(
            (
                name,
                group["valence"].mean(),
                group["arousal"].mean(),
                group["valence"].std(ddof=0),
                group["arousal"].std(ddof=0),
                len(group),
            )
        )
    return pd.DataFrame(out, columns=list(ELLIPSE_COLUMNS))


def read_ellipses(path: str | Path) -> pd.DataFrame:
    """Read an ellipse table written by :func:`transfer_va` (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ellipse table {path} does not exist")
    table = pd.read_csv(path)
    missing = [c for c in ELLIPSE_COLUMNS[:-1] if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; expected {', '.join(ELLIPSE_COLUMNS)}")
    for i, row in table.iterrows():
        values = row[list(ELLIPSE_COLUMNS[1:5])].astype(float)
        if not np.isfinite(values).all() or (values.iloc[2:] < 0).any() or (values.iloc[:2].abs() > 1).any():
            raise DatasetError(
                f"{path}:{i + 2}: expected means in [-1, 1] and non-negative standard deviations, got "
                + ", ".join(f"{k}={v:g}" for k, v in values.items())
            )
    table["expression"] = [canonical_expression(e, str(path)) for e in table["expression"]]
    return table


def _sample_continuous(center, axes, n, rng) -> np.ndarray:
    out = np.empty((n, 2))
    todo = np.arange(n)
    for _ in range(1000):
        r = np.sqrt(rng.random(len(todo)))
        theta = rng.random(len(todo)) * 2 * np.pi
        pts = center + axes * np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        ok = (np.abs(pts) <= 1).all(axis=1)
        out[todo[ok]] = pts[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            return out
    # an ellipse almost entirely outside the square: fall back to its clipped centre
    out[todo] = np.clip(center, -1, 1)
    return out


def _integer_points(center, axes) -> np.ndarray:
    lo = np.floor(center - axes).astype(int)
    hi = np.ceil(center + axes).astype(int)
    xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    pts = pts[(np.abs(pts) <= 10).all(axis=1)]
    safe = np.where(axes > 0, axes, 1.0)
    d = (((pts - center) / safe) ** 2).sum(axis=1)
    # a zero axis degenerates the ellipse into a segment along the other axis
    on_axis = np.all((axes > 0) | (pts == np.round(center)), axis=1)
    inside = pts[(d <= 1 + 1e-9) & on_axis]
    if len(inside) == 0:
        inside = np.clip(np.round(center), -10, 10).astype(int)[None, :]
    return inside


def sample_va(expressions, ellipses: pd.DataFrame, *, discrete: bool = False, seed: int = 0) -> np.ndarray:
    """Draw one (valence, arousal) point per sample inside its class's ellipse.

    Parameters
    ----------
    expressions : sequence of str
        Canonical expression names (or aliases) of the target samples; missing
        expressions (NA/empty) get NaN.
    ellipses : DataFrame
        Output of :func:`fit_ellipses` or :func:`read_ellipses`.
    discrete : bool
        Draw integers in [-10, 10] from the scaled ellipse (returned as integers / 10,
        i.e. on the canonical scale).
    seed : int
        Random seed; the same seed gives the same labels.

    Returns
    -------
    ndarray [N, 2]
        Canonical valence and arousal.

    Raises
    ------
    LabelError
        If a target class has no ellipse in the anchor; the message names the classes.
    """
    names = pd.Series(list(expressions), dtype=object)
    present = names.notna() & (names.astype(str).str.strip() != "")
    canon = pd.Series([canonical_expression(n) if p else None for n, p in zip(names, present)], dtype=object)
    table = ellipses.set_index("expression")
    absent = sorted(set(canon[present]) - set(table.index))
    if absent:
        raise LabelError(
            f"the anchor has no valence/arousal for class(es) {', '.join(absent)}; it covers "
            f"{', '.join(table.index)}. Drop those samples or use an anchor that has them."
        )
    rng = np.random.default_rng(seed)
    out = np.full((len(names), 2), np.nan)
    for name in sorted(set(canon[present])):
        idx = np.flatnonzero((canon == name).to_numpy())
        row = table.loc[name]
        center = np.array([row["mean_valence"], row["mean_arousal"]], dtype=float)
        axes = np.array([row["std_valence"], row["std_arousal"]], dtype=float)
        if discrete:
            pts = _integer_points(center * 10, axes * 10)
            out[idx] = pts[rng.integers(0, len(pts), size=len(idx))] / 10.0
        else:
            out[idx] = _sample_continuous(center, axes, len(idx), rng)
    return out


def inside_ellipses(expressions, va: np.ndarray, ellipses: pd.DataFrame, *, tol: float = 1e-9) -> np.ndarray:
    """Whether each (valence, arousal) point lies inside its class's ellipse."""
    table = ellipses.set_index("expression")
    out = np.zeros(len(va), dtype=bool)
    for i, (name, (v, a)) in enumerate(zip(expressions, va)):
        row = table.loc[canonical_expression(name)]
        sv, sa = max(row["std_valence"], 1e-12), max(row["std_arousal"], 1e-12)
        out[i] = ((v - row["mean_valence"]) / sv) ** 2 + ((a - row["mean_arousal"]) / sa) ** 2 <= 1 + tol
    return out


def transfer_va(
    target: pd.DataFrame,
    out: str | Path,
    *,
    anchor: pd.DataFrame | None = None,
    ellipses: pd.DataFrame | None = None,
    discrete: bool = False,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give a dataset valence/arousal labels from an anchor and write a manifest.

    Parameters
    ----------
    target : DataFrame
        Canonical labels of the target dataset (``path`` absolute, ``expression``).
    out : path
        Manifest CSV to write; the ellipse table is written beside it as
        ``<out stem>.ellipses.csv``. Paths in the manifest are relative to it.
    anchor : DataFrame, optional
        Canonical labels of the anchor dataset (expression + VA).
    ellipses : DataFrame, optional
        A previously written ellipse table, used instead of ``anchor``.
    discrete, seed
        See :func:`sample_va`.

    Returns
    -------
    (manifest, ellipses) : tuple of DataFrame
    """
    if (anchor is None) == (ellipses is None):
        raise DatasetError("give exactly one of an anchor dataset or an ellipse table (--ellipses)")
    if "expression" not in target.columns or "path" not in target.columns:
        raise DatasetError("the target dataset needs 'path' and 'expression' columns")
    table = fit_ellipses(anchor) if anchor is not None else ellipses
    va = sample_va(target["expression"], table, discrete=discrete, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = target.copy()
    manifest["path"] = [_relpath(p, out.parent) for p in manifest["path"]]
    manifest["valence"] = va[:, 0]
    manifest["arousal"] = va[:, 1]
    if discrete:
        manifest["valence_int"] = pd.array(np.round(va[:, 0] * 10), dtype="Float64").astype("Int64")
        manifest["arousal_int"] = pd.array(np.round(va[:, 1] * 10), dtype="Float64").astype("Int64")
    manifest["va_source"] = "transfer"
    manifest.to_csv(out, index=False)
    table.to_csv(ellipse_path(out), index=False)
    return manifest, table


def ellipse_path(out: str | Path) -> Path:
    """Where :func:`transfer_va` writes the ellipse table for manifest ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".ellipses.csv")


def _relpath(path, start) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
