"""The seven evaluation tasks of the VA-aligned VAE (the VA-VAE report; ARCHITECTURE.md, Papers).

:func:`explain_vavae` (``affectlab explain --model RUN --data SPEC --out DIR
[--compare RUN2]`` for a ``vavae`` model) encodes a dataset with one VAE (or two: e.g.
the regularized and the vanilla one) and writes, tables as CSV and Markdown, figures
as PNG:

1. ``reconstruction.png`` / ``reconstruction.csv``: input images above their
   reconstructions, per model; the mean squared error per pixel (pixels in [0, 1]) and
   the PSNR.
2. ``alignment.csv``: MSE / MAE between the latent means and the ground truth (the
   paper compares ``z_v`` with V and ``z_a`` with A directly; a multi-dimensional part
   is read through its first coordinate), and the same for the projections
   ``Proj_v(z_v)``, ``Proj_a(z_a)`` of the regularized VAE. "combined" is the sum of
   the V and A values, as in the paper. A model trained on discrete labels
   (``va_loss="ce"``/``"bce"``: 21 bins of -10..10) also gets ``V_ce``, ``A_ce`` and
   ``combined_ce``: the cross-entropy of its projection's bin logits against the true
   bins (the paper's "Combined CE" for IMFDB / AFEW discrete).
3. ``expression.csv``: accuracy of a decision tree, an RBF SVM and a small MLP
   predicting the expression class from ``z_v``, ``z_a`` and both.
4. ``regression.csv``: explained variance and R^2 of Ridge, Lasso, SVR and an MLP
   regressing V from ``z_v`` and A from ``z_a``.
   With discrete labels (a model with ``va_loss`` ``ce``/``bce``, or ``discrete=True``)
   also ``regression_discrete.csv``: held-out accuracy of a decision tree, an RBF SVM
   and an MLP classifying the V bin from ``z_v`` and the A bin from ``z_a`` (the paper's
   "IMFDB/AFEW Disc" DT / SVM / MLP Acc), with the majority-bin ``chance``.
5. ``inverse_regression.csv``: the same for ``z_v -> A`` and ``z_a -> V`` (and
   ``inverse_regression_discrete.csv`` with discrete labels). Read it with
   ``va_correlation`` of the summary: when V and A are correlated in the data (as per
   class in synthetic faces), an aligned ``z_v`` also predicts A to the extent
   ``corr(V, A)^2``.
6. ``latent_by_class.png``: t-SNE of ``z_v`` and of ``z_a`` coloured by expression when
   they have more than one dimension; a 1-d latent has no neighbourhood structure for
   t-SNE to find, so it is drawn as a jittered strip per class instead (the figure says
   which).
7. ``circumplex.png``: the latent plane (``z_v`` on x, ``z_a`` on y) beside the ground
   truth VA, coloured by expression.

and ``vavae.html``, one page with every table and figure, the models side by side.

Tasks 3-5 are fitted on one part of the data and scored on the other, split by
identity (``subject`` column; random rows when the data has none), so the scores are
on identities the probes never saw. Inputs are standardised for the probes.
"""

from __future__ import annotations

import base64
import html
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from affectlab.errors import ConfigError, DatasetError, ModelError
from affectlab.interpret import register_explainer

#: What each task writes (name -> file), in the order of the paper.
TASK_FILES = {
    "task1_reconstruction": "reconstruction.png",
    "task2_alignment": "alignment.csv",
    "task3_expression": "expression.csv",
    "task4_regression": "regression.csv",
    "task5_inverse_regression": "inverse_regression.csv",
    "task6_latent_by_class": "latent_by_class.png",
    "task7_circumplex": "circumplex.png",
}


# ----------------------------------------------------------------------------- inputs
def _check_vae(method, where: str):
    from affectlab.methods.vavae import VAVAEMethod

    if not isinstance(method, VAVAEMethod):
        name = getattr(method, "name", type(method).__name__)
        raise ModelError(
            f"{where} is a {name!r} model, not a VA-VAE: the VAE explainer needs a run trained with --method vavae "
            "(presets vavae, vavae-vanilla, vavae-discrete)"
        )


