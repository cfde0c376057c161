"""What an AURA model learned: archetype tables, annotation-error diagnosis, plots, HTML.

:func:`explain_aura` (``affectlab explain --model RUN --data SPEC --out DIR`` for an
AURA model) writes:

``archetypes.csv``
    Table 1 of the paper (appendix C.5): for each expression class, and for each
    valence / arousal bin and AU-probability bin, the number of archetypes assigned to
    it (an archetype's class is the argmax of its own expression prediction; its bin is
    where its own VA or AU prediction falls), their usage range (min-max samples
    matched, counting archetypes matched at least once), the samples matched to them
    and the samples of the dataset whose label is that class / falls in that bin.
``archetype_stats.csv``
    One row per archetype: usage, its own predictions, and the label statistics of the
    samples matched to it (label histogram, purity, mean valence/arousal, AU rates).
``diagnosis.csv``
    Annotation-error diagnosis (appendix C.2): samples whose given expression disagrees
    with the class of the archetype they are matched to, most confident first.
    ``confidence = 1 - sqrt(p_arch(given) * p_model(given))``: how strongly both the
    archetype and the refined prediction reject the given label.
``samples.csv``
    Per sample: archetype, distance, prediction.
``umap.png``
    Appendix C.1: a UMAP of the raw backbone features beside a UMAP of the projected
    features with the archetypes, coloured by label.
``va_archetypes.png``
    Figure 2: the archetypes in the valence-arousal plane (size: usage) and their
    embedding coloured by valence and by arousal (models with VA).
``archetypes.html``
    Per archetype, its label statistics and a strip of the samples closest to it
    (thumbnails are embedded in the page: keep it out of repositories when the data are
    not yours to publish).
"""

from __future__ import annotations

import base64
import html
import io
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from affectlab.errors import ConfigError, DatasetError
from affectlab.interpret import register_explainer

#: Bins of Table 1 for valence / arousal (AffectNet-VA rows) and AU probabilities (DISFA rows).
VA_BINS = (-1.0, -0.7, -0.4, -0.1, 0.1, 0.4, 0.7, 1.0)
AU_BINS = (0.0, 0.3, 0.5, 0.7, 1.0)


# ----------------------------------------------------------------------------- inference
def _open_data(method, data, out: Path, batch_size: int, progress: bool):
    from affectlab.features.dataset import FeatureDataset, is_feature_spec, open_features

    if isinstance(data, FeatureDataset):
        return data
    if isinstance(data, (str, os.PathLike)) and is_feature_spec(data):
        return open_features(data)
    backbone = getattr(method.config, "backbone", None)
    if not backbone:
        raise ConfigError(
            "this AURA model does not record the backbone its features came from; pass the cached features "
            "(--data features:FEAT.zarr) extracted with that backbone"
        )
    from affectlab.features.cache import extract_features

    store = extract_features(data, backbone, out / "features.zarr", batch_size=min(batch_size, 128), progress=progress)
    return FeatureDataset(store)


def infer(method, dataset, *, batch_size: int = 512, progress: bool = False) -> dict[str, np.ndarray]:
    """Run an AURA model over a feature dataset.

    Returns
    -------
    dict of ndarray
        ``archetype`` [N], ``distance`` [N], ``z`` [N, dim] (projections), and the
        refined predictions ``expr_prob`` [N, C], ``va`` [N, 2], ``au_prob`` [N, K]
        for the descriptors the model has.
    """
    import torch

    from affectlab.data.batch import Batches

    method.eval()
    parts: dict[str, list] = {}
    for batch in Batches(dataset, batch_size=batch_size, progress=progress, description="archetypes"):
        z = method.project(batch["features"], batch.get("tokens"))
        out = method(batch)
        rows = {
            "index": batch["index"].numpy(),
            "archetype": out.extras["archetype"].numpy(),
            "distance": out.extras["archetype_distance"].float().numpy(),
            "z": z.float().numpy(),
        }
        if out.expr_logits is not None:
            logits = out.expr_logits.float()
            multi = method.label_space.multilabel
            rows["expr_prob"] = (torch.sigmoid(logits) if multi else torch.softmax(logits, 1)).numpy()
        if out.va is not None:
            rows["va"] = out.va.float().numpy()
        if out.au_logits is not None:
            rows["au_prob"] = torch.sigmoid(out.au_logits.float()).numpy()
        for k, v in rows.items():
            parts.setdefault(k, []).append(v)
    if not parts:
        raise DatasetError(f"{getattr(dataset, 'name', 'dataset')}: no sample to explain")
    return {k: np.concatenate(v) for k, v in parts.items()}


