"""Training-set statistics of a canonical label table: the dataset analysis of CAGE.

CAGE (section 3) analyses its datasets before training:
class frequencies (figures 3 and 7), valence/arousal on the circumplex and per class
(figures 4 and 5), the train/validation difference in VA (figure 6) and the number of
labels per image of multi-label EMOTIC (figure 8). The same numbers set the loss
weights: inverse-frequency class weights (CAGE table 4) and AU positive weights
(SMM-EmotionNet equation 4). This module computes all of them from the canonical label
table of :mod:`affectlab.data.datasets` (``path, expression, valence, arousal, AU<k>``;
multi-label datasets carry one 1/0/-1 column per category); :mod:`affectlab.data.check`
prints and plots them.

Every function accepts a label DataFrame or anything with ``.labels`` (and optionally
``.label_space``), such as an :class:`~affectlab.data.datasets.AffectDataset`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from affectlab.data.schema import ALL_EXPRESSIONS, MISSING_AU, LabelSpace, au_name, sort_aus
from affectlab.data.weights import au_pos_weight, class_weights, multilabel_pos_weight
from affectlab.errors import DatasetError

__all__ = [
    "LabelStats",
    "SplitComparison",
    "au_positive_weights",
    "au_prevalence",
    "compare_splits",
    "expression_class_weights",
    "expression_counts",
    "expression_matrix",
    "label_cardinality",
    "missing_labels",
    "summarize",
    "va_by_class",
]

_AU_COLUMN = re.compile(r"^AU\d+$")
_VA = ("valence", "arousal")


# --------------------------------------------------------------------------- input handling


def _frame_and_space(data, label_space: LabelSpace | None = None) -> tuple[pd.DataFrame, LabelSpace | None]:
    """(labels DataFrame, label space or None) from a DataFrame or a dataset."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(getattr(data, "labels", None), pd.DataFrame):
        frame = data.labels
        if label_space is None and isinstance(getattr(data, "label_space", None), LabelSpace):
            label_space = data.label_space
    else:
        raise DatasetError(
            f"expected a label DataFrame or a dataset with .labels, got {type(data).__name__}"
        )
    if label_space is not None and not isinstance(label_space, LabelSpace):
        raise DatasetError(f"label_space must be a LabelSpace, got {type(label_space).__name__}")
    return frame, label_space


def _classes(frame: pd.DataFrame, space: LabelSpace | None, classes: Sequence[str] | None) -> list[str]:
    """Class order: given, else the label space's, else the canonical order of those present."""
    if classes is not None:
        return [str(c) for c in classes]
    if space is not None and space.expressions:
        return list(space.expressions)
    if "expression" not in frame.columns:
        return []
    present = [str(v) for v in frame["expression"].dropna().unique()]
    known = [c for c in ALL_EXPRESSIONS if c in present]
    return known + sorted(set(present) - set(known))


def _is_multilabel(frame: pd.DataFrame, space: LabelSpace | None, multilabel: bool | None) -> bool:
    if multilabel is not None:
        return bool(multilabel)
    return bool(space is not None and space.multilabel)


def _aus(frame: pd.DataFrame, space: LabelSpace | None, aus: Sequence[str] | None) -> list[str]:
    if aus is not None:
        names = [au_name(a) for a in aus]
    elif space is not None and space.aus:
        names = list(space.aus)
    else:
        names = sort_aus(c for c in frame.columns if isinstance(c, str) and _AU_COLUMN.match(c))
    absent = [a for a in names if a not in frame.columns]
    if absent:
        raise DatasetError(f"label table has no column(s) {absent}; AU columns present: "
                           f"{[c for c in frame.columns if isinstance(c, str) and _AU_COLUMN.match(c)]}")
    return names


