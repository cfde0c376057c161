"""Feature-space views of SMM-EmotionNet (section 7 of the paper).

``affectlab explain --model RUN --data SPEC --out DIR`` on an SMM run writes:

``sign_space_tsne.png`` (Figure 5)
    t-SNE of each AU's sign-vehicle space ``S^(h)``, one panel per AU, samples coloured
    by the AU's presence (grey: unlabelled); the panel title gives the AU's F1 on the data.
``message_space_tsne.png`` (Figure 6)
    t-SNE of the message space ``M``: (a) expressions with one covariance ellipse per
    class (2 standard deviations of the Gaussian fitted to its 2-D points), (b) arousal
    and (c) valence as colour, each with the gradient arrow of a linear fit of the value
    on the 2-D coordinates (``value ~ w . z + b``; the arrow is ``w``, drawn from the
    centre with one common scale so lengths compare). An MSS model (``message_space=
    separate``) gets one file per space: ``message_space_expr_tsne.png`` and
    ``message_space_va_tsne.png``.
``feature_views.csv``
    The 2-D message-space coordinates with the labels of each sample.

The summary reports, per message space, the angle between the valence and arousal
gradients (the paper finds them correlated, not orthogonal) and the R^2 of the fits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from affectlab.errors import ConfigError, DatasetError
from affectlab.interpret import register_explainer


def _collect(method, info, data, batch_size: int, max_samples: int, seed: int, progress: bool) -> dict[str, np.ndarray]:
    """Run the model on (a random subset of) the data; keep SMM's spaces and the labels."""
    import torch

    from affectlab.data.batch import Batches
    from affectlab.data.transforms import preprocessing_transform
    from affectlab.evaluate.engine import shared_label_space
    from affectlab.runtime.data import dataset_name, open_dataset, set_transform

    ds = open_dataset(data, "--data")
    if len(ds) == 0:
        raise DatasetError(f"{dataset_name(ds)} is empty")
    space = shared_label_space(info["label_space"], ds.label_space)
    model_space = info["label_space"]
    # keep every descriptor of the model: unlabelled ones come back as missing (-1 / NaN)
    ds = ds.with_label_space(model_space) if hasattr(ds, "with_label_space") else ds
    if info.get("preprocessing") is not None:
        set_transform(ds, preprocessing_transform(info["preprocessing"], info.get("transform", {}).get("eval"), False))
    n = len(ds)
    if n > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        ds = ds.subset(keep) if hasattr(ds, "subset") else torch.utils.data.Subset(ds, keep.tolist())
    parts: dict[str, list[np.ndarray]] = {}
    method.eval()
    for batch in Batches(ds, batch_size=batch_size, progress=progress, description="SMM feature spaces"):
        out = method(batch)
        for key, value in out.extras.items():
            if key == "sign" or key.startswith("message"):
                parts.setdefault(key, []).append(value.float().numpy())
        if out.au_logits is not None:
            parts.setdefault("au_prob", []).append(torch.sigmoid(out.au_logits.float()).numpy())
        for key in ("expr", "va", "au"):
            if key in batch:
                parts.setdefault(f"{key}_true", []).append(batch[key].numpy())
    if not parts:
        raise DatasetError(f"{dataset_name(ds)}: no readable sample")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["_shared_tasks"] = np.array(space.tasks)
    return arrays


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 5:
        raise DatasetError(f"t-SNE needs at least 5 samples, got {n}")
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64)
    )


