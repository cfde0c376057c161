"""The one label schema every reader, model, metric and table speaks.

Canonical forms
---------------
* Expressions: the names of :data:`EXPRESSIONS` (AffectNet order 0-7), plus ``other``
  for ABAW. Every dataset's native codes are mapped *by name* through
  :data:`NATIVE_EXPRESSIONS`.
* Action units: ``AU<k>`` with no leading zeros (``AU1``, ``AU12``); :func:`au_name`
  turns ``"au01"``, ``12`` or ``"AU 12"`` into that form.
* Valence and arousal: floats in [-1, 1]; :func:`scale_va` maps native ranges and
  missing codes (AffectNet -2, Aff-Wild2 -5) to NaN.
* Missing labels: expression index -1, valence/arousal NaN, AU -1
  (:data:`MISSING_EXPR`, :data:`MISSING_AU`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.errors import LabelError

MISSING_EXPR = -1
MISSING_AU = -1

#: Canonical expression order (AffectNet 0-7).
EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)
#: ABAW adds ``other`` after the eight basic classes.
EXPRESSIONS_WITH_OTHER: tuple[str, ...] = EXPRESSIONS + ("other",)
ALL_EXPRESSIONS = EXPRESSIONS_WITH_OTHER

#: Spellings seen in the wild, mapped to the canonical names.
EXPRESSION_ALIASES: dict[str, str] = {
    "neutral": "neutral",
    "neutrality": "neutral",
    "happy": "happiness",
    "happiness": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "sadness": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "anger": "anger",
    "angry": "anger",
    "contempt": "contempt",
    "contemptuous": "contempt",
    "other": "other",
}

#: Native code -> canonical name, per dataset. Codes absent here are unknown
#: (an error) unless listed in :data:`DROPPED_EXPRESSION_CODES`.
NATIVE_EXPRESSIONS: dict[str, dict[int, str]] = {
    "affectnet8": dict(enumerate(EXPRESSIONS)),
    "affectnet7": dict(enumerate(EXPRESSIONS[:7])),
    "rafdb": {
        1: "surprise",
        2: "fear",
        3: "disgust",
        4: "happiness",
        5: "sadness",
        6: "anger",
        7: "neutral",
    },
    "fer2013": {
        0: "anger",
        1: "disgust",
        2: "fear",
        3: "happiness",
        4: "sadness",
        5: "surprise",
        6: "neutral",
    },
    "abaw": {
        0: "neutral",
        1: "anger",
        2: "disgust",
        3: "fear",
        4: "happiness",
        5: "sadness",
        6: "surprise",
        7: "other",
    },
    # CK+ has no neutral class in the emotion-labelled frames (0 is neutral in the
    # original numbering but never appears in CK+48); numbering as in Emotion/*.txt.
    "ckplus": {
        1: "anger",
        2: "contempt",
        3: "disgust",
        4: "fear",
        5: "happiness",
        6: "sadness",
        7: "surprise",
    },
}
NATIVE_EXPRESSIONS["affectnet"] = NATIVE_EXPRESSIONS["affectnet8"]

#: Codes that are valid in a dataset but carry no usable expression (dropped rows or
#: missing labels, not errors).
DROPPED_EXPRESSION_CODES: dict[str, dict[int, str]] = {
    "affectnet8": {8: "None", 9: "Uncertain", 10: "No-Face"},
    "affectnet7": {7: "contempt (dropped in AffectNet-7)", 8: "None", 9: "Uncertain", 10: "No-Face"},
    "affectnet": {8: "None", 9: "Uncertain", 10: "No-Face"},
    "abaw": {-1: "missing"},
}

#: The 26 EMOTIC categories, in the order of the EMOTIC annotations.
EMOTIC_CATEGORIES: tuple[str, ...] = (
    "Affection",
    "Anger",
    "Annoyance",
    "Anticipation",
    "Aversion",
    "Confidence",
    "Disapproval",
    "Disconnection",
    "Disquietment",
    "Doubt/Confusion",
    "Embarrassment",
    "Engagement",
    "Esteem",
    "Excitement",
    "Fatigue",
    "Fear",
    "Happiness",
    "Pain",
    "Peace",
    "Pleasure",
    "Sadness",
    "Sensitivity",
    "Suffering",
    "Surprise",
    "Sympathy",
    "Yearning",
)


def _aus(*numbers: int) -> tuple[str, ...]:
    return tuple(f"AU{n}" for n in numbers)


#: AU sets of the standard datasets, canonical names in dataset order.
AU_SETS: dict[str, tuple[str, ...]] = {
    "disfa12": _aus(1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26),
    "disfa8": _aus(1, 2, 4, 6, 9, 12, 25, 26),
    "abaw12": _aus(1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26),
    "bp4d12": _aus(1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "emotionet11": _aus(1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26),
    "ckplus23": _aus(1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27),
    # What `affectlab synth` renders (the EMFACS prototypes need these).
    "synth": _aus(1, 2, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17, 20, 23, 25, 26),
}
AU_SETS["disfa"] = AU_SETS["disfa12"]
AU_SETS["abaw"] = AU_SETS["abaw12"]
AU_SETS["bp4d"] = AU_SETS["bp4d12"]
AU_SETS["emotionet"] = AU_SETS["emotionet11"]
AU_SETS["ckplus"] = AU_SETS["ckplus23"]

#: Value that means "missing" in each dataset's native VA or expression encoding.
MISSING_CODES: dict[str, dict[str, float]] = {
    "affectnet": {"valence": -2.0, "arousal": -2.0},
    "abaw": {"valence": -5.0, "arousal": -5.0, "expression": -1, "au": -1},
    "emotic": {},
    "afewva": {},
}

#: Native VA range and the affine map to [-1, 1]: (low, high, scale, offset) so that
#: canonical = (native - offset) / scale.
VA_SCALES: dict[str, tuple[float, float, float, float]] = {
    "canonical": (-1.0, 1.0, 1.0, 0.0),
    "affectnet": (-1.0, 1.0, 1.0, 0.0),
    "abaw": (-1.0, 1.0, 1.0, 0.0),
    "emotic": (1.0, 10.0, 4.5, 5.5),
    "afewva": (-10.0, 10.0, 10.0, 0.0),
}

_AU_RE = re.compile(r"^\s*au[\s_-]*0*(\d+)\s*$", re.IGNORECASE)


def au_name(value: str | int) -> str:
    """Canonical AU name (``AU12``) for ``"au12"``, ``"AU012"``, ``"AU 12"`` or ``12``.

    Raises
    ------
    LabelError
        If ``value`` does not name an action unit.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value <= 0:
            raise LabelError(f"AU number must be positive, got {value!r}", value=value)
        return f"AU{int(value)}"
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) > 0:
            return f"AU{int(text)}"
        m = _AU_RE.match(text)
        if m and int(m.group(1)) > 0:
            return f"AU{int(m.group(1))}"
    raise LabelError(f"{value!r} is not an action unit name; expected e.g. 'AU12' or 12", value=value)