def _model_label(method, info: Mapping[str, Any]) -> str:
    kind = "regularized" if method.config.regularize else "vanilla"
    run = Path(str(info.get("path", ""))).resolve()
    # a run directory's model.ckpt is named by its run; a stand-alone model file by its stem
    name = run.parent.name if run.name == "model.ckpt" else run.stem
    return f"{kind} ({name})" if name else kind


def _open_dataset(data, info: Mapping[str, Any]):
    from affectlab.data.datasets import load_dataset
    from affectlab.data.transforms import preprocessing_transform
    from affectlab.runtime.data import set_transform

    ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    if len(ds) == 0:
        raise DatasetError(f"{data}: no samples to explain")
    pre = info.get("preprocessing")
    if pre is not None:
        set_transform(ds, preprocessing_transform(pre, None, False))
    return ds


def encode_dataset(method, dataset, *, batch_size: int = 256, keep_images: int = 8, progress: bool = False) -> dict:
    """Encode a dataset with a VA-VAE.

    Parameters
    ----------
    method : VAVAEMethod
        The model (eval mode is set here).
    dataset : dataset
        Yields ``image`` (already transformed as the model expects), ``expr``, ``va``.
    batch_size : int
        Images per forward pass.
    keep_images : int
        How many inputs and reconstructions to keep for the grid.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``z_v``, ``z_a``, ``z_z`` (posterior means), ``proj`` [N, 2] or None, ``logits``
        [N, 2, 21] (V and A bin logits of a discrete-label model) or None, ``index``
        [N], ``expr`` [N] (-1 missing), ``va`` [N, 2] (NaN missing), ``mse`` (per pixel,
        over the whole dataset), ``images`` / ``recon`` [k, H, W, 3] in [0, 1].
    """
    from affectlab.data.batch import Batches

    _check_vae(method, "the model")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    method.eval()
    parts: dict[str, list] = {k: [] for k in ("z_v", "z_a", "z_z", "proj", "logits", "index", "expr", "va")}
    discrete = method.proj_v is not None and method.config.va_loss != "mse"
    images, recons, sq_sum, n_px = [], [], 0.0, 0
    for batch in Batches(dataset, batch_size=batch_size, progress=progress, description="encoding"):
        if "image" not in batch:
            raise ConfigError("the VAE explainer needs images; the data yield cached features")
        out = method(batch)
        x, r = batch["image"].float(), out.extras["recon"]
        sq_sum += float((r - x).pow(2).sum())
        n_px += x.numel()
        for key in ("z_v", "z_a", "z_z"):
            parts[key].append(out.extras[key].numpy())
        if method.proj_v is not None:
            parts["proj"].append(out.va.numpy())
        if discrete:
            parts["logits"].append(_stack_logits(out.extras["proj_v"], out.extras["proj_a"]))
        parts["index"].append(batch["index"].numpy())
        b = len(x)
        parts["expr"].append(batch["expr"].numpy() if "expr" in batch else np.full(b, -1))
        parts["va"].append(batch["va"].float().numpy()[:, :2] if "va" in batch else np.full((b, 2), np.nan))
        have = sum(len(i) for i in images)
        if have < keep_images:
            take = keep_images - have
            images.append(x[:take].permute(0, 2, 3, 1).numpy())
            recons.append(r[:take].permute(0, 2, 3, 1).numpy())
    if not parts["index"]:
        raise DatasetError("no readable image to encode")
    res = {k: (np.concatenate(v) if v else None) for k, v in parts.items()}
    res["mse"] = sq_sum / max(n_px, 1)
    res["images"] = np.concatenate(images)
    res["recon"] = np.concatenate(recons)
    return res


