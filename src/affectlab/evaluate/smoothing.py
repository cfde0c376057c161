"""Temporal smoothing inside ``affectlab evaluate --smooth`` (equation 9 of 002).

The recursion and the grid search are :mod:`affectlab.temporal`'s; this module only
arranges evaluation predictions into videos and feeds them through it:

* rows are grouped by the data's ``video`` column and ordered by ``frame`` (else by row
  order), so the data must be video frames (``affectlab synth --sequences``, ABAW, DISFA);
* **level** ``features`` (the paper, section 5.2): when the method names, per task, the
  feature its last FC reads (``smoothing_features``, e.g. SMM's ``sign`` and
  ``message``) and can re-apply that FC (``predict_from_features``), those features are
  smoothed and the FC recomputed; **level** ``outputs``: the per-frame probabilities and
  valence/arousal are smoothed (what ``affectlab analyze --smooth`` does online);
* ``--smooth auto`` picks ``mu`` in ``{0, ..., 10}`` per task by 3-fold cross-validation
  over the videos (:func:`affectlab.temporal.search_mu_per_task` scores), smooths with
  the chosen values, and stores them in the run (``model.ckpt``'s ``train.smoothing`` and
  ``RUN/smoothing.json``) so that ``evaluate --smooth stored`` and ``analyze --smooth auto``
  reuse them; ``--smooth MU`` or ``--smooth expr=9,va=9,au=7`` give the values directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from affectlab import temporal
from affectlab.temporal import TASKS, parse_smooth
from affectlab.errors import ConfigError

SMOOTHING_FILE = "smoothing.json"


def stored_smoothing(info: Mapping[str, Any]) -> dict | None:
    """The smoothing record a model carries (``train.smoothing``), or ``None``."""
    rec = dict(info.get("train") or {}).get("smoothing") or info.get("smoothing")
    return dict(rec) if rec else None


def store_smoothing(model, record: Mapping[str, Any]) -> list[Path]:
    """Write ``record`` into the model file's ``train.smoothing`` (atomically) and the run.

    Returns the files written (``model.ckpt`` and, for a run directory, ``smoothing.json``).
    """
    import torch

    from affectlab.modelfile import read_payload
    from affectlab.runtime.hub import resolve_model

    path = resolve_model(model)
    payload = read_payload(path)
    train = dict(payload.get("train") or {})
    train["smoothing"] = json.loads(json.dumps(record))
    payload["train"] = train
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    written = [path]
    if Path(model).is_dir():
        side = Path(model) / SMOOTHING_FILE
        side.write_text(json.dumps(record, indent=2) + "\n")
        written.append(side)
    return written


class EvalSmoother:
    """Collects what :func:`affectlab.evaluate.engine.evaluate` needs and smooths it.

    Parameters
    ----------
    spec : see :func:`affectlab.temporal.parse_smooth`
    method : Method
        The evaluated model (feature level needs ``smoothing_features`` and
        ``predict_from_features``).
    info : dict
        Its info (for ``stored``).
    model_space, space : LabelSpace
        The model's label space and the space shared with the data (columns are
        matched by name).
    level : {"auto", "features", "outputs"}
        ``auto``: features when the method exposes them, else outputs.
    n_folds, seed : int
        Cross-validation of ``auto``.
    """

    def __init__(self, spec, method, info, model_space, space, *, level: str = "auto", n_folds: int = 3, seed: int = 0):
        self.spec = parse_smooth(spec)
        if self.spec is None:
            raise ConfigError("EvalSmoother needs a smoothing value")
        if level not in ("auto", "features", "outputs"):
            raise ConfigError(f"smoothing level must be auto, features or outputs, got {level!r}")
        self.mu: dict[str, float] | None = None
        if self.spec == "stored":
            rec = stored_smoothing(info)
            if not rec or not rec.get("mu"):
                raise ConfigError(
                    f"--smooth stored: the model {info.get('path', '')} stores no smoothing; run "
                    "'affectlab evaluate --smooth auto' on validation videos first"
                )
            self.mu = {k: float(v) for k, v in dict(rec["mu"]).items()}
            if level == "auto":
                level = rec.get("level", "auto")
        elif isinstance(self.spec, dict):
            self.mu = dict(self.spec)
        names = dict(getattr(method, "smoothing_features", None) or {})
        has_fc = callable(getattr(method, "predict_from_features", None))
        if level == "features" and not (names and has_fc):
            raise ConfigError(
                f"method {getattr(method, 'name', '?')!r} exposes no features to smooth; use --smooth-level outputs"
            )
        self.level = "features" if (level in ("auto", "features") and names and has_fc) else "outputs"
        self.method, self.model_space, self.space = method, model_space, space
        self.names = {t: k for t, k in names.items() if t in space.tasks} if self.level == "features" else {}
        self.n_folds, self.seed = n_folds, seed
        self._parts: list[dict[str, np.ndarray]] = []

    # -- collection -------------------------------------------------------------------
    def collect(self, outputs, batch) -> None:
        """Keep the per-sample features of one batch (feature level only)."""
        if self.level != "features":
            return
        part = {"index": batch["index"].detach().cpu().numpy().astype(np.int64)}
        for key in set(self.names.values()):
            value = outputs.extras.get(key)
            if value is None:
                raise ConfigError(f"the model's outputs lack the feature {key!r} it names for smoothing")
            part[key] = value.detach().float().cpu().numpy()
        self._parts.append(part)

    def _features(self, index: np.ndarray) -> dict[str, np.ndarray]:
        merged = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        pos = {int(i): j for j, i in enumerate(merged["index"])}
        take = np.array([pos[int(i)] for i in index])
        return {k: v[take] for k, v in merged.items() if k != "index"}

    # -- heads --------------------------------------------------------------------------
    def _head(self, task: str, shape: tuple[int, ...]):
        """Function: flattened smoothed features [N, F] -> prediction arrays of ``preds``."""
        import torch

        method, ms, sp = self.method, self.model_space, self.space

        def fn(flat: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.asarray(flat, dtype=np.float32).reshape((-1,) + shape))
            with torch.inference_mode():
                dev = next((p.device for p in method.parameters()), torch.device("cpu"))
                y = method.predict_from_features(task, x.to(dev)).float().cpu()
            if task == "expr":
                y = torch.softmax(y[:, [ms.expressions.index(e) for e in sp.expressions]], dim=1)
            elif task == "au":
                y = torch.sigmoid(y[:, [ms.aus.index(a) for a in sp.aus]])
            else:
                y = y[:, :2]
            return y.numpy().astype(np.float64)

        return fn

    # -- smoothing ------------------------------------------------------------------------
    def apply(self, preds: dict[str, np.ndarray], labels, data_name: str = "data") -> tuple[dict, dict]:
        """Smooth ``preds`` (the arrays of ``collect_predictions``) along each video.

        Returns
        -------
        preds : dict
            The arrays, rows ordered by (video, frame), predictions smoothed.
        record : dict
            ``level``, ``mu`` (task -> mu) and, for ``auto``, ``search`` (per task:
            :meth:`MuSearch.to_dict`, incl. the cross-validated held-out scores) and ``data``.
        """
        if labels is None or "video" not in getattr(labels, "columns", ()):
            raise ConfigError(
                f"--smooth needs video data: {data_name} has no 'video' column (frames of one video share it; "
                "e.g. affectlab synth --sequences K --frames F)"
            )
        idx = np.asarray(preds["index"], dtype=np.int64)
        video = labels["video"].astype(str).to_numpy()[idx]
        frame = labels["frame"].to_numpy()[idx] if "frame" in labels.columns else np.arange(len(idx))
        frame = np.asarray(frame, dtype=np.float64)
        order = np.lexsort((np.where(np.isfinite(frame), frame, np.arange(len(idx))), video))
        preds = {k: np.asarray(v)[order] for k, v in preds.items()}
        video = video[order]
        tasks = {"expr": ("expr_scores", "expr_true"), "va": ("va_pred", "va_true"), "au": ("au_scores", "au_true")}
        present = [t for t in TASKS if t in self.space.tasks and tasks[t][0] in preds]
        inputs: dict[str, np.ndarray] = {}
        heads: dict[str, Any] = {}
        if self.level == "features":
            feats = self._features(preds["index"])
            for t in present:
                f = feats[self.names[t]]
                inputs[t] = f.reshape(len(f), -1)
                heads[t] = self._head(t, f.shape[1:])
        else:
            for t in present:
                inputs[t] = preds[tasks[t][0]].astype(np.float64)
                heads[t] = lambda a: a
        record: dict[str, Any] = {"level": self.level}
        if self.spec == "auto":
            _, first = np.unique(video, return_index=True)
            cuts = np.sort(first)[1:]
            seq = lambda a: np.split(a, cuts)  # noqa: E731  (rows are grouped by video)
            searched = {}
            for t in present:
                y = preds[tasks[t][1]]
                score = temporal.TASK_SCORES[t]
                head = heads[t]
                res = temporal.search_mu(
                    seq(inputs[t]), seq(y), lambda yt, yp, s=score, h=head: s(yt, h(yp)),
                    n_folds=self.n_folds, seed=self.seed,
                )
                searched[t] = res
            self.mu = {t: float(r.best_mu) for t, r in searched.items()}
            record["search"] = {t: r.to_dict() for t, r in searched.items()}
            record["data"] = str(data_name)
        record["mu"] = {t: float(self.mu.get(t, 0.0)) for t in present}
        for t in present:
            mu = record["mu"][t]
            if mu > 0:
                preds[tasks[t][0]] = heads[t](temporal.smooth(inputs[t], mu, groups=video))
        return preds, record


def smoothing_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Scalar entries for metrics.json: ``smooth_mu_<task>`` and, after a search, the
    cross-validated held-out gain ``smooth_cv_gain_<task>`` (mean over folds of the score
    with the mu chosen on the other folds minus the score with mu = 0)."""
    out = {f"smooth_mu_{t}": float(v) for t, v in dict(record.get("mu") or {}).items()}
    for t, s in dict(record.get("search") or {}).items():
        held, raw = s.get("heldout_scores") or [], s.get("unsmoothed_scores") or []
        if held and raw:
            out[f"smooth_cv_gain_{t}"] = float(np.nanmean(held) - np.nanmean(raw))
    return out