def au_number(name: str) -> int:
    """The integer of an AU name: ``au_number("AU12") == 12``."""
    return int(au_name(name)[2:])


def sort_aus(names: Iterable[str]) -> list[str]:
    """Canonical AU names sorted by AU number."""
    return sorted({au_name(n) for n in names}, key=au_number)


def au_set(name: str) -> tuple[str, ...]:
    """The AU names of a standard set (``disfa12``, ``abaw12``, ``ckplus23`` ...)."""
    key = name.lower().replace("-", "").replace("_", "").replace("+", "plus")
    if key not in AU_SETS:
        raise LabelError(
            f"unknown AU set {name!r}; known sets: {', '.join(sorted(AU_SETS))}", value=name
        )
    return AU_SETS[key]


def canonical_expression(name: str, dataset: str | None = None) -> str:
    """Map an expression spelling (``"Happy"``, ``"angry"``) to its canonical name.

    Raises
    ------
    LabelError
        If the name is unknown; the message names the value and the dataset.
    """
    key = str(name).strip().lower()
    if key in EXPRESSION_ALIASES:
        return EXPRESSION_ALIASES[key]
    where = f" in dataset {dataset!r}" if dataset else ""
    raise LabelError(
        f"unknown expression {name!r}{where}; expected one of {', '.join(ALL_EXPRESSIONS)} "
        f"(or an alias such as 'happy', 'angry', 'sad')",
        dataset=dataset,
        value=name,
    )


def expression_from_code(dataset: str, code) -> str | None:
    """Canonical expression of a dataset's native integer code.

    Returns ``None`` for codes the dataset defines as "no usable expression" (AffectNet
    8 None / 9 Uncertain / 10 No-Face, ABAW -1).

    Raises
    ------
    LabelError
        For a code the dataset does not define, or a dataset with no code table.
    """
    key = dataset.lower()
    if key not in NATIVE_EXPRESSIONS:
        raise LabelError(
            f"dataset {dataset!r} has no expression code table; known: "
            f"{', '.join(sorted(NATIVE_EXPRESSIONS))}",
            dataset=dataset,
            value=code,
        )
    try:
        as_float = float(code)
    except (TypeError, ValueError):
        raise LabelError(
            f"expression code {code!r} of dataset {dataset!r} is not an integer", dataset=dataset, value=code
        ) from None
    if not as_float.is_integer():
        raise LabelError(
            f"expression code {code!r} of dataset {dataset!r} is not an integer", dataset=dataset, value=code
        )
    icode = int(as_float)
    table = NATIVE_EXPRESSIONS[key]
    if icode in table:
        return table[icode]
    if icode in DROPPED_EXPRESSION_CODES.get(key, {}):
        return None
    valid = sorted(table) + sorted(DROPPED_EXPRESSION_CODES.get(key, {}))
    raise LabelError(
        f"expression code {icode} is out of range for dataset {dataset!r}; valid codes: "
        + ", ".join(f"{c}={table.get(c, DROPPED_EXPRESSION_CODES.get(key, {}).get(c))}" for c in valid),
        dataset=dataset,
        value=code,
    )