def identity_split(labels: pd.DataFrame | None, index: np.ndarray, *, fraction: float = 0.5, seed: int = 0):
    """Boolean mask of the *fit* part: about ``fraction`` of the identities (``subject``).

    Rows without a subject column are split at random.
    """
    rng = np.random.default_rng(seed)
    if labels is not None and "subject" in labels.columns:
        subj = labels["subject"].to_numpy()[index].astype(str)
        uniq = np.unique(subj)
        if len(uniq) >= 2:
            chosen = rng.permutation(uniq)[: max(1, int(round(len(uniq) * fraction)))]
            mask = np.isin(subj, chosen)
            if 0 < mask.sum() < len(mask):
                return mask
    mask = np.zeros(len(index), dtype=bool)
    mask[rng.permutation(len(index))[: max(1, int(round(len(index) * fraction)))]] = True
    return mask


def _stack_logits(raw_v, raw_a) -> np.ndarray:
    """[B, 21] V and A bin logits -> one [B, 2, 21] array."""
    return np.stack([raw_v.detach().cpu().numpy(), raw_a.detach().cpu().numpy()], axis=1)


# ------------------------------------------------------------------------------ tasks
def _scalar(z: np.ndarray) -> np.ndarray:
    return z[:, 0]


def alignment_table(enc: Mapping[str, Any]) -> pd.DataFrame:
    """Task 2: MSE / MAE of the latent means (and projections) against V and A."""
    va = enc["va"]
    rows = []
    sources = [("latent", np.stack([_scalar(enc["z_v"]), _scalar(enc["z_a"])], axis=1))]
    if enc.get("proj") is not None:
        sources.append(("projection", enc["proj"]))
    for name, pred in sources:
        row: dict[str, Any] = {"readout": name}
        for d, dim in enumerate(("V", "A")):
            ok = np.isfinite(va[:, d])
            err = pred[ok, d] - va[ok, d]
            row[f"{dim}_mse"] = float(np.mean(err**2)) if ok.any() else np.nan
            row[f"{dim}_mae"] = float(np.mean(np.abs(err))) if ok.any() else np.nan
        row["combined_mse"] = row["V_mse"] + row["A_mse"]
        row["combined_mae"] = row["V_mae"] + row["A_mae"]
        if name == "projection" and enc.get("logits") is not None:
            import warnings as _w

            from affectlab.metrics import MissingLabelsWarning, binned_cross_entropy, va_bins

            with _w.catch_warnings():
                _w.simplefilter("ignore", MissingLabelsWarning)  # no V (or A) labels: NaN, as for the MSE
                for d, dim in enumerate(("V", "A")):
                    row[f"{dim}_ce"] = binned_cross_entropy(va_bins(va[:, d], enc["logits"].shape[2]), enc["logits"][:, d])
            row["combined_ce"] = row["V_ce"] + row["A_ce"]
        rows.append(row)
    return pd.DataFrame(rows)


def _classifiers(seed: int):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        "DT": DecisionTreeClassifier(max_depth=8, random_state=seed),
        "SVM": make_pipeline(StandardScaler(), SVC(kernel="rbf")),
        "MLP": make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=seed)),
    }


def _regressors(seed: int):
    from sklearn.linear_model import Lasso, Ridge
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    return {
        "Ridge": make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
        "Lasso": make_pipeline(StandardScaler(), Lasso(alpha=0.01)),
        "SVR": make_pipeline(StandardScaler(), SVR(kernel="rbf")),
        "MLP": make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32,), max_iter=1000, random_state=seed)),
    }


