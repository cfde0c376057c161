"""``affectlab data check``: validate a dataset, summarise its labels, plot its distributions.

:func:`check_dataset` loads one or two dataset specs through
:func:`affectlab.load_dataset` (so every reader's validation runs), records the images
that were missing and dropped (and, with ``decode=True``, those that cannot be
decoded), and computes :func:`affectlab.data.stats.summarize` for each and
:func:`affectlab.data.stats.compare_splits` for a pair (train, validation).
:func:`render_report` prints the result as rich tables; :func:`write_plots` writes the
figures of CAGE's dataset analysis (section 3) as PNGs.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from affectlab.data.stats import LabelStats, SplitComparison, compare_splits, expression_matrix, summarize

__all__ = ["CheckReport", "DatasetCheck", "check_dataset", "check_labels", "render_report", "write_plots"]

_MISSING_RE = re.compile(r"(\d+) of (\d+) images are missing")
_SHOW = 5


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found for one spec."""

    spec: str
    name: str
    labels: pd.DataFrame
    stats: LabelStats
    #: rows dropped at load because their image file does not exist (None: not checked)
    missing_images: int | None = 0
    #: rows in the annotation files before missing images were dropped
    annotated: int = 0
    #: images that exist but could not be decoded (None unless decode=True)
    unreadable: int | None = None
    unreadable_examples: list[str] = field(default_factory=list)
    #: warnings raised while loading (missing images, dropped rows ...)
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.stats.n


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: one :class:`DatasetCheck` per spec and the comparison."""

    datasets: list[DatasetCheck]
    comparison: SplitComparison | None = None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _load(spec: str, *, decode: bool, progress: bool, options: dict | None = None) -> DatasetCheck:
    from affectlab.data.datasets import load_dataset

    # The reader both warns and logs about missing images; the report shows the warning,
    # so keep Python's last-resort handler from printing the log record a second time.
    quiet = logging.NullHandler()
    logger = logging.getLogger("affectlab.data")
    logger.addHandler(quiet)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load_dataset(spec, **(options or {}))
    finally:
        logger.removeHandler(quiet)
    # a notice about a file shared by several splits comes once per split: show it once
    messages = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    missing = 0
    for m in messages:
        hit = _MISSING_RE.search(m)
        if hit:
            missing += int(hit.group(1))
    labels = ds.labels
    if options and options.get("check_files") is False:
        missing = None
    check = DatasetCheck(
        spec=str(spec),
        name=getattr(ds, "name", str(spec)),
        labels=labels,
        stats=summarize(ds),
        missing_images=missing,
        annotated=len(labels) + (missing or 0),
        warnings=messages,
    )
    if decode:
        check.unreadable, check.unreadable_examples = _decode_all(ds, progress=progress)
    return check


def _decode_all(ds, *, progress: bool) -> tuple[int, list[str]]:
    """Read every image once; count (and name the first) that cannot be decoded."""
    from rich.progress import Progress

    bad: list[int] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"decoding {ds.name}", total=len(ds))
        for i in range(len(ds)):
            if ds.read_rgb(i) is None:
                bad.append(i)
            bar.advance(task)
    paths = ds.labels["path"].astype(str)
    return len(bad), [paths.iloc[i] for i in bad[:_SHOW]]


def check_dataset(
    spec: str,
    spec2: str | None = None,
    *,
    plots: str | Path | None = None,
    decode: bool = False,
    progress: bool = True,
    options: dict | None = None,
) -> CheckReport:
    """Validate one dataset (or a train/validation pair) and summarise its labels.

    Parameters
    ----------
    spec : str
        Dataset spec for :func:`affectlab.load_dataset` (``FORMAT:PATH[:SPLIT]`` or a
        manifest path). With ``spec2`` this is the training split.
    spec2 : str, optional
        A second spec (the validation split) to compare with the first.
    plots : path, optional
        Folder for the PNG figures (created); see :func:`write_plots`.
    decode : bool
        Also decode every image and count the unreadable ones (slower: reads the data).
    progress : bool
        Show a progress bar while decoding.
    options : dict, optional
        Reader options passed to :func:`affectlab.load_dataset` for both specs
        (``{"variant": 7}``, ``{"columns": {"image": "path"}}`` ...).

    Returns
    -------
    CheckReport

    Raises
    ------
    AffectlabError
        Whatever the reader reports for a malformed dataset (file, line, expected form).
    """
    checks = [_load(spec, decode=decode, progress=progress, options=options)]
    if spec2 is not None:
        checks.append(_load(spec2, decode=decode, progress=progress, options=options))
    report = CheckReport(datasets=checks)
    if len(checks) == 2:
        report.comparison = compare_splits(checks[0].labels, checks[1].labels, label_space=_shared_space(checks))
    if plots is not None:
        report.plots, report.notes = write_plots(report, plots)
    return report


def check_labels(
    labels,
    labels2=None,
    *,
    label_space=None,
    names: Sequence[str] = ("labels", "labels2"),
    plots: str | Path | None = None,
) -> CheckReport:
    """:func:`check_dataset` for label tables already in memory (no files are read).

    Parameters
    ----------
    labels, labels2 : DataFrame or dataset
        Canonical label tables (the second, optional, is the validation split).
    label_space : LabelSpace, optional
        Label space of both tables (needed for multi-label tables given as DataFrames).
    names : (str, str)
        Names shown in the report.
    plots : path, optional
        Folder for the PNG figures.
    """
    from affectlab.data.stats import _frame_and_space

    checks = []
    for data, name in zip((labels, labels2), names):
        if data is None:
            continue
        frame, _ = _frame_and_space(data)
        stats = summarize(data, label_space)
        checks.append(DatasetCheck(spec=name, name=name, labels=frame, stats=stats, annotated=len(frame)))
    report = CheckReport(datasets=checks)
    if len(checks) == 2:
        report.comparison = compare_splits(checks[0].labels, checks[1].labels, label_space=_shared_space(checks))
    if plots is not None:
        report.plots, report.notes = write_plots(report, plots)
    return report


def _shared_space(checks: Sequence[DatasetCheck]):
    """The first split's label space extended by classes and AUs only the second has."""
    from affectlab.data.schema import LabelSpace, sort_aus

    a, b = checks[0].stats.label_space, checks[1].stats.label_space
    if a.multilabel != b.multilabel:
        from affectlab.errors import DatasetError

        raise DatasetError(
            f"cannot compare a {'multi' if a.multilabel else 'single'}-label dataset ({checks[0].name}) "
            f"with a {'multi' if b.multilabel else 'single'}-label one ({checks[1].name})"
        )
    shared_aus = [x for x in sort_aus(set(a.aus) & set(b.aus))]
    return LabelSpace(
        expressions=tuple(a.expressions) + tuple(c for c in b.expressions if c not in a.expressions),
        aus=tuple(shared_aus),
        va=a.va or b.va,
        multilabel=a.multilabel,
    )


