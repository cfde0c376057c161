"""``evaluate``: a trained model over a dataset -> the metrics of ARCHITECTURE.md, a prediction table, plots.

:func:`evaluate` loads the model (:func:`affectlab.runtime.hub.load_model`), opens the
data (:func:`affectlab.runtime.data.open_dataset`), matches the model's and the data's
descriptors by name (:func:`shared_label_space`), runs the model over the data and
computes the metrics; :func:`run_evaluation` is what ``affectlab evaluate`` does on top
(write metrics, predictions, plots; store a searched smoothing).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError, DatasetError
from affectlab.runtime.data import check_inputs, dataset_name, open_dataset, set_transform


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    metrics : dict
        Metric names (``expr_acc``, ``va_ccc``, ``au_f1_mean`` ...) for the descriptors the model and data share.
    predictions : DataFrame
        One row per sample: ``index``, ``path``; ``expr_<name>`` probabilities,
        ``expression`` (argmax) and ``expression_true``; ``valence``, ``arousal`` and
        ``valence_true``, ``arousal_true``; ``AU<k>`` probabilities and ``AU<k>_true``.
    label_space : LabelSpace
        The shared label space the metrics are computed in.
    confusion : ndarray or None
        Expression confusion matrix (rows true, columns predicted), single-label only.
    """

    metrics: dict
    predictions: Any
    label_space: LabelSpace
    confusion: Any = None
    skipped: int = 0
    files: dict = field(default_factory=dict)
    #: ``evaluate(smooth=...)``: level, mu per task and the search (:mod:`affectlab.evaluate.smoothing`)
    smoothing: dict | None = None
    #: ``evaluate(detect_faces=True)``: detector, images and images without a face
    framing: dict | None = None
    #: what the user should know about the scoring, e.g. samples whose class the model does not know
    notes: list = field(default_factory=list)


def shared_label_space(model_space: LabelSpace, data_space: LabelSpace) -> LabelSpace:
    """Descriptors a model predicts and a dataset labels, matched by name (model order)."""
    if model_space.multilabel != data_space.multilabel and model_space.expressions and data_space.expressions:
        exprs: tuple[str, ...] = ()
    else:
        exprs = tuple(e for e in model_space.expressions if e in data_space.expressions)
    aus = tuple(a for a in model_space.aus if a in data_space.aus)
    return LabelSpace(
        expressions=exprs,
        aus=aus,
        va=model_space.va and data_space.va,
        multilabel=model_space.multilabel and bool(exprs),
    )


def predictions_table(preds: Mapping[str, np.ndarray], space: LabelSpace, labels=None):
    """A DataFrame of collected prediction arrays (see :class:`EvaluationResult`)."""
    import pandas as pd

    idx = preds["index"]
    table: dict[str, Any] = {"index": idx}
    if labels is not None and "path" in labels.columns:
        table["path"] = labels["path"].to_numpy()[idx]
    if "expr_scores" in preds:
        scores = preds["expr_scores"]
        for j, name in enumerate(space.expressions):
            table[f"expr_{name}"] = scores[:, j]
        truth = preds["expr_true"]
        if space.multilabel:
            for j, name in enumerate(space.expressions):
                table[f"{name}_true"] = truth[:, j]
        else:
            names = np.asarray(space.expressions, dtype=object)
            table["expression"] = names[scores.argmax(axis=1)]
            table["expression_true"] = np.where(truth >= 0, names[np.clip(truth, 0, None)], None)
    if "va_pred" in preds:
        table["valence"], table["arousal"] = preds["va_pred"][:, 0], preds["va_pred"][:, 1]
        table["valence_true"], table["arousal_true"] = preds["va_true"][:, 0], preds["va_true"][:, 1]
        if preds["va_pred"].shape[1] >= 3:
            table["dominance"], table["dominance_true"] = preds["va_pred"][:, 2], preds["va_true"][:, 2]
    if "au_scores" in preds:
        for j, name in enumerate(space.aus):
            table[name] = preds["au_scores"][:, j]
            table[f"{name}_true"] = preds["au_true"][:, j].astype(np.int64)
    return pd.DataFrame(table)