def native_expressions(dataset: str) -> tuple[str, ...]:
    """Canonical names of a dataset's classes, in its native code order."""
    key = dataset.lower()
    if key == "emotic":
        return EMOTIC_CATEGORIES
    if key not in NATIVE_EXPRESSIONS:
        raise LabelError(f"dataset {dataset!r} has no expression code table", dataset=dataset)
    table = NATIVE_EXPRESSIONS[key]
    return tuple(table[c] for c in sorted(table))


def scale_va(dataset: str, values, *, name: str = "valence/arousal") -> np.ndarray:
    """Map native valence/arousal values of a dataset to [-1, 1]; missing codes -> NaN.

    Parameters
    ----------
    dataset : str
        ``canonical``, ``affectnet``, ``abaw``, ``emotic`` (1..10) or ``afewva`` (-10..10).
    values : array-like
        Native values. NaN stays NaN.
    name : str
        What the values are, for error messages.

    Raises
    ------
    LabelError
        If a value is outside the dataset's native range (and not a missing code).
    """
    key = dataset.lower()
    if key not in VA_SCALES:
        raise LabelError(
            f"no valence/arousal scale for dataset {dataset!r}; known: {', '.join(sorted(VA_SCALES))}",
            dataset=dataset,
        )
    low, high, scale, offset = VA_SCALES[key]
    arr = np.asarray(values, dtype=np.float64).copy()
    for code in {v for k, v in MISSING_CODES.get(key, {}).items() if k in ("valence", "arousal")}:
        arr[arr == code] = np.nan
    finite = np.isfinite(arr)
    bad = finite & ((arr < low - 1e-9) | (arr > high + 1e-9))
    if bad.any():
        first = arr[bad].ravel()[0]
        raise LabelError(
            f"{name} value {first:g} is out of range for dataset {dataset!r}: expected "
            f"{low:g}..{high:g}" + _missing_hint(key) + f" ({int(bad.sum())} such values)",
            dataset=dataset,
            value=float(first),
        )
    arr[np.isinf(arr)] = np.nan
    return (arr - offset) / scale


def unscale_va(dataset: str, values) -> np.ndarray:
    """Inverse of :func:`scale_va`: canonical [-1, 1] back to a dataset's native range."""
    low, high, scale, offset = VA_SCALES[dataset.lower()]
    return np.asarray(values, dtype=np.float64) * scale + offset


def _missing_hint(key: str) -> str:
    codes = {v for k, v in MISSING_CODES.get(key, {}).items() if k in ("valence", "arousal")}
    return f" or the missing code {', '.join(f'{c:g}' for c in codes)}" if codes else ""


def check_va(values, *, source: str = "labels") -> np.ndarray:
    """Validate canonical valence/arousal (NaN allowed for missing, else within [-1, 1])."""
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    if np.isinf(arr).any():
        raise LabelError(f"{source}: valence/arousal contains infinite values")
    bad = finite & (np.abs(arr) > 1 + 1e-6)
    if bad.any():
        raise LabelError(
            f"{source}: valence/arousal value {arr[bad].ravel()[0]:g} is outside [-1, 1] "
            f"({int(bad.sum())} values); scale native ranges with affectlab.data.schema.scale_va",
            value=float(arr[bad].ravel()[0]),
        )
    return arr


