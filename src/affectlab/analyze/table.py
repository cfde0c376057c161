"""The analysis table: one row per frame and face, as a pandas DataFrame subclass.

Columns: ``input, frame, time_s, face, x, y, w, h, score``, then
``expr_<name>`` probabilities and ``expression`` (argmax), ``valence``, ``arousal`` and
``AU<k>`` probabilities -- whichever the model predicts. A frame where no face was found
has one row with ``face = -1`` and empty (NaN) box and predictions, so timelines have
no silent gaps.

:class:`AffectTable` keeps the label names and model information through pandas
operations (the ``_metadata`` / ``_constructor`` pattern of py-feat's ``Fex``) and adds
accessors (:attr:`~AffectTable.expressions`, :attr:`~AffectTable.va`,
:attr:`~AffectTable.aus`, :attr:`~AffectTable.faces`) and plots
(:meth:`~AffectTable.plot_timeline`, :meth:`~AffectTable.plot_circumplex`,
:meth:`~AffectTable.plot_aus`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.errors import ConfigError

BASE_COLUMNS = ("input", "frame", "time_s", "face", "x", "y", "w", "h", "score")
BOX_COLUMNS = ("x", "y", "w", "h")

#: Where each canonical expression sits on the circumplex (valence, arousal), after
#: Russell (1980); used to label the circumplex plots.
CIRCUMPLEX_POSITIONS = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.35),
    "sadness": (-0.7, -0.4),
    "surprise": (0.25, 0.85),
    "fear": (-0.45, 0.8),
    "disgust": (-0.7, 0.3),
    "anger": (-0.55, 0.7),
    "contempt": (-0.55, 0.1),
}


def table_columns(expressions: Sequence[str] = (), va: bool = False, aus: Sequence[str] = ()) -> list[str]:
    """Column names of a table for a model predicting these descriptors."""
    cols = list(BASE_COLUMNS)
    if expressions:
        cols += [f"expr_{e}" for e in expressions] + ["expression"]
    if va:
        cols += ["valence", "arousal"]
    cols += list(aus)
    return cols


#: dtypes of method extra columns (``Method.extra_columns``, e.g. ``archetype``)
_EXTRA_DTYPES: dict[str, object] = {}


def register_column_dtypes(dtypes: Mapping[str, object]) -> None:
    """Declare the dtypes of extra columns a model adds (name -> pandas dtype)."""
    _EXTRA_DTYPES.update(dict(dtypes))


def column_dtypes(columns: Sequence[str]) -> dict[str, object]:
    """The dtype of each column (nullable integers for the box, so CSVs show integers)."""
    out: dict[str, object] = {}
    for c in columns:
        if c in _EXTRA_DTYPES:
            out[c] = _EXTRA_DTYPES[c]
        elif c in ("input", "expression"):
            out[c] = object
        elif c in ("frame", "face"):
            out[c] = np.int64
        elif c in BOX_COLUMNS:
            out[c] = "Int64"
        else:
            out[c] = np.float64
    return out


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """A zero-row DataFrame with the right columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in column_dtypes(columns).items()})