def expression_table(enc: Mapping[str, Any], fit: np.ndarray, *, seed: int = 0) -> pd.DataFrame:
    """Task 3: held-out accuracy of DT / SVM / MLP predicting the expression from latents."""
    from sklearn.exceptions import ConvergenceWarning

    y = enc["expr"]
    ok = y >= 0
    tr, te = fit & ok, ~fit & ok
    if tr.sum() < 2 or te.sum() < 1 or len(np.unique(y[tr])) < 2:
        return pd.DataFrame(columns=["latent", "DT", "SVM", "MLP", "chance", "n_fit", "n_test"])
    rows = []
    chance = float(np.mean(y[te] == np.bincount(y[tr]).argmax()))
    for name, x in (("z_v", enc["z_v"]), ("z_a", enc["z_a"]), ("z_v+z_a", np.hstack([enc["z_v"], enc["z_a"]]))):
        row: dict[str, Any] = {"latent": name}
        for cname, clf in _classifiers(seed).items():
            with warnings.catch_warnings():
                # a small MLP on 1-2 features may stop before its tolerance: the score is what counts
                warnings.simplefilter("ignore", ConvergenceWarning)
                row[cname] = float(np.mean(clf.fit(x[tr], y[tr]).predict(x[te]) == y[te]))
        row.update(chance=chance, n_fit=int(tr.sum()), n_test=int(te.sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def regression_table(enc: Mapping[str, Any], fit: np.ndarray, pairs, *, seed: int = 0) -> pd.DataFrame:
    """Tasks 4 and 5: held-out explained variance and R^2 of latent -> V / A regressions."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import explained_variance_score, r2_score

    rows = []
    for latent, target in pairs:
        x = enc[latent]
        y = enc["va"][:, 0 if target == "V" else 1]
        ok = np.isfinite(y)
        tr, te = fit & ok, ~fit & ok
        row: dict[str, Any] = {"task": f"{latent} -> {target}"}
        for rname, reg in _regressors(seed).items():
            if tr.sum() < 2 or te.sum() < 2:
                row[f"{rname}_EV"] = row[f"{rname}_R2"] = np.nan
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                pred = reg.fit(x[tr], y[tr]).predict(x[te])
            row[f"{rname}_EV"] = float(explained_variance_score(y[te], pred))
            row[f"{rname}_R2"] = float(r2_score(y[te], pred))
        row.update(n_fit=int(tr.sum()), n_test=int(te.sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def bin_classification_table(enc: Mapping[str, Any], fit: np.ndarray, pairs, *, seed: int = 0,
                             num_bins: int = 21) -> pd.DataFrame:
    """Tasks 4 and 5 with discrete labels: held-out accuracy of DT / SVM / MLP classifying VA bins.

    ``pairs`` are ``(latent, "V" or "A")``; the target is :func:`affectlab.metrics.va_bins`
    of the canonical value (21 bins: AFEW-VA's integers -10..10). ``chance`` is the
    accuracy of always answering the most frequent bin of the fitted part.
    """
    from sklearn.exceptions import ConvergenceWarning

    from affectlab.metrics import accuracy, va_bins

    rows = []
    for latent, target in pairs:
        x = enc[latent]
        y = va_bins(enc["va"][:, 0 if target == "V" else 1], num_bins)
        ok = y >= 0
        tr, te = fit & ok, ~fit & ok
        row: dict[str, Any] = {"task": f"{latent} -> {target} bin"}
        usable = tr.sum() >= 2 and te.sum() >= 1 and len(np.unique(y[tr])) >= 2
        for cname, clf in _classifiers(seed).items():
            if not usable:
                row[f"{cname}_acc"] = np.nan
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                row[f"{cname}_acc"] = accuracy(y[te], clf.fit(x[tr], y[tr]).predict(x[te]))
        row["chance"] = float(np.mean(y[te] == np.bincount(y[tr]).argmax())) if usable else np.nan
        row.update(n_fit=int(tr.sum()), n_test=int(te.sum()))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- figures
def _colors(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_reconstructions(encs: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Task 1: inputs (first row) and each model's reconstructions (one row per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(encs.values()))
    k = len(first["images"])
    rows = [("input", first["images"])] + [(f"{n}\nMSE {e['mse']:.4f}", e["recon"]) for n, e in encs.items()]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k + 1.5, 1.4 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(np.clip(imgs[c], 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("Task 1: reconstructions (MSE per pixel, pixels in [0, 1])", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latent_by_class(encs, names, path: Path, *, seed: int = 0, max_points: int = 2000) -> tuple[Path, str]:
    """Task 6: t-SNE of z_v and z_a by class (multi-d), or jittered strips per class (1-d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(encs), 2, figsize=(11, 4.2 * len(encs)), squeeze=False)
    rng = np.random.default_rng(seed)
    kinds = []
    colors = _colors(len(names))
    for r, (model, enc) in enumerate(encs.items()):
        y = enc["expr"]
        sel = np.flatnonzero(y >= 0)
        if len(sel) > max_points:
            sel = np.sort(rng.choice(sel, max_points, replace=False))
        for c, key in enumerate(("z_v", "z_a")):
            ax = axes[r, c]
            z = enc[key][sel]
            if z.shape[1] == 1:
                kinds.append("strip")
                for k, name in enumerate(names):
                    m = y[sel] == k
                    ax.scatter(z[m, 0], k + rng.uniform(-0.3, 0.3, m.sum()), s=5, color=colors[k], alpha=0.6)
                ax.set_yticks(range(len(names)), names, fontsize=8)
                ax.set_xlabel(f"{key} (posterior mean)")
                ax.set_title(f"{model}: {key} per class (1-d: jittered strip, no t-SNE)", fontsize=9)
            else:
                from sklearn.manifold import TSNE

                kinds.append("tsne")
                perplexity = float(min(30, max(2, (len(sel) - 1) // 3)))
                emb = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(z)
                for k, name in enumerate(names):
                    m = y[sel] == k
                    ax.scatter(emb[m, 0], emb[m, 1], s=5, color=colors[k], alpha=0.6, label=name)
                ax.set_title(f"{model}: t-SNE of {key} ({z.shape[1]}-d)", fontsize=9)
                ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle("Task 6: latent parts coloured by expression", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, "tsne" if set(kinds) == {"tsne"} else ("strip" if set(kinds) == {"strip"} else "mixed")


def plot_circumplex(encs, names, path: Path) -> Path:
    """Task 7: latent plane (z_v, z_a) of each model beside the ground-truth VA plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(encs.values()))
    panels = [("ground truth VA", first["va"][:, 0], first["va"][:, 1], first["expr"], "valence", "arousal")]
    for model, enc in encs.items():
        panels.append((f"{model}: latent means", _scalar(enc["z_v"]), _scalar(enc["z_a"]), enc["expr"], "z_v", "z_a"))
        if enc.get("proj") is not None:
            panels.append((f"{model}: Proj(z)", enc["proj"][:, 0], enc["proj"][:, 1], enc["expr"], "Proj_v(z_v)", "Proj_a(z_a)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False)
    colors = _colors(len(names))
    for ax, (title, x, y, e, xl, yl) in zip(axes[0], panels):
        ok = np.isfinite(x) & np.isfinite(y)
        for k, name in enumerate(names):
            m = ok & (e == k)
            if m.any():
                ax.scatter(x[m], y[m], s=5, alpha=0.5, color=colors[k], label=name)
                ax.annotate(name, (np.mean(x[m]), np.mean(y[m])), fontsize=8, weight="bold", ha="center")
        rest = ok & (e < 0)
        if rest.any():
            ax.scatter(x[rest], y[rest], s=5, alpha=0.4, color="gray")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=9)
        if xl == "valence" and ok.any():
            ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="gray", lw=0.5))
            ax.set_xlim(-1.05, 1.05)
            ax.set_ylim(-1.05, 1.05)
            ax.set_aspect("equal")
    axes[0, 0].legend(fontsize=7, markerscale=2, loc="lower left")
    fig.suptitle("Task 7: circumplex of the latent space vs ground-truth VA", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ output
def _write_table(table: pd.DataFrame, out: Path, stem: str) -> dict[str, Path]:
    csv, md = out / f"{stem}.csv", out / f"{stem}.md"
    table.to_csv(csv, index=False, float_format="%.4f")
    md.write_text(_markdown(table) + "\n")
    return {stem: csv, f"{stem}_md": md}


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _img_tag(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' style='max-width:100%'>"


def write_html(path: Path, title: str, tables: Mapping[str, pd.DataFrame], figures: Mapping[str, Path], notes) -> Path:
    """One page with the tables (models side by side as rows) and figures."""
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px}</style>",
        f"<h1>{html.escape(title)}</h1>",
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
    ]
    for name, fig in figures.items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_img_tag(fig)}")
    for name, table in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + table.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    path.write_text("\n".join(parts))
    return path


@register_explainer("vavae")
def explain_vavae(
    method,
    info: Mapping[str, Any],
    data,
    out: str | os.PathLike,
    *,
    compare: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = False,
    fit_fraction: float = 0.5,
    seed: int = 0,
    num_images: int = 8,
    discrete: bool | None = None,
    **_: Any,
) -> dict:
    """Run the seven evaluation tasks of 003 on a dataset (see the module docstring).

    Parameters
    ----------
    method : VAVAEMethod
        The model (from :func:`affectlab.runtime.hub.load_model`).
    info : mapping
        Its info dict (``preprocessing``, ``path``).
    data : str or dataset
        Dataset spec with expression and/or VA labels (ideally identities not trained on).
    out : path
        Output folder.
    compare : path, optional
        A second VA-VAE run (e.g. the vanilla VAE) put side by side with the first.
    batch_size : int
        Images per forward pass.
    progress : bool
        Progress bar while encoding.
    fit_fraction : float
        Share of the identities the probes of tasks 3-5 are fitted on (the rest scores them).
    seed : int
        Seed of the split, the probes and the plots.
    num_images : int
        Images in the reconstruction grid.
    discrete : bool, optional
        Add the discrete-label tables of tasks 4 and 5 (VA bin accuracy). Default: when
        a model was trained on discrete labels (``va_loss`` ``ce`` or ``bce``).

    Returns
    -------
    dict
        ``files`` (name -> path), ``summary`` (lines) and ``metrics`` (model -> numbers).

    Raises
    ------
    ModelError
        A model (or ``compare`` run) that is not a VA-VAE.
    """
    from affectlab.runtime.hub import load_model

    _check_vae(method, f"the model {info.get('path', '')}".strip())
    if not (0.0 < float(fit_fraction) < 1.0):
        raise ConfigError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = [(method, info)]
    if compare is not None:
        other, other_info = load_model(compare)
        _check_vae(other, f"--compare {compare}")
        if other.config.image_size != method.config.image_size:
            raise ConfigError(
                f"--compare {compare} takes {other.config.image_size} px images, the model {method.config.image_size} px"
            )
        models.append((other, other_info))
    encs: dict[str, dict] = {}
    ds = None
    for m, inf in models:
        ds = _open_dataset(data, inf)
        label = _model_label(m, inf)
        if label in encs:
            label = f"{label} #{len(encs) + 1}"
        encs[label] = encode_dataset(m, ds, batch_size=batch_size, keep_images=num_images, progress=progress)
    names = list(ds.label_space.expressions)
    labels = getattr(ds, "labels", None)
    first = next(iter(encs.values()))
    fit = identity_split(labels, first["index"], fraction=fit_fraction, seed=seed)
    va = first["va"]
    both = np.isfinite(va).all(axis=1)
    va_corr = float(np.corrcoef(va[both, 0], va[both, 1])[0, 1]) if both.sum() > 2 else float("nan")

    def stack(fn) -> pd.DataFrame:
        return pd.concat([fn(e).assign(model=n)[["model", *fn(e).columns]] for n, e in encs.items()], ignore_index=True)

    recon = pd.DataFrame(
        [{"model": n, "mse_per_pixel": e["mse"], "psnr_db": 10 * np.log10(1.0 / max(e["mse"], 1e-12))} for n, e in encs.items()]
    )
    tables = {"reconstruction": recon}
    has_va = bool(np.isfinite(va).any())
    has_expr = bool((first["expr"] >= 0).any())
    if has_va:
        tables["alignment"] = pd.concat([alignment_table(e).assign(model=n) for n, e in encs.items()], ignore_index=True)
    if has_expr:
        tables["expression"] = pd.concat(
            [expression_table(e, fit, seed=seed).assign(model=n) for n, e in encs.items()], ignore_index=True
        )
    if discrete is None:
        discrete = any(m.proj_v is not None and m.config.va_loss != "mse" for m, _ in models)
    if has_va:
        tables["regression"] = pd.concat(
            [regression_table(e, fit, [("z_v", "V"), ("z_a", "A")], seed=seed).assign(model=n) for n, e in encs.items()],
            ignore_index=True,
        )
        tables["inverse_regression"] = pd.concat(
            [regression_table(e, fit, [("z_v", "A"), ("z_a", "V")], seed=seed).assign(model=n) for n, e in encs.items()],
            ignore_index=True,
        )
    if has_va and discrete:
        for stem, pairs in (("regression_discrete", [("z_v", "V"), ("z_a", "A")]),
                            ("inverse_regression_discrete", [("z_v", "A"), ("z_a", "V")])):
            tables[stem] = pd.concat(
                [bin_classification_table(e, fit, pairs, seed=seed).assign(model=n) for n, e in encs.items()],
                ignore_index=True,
            )
    files: dict[str, Path] = {}
    for stem, table in tables.items():
        table = table[["model", *[c for c in table.columns if c != "model"]]]
        tables[stem] = table
        files.update(_write_table(table, out, stem))
    figures = {"Task 1: reconstructions": plot_reconstructions(encs, out / "reconstruction.png")}
    files["reconstruction_png"] = figures["Task 1: reconstructions"]
    if has_expr:
        fig6, kind = plot_latent_by_class(encs, names, out / "latent_by_class.png", seed=seed)
        figures["Task 6: latents by class" + (" (1-d: strips, not t-SNE)" if kind != "tsne" else " (t-SNE)")] = fig6
        files["latent_by_class"] = fig6
    if has_va:
        figures["Task 7: circumplex"] = files["circumplex"] = plot_circumplex(encs, names, out / "circumplex.png")
    notes = [
        f"data: {data if isinstance(data, (str, os.PathLike)) else type(data).__name__} ({len(first['index'])} images)",
        f"probes of tasks 3-5 fitted on {int(fit.sum())} images, scored on {int((~fit).sum())} images of other identities",
        f"correlation of V and A in the data: {va_corr:.3f} (an aligned z_v predicts A up to about corr^2 = "
        f"{va_corr ** 2:.3f} of its variance)",
    ]
    files["html"] = write_html(out / "vavae.html", "VA-VAE: the seven evaluation tasks of 003", tables, figures, notes)

    metrics: dict[str, dict[str, float]] = {}
    summary = []
    for n, e in encs.items():
        mm = {"mse_per_pixel": float(e["mse"])}
        if has_va:
            reg = tables["regression"]
            inv = tables["inverse_regression"]
            for t, tab in (("z_v -> V", reg), ("z_a -> A", reg), ("z_v -> A", inv), ("z_a -> V", inv)):
                r = tab[(tab["model"] == n) & (tab["task"] == t)]
                mm[f"{t} Ridge_R2"] = float(r["Ridge_R2"].iloc[0])
            al = tables["alignment"]
            proj = al[(al["model"] == n) & (al["readout"] == "projection")]
            if "combined_ce" in al.columns and len(proj) and np.isfinite(proj["combined_ce"].iloc[0]):
                mm["combined_ce"] = float(proj["combined_ce"].iloc[0])
        metrics[n] = mm
        summary.append(f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in mm.items()))
    summary.append(f"V-A correlation of the data: {va_corr:.3f}")
    return {"files": files, "summary": summary, "metrics": metrics, "va_correlation": va_corr, "tables": tables}