@dataclass(frozen=True)
class LabelSpace:
    """The descriptors a dataset carries or a model predicts.

    Every model stores the label space it was trained on, so predictions can be named
    and compared with any dataset's labels by name.

    Attributes
    ----------
    expressions : tuple of str
        Class names in the model's output order (canonical, or EMOTIC categories).
    aus : tuple of str
        Canonical AU names in output order.
    va : bool
        Whether valence and arousal are present.
    multilabel : bool
        True when expressions are multi-label (EMOTIC).
    """

    expressions: tuple[str, ...] = ()
    aus: tuple[str, ...] = ()
    va: bool = False
    multilabel: bool = False
    extras: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "expressions", tuple(self.expressions))
        object.__setattr__(self, "aus", tuple(au_name(a) for a in self.aus))
        if len(set(self.expressions)) != len(self.expressions):
            raise LabelError(f"duplicate expression names in label space: {self.expressions}")
        if len(set(self.aus)) != len(self.aus):
            raise LabelError(f"duplicate AU names in label space: {self.aus}")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The descriptors present, among ``("expr", "va", "au")``."""
        out = []
        if self.expressions:
            out.append("expr")
        if self.va:
            out.append("va")
        if self.aus:
            out.append("au")
        return tuple(out)

    @property
    def num_expressions(self) -> int:
        return len(self.expressions)

    @property
    def num_aus(self) -> int:
        return len(self.aus)

    def expression_index(self, name: str) -> int:
        """Output index of an expression name (canonical or alias)."""
        if name in self.expressions:
            return self.expressions.index(name)
        canon = canonical_expression(name)
        if canon not in self.expressions:
            raise LabelError(f"expression {name!r} is not in this label space {list(self.expressions)}", value=name)
        return self.expressions.index(canon)

    def restrict(self, tasks: Sequence[str]) -> "LabelSpace":
        """The same label space keeping only ``tasks`` (subset of expr, va, au)."""
        unknown = set(tasks) - {"expr", "va", "au"}
        if unknown:
            raise LabelError(f"unknown task(s) {sorted(unknown)}; expected a subset of expr, va, au")
        return LabelSpace(
            expressions=self.expressions if "expr" in tasks else (),
            aus=self.aus if "au" in tasks else (),
            va=self.va and "va" in tasks,
            multilabel=self.multilabel and "expr" in tasks,
        )

    @classmethod
    def union(cls, spaces: Sequence["LabelSpace"], names: Sequence[str] | None = None) -> "LabelSpace":
        """The one rule for combining label spaces (several datasets, several splits).

        One space is returned as it is. Several: expressions in canonical order (first-seen
        order for multi-label sets, whose classes have no canonical order), AUs by number,
        VA when any space has it.

        Parameters
        ----------
        spaces : sequence of LabelSpace
        names : sequence of str, optional
            Where each space comes from, for the error message.

        Raises
        ------
        LabelError
            When single-label and multi-label expression spaces are mixed (a single-label
            class is not a multi-label one; nothing silently turns multi-label).
        """
        spaces = list(spaces)
        if not spaces:
            raise LabelError("no label space to combine")
        if len(spaces) == 1:
            return spaces[0]
        kinds = {sp.multilabel for sp in spaces if sp.expressions}
        if len(kinds) > 1:
            where = ""
            if names is not None:
                multi = [n for n, sp in zip(names, spaces) if sp.expressions and sp.multilabel]
                single = [n for n, sp in zip(names, spaces) if sp.expressions and not sp.multilabel]
                where = f" ({', '.join(multi)} multi-label; {', '.join(single)} single-label)"
            raise LabelError(
                f"cannot combine single-label and multi-label expression sets{where}; "
                "use one kind, or keep only the other descriptors with --tasks va,au"
            )
        multilabel = kinds == {True}
        exprs: list[str] = []
        for sp in spaces:
            exprs.extend(e for e in sp.expressions if e not in exprs)
        if not multilabel:
            exprs = [e for e in ALL_EXPRESSIONS if e in exprs] + [e for e in exprs if e not in ALL_EXPRESSIONS]
        return cls(
            expressions=tuple(exprs),
            aus=tuple(sort_aus(a for sp in spaces for a in sp.aus)),
            va=any(sp.va for sp in spaces),
            multilabel=multilabel,
        )

    def to_dict(self) -> dict:
        return {
            "expressions": list(self.expressions),
            "aus": list(self.aus),
            "va": bool(self.va),
            "multilabel": bool(self.multilabel),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "LabelSpace":
        return cls(
            expressions=tuple(d.get("expressions", ())),
            aus=tuple(d.get("aus", ())),
            va=bool(d.get("va", False)),
            multilabel=bool(d.get("multilabel", False)),
        )


def _is_missing(value) -> bool:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def expression_codes(names: Sequence, space: LabelSpace | Sequence[str], *, dataset: str | None = None) -> np.ndarray:
    """Indices of expression names in ``space`` (-1 for missing/NaN/empty)."""
    classes = space.expressions if isinstance(space, LabelSpace) else tuple(space)
    lookup = {c: i for i, c in enumerate(classes)}
    out = np.full(len(names), MISSING_EXPR, dtype=np.int64)
    for i, n in enumerate(names):
        if _is_missing(n):
            continue
        key = n if n in lookup else canonical_expression(n, dataset)
        if key not in lookup:
            where = f" of dataset {dataset!r}" if dataset else ""
            raise LabelError(
                f"expression {n!r}{where} is not one of the classes {list(classes)}", dataset=dataset, value=n
            )
        out[i] = lookup[key]
    return out