# ----------------------------------------------------------------------------- tables
def _bin_labels(edges) -> list[str]:
    return [f"{lo:.1f} - {hi:.1f}" for lo, hi in zip(edges[:-1], edges[1:])]


def _digitize(values: np.ndarray, edges) -> np.ndarray:
    """Bin index of each value (last bin closed), -1 for NaN."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.clip(np.searchsorted(np.asarray(edges[1:-1]), v, side="right"), 0, len(edges) - 2)
    return np.where(np.isfinite(v), idx, -1)


def _table_rows(task: str, groups: list[str], arch_group: np.ndarray, usage: np.ndarray, sample_group: np.ndarray) -> list[dict]:
    rows = []
    for g, name in enumerate(groups):
        members = np.flatnonzero((arch_group == g) & (usage > 0))
        use = usage[members]
        rows.append(
            {
                "task": task,
                "group": name,
                "assigned_archetypes": int(members.size),
                "usage_min": int(use.min()) if use.size else 0,
                "usage_max": int(use.max()) if use.size else 0,
                "archetype_samples": int(use.sum()),
                "dataset_samples": int((sample_group == g).sum()),
                "archetypes": " ".join(str(int(i)) for i in members),
            }
        )
    return rows


def archetype_table(method, dataset, res: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Table 1 (appendix C.5) for the descriptors the model and the data share."""
    space = method.label_space
    n_arch = method.config.num_archetypes
    usage = np.bincount(res["archetype"], minlength=n_arch)
    own = {k: v.cpu().numpy() for k, v in method.archetype_predictions().items()}
    rows: list[dict] = []
    if "expr_prob" in own and not space.multilabel:
        given = np.asarray(dataset.expr_targets)
        rows += _table_rows("expression", list(space.expressions), own["expr_prob"].argmax(1), usage, given)
    if "va" in own:
        va = np.asarray(dataset.va_targets)
        for j, name in ((1, "arousal"), (0, "valence")):
            rows += _table_rows(name, _bin_labels(VA_BINS), _digitize(own["va"][:, j], VA_BINS), usage, _digitize(va[:, j], VA_BINS))
    if "au_prob" in own:
        au = np.asarray(dataset.au_targets, dtype=np.float64)
        au = np.where(au < 0, np.nan, au)
        for k, name in enumerate(space.aus):
            rows += _table_rows(name, _bin_labels(AU_BINS), _digitize(own["au_prob"][:, k], AU_BINS), usage, _digitize(au[:, k], AU_BINS))
    return pd.DataFrame(rows)