def arrays_from_table(table, space: LabelSpace) -> dict[str, np.ndarray]:
    """Inverse of :func:`predictions_table`: the arrays ``metrics.summarize`` takes."""
    out: dict[str, np.ndarray] = {"index": table["index"].to_numpy()}
    if space.expressions and f"expr_{space.expressions[0]}" in table.columns:
        out["expr_scores"] = table[[f"expr_{e}" for e in space.expressions]].to_numpy(dtype=np.float64)
        if space.multilabel:
            out["expr_true"] = table[[f"{e}_true" for e in space.expressions]].to_numpy(dtype=np.float64)
        else:
            lookup = {e: i for i, e in enumerate(space.expressions)}
            out["expr_true"] = np.array(
                [lookup.get(v, -1) if isinstance(v, str) else -1 for v in table["expression_true"]], dtype=np.int64
            )
    if space.va and "valence" in table.columns:
        out["va_pred"] = table[["valence", "arousal"]].to_numpy(dtype=np.float64)
        out["va_true"] = table[["valence_true", "arousal_true"]].to_numpy(dtype=np.float64)
    if space.aus and space.aus[0] in table.columns:
        out["au_scores"] = table[list(space.aus)].to_numpy(dtype=np.float64)
        out["au_true"] = table[[f"{a}_true" for a in space.aus]].to_numpy(dtype=np.float64)
    return out


def _subset_outputs(outputs, model_space: LabelSpace, space: LabelSpace):
    """Outputs restricted to the shared label space's columns (by name)."""
    from affectlab.methods.base import Outputs

    expr = outputs.expr_logits
    if expr is not None and space.expressions:
        expr = expr[:, [model_space.expressions.index(e) for e in space.expressions]]
    elif not space.expressions:
        expr = None
    au = outputs.au_logits
    if au is not None and space.aus:
        au = au[:, [model_space.aus.index(a) for a in space.aus]]
    elif not space.aus:
        au = None
    va = outputs.va if space.va else None
    return Outputs(expr_logits=expr, va=va, au_logits=au)