# --------------------------------------------------------------------------- terminal


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):.{digits}f}"


def _pct(x) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{100 * float(x):.1f}%"


def render_report(report: CheckReport, console=None) -> None:
    """Print a :class:`CheckReport` as rich tables (stdout by default)."""
    from rich.console import Console

    console = console or Console()
    for check in report.datasets:
        _render_one(check, console)
    if report.comparison is not None:
        _render_comparison(report.comparison, [c.name for c in report.datasets], console)
    if report.plots:
        folder = report.plots[0].parent
        console.print(f"[bold]plots[/bold] ({len(report.plots)}) in {folder}: " + ", ".join(p.name for p in report.plots))
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def _render_one(check: DatasetCheck, console) -> None:
    from rich.table import Table

    s = check.stats
    space = s.label_space
    head = Table(title=f"{check.name}", show_header=False, title_justify="left", title_style="bold")
    head.add_row("samples", _fmt(s.n))
    head.add_row("tasks", ", ".join(space.tasks) or "none")
    if check.missing_images is None:
        head.add_row("images missing (dropped)", "not checked (check_files=false)")
    else:
        head.add_row("images missing (dropped)", f"{_fmt(check.missing_images)} of {_fmt(check.annotated)} annotated")
    if check.unreadable is not None:
        head.add_row("images unreadable", _fmt(check.unreadable)
                     + (f" (first: {', '.join(check.unreadable_examples)})" if check.unreadable_examples else ""))
    for col in ("subject", "video"):
        if col in check.labels.columns and check.labels[col].notna().any():
            head.add_row(f"{col}s", _fmt(int(check.labels[col].nunique())))
    for desc in ("expression", "valence", "arousal"):
        if desc in s.missing.index:
            row = s.missing.loc[desc]
            head.add_row(f"{desc} missing", f"{_fmt(int(row['missing']))} ({_pct(row['missing_share'])})")
    if s.au is not None:
        au_missing = s.missing.loc[[a for a in space.aus if a in s.missing.index], "missing"]
        head.add_row("AU labels missing", f"{_fmt(int(au_missing.sum()))} of {_fmt(s.n * len(space.aus))} entries")
    console.print(head)
    for w in check.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)

    if len(s.counts):
        multilabel = space.multilabel
        t = Table(title="expressions" + (" (multi-label: positives per category)" if multilabel else ""),
                  title_justify="left")
        t.add_column("class")
        t.add_column("count", justify="right")
        t.add_column("share", justify="right")
        t.add_column("pos. weight" if multilabel else "CE weight", justify="right")
        denom = int(s.missing.loc["expression", "labelled"]) if "expression" in s.missing.index else int(s.counts.sum())
        for cls, count in s.counts.items():
            t.add_row(str(cls), _fmt(int(count)), _pct(count / denom if denom else np.nan),
                      _fmt(s.class_weights.get(cls) if s.class_weights is not None else None, 4))
        console.print(t)
    if s.has_va:
        t = Table(title="valence / arousal per class", title_justify="left")
        t.add_column("class")
        t.add_column("n", justify="right")
        for col in ("valence", "arousal"):
            for k in ("mean", "std", "median"):
                t.add_column(f"{col[0].upper()} {k}", justify="right")
        for cls, r in s.va.iterrows():
            if cls != "all" and r["n"] == 0 and not np.isfinite(r["valence_mean"]):
                continue
            t.add_row(
                "all (with VA)" if cls == "all" else str(cls),
                _fmt(int(r["n"])),
                *(_fmt(r[f"{col}_{k}"], 2) for col in ("valence", "arousal") for k in ("mean", "std", "median")),
                style="bold" if cls == "all" else None,
            )
        console.print(t)

    if s.cardinality is not None:
        t = Table(title="labels per sample", title_justify="left")
        t.add_column("labels", justify="right")
        t.add_column("samples", justify="right")
        t.add_column("share", justify="right")
        total = int(s.cardinality.sum())
        for k, v in s.cardinality.items():
            t.add_row(str(k), _fmt(int(v)), _pct(v / total if total else np.nan))
        console.print(t)

    if s.au is not None and len(s.au):
        t = Table(title="action units", title_justify="left")
        for c in ("AU", "positives", "labelled", "missing", "prevalence", "pos. weight"):
            t.add_column(c, justify="right" if c != "AU" else "left")
        for au, row in s.au.iterrows():
            t.add_row(au, _fmt(int(row["positives"])), _fmt(int(row["labelled"])),
                      _fmt(int(s.n - row["labelled"])), _pct(row["prevalence"]),
                      _fmt(s.au_pos_weights.get(au) if s.au_pos_weights is not None else None, 2))
        console.print(t)