def archetype_stats(method, dataset, res: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per archetype: usage, own predictions, label statistics of its samples."""
    space = method.label_space
    n_arch = method.config.num_archetypes
    arch = res["archetype"]
    usage = np.bincount(arch, minlength=n_arch)
    own = {k: v.cpu().numpy() for k, v in method.archetype_predictions().items()}
    table = pd.DataFrame({"archetype": np.arange(n_arch), "usage": usage})
    table["resets"] = method.resets.cpu().numpy()
    if "expr_prob" in own and not space.multilabel:
        names = np.asarray(space.expressions)
        table["label"] = names[own["expr_prob"].argmax(1)]
        table["label_prob"] = own["expr_prob"].max(1)
        given = np.asarray(dataset.expr_targets)
        majority, purity, hist = [], [], []
        for a in range(n_arch):
            g = given[(arch == a) & (given >= 0)]
            if g.size:
                counts = np.bincount(g, minlength=len(names))
                order = np.argsort(-counts)
                majority.append(names[order[0]])
                purity.append(counts[order[0]] / g.size)
                hist.append(", ".join(f"{names[c]} {counts[c]}" for c in order if counts[c]))
            else:
                majority.append("")
                purity.append(np.nan)
                hist.append("")
        table["given_majority"] = majority
        table["given_purity"] = purity
        table["given_labels"] = hist
    if "va" in own:
        table["valence"] = own["va"][:, 0]
        table["arousal"] = own["va"][:, 1]
        va = np.asarray(dataset.va_targets, dtype=np.float64)
        for j, name in enumerate(("valence", "arousal")):
            sums = np.bincount(arch, weights=np.nan_to_num(va[:, j]), minlength=n_arch)
            cnt = np.bincount(arch, weights=np.isfinite(va[:, j]).astype(float), minlength=n_arch)
            with np.errstate(invalid="ignore", divide="ignore"):
                table[f"given_{name}_mean"] = sums / cnt
    if "au_prob" in own:
        au = np.asarray(dataset.au_targets, dtype=np.float64)
        for k, name in enumerate(space.aus):
            table[f"{name}_prob"] = own["au_prob"][:, k]
            known = au[:, k] >= 0
            pos = np.bincount(arch[known], weights=au[known, k], minlength=n_arch)
            cnt = np.bincount(arch[known], minlength=n_arch)
            with np.errstate(invalid="ignore", divide="ignore"):
                table[f"given_{name}_rate"] = pos / cnt
    return table


def sample_name(path) -> str:
    """How a sample is named to the user: its file name (``S010_004_00000017.png``), which
    they can find, rather than its row number in the dataset."""
    text = str(path)
    return os.path.basename(text) or text


def diagnosis_table(method, dataset, res: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Samples whose given expression disagrees with their archetype's class, most confident first.

    ``confidence = 1 - sqrt(p_arch(given) * p_model(given))`` where ``p_arch`` is the
    matched archetype's own expression distribution and ``p_model`` the refined
    prediction for the sample: high when both reject the given label.
    """
    space = method.label_space
    if not space.expressions or space.multilabel or "expr_prob" not in res:
        return pd.DataFrame()
    own = method.archetype_predictions()["expr_prob"].cpu().numpy()
    given = np.asarray(dataset.expr_targets)
    arch = res["archetype"]
    p_arch = own[arch]
    arch_label = p_arch.argmax(1)
    rows = np.flatnonzero((given >= 0) & (arch_label != given))
    names = np.asarray(space.expressions)
    g = given[rows]
    pa = p_arch[rows, g]
    pm = res["expr_prob"][rows, g]
    labels = dataset.labels.iloc[rows].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "index": rows,
            "path": labels["path"].to_numpy(),
            "given": names[g],
            "archetype": arch[rows],
            "archetype_label": names[arch_label[rows]],
            "archetype_label_prob": p_arch[rows, arch_label[rows]],
            "predicted": names[res["expr_prob"][rows].argmax(1)],
            "p_archetype_given": pa,
            "p_model_given": pm,
            "distance": res["distance"][rows],
            "confidence": 1.0 - np.sqrt(pa * pm),
        }
    )
    for col in ("subject", "expression_true", "label_flipped"):
        if col in labels.columns:
            table[col] = labels[col].to_numpy()
    table = table.sort_values(["confidence", "distance"], ascending=[False, True], kind="mergesort")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------- plots