def covariance_ellipse(points: np.ndarray, n_std: float = 2.0) -> tuple[np.ndarray, float, float, float] | None:
    """Centre, width, height and angle (degrees) of the ``n_std`` covariance ellipse of 2-D points."""
    if len(points) < 3:
        return None
    mean = points.mean(axis=0)
    cov = np.cov(points, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
    return mean, 2 * n_std * math.sqrt(vals[1]), 2 * n_std * math.sqrt(vals[0]), angle


def linear_gradient(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Gradient ``w`` of the least-squares fit ``y ~ w . z + b`` and its R^2 (NaN targets dropped)."""
    from sklearn.linear_model import LinearRegression

    ok = np.isfinite(y)
    if ok.sum() < 3:
        return np.full(2, np.nan), float("nan")
    reg = LinearRegression().fit(z[ok], y[ok])
    return reg.coef_.astype(np.float64), float(reg.score(z[ok], y[ok]))


def _au_panels(arrays, space, seed: int, path: Path) -> dict[str, float]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from affectlab import metrics as M

    sign = arrays["sign"]
    truth = arrays.get("au_true")
    probs = arrays.get("au_prob")
    H = sign.shape[1]
    cols = min(4, H)
    rows = int(math.ceil(H / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    f1s: dict[str, float] = {}
    for h in range(H):
        ax = axes[h // cols][h % cols]
        z = _tsne(sign[:, h], seed)
        y = truth[:, h] if truth is not None else np.full(len(z), -1.0)
        name = space.aus[h]
        title = name
        if (y >= 0).any() and probs is not None:
            keep = y >= 0
            f1 = float(M.au_f1(y[keep][:, None], probs[keep, h][:, None])["mean"])
            f1s[name] = f1
            title = f"{name} (F1 {f1:.2f})"
        for value, colour, label in ((-1, "#cccccc", "unlabelled"), (0, "#1f77b4", "absent (0)"), (1, "#d62728", "present (1)")):
            sel = y == value
            if sel.any():
                ax.scatter(z[sel, 0], z[sel, 1], s=6, c=colour, label=label, alpha=0.7, linewidths=0)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for k in range(H, rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("sign-vehicle spaces (t-SNE), coloured by AU presence")
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f1s


def _message_panels(z, arrays, space, path: Path, title: str) -> dict[str, float]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    expr = arrays.get("expr_true")
    va = arrays.get("va_true")
    panels = (["expr"] if expr is not None and space.expressions else []) + (
        ["arousal", "valence"] if va is not None and space.va else []
    )
    if not panels:
        panels = ["plain"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.3), squeeze=False)
    stats: dict[str, float] = {}
    grads: dict[str, np.ndarray] = {}
    for name in ("valence", "arousal"):
        if name in panels:
            w, r2 = linear_gradient(z, va[:, 0 if name == "valence" else 1].astype(np.float64))
            grads[name] = w
            stats[f"{name}_fit_r2"] = r2
    span = float(np.ptp(z, axis=0).max()) or 1.0
    longest = max((float(np.linalg.norm(w)) for w in grads.values() if np.isfinite(w).all()), default=0.0)
    scale = 0.35 * span / longest if longest > 0 else 0.0
    centre = z.mean(axis=0)
    cmap = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], panels):
        if name == "expr":
            labelled = expr >= 0
            ax.scatter(z[~labelled, 0], z[~labelled, 1], s=5, c="#dddddd", linewidths=0, label="unlabelled")
            for c, cname in enumerate(space.expressions):
                pts = z[expr == c]
                if not len(pts):
                    continue
                colour = cmap(c % 10)
                ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colour, alpha=0.75, linewidths=0, label=cname)
                ell = covariance_ellipse(pts)
                if ell is not None:
                    mean, width, height, angle = ell
                    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=colour, lw=1.5))
            ax.legend(fontsize=7, markerscale=2, loc="best")
            ax.set_title("expressions (2-sd covariance ellipses)", fontsize=9)
        elif name in ("arousal", "valence"):
            v = va[:, 0 if name == "valence" else 1]
            ok = np.isfinite(v)
            ax.scatter(z[~ok, 0], z[~ok, 1], s=5, c="#dddddd", linewidths=0)
            sc = ax.scatter(z[ok, 0], z[ok, 1], s=6, c=v[ok], cmap="viridis", vmin=-1, vmax=1, linewidths=0)
            fig.colorbar(sc, ax=ax, fraction=0.046)
            w = grads[name]
            if np.isfinite(w).all() and scale > 0:
                ax.annotate(
                    "", xy=centre + scale * w, xytext=centre,
                    arrowprops=dict(arrowstyle="-|>", color="red", lw=2),
                )
            ax.set_title(f"{name} (arrow: linear-fit gradient, R2 {stats[f'{name}_fit_r2']:.2f})", fontsize=9)
        else:
            ax.scatter(z[:, 0], z[:, 1], s=5, linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
    if "valence" in grads and "arousal" in grads and np.isfinite(grads["valence"]).all():
        a, b = grads["valence"], grads["arousal"]
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        if denom > 0:
            stats["va_gradient_angle_deg"] = float(np.degrees(np.arccos(np.clip(a @ b / denom, -1, 1))))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return stats


@register_explainer("smm")
def explain_smm(
    method,
    info: Mapping[str, Any],
    data,
    out: Path,
    *,
    batch_size: int = 128,
    max_samples: int = 1000,
    seed: int = 0,
    progress: bool = True,
    **_: Any,
) -> dict:
    """Write the t-SNE views of an SMM model's sign-vehicle and message spaces.

    Parameters
    ----------
    method : SMMMethod
    info : dict
        From :func:`affectlab.runtime.hub.load_model`.
    data : str or dataset
        Image data; labels colour the views (unlabelled samples are grey).
    out : Path
        Output folder.
    batch_size : int
    max_samples : int
        Random subset size (t-SNE is quadratic in the number of samples).
    seed : int
        Subset and t-SNE seed.

    Returns
    -------
    dict
        ``files`` (name -> path), ``summary`` (lines), ``au_f1`` (per AU),
        ``message`` (per space: fit R^2 and the valence/arousal gradient angle).
    """
    import pandas as pd

    if not isinstance(max_samples, int) or max_samples < 5:
        raise ConfigError(f"max_samples must be an integer >= 5, got {max_samples!r}")
    space = info["label_space"]
    arrays = _collect(method, info, data, batch_size, max_samples, seed, progress)
    out = Path(out)
    files: dict[str, Path] = {}
    summary: list[str] = [f"{len(next(iter(v for k, v in arrays.items() if k.endswith('_true'))))} samples"]
    result: dict[str, Any] = {"files": files, "summary": summary, "message": {}}
    if "sign" in arrays:
        files["sign_space"] = out / "sign_space_tsne.png"
        result["au_f1"] = _au_panels(arrays, space, seed, files["sign_space"])
        if result["au_f1"]:
            summary.append(f"sign-vehicle spaces: mean AU F1 {np.mean(list(result['au_f1'].values())):.3f}")
    table: dict[str, Any] = {}
    for key in sorted(k for k in arrays if k.startswith("message")):
        z = _tsne(arrays[key], seed)
        suffix = key.removeprefix("message")
        name = f"message_space{suffix}_tsne.png"
        files[key] = out / name
        stats = _message_panels(z, arrays, space, files[key], f"message space{suffix.replace('_', ' ')} (t-SNE)")
        result["message"][key] = stats
        table[f"{key}_x"], table[f"{key}_y"] = z[:, 0], z[:, 1]
        if "va_gradient_angle_deg" in stats:
            summary.append(
                f"{key}: valence/arousal gradient angle {stats['va_gradient_angle_deg']:.0f} deg "
                f"(R2 valence {stats['valence_fit_r2']:.2f}, arousal {stats['arousal_fit_r2']:.2f})"
            )
    if table:
        if "expr_true" in arrays and space.expressions:
            names = np.asarray(space.expressions, dtype=object)
            y = arrays["expr_true"]
            table["expression_true"] = np.where(y >= 0, names[np.clip(y, 0, None)], None)
        if "va_true" in arrays and space.va:
            table["valence_true"], table["arousal_true"] = arrays["va_true"][:, 0], arrays["va_true"][:, 1]
        files["table"] = out / "feature_views.csv"
        pd.DataFrame(table).to_csv(files["table"], index=False)
    return result