def _render_comparison(cmp: SplitComparison, names: Sequence[str], console) -> None:
    from rich.table import Table

    a, b = cmp.names
    title = f"{a} ({names[0]}) vs {b} ({names[1]})"
    console.print(f"[bold]{title}[/bold]", highlight=False)
    if len(cmp.classes):
        t = Table(title="class share", title_justify="left")
        for c in ("class", f"{a}\ncount", f"{a}\nshare", f"{b}\ncount", f"{b}\nshare", "difference"):
            t.add_column(c, justify="left" if c == "class" else "right")
        for cls, r in cmp.classes.iterrows():
            diff = r["share_diff"]
            t.add_row(str(cls), _fmt(int(r[f"{a}_count"])), _pct(r[f"{a}_share"]), _fmt(int(r[f"{b}_count"])),
                      _pct(r[f"{b}_share"]), ("+" if np.isfinite(diff) and diff > 0 else "") + _pct(diff))
        console.print(t)
    if cmp.va is not None:
        t = Table(title="valence / arousal", title_justify="left")
        t.add_column("")
        for p in (a, b):
            for k, label in (("mean", "mean"), ("std", "std"), ("median", "median"), ("positive", "> 0")):
                t.add_column(f"{p}\n{label}", justify="right")
        for desc, r in cmp.va.iterrows():
            row = [desc]
            for p in (a, b):
                row += [_fmt(r[f"{p}_mean"], 2), _fmt(r[f"{p}_std"], 2), _fmt(r[f"{p}_median"], 2),
                        _pct(r[f"{p}_positive"])]
            t.add_row(*row)
        console.print(t)
    if cmp.au is not None:
        t = Table(title="AU prevalence", title_justify="left")
        for c in ("AU", a, b, "difference"):
            t.add_column(c, justify="left" if c == "AU" else "right")
        for au, r in cmp.au.iterrows():
            t.add_row(au, _pct(r[f"{a}_prevalence"]), _pct(r[f"{b}_prevalence"]), _pct(r["prevalence_diff"]))
        console.print(t)
    if cmp.cardinality is not None:
        t = Table(title="labels per sample", title_justify="left")
        for c in ("labels", f"{a} share", f"{b} share"):
            t.add_column(c, justify="right")
        for k, r in cmp.cardinality.iterrows():
            t.add_row(str(k), _pct(r[f"{a}_share"]), _pct(r[f"{b}_share"]))
        console.print(t)