def evaluate(
    model,
    data,
    *,
    batch_size: int = 64,
    protocol: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
    device: str | None = None,
    smooth=None,
    smooth_level: str = "auto",
    detect_faces: bool = False,
    detector: Any = "auto",
) -> EvaluationResult:
    """Evaluate a trained model on a dataset with the metrics of the papers (``expr_acc``, ``va_ccc``, ``au_f1_mean`` ...).

    Parameters
    ----------
    model : str or Path
        Run directory or model file (``RUN/model.ckpt``).
    data : str or dataset
        Dataset spec (``rafdb:/data/RAF-DB:test``) or a dataset object.
    batch_size : int
        Evaluation batch size.
    protocol : {None, "abaw"}
        ``"abaw"`` adds ``abaw_mtl`` (needs expressions, VA and AUs).
    num_workers : int
        DataLoader workers.
    progress : bool
        Show a progress bar.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default: CUDA when available.
    smooth : float, "auto", "stored" or mapping task -> mu, optional
        Temporal smoothing (equation 9 of 002) along each ``video`` of the data before
        the metrics; ``"auto"`` searches mu per task by 3-fold cross-validation over the
        videos (see :mod:`affectlab.evaluate.smoothing`).
    smooth_level : {"auto", "features", "outputs"}
        Smooth the features before the last FC (methods that expose them) or the outputs.
    detect_faces : bool
        The images are uncropped photographs: find the face with ``detector`` and crop it
        as the model's framing says, exactly as ``affectlab analyze`` does (one face per
        image: the largest, or the one at the row's face box), so the metrics are those
        analyze delivers (:mod:`affectlab.runtime.framing`).
    detector : str or callable
        The detector for ``detect_faces`` (``"auto"``: YuNet when present, else Haar).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ModelError, ConfigError, DatasetError
        Unloadable model, data sharing no descriptor with the model, empty data.

    Examples
    --------
    >>> res = evaluate("runs/baseline", "manifest:synth_test/labels.csv")  # doctest: +SKIP
    >>> res.metrics["expr_acc"]  # doctest: +SKIP
    """
    import pandas as pd
    import torch
    from affectlab.data.batch import Batches
    from affectlab.data.transforms import preprocessing_transform
    from affectlab.runtime.hub import load_model
    from affectlab.train.module import collect_predictions, compute_metrics, concat_predictions

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if protocol not in (None, "abaw"):
        raise ConfigError(f"unknown protocol {protocol!r}; expected abaw")
    method, info = load_model(model)
    model_space: LabelSpace = info["label_space"]
    ds = open_dataset(data, "--data")
    if len(ds) == 0:
        raise DatasetError(f"{dataset_name(ds)} is empty")
    space = shared_label_space(model_space, ds.label_space)
    if not space.tasks:
        raise ConfigError(
            f"{dataset_name(ds)} shares no descriptor with the model: the model predicts {', '.join(model_space.tasks)} "
            f"({', '.join(model_space.expressions[:8])}{'...' if len(model_space.expressions) > 8 else ''}"
            f"{'; ' + ', '.join(model_space.aus) if model_space.aus else ''}), the data carry "
            f"{', '.join(ds.label_space.tasks) or 'no labels'}"
        )
    notes = unscored_notes(ds, space)
    ds = ds.with_label_space(space)
    if info.get("preprocessing") is not None:
        set_transform(ds, preprocessing_transform(info["preprocessing"], info.get("transform", {}).get("eval"), False))
    framing = None
    if detect_faces:
        if info.get("preprocessing") is None:
            raise ConfigError("detect_faces needs an image model; this model works on cached features")
        from affectlab.runtime.framing import set_framing

        framer = set_framing(ds, info["preprocessing"], detector=detector, progress=progress)
        framing = {"detector": framer.detector_name, "framing": framer.framing.to_dict(), "images": framer.cached,
                   "no_face": len(framer.missed)}
    check_inputs(type(method), [ds])  # images for image models, cached features for feature models
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    method.to(dev).eval()
    smoother = None
    if smooth is not None:
        from affectlab.evaluate.smoothing import EvalSmoother

        smoother = EvalSmoother(smooth, method, info, model_space, space, level=smooth_level)
    loop = Batches(ds, batch_size=batch_size, device=dev, progress=progress, num_workers=num_workers,
                   description=f"evaluating {dataset_name(ds)}")
    parts = []
    # per-sample explanations the method declares (e.g. the archetype of an AURA head)
    extra_columns = method.extra_columns()
    extras: dict[str, list[np.ndarray]] = {k: [] for k in extra_columns}
    for batch in loop:
        raw = method(batch)
        outputs = _subset_outputs(raw, model_space, space)
        parts.append(collect_predictions(outputs, batch, space))
        for key in extras:
            if torch.is_tensor(raw.extras.get(key)):
                extras[key].append(raw.extras[key].cpu().numpy())
        if smoother is not None:
            smoother.collect(raw, batch)
    skipped = loop.skipped
    preds = concat_predictions(parts)
    if not preds:
        raise DatasetError(f"{dataset_name(ds)}: no readable sample to evaluate ({skipped} unreadable)")
    smoothing = None
    if smoother is not None:
        from affectlab.evaluate.smoothing import smoothing_metrics

        preds, smoothing = smoother.apply(preds, getattr(ds, "labels", None), dataset_name(ds))
    metrics = compute_metrics(preds, space, protocol=protocol)
    if smoothing is not None:
        metrics.update(smoothing_metrics(smoothing))
    confusion = None
    if "expr_scores" in preds and not space.multilabel:
        from affectlab import metrics as M

        y = preds["expr_true"]
        keep = y >= 0
        if keep.any():
            confusion = M.confusion_matrix(
                y[keep], preds["expr_scores"][keep].argmax(axis=1), num_classes=len(space.expressions)
            )
    metrics.update(native_va_metrics(metrics, dataset_name(ds)))
    table = predictions_table(preds, space, getattr(ds, "labels", None))
    values = method.tabulate_extras({k: np.concatenate(v) for k, v in extras.items() if v})
    for key, dtype in extra_columns.items():
        if key in values and len(values[key]) == len(table):
            table[key] = pd.Series(np.asarray(values[key]), dtype=dtype)
    return EvaluationResult(
        metrics=metrics, predictions=table, label_space=space, confusion=confusion, skipped=skipped, smoothing=smoothing,
        framing=framing,
        notes=notes,
    )


def unscored_notes(ds, space: LabelSpace) -> list[str]:
    """Say how many labelled samples are scored when some carry a class the model does not know.

    Those samples cannot count for or against the model, so the expression metrics cover
    the others only; without this note a score on 38 of 300 samples reads as a score on 300.
    """
    data_space = getattr(ds, "label_space", None)
    targets = getattr(ds, "expr_targets", None)
    if data_space is None or targets is None or "expr" not in space.tasks or data_space.multilabel:
        return []
    targets = np.asarray(targets)
    labelled = targets[targets >= 0]
    if not len(labelled):
        return []
    names = np.asarray(data_space.expressions, dtype=object)[labelled]
    known = np.isin(names, np.asarray(space.expressions, dtype=object))
    if known.all():
        return []
    unknown = _value_counts(names[~known])
    listed = ", ".join(f"{name} ({count})" for name, count in unknown)
    return [
        f"expression scored on {int(known.sum())} of {len(labelled)} samples: the others have a class the model "
        f"does not know ({listed})"
    ]


def _value_counts(values) -> list[tuple[str, int]]:
    """(value, count) pairs, most frequent first."""
    uniq, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(str(uniq[i]), int(counts[i])) for i in order]