def _au_matrix(frame: pd.DataFrame, aus: Sequence[str]) -> np.ndarray:
    """float [N, K] of 1 / 0 / -1 (NaN read as missing)."""
    if not aus:
        return np.zeros((len(frame), 0))
    values = frame[list(aus)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.where(np.isnan(values), float(MISSING_AU), values)
    bad = ~np.isin(values, (0.0, 1.0, float(MISSING_AU)))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(f"AU column {aus[c]!r} row {r} holds {values[r, c]:g}; expected 1, 0 or -1 (missing)")
    return values


def _va_values(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for col in _VA:
        if col in frame.columns:
            out[col] = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[col] = np.full(len(frame), np.nan)
    return out


def expression_matrix(data, classes: Sequence[str] | None = None, *, label_space: LabelSpace | None = None) -> np.ndarray:
    """Multi-label expressions as float [N, C] of 1 / 0 / -1 (missing), in ``classes`` order.

    The multi-label table has one column per category (EMOTIC's ``Affection`` ...).
    """
    frame, space = _frame_and_space(data, label_space)
    cls = _classes(frame, space, classes)
    absent = [c for c in cls if c not in frame.columns]
    if absent:
        raise DatasetError(f"multi-label table lacks category column(s) {absent}")
    return _au_matrix(frame, cls) if cls else np.zeros((len(frame), 0))


def _expression_names(frame: pd.DataFrame) -> pd.Series:
    if "expression" not in frame.columns:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame["expression"].astype(object).where(frame["expression"].notna(), None)


# --------------------------------------------------------------------------- single statistics


def expression_counts(
    data,
    classes: Sequence[str] | None = None,
    *,
    multilabel: bool | None = None,
    label_space: LabelSpace | None = None,
) -> pd.Series:
    """Samples per expression class (multi-label: positives per category).

    Parameters
    ----------
    data : DataFrame or dataset
        Canonical label table.
    classes : sequence of str, optional
        Class order (default: the label space's, else the canonical order of the classes
        present). Classes without samples count 0; present classes missing from
        ``classes`` are appended, so nothing is silently lost.
    multilabel : bool, optional
        Default: the label space's flag (False for a bare DataFrame).

    Returns
    -------
    Series of int named ``count``, indexed by class name. Missing labels are not counted
    (see :func:`missing_labels`).
    """
    frame, space = _frame_and_space(data, label_space)
    cls = _classes(frame, space, classes)
    if _is_multilabel(frame, space, multilabel):
        mat = expression_matrix(frame, cls)
        return pd.Series((mat == 1).sum(axis=0).astype(np.int64), index=pd.Index(cls, name="expression"), name="count")
    names = _expression_names(frame).dropna().astype(str)
    extra = sorted(set(names.unique()) - set(cls))
    counts = names.value_counts().reindex(cls + extra, fill_value=0).astype(np.int64)
    counts.index.name = "expression"
    counts.name = "count"
    return counts


def missing_labels(
    data,
    *,
    aus: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    multilabel: bool | None = None,
    label_space: LabelSpace | None = None,
) -> pd.DataFrame:
    """Labelled and missing samples per descriptor.

    Rows: ``expression`` (when the table has expressions), ``valence``, ``arousal``
    (when any is labelled) and each ``AU<k>``. Columns ``labelled``, ``missing``,
    ``missing_share``. A multi-label sample is missing when all its categories are -1.
    """
    frame, space = _frame_and_space(data, label_space)
    n = len(frame)
    rows: dict[str, int] = {}
    cls = _classes(frame, space, classes)
    if _is_multilabel(frame, space, multilabel):
        if cls:
            mat = expression_matrix(frame, cls)
            rows["expression"] = int((mat >= 0).any(axis=1).sum())
    elif "expression" in frame.columns:
        rows["expression"] = int(_expression_names(frame).notna().sum())
    va = _va_values(frame)
    if any(np.isfinite(v).any() for v in va.values()) or (space is not None and space.va):
        for col in _VA:
            rows[col] = int(np.isfinite(va[col]).sum())
    names = _aus(frame, space, aus)
    if names:
        known = _au_matrix(frame, names) >= 0
        rows.update({a: int(k) for a, k in zip(names, known.sum(axis=0))})
    out = pd.DataFrame({"labelled": pd.Series(rows, dtype=np.int64)})
    out["missing"] = n - out["labelled"]
    out["missing_share"] = out["missing"] / n if n else np.nan
    out.index.name = "descriptor"
    return out


def va_by_class(
    data,
    classes: Sequence[str] | None = None,
    *,
    multilabel: bool | None = None,
    label_space: LabelSpace | None = None,
) -> pd.DataFrame:
    """Valence and arousal per expression class (CAGE figure 5).

    Returns
    -------
    DataFrame indexed by class name plus a final row ``all`` (every sample with VA,
    labelled with an expression or not), columns ``n`` and ``{valence,arousal}_{mean,
    std, median}``. ``std`` is the sample standard deviation (ddof=1, pandas'
    default). A sample contributes to a class only where that descriptor is labelled;
    ``n`` counts samples with both valence and arousal. In multi-label tables a sample
    counts for every category it is positive for. Classes without VA get NaN.
    """
    frame, space = _frame_and_space(data, label_space)
    cls = _classes(frame, space, classes)
    va = _va_values(frame)
    groups: dict[str, np.ndarray] = {}
    if _is_multilabel(frame, space, multilabel):
        mat = expression_matrix(frame, cls)
        for j, c in enumerate(cls):
            groups[c] = mat[:, j] == 1
    else:
        names = _expression_names(frame).to_numpy()
        for c in cls + sorted(set(v for v in names if v is not None) - set(cls)):
            groups[c] = names == c
    groups["all"] = np.ones(len(frame), dtype=bool)
    rows = []
    for c, mask in groups.items():
        row: dict[str, float] = {"n": int((mask & np.isfinite(va["valence"]) & np.isfinite(va["arousal"])).sum())}
        for col in _VA:
            s = pd.Series(va[col][mask]).dropna()
            row[f"{col}_mean"] = s.mean() if len(s) else np.nan
            row[f"{col}_std"] = s.std() if len(s) > 1 else np.nan
            row[f"{col}_median"] = s.median() if len(s) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, index=pd.Index(list(groups), name="expression"))
    out["n"] = out["n"].astype(np.int64)
    return out


def au_prevalence(data, aus: Sequence[str] | None = None, *, label_space: LabelSpace | None = None) -> pd.DataFrame:
    """Share of positive labels per AU among the samples where that AU is labelled.

    Returns
    -------
    DataFrame indexed by AU name, columns ``positives``, ``labelled``, ``prevalence``
    (positives / labelled; NaN when the AU is never labelled).
    """
    frame, space = _frame_and_space(data, label_space)
    names = _aus(frame, space, aus)
    mat = _au_matrix(frame, names)
    pos = (mat == 1).sum(axis=0).astype(np.int64)
    lab = (mat >= 0).sum(axis=0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        prev = np.where(lab > 0, pos / np.maximum(lab, 1), np.nan)
    return pd.DataFrame(
        {"positives": pos, "labelled": lab, "prevalence": prev}, index=pd.Index(names, name="au")
    )


def expression_class_weights(
    data, classes: Sequence[str] | None = None, *, label_space: LabelSpace | None = None
) -> pd.Series:
    """Inverse-frequency class weights of a single-label table (CAGE table 4).

    Computed by :func:`affectlab.data.weights.class_weights` from :func:`expression_counts`
    over ``classes``; a class without samples gets weight 0.
    """
    frame, space = _frame_and_space(data, label_space)
    counts = expression_counts(frame, _classes(frame, space, classes), multilabel=False)
    if counts.sum() == 0:
        return pd.Series(np.nan, index=counts.index, name="weight")
    with warnings.catch_warnings():
        # a class with no sample is already visible as a 0 in the counts
        warnings.simplefilter("ignore", RuntimeWarning)
        w = class_weights(counts.to_numpy(dtype=np.float64))
    return pd.Series(w.numpy().astype(np.float64), index=counts.index, name="weight")


def au_positive_weights(data, aus: Sequence[str] | None = None, *, label_space: LabelSpace | None = None) -> pd.Series:
    """AU positive weights, negatives / positives (SMM-EmotionNet eq. 4), via :func:`affectlab.data.weights.au_pos_weight`."""
    frame, space = _frame_and_space(data, label_space)
    names = _aus(frame, space, aus)
    if not names:
        return pd.Series([], dtype=np.float64, name="pos_weight")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w = au_pos_weight(_au_matrix(frame, names))
    return pd.Series(w.numpy().astype(np.float64), index=pd.Index(names, name="au"), name="pos_weight")


def label_cardinality(
    data,
    classes: Sequence[str] | None = None,
    *,
    multilabel: bool | None = None,
    label_space: LabelSpace | None = None,
) -> pd.Series:
    """Samples per number of positive labels, for multi-label tables (CAGE figure 8).

    Returns
    -------
    Series indexed by the number of positive categories (0 .. max), counting the samples
    with any category labelled. Single-label tables give one entry at 1.
    """
    frame, space = _frame_and_space(data, label_space)
    cls = _classes(frame, space, classes)
    if _is_multilabel(frame, space, multilabel):
        mat = expression_matrix(frame, cls)
        known = (mat >= 0).any(axis=1)
        k = (mat[known] == 1).sum(axis=1).astype(np.int64)
        counts = np.bincount(k) if len(k) else np.zeros(1, dtype=np.int64)
    else:
        counts = np.array([0, int(_expression_names(frame).notna().sum())], dtype=np.int64)
    return pd.Series(counts.astype(np.int64), index=pd.RangeIndex(len(counts), name="labels_per_sample"), name="count")


# --------------------------------------------------------------------------- summaries


@dataclass
class LabelStats:
    """Every statistic of one label table (see :func:`summarize`)."""

    n: int
    label_space: LabelSpace
    counts: pd.Series
    missing: pd.DataFrame
    va: pd.DataFrame | None = None
    au: pd.DataFrame | None = None
    class_weights: pd.Series | None = None
    au_pos_weights: pd.Series | None = None
    cardinality: pd.Series | None = None
    extras: dict = field(default_factory=dict)

    @property
    def has_va(self) -> bool:
        if self.va is None:
            return False
        row = self.va.loc["all"]
        return bool(np.isfinite(row["valence_mean"]) or np.isfinite(row["arousal_mean"]))

    def to_dict(self) -> dict:
        """JSON-friendly nested dict (tables as {row: {column: value}})."""

        def table(obj):
            if obj is None:
                return None
            return obj.to_dict() if isinstance(obj, pd.Series) else obj.to_dict(orient="index")

        return {
            "n": self.n,
            "label_space": self.label_space.to_dict(),
            "counts": table(self.counts),
            "missing": table(self.missing),
            "va": table(self.va),
            "au": table(self.au),
            "class_weights": table(self.class_weights),
            "au_pos_weights": table(self.au_pos_weights),
            "cardinality": table(self.cardinality),
        }


def summarize(data, label_space: LabelSpace | None = None) -> LabelStats:
    """All statistics of a label table: counts, missing labels, VA per class, AU prevalence, weights.

    Parameters
    ----------
    data : DataFrame or dataset
        Canonical label table, or a dataset (its ``.label_space`` is used).
    label_space : LabelSpace, optional
        Overrides the dataset's; default for a bare DataFrame: inferred from its columns.

    Returns
    -------
    LabelStats
    """
    frame, space = _frame_and_space(data, label_space)
    if space is None:
        from affectlab.data.labeled import infer_label_space

        space = infer_label_space(frame)
    classes = list(space.expressions)
    multilabel = space.multilabel
    stats = LabelStats(
        n=len(frame),
        label_space=space,
        counts=expression_counts(frame, classes, multilabel=multilabel),
        missing=missing_labels(frame, aus=space.aus, classes=classes, multilabel=multilabel),
    )
    va = _va_values(frame)
    if any(np.isfinite(v).any() for v in va.values()):
        stats.va = va_by_class(frame, classes, multilabel=multilabel)
    if space.aus:
        stats.au = au_prevalence(frame, space.aus)
        stats.au_pos_weights = au_positive_weights(frame, space.aus)
    if len(stats.counts) and stats.counts.sum() > 0:
        if multilabel:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                w = multilabel_pos_weight(expression_matrix(frame, classes))
            stats.class_weights = pd.Series(w.numpy().astype(np.float64), index=pd.Index(classes, name="expression"),
                                            name="pos_weight")
            stats.cardinality = label_cardinality(frame, classes, multilabel=True)
        else:
            stats.class_weights = expression_class_weights(frame, list(stats.counts.index))
    return stats


@dataclass
class SplitComparison:
    """Train vs validation (CAGE figure 6 and section 3): see :func:`compare_splits`."""

    classes: pd.DataFrame
    va: pd.DataFrame | None = None
    au: pd.DataFrame | None = None
    cardinality: pd.DataFrame | None = None
    names: tuple[str, str] = ("train", "validation")


def compare_splits(
    train,
    validation,
    *,
    label_space: LabelSpace | None = None,
    names: tuple[str, str] = ("train", "validation"),
) -> SplitComparison:
    """Compare two splits: class shares, VA distribution, AU prevalence, label cardinality.

    Parameters
    ----------
    train, validation : DataFrame or dataset
    label_space : LabelSpace, optional
        Default: the first split's (dataset) or the union of both tables' classes and AUs.
    names : (str, str)
        Column prefixes.

    Returns
    -------
    SplitComparison
        ``classes``: per class ``{a}_count, {a}_share, {b}_count, {b}_share`` and
        ``share_diff`` (b - a); shares are of the labelled samples (multi-label: of the
        samples with any category labelled, so they need not sum to 1).
        ``va`` (when both have VA): rows ``valence``, ``arousal``; columns
        ``{a}_mean, {b}_mean, {a}_median, {b}_median, {a}_std, {b}_std, {a}_positive,
        {b}_positive`` (share of labelled values > 0, the imbalance CAGE notes).
        ``au`` (AUs both carry): prevalence in each and the difference.
        ``cardinality`` (multi-label): share of samples per number of labels.
    """
    a, b = names
    fa, sa = _frame_and_space(train, label_space)
    fb, sb = _frame_and_space(validation, label_space)
    if sa is None and sb is None:
        from affectlab.data.labeled import infer_label_space

        ia, ib = infer_label_space(fa), infer_label_space(fb)
        present = set(ia.expressions) | set(ib.expressions)
        sa = LabelSpace(
            expressions=tuple(c for c in ALL_EXPRESSIONS if c in present) + tuple(sorted(present - set(ALL_EXPRESSIONS))),
            aus=tuple(sort_aus(set(ia.aus) | set(ib.aus))),
            va=ia.va or ib.va,
        )
    space = sa if sa is not None else sb
    classes = list(space.expressions)
    multilabel = space.multilabel
    ca = expression_counts(fa, classes, multilabel=multilabel)
    cb = expression_counts(fb, classes, multilabel=multilabel)
    index = list(dict.fromkeys(list(ca.index) + list(cb.index)))
    ca, cb = ca.reindex(index, fill_value=0), cb.reindex(index, fill_value=0)
    if multilabel:
        na = int((expression_matrix(fa, classes) >= 0).any(axis=1).sum())
        nb = int((expression_matrix(fb, classes) >= 0).any(axis=1).sum())
    else:
        na, nb = int(ca.sum()), int(cb.sum())
    cls = pd.DataFrame(
        {
            f"{a}_count": ca,
            f"{a}_share": ca / na if na else np.nan,
            f"{b}_count": cb,
            f"{b}_share": cb / nb if nb else np.nan,
        }
    )
    cls["share_diff"] = cls[f"{b}_share"] - cls[f"{a}_share"]
    out = SplitComparison(classes=cls, names=(a, b))

    va_a, va_b = _va_values(fa), _va_values(fb)
    if any(np.isfinite(v).any() for v in va_a.values()) and any(np.isfinite(v).any() for v in va_b.values()):
        rows = {}
        for col in _VA:
            row = {}
            for prefix, values in ((a, va_a[col]), (b, va_b[col])):
                s = pd.Series(values).dropna()
                row[f"{prefix}_n"] = len(s)
                row[f"{prefix}_mean"] = s.mean() if len(s) else np.nan
                row[f"{prefix}_median"] = s.median() if len(s) else np.nan
                row[f"{prefix}_std"] = s.std() if len(s) > 1 else np.nan
                row[f"{prefix}_positive"] = float((s > 0).mean()) if len(s) else np.nan
            rows[col] = row
        out.va = pd.DataFrame.from_dict(rows, orient="index")
        out.va.index.name = "descriptor"

    aus_a = set(_aus(fa, sa if sa is not None and sa.aus else None, None))
    aus_b = set(_aus(fb, sb if sb is not None and sb.aus else None, None))
    shared = sort_aus(aus_a & aus_b)
    if shared:
        pa, pb = au_prevalence(fa, shared), au_prevalence(fb, shared)
        out.au = pd.DataFrame({f"{a}_prevalence": pa["prevalence"], f"{b}_prevalence": pb["prevalence"]})
        out.au["prevalence_diff"] = out.au[f"{b}_prevalence"] - out.au[f"{a}_prevalence"]

    if multilabel:
        ka = label_cardinality(fa, classes, multilabel=True)
        kb = label_cardinality(fb, classes, multilabel=True)
        idx = pd.RangeIndex(max(len(ka), len(kb)), name="labels_per_sample")
        ka, kb = ka.reindex(idx, fill_value=0), kb.reindex(idx, fill_value=0)
        out.cardinality = pd.DataFrame(
            {
                f"{a}_count": ka,
                f"{a}_share": ka / max(int(ka.sum()), 1),
                f"{b}_count": kb,
                f"{b}_share": kb / max(int(kb.sum()), 1),
            }
        )
    return out