# --------------------------------------------------------------------------- plots


def write_plots(report: CheckReport, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Write the dataset-analysis figures as PNGs into ``out_dir``.

    One set per dataset (prefixed ``train_`` / ``validation_`` when two are checked):
    ``class_distribution.png`` (CAGE figures 3 and 7), ``va_circumplex.png`` (2-D
    histogram on the circumplex, valence x, arousal y, unit circle, class means; figure
    4), ``va_per_class.png`` (box plots; figure 5), ``au_prevalence.png``,
    ``label_cardinality.png`` (multi-label; figure 8); and for a pair
    ``split_comparison.png`` (class shares, VA histograms and AU prevalence side by
    side; figure 6). A figure without data (no VA, no AUs) is skipped with a note.

    Returns
    -------
    (paths written, notes about skipped figures)
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    notes: list[str] = []
    prefixes = [""] if len(report.datasets) == 1 else [f"{n}_" for n in (report.comparison.names if report.comparison else ("a", "b"))]
    with plt.rc_context({"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False}):
        for check, prefix in zip(report.datasets, prefixes):
            p, n = _plots_for(check, out, prefix, plt)
            paths += p
            notes += n
        if report.comparison is not None:
            path = out / "split_comparison.png"
            _plot_comparison(report, path, plt)
            paths.append(path)
    return paths, notes


def _short(name: str, width: int = 40) -> str:
    """A dataset name short enough for a figure title: ``fmt:.../folder[:split]``."""
    if len(name) <= width:
        return name
    fmt, sep, rest = name.partition(":")
    if not sep:
        fmt, rest = "", name
    split = ""
    head, colon, tail = rest.rpartition(":")
    if colon and "/" not in tail and "\\" not in tail:
        rest, split = head, ":" + tail
    short = f"{fmt}{sep}.../{Path(rest).name}{split}"
    return short if len(short) < len(name) else name


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plots_for(check: DatasetCheck, out: Path, prefix: str, plt) -> tuple[list[Path], list[str]]:
    s, labels, name = check.stats, check.labels, _short(check.name)
    space = s.label_space
    paths, notes = [], []
    # class distribution
    if len(s.counts) and s.counts.sum() > 0:
        counts = s.counts.sort_values(ascending=False) if space.multilabel else s.counts
        denom = int(s.missing.loc["expression", "labelled"]) if "expression" in s.missing.index else int(counts.sum())
        share = counts / max(denom, 1)
        fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(counts) + 2), 4))
        bars = ax.bar(range(len(counts)), 100 * share.to_numpy(), color="tab:blue")
        for rect, c in zip(bars, counts.to_numpy()):
            ax.annotate(f"{int(c)}", (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(range(len(counts)), [str(c) for c in counts.index], rotation=45 if len(counts) > 6 else 0,
                      ha="right" if len(counts) > 6 else "center")
        ax.set_ylabel("relative occurrence (%)" if space.multilabel else "share of labelled samples (%)")
        ax.set_title(f"{name}\nexpression frequency (n={s.n})", fontsize=10)
        paths.append(_save(fig, out / f"{prefix}class_distribution.png", plt))
    else:
        notes.append(f"{name}: no expression labels, class_distribution.png skipped")

    # VA
    if s.has_va:
        v = pd.to_numeric(labels["valence"], errors="coerce").to_numpy(dtype=float)
        a = pd.to_numeric(labels["arousal"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(v) & np.isfinite(a)
        if ok.any():
            paths.append(_plot_circumplex(v[ok], a[ok], s, name, out / f"{prefix}va_circumplex.png", plt))
        else:
            notes.append(f"{name}: no sample has both valence and arousal, va_circumplex.png skipped")
        groups = _va_groups(labels, s)
        if groups:
            paths.append(_plot_va_boxes(groups, name, out / f"{prefix}va_per_class.png", plt))
        else:
            notes.append(f"{name}: no sample has both an expression and VA, va_per_class.png skipped")
    else:
        notes.append(f"{name}: no valence/arousal labels, va_circumplex.png and va_per_class.png skipped")

    # AUs
    if s.au is not None and s.au["labelled"].sum() > 0:
        prev = s.au["prevalence"]
        fig, ax = plt.subplots(figsize=(max(5, 0.4 * len(prev) + 2), 4))
        ax.bar(range(len(prev)), 100 * prev.fillna(0).to_numpy(), color="tab:green")
        ax.set_xticks(range(len(prev)), list(prev.index), rotation=45 if len(prev) > 10 else 0)
        ax.set_ylabel("prevalence: positives / labelled (%)")
        ax.set_title(f"{name}\naction unit prevalence", fontsize=10)
        paths.append(_save(fig, out / f"{prefix}au_prevalence.png", plt))
    else:
        notes.append(f"{name}: no action unit labels, au_prevalence.png skipped")

    if s.cardinality is not None:
        card = s.cardinality
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(card.index.to_numpy(), card.to_numpy(), color="tab:purple")
        ax.set_xticks(card.index.to_numpy())
        ax.set_xlabel("true labels per sample")
        ax.set_ylabel("samples")
        ax.set_title(f"{name}\nlabels per sample", fontsize=10)
        paths.append(_save(fig, out / f"{prefix}label_cardinality.png", plt))
    return paths, notes


def _va_groups(labels: pd.DataFrame, s: LabelStats) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """class -> (valence values, arousal values) for box plots (missing values dropped)."""
    v = pd.to_numeric(labels["valence"], errors="coerce").to_numpy(dtype=float)
    a = pd.to_numeric(labels["arousal"], errors="coerce").to_numpy(dtype=float)
    classes = list(s.counts.index)
    if s.label_space.multilabel:
        mat = expression_matrix(labels, classes)
        masks = {c: mat[:, j] == 1 for j, c in enumerate(classes)}
    elif "expression" in labels.columns:
        names = labels["expression"].astype(object).to_numpy()
        masks = {c: names == c for c in classes}
    else:
        masks = {}
    out = {}
    for c, m in masks.items():
        vv, aa = v[m], a[m]
        if np.isfinite(vv).any() or np.isfinite(aa).any():
            out[c] = (vv[np.isfinite(vv)], aa[np.isfinite(aa)])
    return out


def _circle(ax):
    t = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(t), np.sin(t), color="0.3", lw=1)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")


def _plot_circumplex(v, a, s: LabelStats, name: str, path: Path, plt) -> Path:
    from matplotlib.colors import LogNorm

    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    fig, ax = plt.subplots(figsize=(5.6, 5))
    bins = 40 if len(v) > 2000 else 24
    *_, image = ax.hist2d(v, a, bins=bins, range=[[-1, 1], [-1, 1]], cmap="viridis", norm=LogNorm(), cmin=1)
    fig.colorbar(image, ax=ax, label="samples (log)")
    _circle(ax)
    if s.va is not None:
        for cls, row in s.va.drop(index="all", errors="ignore").iterrows():
            if row["n"] > 0 and np.isfinite(row["valence_mean"]) and np.isfinite(row["arousal_mean"]):
                ax.plot(row["valence_mean"], row["arousal_mean"], "o", color="tab:red", mec="white", ms=5)
                ax.annotate(str(cls), (row["valence_mean"], row["arousal_mean"]), fontsize=8, color="black",
                            xytext=(4, 3), textcoords="offset points", path_effects=halo)
    ax.set_title(f"{name}\nvalence/arousal (n={len(v)}), class means in red", fontsize=9)
    return _save(fig, path, plt)


def _plot_va_boxes(groups, name: str, path: Path, plt) -> Path:
    classes = list(groups)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 0.9 * len(classes) + 3), 4), sharey=True)
    for ax, j, col in ((axes[0], 0, "valence"), (axes[1], 1, "arousal")):
        data = [groups[c][j] for c in classes]
        ax.boxplot(data, tick_labels=classes, showfliers=False)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(col, fontsize=10)
        ax.tick_params(axis="x", rotation=45 if len(classes) > 5 else 0)
    fig.suptitle(f"{name}: valence and arousal per class", fontsize=10)
    return _save(fig, path, plt)