def native_va_metrics(metrics: Mapping[str, Any], data_name: str) -> dict[str, float]:
    """RMSE / MAE of the continuous dimensions on the data's native scale (EMOTIC 1..10).

    Labels are evaluated on the canonical [-1, 1] scale; for a format whose native range
    differs (``VA_SCALES`` of :mod:`affectlab.data.schema`: EMOTIC 1..10, AFEW-VA -10..10)
    the errors scale linearly, so ``<dim>_rmse_native = scale * <dim>_rmse`` (CAGE's
    Table 8 reports both; CCC is scale-invariant). ``data_name`` is the dataset spec.
    """
    from affectlab.data.schema import VA_SCALES

    fmt = str(data_name).split(":", 1)[0].strip().lower()
    if fmt not in VA_SCALES or VA_SCALES[fmt][2] == 1.0:
        return {}
    scale = VA_SCALES[fmt][2]
    out = {}
    for dim in ("valence", "arousal", "dominance"):
        for kind in ("rmse", "mae"):
            v = metrics.get(f"{dim}_{kind}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{dim}_{kind}_native"] = float(v) * scale
    return out


def metrics_rows(metrics: Mapping[str, Any], per_class: bool = False) -> list[tuple[str, str]]:
    """(name, formatted value) rows of a metrics dict; per-class dicts expand to rows."""
    rows: list[tuple[str, str]] = []
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            if per_class:
                for sub, v in value.items():
                    rows.append((f"{key}[{sub}]", _fmt(v)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, _fmt(value)))
    return rows


def _fmt(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if not math.isfinite(f) else f"{f:.4f}"


def run_evaluation(
    model,
    data,
    *,
    json_out: str | os.PathLike | None = None,
    predictions_out: str | os.PathLike | None = None,
    plots: str | os.PathLike | None = None,
    per_class: bool = False,
    protocol: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    smooth=None,
    smooth_level: str = "auto",
    detect_faces: bool = False,
    detector: Any = "auto",
) -> EvaluationResult:
    """What ``affectlab evaluate`` does: :func:`evaluate`, then write the requested files.

    ``json_out`` gets the metrics (per-class entries included); ``predictions_out`` the
    prediction table (``.csv`` or ``.parquet``); ``plots`` (a folder) the expression
    confusion matrix ``confusion_matrix.png`` when ``per_class`` is set, and always the
    row-normalised confusion matrix and the cumulative absolute-error curves of
    :func:`affectlab.evaluate.plots.evaluation_plots`.
    """
    from affectlab.runtime.hub import is_packaged

    if isinstance(smooth, str) and smooth.strip().lower() == "auto" and is_packaged(model):
        # a packaged model lives inside the installed package: storing mu there would be lost on upgrade
        raise ConfigError(
            f"--smooth auto stores the chosen mu in the model file, and {str(model)!r} is a packaged model; "
            f"copy it first (cp \"$(affectlab models path {model})\" my_model.ckpt) and evaluate my_model.ckpt"
        )
    result = evaluate(
        model, data, batch_size=batch_size, protocol=protocol, num_workers=num_workers, progress=progress,
        smooth=smooth, smooth_level=smooth_level, detect_faces=detect_faces, detector=detector,
    )
    if result.smoothing is not None and "search" in result.smoothing:
        # --smooth auto: keep the chosen mu with the model (evaluate --smooth stored, analyze --smooth auto)
        from affectlab.evaluate.smoothing import store_smoothing

        for i, p in enumerate(store_smoothing(model, result.smoothing)):
            result.files["smoothing" if i == 0 else "smoothing_json"] = p
    if json_out is not None:
        from affectlab.train.run import write_metrics

        result.files["json"] = write_metrics(json_out, result.metrics)
    if predictions_out is not None:
        p = Path(predictions_out)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix.lower() == ".parquet":
            result.predictions.to_parquet(p, index=False)
        else:
            result.predictions.to_csv(p, index=False)
        result.files["predictions"] = p
    if plots is not None:
        # Figure 9 (row-normalised confusion) and Figures 10-11 (cumulative |error|) of CAGE
        from affectlab.evaluate.plots import evaluation_plots

        result.files.update(evaluation_plots(result, plots))
    if per_class and result.confusion is not None:
        if plots is not None:
            folder = Path(plots)
        elif json_out is not None:
            folder = Path(json_out).parent
        else:
            folder = Path(".")
        from affectlab.evaluate.plots import plot_confusion_normalized

        result.files["confusion"] = plot_confusion_normalized(
            result.confusion, result.label_space.expressions, folder / "confusion_matrix.png", title="expressions"
        )
    return result