class AffectTable(pd.DataFrame):
    """Per-frame, per-face affect predictions with accessors and plots.

    Attributes
    ----------
    expression_names : list of str
        The model's expression classes (columns ``expr_<name>``).
    au_names : list of str
        The model's AUs (columns ``AU<k>``).
    model_info : dict
        What produced the table (model, detector, smoothing, failures).
    """

    _metadata = ["expression_names", "au_names", "model_info"]

    @property
    def _constructor(self):
        return AffectTable

    @classmethod
    def from_frame(cls, df: pd.DataFrame, expression_names=(), au_names=(), model_info=None) -> "AffectTable":
        """Wrap a plain DataFrame, inferring label names from the columns when not given."""
        t = cls(df)
        t.expression_names = list(expression_names) or [c[5:] for c in df.columns if c.startswith("expr_")]
        t.au_names = list(au_names) or [c for c in df.columns if c.startswith("AU") and c[2:].isdigit()]
        t.model_info = dict(model_info or {})
        return t

    @classmethod
    def read(cls, path) -> "AffectTable":
        """Load a table written by ``affectlab analyze --out`` (CSV, Parquet or JSON)."""
        from pathlib import Path

        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            from affectlab.analyze.writers import read_parquet_table

            df = read_parquet_table(p)  # with the parts of a killed run, if any
        elif suffix == ".json":
            df = pd.read_json(p, orient="records")
        else:
            raise ConfigError(f"{p}: unknown table format {suffix!r}; expected .csv, .parquet or .json")
        return cls.from_frame(df)

    def _meta(self, name, default):
        value = getattr(self, name, None)
        return default if value is None else value

    # -- accessors ----------------------------------------------------------------------
    def _absent(self, what: str) -> ConfigError:
        """The error of an accessor whose descriptor the model does not predict."""
        model = (self._meta("model_info", {}) or {}).get("model")
        by = f"the model {model!r}" if model else "the model that made it"
        predicts = [d for d, ok in (("expressions", any(str(c).startswith("expr_") for c in self.columns)),
                                    ("valence/arousal", "valence" in self.columns),
                                    ("action units", bool(self._meta("au_names", []))))
                    if ok]
        return ConfigError(
            f"this table has no {what} columns: {by} predicts "
            f"{', '.join(predicts) if predicts else 'none of expressions, valence/arousal, action units'}; "
            f"analyze with a model that predicts {what} (`affectlab models` lists them)"
        )

    @property
    def expressions(self) -> pd.DataFrame:
        """Expression probabilities, one column per class name (no ``expr_`` prefix).

        Raises
        ------
        ConfigError
            When the model predicts no expressions.
        """
        names = self._meta("expression_names", [])
        cols = [f"expr_{n}" for n in names if f"expr_{n}" in self.columns]
        if not cols:
            raise self._absent("expression")
        return pd.DataFrame(self[cols].to_numpy(dtype=np.float64), index=self.index, columns=[c[5:] for c in cols])

    @property
    def va(self) -> pd.DataFrame:
        """``valence`` and ``arousal`` columns.

        Raises
        ------
        ConfigError
            When the model has no valence/arousal head (the default ``affectlab-base``).
        """
        cols = [c for c in ("valence", "arousal") if c in self.columns]
        if not cols:
            raise self._absent("valence/arousal")
        return pd.DataFrame(self[cols].to_numpy(dtype=np.float64), index=self.index, columns=cols)

    @property
    def aus(self) -> pd.DataFrame:
        """AU probabilities, one column per AU.

        Raises
        ------
        ConfigError
            When the model predicts no action units.
        """
        cols = [c for c in self._meta("au_names", []) if c in self.columns]
        if not cols:
            raise self._absent("action unit")
        return pd.DataFrame(self[cols].to_numpy(dtype=np.float64), index=self.index, columns=cols)

    @property
    def boxes(self) -> pd.DataFrame:
        """Face boxes ``x, y, w, h`` and detector ``score``."""
        return pd.DataFrame(self[[*BOX_COLUMNS, "score"]])

    @property
    def faces(self) -> "AffectTable":
        """Only the rows with a detected face (``face >= 0``)."""
        return self[self["face"] >= 0]

    @property
    def inputs(self) -> list[str]:
        """The analysed files, in order of appearance."""
        return list(dict.fromkeys(self["input"].tolist()))

    def face_ids(self, input: str | None = None) -> list[int]:
        """Face track ids (excluding -1) of one input (or of the only input)."""
        sub = self._select(input, None)
        return sorted(int(f) for f in sub["face"].unique() if f >= 0)

    def _select(self, input, face) -> "AffectTable":
        sub = self
        if input is None:
            ins = self.inputs
            if len(ins) > 1 and face is not None:
                raise ConfigError(f"the table holds {len(ins)} inputs; pass input= one of them to select a face")
        else:
            sub = sub[sub["input"] == str(input)]
            if sub.empty:
                raise ConfigError(f"no rows for input {input!r}; inputs: {self.inputs[:5]}")
        if face is not None:
            sub = sub[sub["face"] == int(face)]
        return sub

    def summary(self) -> pd.DataFrame:
        """Summary statistics per input and face.

        Columns: ``frames`` (rows), ``seconds`` (time covered), ``dominant`` expression
        (most frequent argmax) and its ``dominant_share``, ``mean_<expr>`` probabilities,
        ``valence_mean/std``, ``arousal_mean/std`` and ``mean_AU<k>`` probabilities.
        Frames without a face are counted per input as ``face = -1``.
        """
        rows = []
        for (inp, face), g in self.groupby(["input", "face"], sort=False):
            row = {"input": inp, "face": int(face), "frames": len(g),
                   "seconds": float(g["time_s"].max() - g["time_s"].min()) if len(g) else 0.0}
            if face >= 0:
                if "expression" in g.columns and g["expression"].notna().any():
                    counts = g["expression"].value_counts(normalize=True)
                    row["dominant"] = counts.index[0]
                    row["dominant_share"] = float(counts.iloc[0])
                for n in self._meta("expression_names", []):
                    row[f"mean_{n}"] = float(g[f"expr_{n}"].mean())
                for c in ("valence", "arousal"):
                    if c in g.columns:
                        row[f"{c}_mean"] = float(g[c].mean())
                        row[f"{c}_std"] = float(g[c].std(ddof=0))
                for a in self._meta("au_names", []):
                    row[f"mean_{a}"] = float(g[a].mean())
            rows.append(row)
        return pd.DataFrame(rows)

    # -- plots --------------------------------------------------------------------------
    def _time_axis(self, sub) -> tuple[np.ndarray, str]:
        t = sub["time_s"].to_numpy(dtype=np.float64)
        if np.nanmax(t, initial=0.0) > 0:
            return t, "time (s)"
        return sub["frame"].to_numpy(dtype=np.float64), "frame"

    def plot_timeline(self, input: str | None = None, face: int | None = None, ax=None):
        """Expression probabilities (and valence/arousal) over time for one face.

        Parameters
        ----------
        input : str, optional
            Which input; required when the table holds several.
        face : int, optional
            Face track id; default the face seen in most frames.
        ax : matplotlib Axes, optional

        Returns
        -------
        matplotlib Axes
        """
        import matplotlib.pyplot as plt

        sub = self._select(input, None)
        face = self._default_face(sub) if face is None else face
        sub = sub[sub["face"] == face].sort_values("time_s")
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 3.2))
        t, label = self._time_axis(sub)
        names = self._meta("expression_names", [])
        cmap = plt.get_cmap("tab10")
        for i, n in enumerate(names):
            ax.plot(t, sub[f"expr_{n}"].to_numpy(dtype=float), color=cmap(i % 10), lw=1.2, label=n)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(label)
        ax.set_ylabel("probability")
        if "valence" in sub.columns:
            ax2 = ax.twinx()
            ax2.plot(t, sub["valence"].to_numpy(dtype=float), "k-", lw=1.6, label="valence")
            ax2.plot(t, sub["arousal"].to_numpy(dtype=float), "k--", lw=1.6, label="arousal")
            ax2.set_ylim(-1.05, 1.05)
            ax2.set_ylabel("valence / arousal")
            ax2.legend(loc="upper right", fontsize=7)
        if names:
            ax.legend(loc="upper left", fontsize=7, ncol=min(4, len(names)))
        ax.set_title(f"face {face}" + (f" - {_short(sub['input'].iloc[0])}" if len(sub) else ""), fontsize=9)
        return ax

    def plot_circumplex(self, input: str | None = None, face: int | None = None, ax=None):
        """Valence/arousal trajectory on the circumplex (unit circle), coloured by time."""
        import matplotlib.pyplot as plt

        if "valence" not in self.columns:
            raise ConfigError("this table has no valence/arousal columns (the model does not predict VA)")
        sub = self._select(input, None)
        faces = self.face_ids(input) if face is None else [face]
        if ax is None:
            _, ax = plt.subplots(figsize=(4.2, 4.2))
        _draw_circumplex(ax)
        cmaps = ["viridis", "plasma", "cividis", "magma"]
        sc = None
        for k, f in enumerate(faces):
            g = sub[sub["face"] == f].sort_values("time_s")
            v, a = g["valence"].to_numpy(dtype=float), g["arousal"].to_numpy(dtype=float)
            if not len(v):
                continue
            ax.plot(v, a, "-", color="0.6", lw=0.6, zorder=1)
            sc = ax.scatter(v, a, c=np.arange(len(v)), cmap=cmaps[k % len(cmaps)], s=8, zorder=2, label=f"face {f}")
        if sc is not None:
            ax.legend(loc="lower right", fontsize=7)
            if len(faces) == 1:
                plt.colorbar(sc, ax=ax, fraction=0.046, pad=0.04, label="frame order")
        return ax

    def plot_aus(self, input: str | None = None, face: int | None = None, ax=None):
        """Heatmap of AU probabilities over time (AUs as rows) for one face."""
        import matplotlib.pyplot as plt

        aus = [a for a in self._meta("au_names", []) if a in self.columns]
        if not aus:
            raise ConfigError("this table has no AU columns (the model does not predict action units)")
        sub = self._select(input, None)
        face = self._default_face(sub) if face is None else face
        sub = sub[sub["face"] == face].sort_values("time_s")
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 0.25 * len(aus) + 1.2))
        t, label = self._time_axis(sub)
        data = sub[aus].to_numpy(dtype=float).T
        extent = (t.min(), t.max() if len(t) > 1 and t.max() > t.min() else t.min() + 1, len(aus) - 0.5, -0.5) if len(t) else None
        im = ax.imshow(data if data.size else np.zeros((len(aus), 1)), aspect="auto", interpolation="nearest",
                       cmap="magma", vmin=0, vmax=1, extent=extent)
        ax.set_yticks(range(len(aus)))
        ax.set_yticklabels(aus, fontsize=7)
        ax.set_xlabel(label)
        plt.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="probability")
        ax.set_title(f"action units, face {face}", fontsize=9)
        return ax

    def _default_face(self, sub) -> int:
        counts = sub.loc[sub["face"] >= 0, "face"].value_counts()
        if counts.empty:
            raise ConfigError("no face was detected in the selected rows")
        return int(counts.index[0])


def _short(path: str, n: int = 50) -> str:
    s = str(path)
    return s if len(s) <= n else "..." + s[-n + 3 :]


def _draw_circumplex(ax, labels: bool = True) -> None:
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(theta), np.sin(theta), color="0.3", lw=0.8)
    ax.axhline(0, color="0.7", lw=0.6)
    ax.axvline(0, color="0.7", lw=0.6)
    if labels:
        for name, (v, a) in CIRCUMPLEX_POSITIONS.items():
            ax.annotate(name, (v, a), fontsize=7, color="0.4", ha="center")
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