def _plot_comparison(report: CheckReport, path: Path, plt) -> Path:
    cmp = report.comparison
    a, b = cmp.names
    panels = ["classes"] if len(cmp.classes) else []
    if cmp.va is not None:
        panels += ["valence", "arousal"]
    if cmp.au is not None:
        panels.append("au")
    if cmp.cardinality is not None:
        panels.append("cardinality")
    cols = min(3, max(len(panels), 1))
    rows = -(-max(len(panels), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.8 * rows + 0.4), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    width = 0.4
    for ax, panel in zip(axes, panels):
        if panel == "classes":
            x = np.arange(len(cmp.classes))
            ax.bar(x - width / 2, 100 * cmp.classes[f"{a}_share"].fillna(0), width, label=a)
            ax.bar(x + width / 2, 100 * cmp.classes[f"{b}_share"].fillna(0), width, label=b)
            ax.set_xticks(x, [str(c) for c in cmp.classes.index], rotation=45, ha="right")
            ax.set_ylabel("share (%)")
            ax.set_title("expression share", fontsize=10)
        elif panel in ("valence", "arousal"):
            bins = np.linspace(-1, 1, 21)
            for check, label in zip(report.datasets, (a, b)):
                vals = pd.to_numeric(check.labels[panel], errors="coerce").dropna().to_numpy()
                if len(vals):
                    ax.hist(vals, bins=bins, density=True, histtype="step", lw=1.5, label=label)
            ax.set_xlabel(panel)
            ax.set_ylabel("density")
            ax.set_title(f"{panel} distribution", fontsize=10)
        elif panel == "au":
            x = np.arange(len(cmp.au))
            ax.bar(x - width / 2, 100 * cmp.au[f"{a}_prevalence"].fillna(0), width, label=a)
            ax.bar(x + width / 2, 100 * cmp.au[f"{b}_prevalence"].fillna(0), width, label=b)
            ax.set_xticks(x, list(cmp.au.index), rotation=45)
            ax.set_ylabel("prevalence (%)")
            ax.set_title("AU prevalence", fontsize=10)
        else:
            x = cmp.cardinality.index.to_numpy()
            ax.bar(x - width / 2, 100 * cmp.cardinality[f"{a}_share"], width, label=a)
            ax.bar(x + width / 2, 100 * cmp.cardinality[f"{b}_share"], width, label=b)
            ax.set_xticks(x)
            ax.set_xlabel("true labels per sample")
            ax.set_ylabel("share (%)")
            ax.set_title("labels per sample", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"{a}: {_short(report.datasets[0].name)}   vs   {b}: {_short(report.datasets[1].name)}", fontsize=9)
    return _save(fig, path, plt)