def _embed(x: np.ndarray, seed: int, method: str) -> np.ndarray:
    if len(x) < 5 or method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, x.shape[1], len(x))
        emb = PCA(n_components=k, random_state=seed).fit_transform(x) if len(x) > 1 else np.zeros((len(x), 2))
        return emb if emb.shape[1] == 2 else np.pad(emb, ((0, 0), (0, 2 - emb.shape[1])))
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1)
        return reducer.fit_transform(x)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_umap(method, dataset, res, path: Path, *, max_samples: int = 3000, seed: int = 0, embedding: str = "umap") -> Path:
    """Appendix C.1: raw features vs projected features and archetypes, coloured by label."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    n = len(res["archetype"])
    pick = np.sort(rng.choice(n, size=min(n, max_samples), replace=False))
    raw = dataset.features_array()[pick]
    used = np.unique(res["archetype"])
    e = method.archetypes().detach().cpu().numpy()[used]
    z = res["z"][pick]
    space = method.label_space
    if space.expressions and not space.multilabel:
        color = np.asarray(dataset.expr_targets)[pick]
        names = list(space.expressions)
        own = method.archetype_predictions()["expr_prob"].cpu().numpy()[used].argmax(1)
    else:
        color, names, own = np.zeros(len(pick), int), ["samples"], np.zeros(len(used), int)
    emb_raw = _embed(raw, seed, embedding)
    emb_z = _embed(np.concatenate([z, e]), seed, embedding)
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, emb, title in ((axes[0], emb_raw, "raw backbone features"), (axes[1], emb_z[: len(pick)], "AURA projections and archetypes")):
        for c, name in enumerate(names):
            m = color == c
            if m.any():
                ax.scatter(emb[m, 0], emb[m, 1], s=4, alpha=0.5, color=cmap(c % 10), label=name)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    ea = emb_z[len(pick):]
    axes[1].scatter(ea[:, 0], ea[:, 1], s=90, marker="*", c=[cmap(c % 10) for c in own], edgecolors="black", linewidths=0.8, label="archetypes")
    axes[0].legend(markerscale=3, fontsize=7, loc="best")
    fig.suptitle(f"{embedding.upper()} of {len(pick)} samples, {len(used)} archetypes in use")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_va(method, res, path: Path, *, seed: int = 0, embedding: str = "umap") -> Path | None:
    """Figure 2: archetypes over valence and arousal (models with VA)."""
    own = method.archetype_predictions()
    if "va" not in own:
        return None
    plt = _plt()
    n_arch = method.config.num_archetypes
    usage = np.bincount(res["archetype"], minlength=n_arch)
    used = np.flatnonzero(usage > 0)
    va = own["va"].cpu().numpy()[used]
    e = method.archetypes().detach().cpu().numpy()[used]
    emb = _embed(e, seed, embedding)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    size = 20 + 200 * usage[used] / max(usage.max(), 1)
    axes[0].scatter(va[:, 0], va[:, 1], s=size, c=va[:, 0], cmap="coolwarm", vmin=-1, vmax=1, edgecolors="black", linewidths=0.5)
    axes[0].axhline(0, color="gray", lw=0.5)
    axes[0].axvline(0, color="gray", lw=0.5)
    axes[0].set_xlim(-1.05, 1.05)
    axes[0].set_ylim(-1.05, 1.05)
    axes[0].set_xlabel("valence")
    axes[0].set_ylabel("arousal")
    axes[0].set_title("archetypes on the circumplex (size: usage)")
    for ax, j, name in ((axes[1], 0, "valence"), (axes[2], 1, "arousal")):
        sc = ax.scatter(emb[:, 0], emb[:, 1], s=size, c=va[:, j], cmap="viridis", vmin=-1, vmax=1, edgecolors="black", linewidths=0.3)
        fig.colorbar(sc, ax=ax, label=name)
        ax.set_title(f"archetype {embedding.upper()} coloured by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- HTML
def _thumb(path: str, size: int) -> str | None:
    from affectlab.data.images import read_image, resize_square

    image = read_image(path) if isinstance(path, str) and os.path.isfile(path) else None
    if image is None:
        return None
    import cv2

    small = resize_square(image, size)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


def write_html(method, dataset, res, stats: pd.DataFrame, path: Path, *, per_archetype: int = 8, thumb_size: int = 64) -> Path:
    """Per archetype: label statistics and a strip of the closest samples' thumbnails."""
    labels = dataset.labels
    arch, dist = res["archetype"], res["distance"]
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>AURA archetypes</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}"
        ".strip img{margin:1px;border:1px solid #999}.na{color:#999;font-size:11px}</style></head><body>",
        f"<h1>AURA archetypes</h1><p>{esc(str(getattr(dataset, 'name', '')))}: {len(arch)} samples, "
        f"{int((stats['usage'] > 0).sum())} of {len(stats)} archetypes in use. Thumbnails are the samples "
        "matched to the archetype, closest first.</p>",
        "<table><tr><th>archetype</th><th>usage</th><th>statistics</th><th>closest samples</th></tr>",
    ]
    stat_cols = [c for c in stats.columns if c not in ("archetype", "usage")]
    for row in stats.sort_values("usage", ascending=False).itertuples(index=False):
        if row.usage == 0:
            continue
        a = int(row.archetype)
        members = np.flatnonzero(arch == a)
        closest = members[np.argsort(dist[members], kind="mergesort")[:per_archetype]]
        imgs = []
        for i in closest:
            p = str(labels.at[int(i), "path"])
            data = _thumb(p, thumb_size)
            title = esc(f"{sample_name(p)} {labels.at[int(i), 'expression'] if 'expression' in labels else ''}")
            imgs.append(
                f"<img src='data:image/jpeg;base64,{data}' width={thumb_size} title='{title}'>"
                if data
                else f"<span class='na'>[{title}: image not available]</span>"
            )
        info = []
        for c in stat_cols:
            v = getattr(row, c)
            if isinstance(v, float):
                if np.isnan(v):
                    continue
                v = f"{v:.3f}"
            if v == "":
                continue
            info.append(f"<b>{esc(c)}</b>: {esc(str(v))}")
        parts.append(
            f"<tr><td>{a}</td><td>{int(row.usage)}</td><td>{'<br>'.join(info)}</td>"
            f"<td class='strip'>{''.join(imgs)}</td></tr>"
        )
    parts.append("</table></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- entry point
@register_explainer("aura")
def explain_aura(
    method,
    info: Mapping[str, Any],
    data,
    out: Path,
    *,
    batch_size: int = 512,
    progress: bool = True,
    embedding: str = "umap",
    max_plot_samples: int = 3000,
    per_archetype: int = 8,
    html_page: bool = True,
    seed: int = 0,
) -> dict:
    """Explain an AURA model on a dataset (see the module docstring for the files).

    Parameters
    ----------
    method : Aura
        The loaded model.
    info : mapping
        What :func:`affectlab.runtime.hub.load_model` returned beside it.
    data : str or FeatureDataset
        ``features:FEAT.zarr`` (or a dataset spec, extracted with the model's backbone
        into ``out/features.zarr``).
    out : Path
        Output folder.
    batch_size : int
        Samples per forward pass.
    progress : bool
        Show progress bars.
    embedding : {"umap", "pca"}
        2-D embedding of the plots (UMAP as in the paper; PCA is instant).
    max_plot_samples : int
        Samples drawn in the UMAP plot.
    per_archetype : int
        Thumbnails per archetype in the HTML page.
    html_page : bool
        Write archetypes.html.
    seed : int
        Seed of the sample draw and the embedding.

    Returns
    -------
    dict
        ``files`` (name -> path), ``summary`` (lines to print), ``used_archetypes``,
        ``flagged`` (rows of diagnosis.csv).
    """
    if embedding not in ("umap", "pca"):
        raise ConfigError(f"embedding must be 'umap' or 'pca', got {embedding!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = _open_data(method, data, out, batch_size, progress)
    trained_on = getattr(method.config, "backbone", None)
    if trained_on and getattr(dataset, "backbone", None) and dataset.backbone != trained_on:
        raise ConfigError(
            f"the model was trained on features of backbone {trained_on!r}, but {dataset.name} holds "
            f"features of {dataset.backbone!r}; extract the data with {trained_on!r}"
        )
    space = method.label_space
    dataset = dataset.with_label_space(space)
    res = infer(method, dataset, batch_size=batch_size, progress=progress)
    files: dict[str, Path] = {}
    table = archetype_table(method, dataset, res)
    files["archetypes"] = out / "archetypes.csv"
    table.to_csv(files["archetypes"], index=False)
    stats = archetype_stats(method, dataset, res)
    files["archetype_stats"] = out / "archetype_stats.csv"
    stats.to_csv(files["archetype_stats"], index=False)
    diag = diagnosis_table(method, dataset, res)
    if len(diag.columns):
        files["diagnosis"] = out / "diagnosis.csv"
        diag.to_csv(files["diagnosis"], index=False)
    samples = pd.DataFrame({"index": np.arange(len(res["archetype"])), "path": dataset.labels["path"].to_numpy(), "archetype": res["archetype"], "distance": res["distance"]})
    if "expr_prob" in res and not space.multilabel:
        samples["predicted"] = np.asarray(space.expressions)[res["expr_prob"].argmax(1)]
    if "va" in res:
        samples["valence"], samples["arousal"] = res["va"][:, 0], res["va"][:, 1]
    files["samples"] = out / "samples.csv"
    samples.to_csv(files["samples"], index=False)
    files["umap"] = plot_umap(method, dataset, res, out / "umap.png", max_samples=max_plot_samples, seed=seed, embedding=embedding)
    va_plot = plot_va(method, res, out / "va_archetypes.png", seed=seed, embedding=embedding)
    if va_plot is not None:
        files["va_archetypes"] = va_plot
    if html_page:
        files["html"] = write_html(method, dataset, res, stats, out / "archetypes.html", per_archetype=per_archetype)
    used = int((stats["usage"] > 0).sum())
    summary = [f"{used} of {len(stats)} archetypes match at least one of the {len(dataset)} samples"]
    if len(diag):
        top = diag.head(5)
        summary.append(
            f"{len(diag)} samples disagree with their archetype's class; most confident: "
            + "; ".join(f"{sample_name(r.path)} given {r.given}, archetype says {r.archetype_label}" for r in top.itertuples())
        )
    return {"files": files, "summary": summary, "used_archetypes": used, "flagged": int(len(diag))}
