"""``train`` and ``evaluate``: the library functions behind ``affectlab train`` / ``evaluate``.

Training
--------
:func:`train` resolves the label space (the training set's descriptors restricted to
``tasks``; validation data are re-encoded in it by name), builds the method, hands it
the training-set statistics (``set_training_stats``), and runs one Lightning
``Trainer`` with :class:`~affectlab.train.module.AffectModule` and
:class:`~affectlab.train.datamodule.AffectDataModule`. Without a validation set a
subject-disjoint ``val_fraction`` (default 10%) of the training set is held out
(random rows when the data has no ``subject`` column). The best epoch, by
``config.monitor``, is saved as a self-contained ``RUN/model.ckpt``; see
:mod:`affectlab.train.run` for the run directory.

Reproducibility: ``seed`` seeds Python, NumPy and torch; samplers are seeded per epoch;
``RUN/last.ckpt`` also stores the random-number-generator states, so a resumed run
continues exactly where the interrupted one stopped (CPU, ``num_workers=0``).

Several processes: ``devices=N`` / ``num_nodes=M`` / ``strategy="ddp"`` use Lightning's
DDP (gloo on CPU, NCCL on GPUs). Only rank 0 writes the run directory.
"""

from __future__ import annotations

import logging
import math
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError, DatasetError
from affectlab.train import run as rundir
from affectlab.train.config import MONITORABLE, TrainConfig, method_config_for

log = logging.getLogger(__name__)

#: the DESIGN.md metric names a run's ``metrics.json`` may hold
DESIGN_METRICS = (
    "expr_acc",
    "expr_f1_macro",
    "expr_f1",
    "topk_acc",
    "valence_ccc",
    "arousal_ccc",
    "va_ccc",
    "valence_rmse",
    "arousal_rmse",
    "valence_mae",
    "arousal_mae",
    "au_f1",
    "au_f1_mean",
    "abaw_mtl",
)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run_dir : Path
    metrics : dict
        Best validation metrics (DESIGN.md names), as written to ``metrics.json``.
    best_epoch : int
        0-based epoch of the best checkpoint.
    monitor : str
        Name and ``monitor_value`` of the selection metric.
    epochs : int
        Epochs completed.
    """

    run_dir: Path
    metrics: dict
    best_epoch: int
    monitor: str
    monitor_value: float
    epochs: int
    label_space: LabelSpace | None = None
    skipped: int = 0


# ------------------------------------------------------------------------------ data
def _open(data, what: str):
    """A dataset from a spec string / path, or the dataset object itself."""
    if isinstance(data, (str, os.PathLike)):
        from affectlab.data.datasets import load_dataset
        from affectlab.features.dataset import is_feature_spec, open_features

        if is_feature_spec(data):  # features:FEAT.zarr -- cached backbone features
            return open_features(data)
        return load_dataset(data)
    if data is None or not hasattr(data, "label_space"):
        raise ConfigError(f"{what} must be a dataset spec such as 'manifest:DIR/labels.csv', got {data!r}")
    return data


def _name(ds) -> str:
    return str(getattr(ds, "name", type(ds).__name__))


def merged_label_space(datasets: Sequence, tasks: Sequence[str] | None) -> LabelSpace:
    """Union of the datasets' label spaces (canonical expression order), restricted to ``tasks``.

    Raises
    ------
    ConfigError
        When the data carry none of the requested descriptors.
    """
    from affectlab.data.schema import ALL_EXPRESSIONS, sort_aus

    spaces = [d.label_space for d in datasets]
    multilabel = any(s.multilabel for s in spaces)
    names: list[str] = []
    for s in spaces:
        names.extend(e for e in s.expressions if e not in names)
    if not multilabel:
        canon = [e for e in ALL_EXPRESSIONS if e in names]
        names = canon + [e for e in names if e not in canon]
    if len(spaces) == 1:
        aus = list(spaces[0].aus)
        names = list(spaces[0].expressions)
    else:
        aus = sort_aus(a for s in spaces for a in s.aus)
    full = LabelSpace(expressions=tuple(names), aus=tuple(aus), va=any(s.va for s in spaces), multilabel=multilabel)
    requested = list(tasks) if tasks else ["expr", "va", "au"]
    space = full.restrict(requested)
    where = ", ".join(_name(d) for d in datasets)
    if not space.tasks:
        raise ConfigError(
            f"training data {where} carry none of the requested descriptors ({', '.join(requested)}); "
            f"they carry: {', '.join(full.tasks) or 'no labels at all'}"
        )
    absent = [t for t in requested if t not in space.tasks]
    if tasks and absent:
        warnings.warn(f"training data {where} carry no {', '.join(absent)} labels; training {', '.join(space.tasks)}")
    return space


def training_stats(datasets: Sequence, space: LabelSpace) -> dict[str, Any]:
    """Counts the methods' ``set_training_stats`` receives, from the encoded targets."""
    n = sum(len(d) for d in datasets)
    stats: dict[str, Any] = {"num_samples": int(n)}
    if space.expressions:
        c = len(space.expressions)
        counts = np.zeros(c, dtype=np.int64)
        for d in datasets:
            y = np.asarray(d.expr_targets)
            if space.multilabel:
                counts += (y == 1).sum(axis=0).astype(np.int64)
            else:
                counts += np.bincount(y[y >= 0], minlength=c)[:c]
        stats["class_counts"] = counts
    if space.aus:
        pos = np.zeros(len(space.aus), dtype=np.int64)
        neg = np.zeros(len(space.aus), dtype=np.int64)
        for d in datasets:
            a = np.asarray(d.au_targets)
            pos += (a == 1).sum(axis=0)
            neg += (a == 0).sum(axis=0)
        stats["au_positive"], stats["au_negative"] = pos, neg
    if space.va:
        stats["va_labelled"] = int(sum(np.isfinite(np.asarray(d.va_targets)).all(axis=1).sum() for d in datasets))
    return stats


def holdout_split(dataset, fraction: float, seed: int):
    """(train, validation): subject-disjoint when the labels have ``subject``, else random rows."""
    labels = getattr(dataset, "labels", None)
    n = len(dataset)
    if n < 2:
        raise DatasetError(f"{_name(dataset)} has {n} sample(s): too few to hold out a validation split; pass --val")
    if labels is not None and "subject" in labels.columns and labels["subject"].nunique(dropna=True) >= 2:
        train, val = dataset.split_by("subject", (1.0 - fraction, fraction), seed=seed)
        if len(train) and len(val):
            return train, val
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(int(round(fraction * n)), 1), n - 1)
    return dataset.subset(np.sort(order[k:])), dataset.subset(np.sort(order[:k]))


def _preprocessing(method, cfg: TrainConfig) -> dict[str, Any] | None:
    """The image preprocessing the model needs: the backbone's, with config overrides."""
    if getattr(method, "input_kind", "image") != "image":
        return None
    pre = getattr(method, "preprocessing", None)
    if pre is None:
        pre = getattr(getattr(method, "backbone", None), "preprocessing", None)
    from affectlab.features.backbones import Preprocessing

    if pre is None:
        pre = Preprocessing.named(cfg.normalize or "imagenet", cfg.image_size or 64)
    pre = Preprocessing.from_dict(pre.to_dict() if hasattr(pre, "to_dict") else dict(pre))
    if cfg.normalize is not None and cfg.normalize != pre.normalize:
        pre = Preprocessing.named(cfg.normalize, pre.input_size, pre.interpolation)
    if cfg.image_size is not None:
        pre = Preprocessing.from_dict({**pre.to_dict(), "input_size": cfg.image_size})
    return pre.to_dict()


def image_transform(preprocessing: Mapping[str, Any], preset: str | None, train: bool):
    """The transform of :mod:`affectlab.data.transforms` for stored preprocessing."""
    from affectlab.data.transforms import NORMALIZATIONS, build_transform

    normalize = preprocessing.get("normalize", "imagenet")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalisation {normalize!r} has no transform preset; use imagenet, clip or none")
    return build_transform(preset or ("default" if train else "eval"), int(preprocessing["input_size"]), normalize, train)


def _set_transform(dataset, transform) -> None:
    setter = getattr(dataset, "set_transform", None)
    if callable(setter):
        setter(transform)


def _fill_data_keys(cls, config: dict[str, Any], sample: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill method config keys that the data determine (``feature_dim``, ``token_dim``)."""
    fields = cls.Config.model_fields
    out = dict(config)
    if sample is None:
        return out
    if "feature_dim" in fields and out.get("feature_dim") is None and "features" in sample:
        out["feature_dim"] = int(sample["features"].shape[-1])
    if "token_dim" in fields and out.get("token_dim") is None and "tokens" in sample:
        out["token_dim"] = int(sample["tokens"].shape[-1])
    return out


def _check_inputs(method_cls, datasets: Sequence) -> Mapping[str, Any] | None:
    kind = getattr(method_cls, "input_kind", "image")
    sample = None
    for d in datasets:
        for i in range(min(len(d), 8)):
            sample = d[i]
            if sample is not None:
                break
        if sample is not None:
            break
    if sample is None:
        return None
    if kind not in sample:
        have = [k for k in ("image", "features") if k in sample]
        hint = " (extract features first: affectlab extract)" if kind == "features" else ""
        raise ConfigError(
            f"method {method_cls.name!r} works on {kind} but {_name(datasets[0])} yields "
            f"{', '.join(have) or 'neither images nor features'}{hint}"
        )
    return sample


# -------------------------------------------------------------------------- callback
def _rng_state() -> dict[str, Any]:
    import torch

    # numpy's state as plain values + a tensor: last.ckpt must load with weights_only=True
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _scalar_items(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _design_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k in DESIGN_METRICS}


def _make_recorder(out: Path, cfg: TrainConfig, preprocessing, transform_info):
    """A Lightning callback writing the run directory (rank 0) and keeping RNG states."""
    from lightning.pytorch.callbacks import Callback

    from affectlab.train.checkpoint import save_model

    class RunRecorder(Callback):
        def __init__(self):
            self.rows: list[dict[str, Any]] = []
            self.best_value: float | None = None
            self.best_epoch = -1
            self.best_metrics: dict[str, Any] = {}

        @property
        def state_key(self) -> str:
            return "affectlab_run"

        def setup(self, trainer, pl_module, stage):
            if trainer.is_global_zero:
                rundir.write_config(out, cfg)

        def _better(self, value: float) -> bool:
            if not math.isfinite(value):
                return self.best_value is None and self.best_epoch < 0
            if self.best_value is None or not math.isfinite(self.best_value):
                return True
            return value < self.best_value if cfg.monitor_mode == "min" else value > self.best_value

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            train_losses = pl_module.finish_train_epoch()
            epoch = int(trainer.current_epoch)
            value = pl_module.monitor_value()
            row: dict[str, Any] = {"epoch": epoch, "lr": float(trainer.optimizers[0].param_groups[0]["lr"])}
            row.update({f"train_{k}": v for k, v in train_losses.items()})
            row.update({f"val_{k}": v for k, v in pl_module.val_losses.items()})
            row.update(_scalar_items(pl_module.val_metrics))
            self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
            improved = self._better(value)
            if improved:
                self.best_value, self.best_epoch = value, epoch
                self.best_metrics = _design_metrics(pl_module.val_metrics)
            if trainer.is_global_zero:
                rundir.write_log(out / rundir.LOG_FILE, self.rows)
                if improved:
                    info = {
                        "best_epoch": epoch,
                        "monitor": cfg.monitor_name,
                        "monitor_value": value,
                        "config": cfg.model_dump(mode="json"),
                    }
                    save_model(
                        out / rundir.MODEL_FILE,
                        pl_module.method,
                        preprocessing=preprocessing,
                        transform=transform_info,
                        train_info=info,
                    )
                    rundir.write_metrics(out / rundir.METRICS_FILE, self.best_metrics)

        def state_dict(self):
            return {
                "rows": self.rows,
                "best_value": self.best_value,
                "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics,
                "rng": _rng_state(),
            }

        def load_state_dict(self, state):
            self.rows = list(state.get("rows", []))
            self.best_value = state.get("best_value")
            self.best_epoch = int(state.get("best_epoch", -1))
            self.best_metrics = dict(state.get("best_metrics", {}))
            if "rng" in state:
                _set_rng_state(state["rng"])

    return RunRecorder()


def _last_checkpoint_class():
    from lightning.pytorch.callbacks import Callback

    class LastCheckpoint(Callback):
        """Save Lightning's full checkpoint at every epoch end (atomically) for ``--resume``."""

        def __init__(self, path: Path):
            self.path = Path(path)

        def on_train_epoch_end(self, trainer, pl_module):
            pl_module.method_epoch_end()
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp)  # collective; rank 0 writes
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
            trainer.strategy.barrier("affectlab_last_checkpoint")

    return LastCheckpoint


def _LastCheckpoint(path: Path):
    return _last_checkpoint_class()(path)


# ----------------------------------------------------------------------------- train
def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    train_data=None,
    val_data=None,
    callbacks: Iterable = (),
    progress: bool = True,
) -> TrainResult:
    """Train a method and write a run directory.

    Parameters
    ----------
    config : TrainConfig
        Resolved settings (:func:`affectlab.train.config.resolve_config`).
    out : str or Path
        Run directory. It must not hold a run unless ``resume``.
    resume : bool
        Continue the run in ``out`` from ``out/last.ckpt``.
    train_data, val_data : spec, dataset or list of them, optional
        Override ``config.train`` / ``config.val`` (datasets following
        :mod:`affectlab.data.batch`, e.g. from :func:`affectlab.load_dataset`).
    callbacks : iterable of lightning Callback
        Extra callbacks.
    progress : bool
        Show a progress bar.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError, DatasetError
        Bad settings, data without the requested descriptors, an empty split.

    Examples
    --------
    >>> from affectlab.train.config import resolve_config
    >>> cfg = resolve_config(preset="baseline", options={"train": "manifest:synth/labels.csv"})  # doctest: +SKIP
    >>> result = train(cfg, "runs/baseline")  # doctest: +SKIP
    >>> result.metrics["expr_acc"]  # doctest: +SKIP
    """
    import lightning as L
    import torch

    from affectlab.methods.base import get_method_class
    from affectlab.train.datamodule import AffectDataModule
    from affectlab.train.module import AffectModule

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    cfg = config
    out = Path(out)
    last = None
    if resume:
        last = rundir.check_resumable(out)
    elif _is_rank_zero():
        rundir.check_new_run(out)
    method_cls = get_method_class(cfg.method)
    if not method_cls.trainable:
        from affectlab.methods.base import available_methods

        raise ConfigError(
            f"method {cfg.method!r} is inference-only (an imported model) and cannot be trained; "
            f"trainable methods: {', '.join(available_methods())}"
        )

    # -- data -----------------------------------------------------------------------
    train_src = train_data if train_data is not None else cfg.train
    if train_src is None:
        raise ConfigError("no training data: pass --train SPEC")
    train_list = list(train_src) if isinstance(train_src, (list, tuple)) else [train_src]
    train_sets = [_open(d, "--train") for d in train_list]
    for d in train_sets:
        if len(d) == 0:
            raise DatasetError(f"training set {_name(d)} is empty")
    space = merged_label_space(train_sets, cfg.tasks)
    train_sets = [d.with_label_space(space) for d in train_sets]
    val_src = val_data if val_data is not None else cfg.val
    if val_src is None:
        if len(train_sets) > 1:
            parts = [holdout_split(d, cfg.val_fraction, cfg.seed) for d in train_sets]
            train_sets = [p[0] for p in parts]
            val_sets = [p[1] for p in parts]
        else:
            tr, va = holdout_split(train_sets[0], cfg.val_fraction, cfg.seed)
            train_sets, val_sets = [tr], [va]
    else:
        val_list = list(val_src) if isinstance(val_src, (list, tuple)) else [val_src]
        val_sets = [_open(d, "--val") for d in val_list]
        for d in val_sets:
            if len(d) == 0:
                raise DatasetError(f"validation set {_name(d)} is empty")
            shared = [t for t in space.tasks if t in d.label_space.tasks]
            if not shared:
                raise ConfigError(
                    f"validation set {_name(d)} carries none of the trained descriptors ({', '.join(space.tasks)}); "
                    f"it carries: {', '.join(d.label_space.tasks) or 'no labels'}"
                )
        val_sets = [d.with_label_space(space) for d in val_sets]
    if len(val_sets) > 1:
        val_set = _concat_eval(val_sets)
    else:
        val_set = val_sets[0]

    # -- model ----------------------------------------------------------------------
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    sample = _check_inputs(method_cls, train_sets)
    mcfg = _fill_data_keys(method_cls, method_config_for(cfg), sample)
    method = method_cls(space, mcfg)
    method.set_training_stats(training_stats(train_sets, space))
    preprocessing = _preprocessing(method, cfg)
    transform_info = {}
    if preprocessing is not None:
        transform_info = {"train": cfg.train_transform or "default", "eval": cfg.eval_transform or "eval"}
        for d in train_sets:
            _set_transform(d, image_transform(preprocessing, transform_info["train"], True))
        for d in val_sets:
            _set_transform(d, image_transform(preprocessing, transform_info["eval"], False))
    name = cfg.monitor_name
    needed = MONITORABLE.get(name)
    if needed is not None and needed not in space.tasks:
        raise ConfigError(f"monitor {name!r} needs {needed} labels, but the model learns {', '.join(space.tasks)}")

    module = AffectModule(method, cfg)
    data = AffectDataModule(train_sets, val_set, cfg)

    # -- trainer --------------------------------------------------------------------
    recorder = _make_recorder(out, cfg, preprocessing, transform_info)
    cbs = [recorder, _LastCheckpoint(out / rundir.LAST_FILE), *callbacks]
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        cbs.append(RichProgressBar(leave=True))
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        gradient_clip_val=cfg.grad_clip,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        callbacks=cbs,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,  # RunRecorder writes model.ckpt, _LastCheckpoint last.ckpt
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(out),
        log_every_n_steps=1,
    )
    quiet = [] if progress else [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        threads = torch.get_num_threads()
        if cfg.threads is not None:
            # small CNNs on a shared CPU: extra OpenMP threads mostly wait for each other
            torch.set_num_threads(cfg.threads)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if last is not None else None, weights_only=True)
        finally:
            torch.set_num_threads(threads)
    for q, level in zip(quiet, levels):
        q.setLevel(level)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if trainer.interrupted:
        raise KeyboardInterrupt
    result = TrainResult(
        run_dir=out,
        metrics=dict(recorder.best_metrics),
        best_epoch=recorder.best_epoch,
        monitor=cfg.monitor_name,
        monitor_value=float("nan") if recorder.best_value is None else float(recorder.best_value),
        epochs=int(trainer.current_epoch),
        label_space=space,
        skipped=int(module.skipped),
    )
    if recorder.best_epoch < 0 and (out / rundir.MODEL_FILE).is_file():
        # spawn/fork launchers trained in child processes: read what rank 0 wrote
        from affectlab.train.checkpoint import read_payload

        info = read_payload(out / rundir.MODEL_FILE).get("train", {})
        result.metrics = rundir.read_metrics(out)
        result.best_epoch = int(info.get("best_epoch", -1))
        result.monitor_value = float(info.get("monitor_value", float("nan")))
        result.epochs = len(pd_rows(out / rundir.LOG_FILE))
    return result


def pd_rows(path: Path) -> list[dict]:
    """Rows of a run's ``log.csv`` (empty when absent)."""
    import csv

    if not Path(path).is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _concat_eval(datasets: Sequence):
    """Several validation sets as one, with unique ``index`` values per sample."""
    from torch.utils.data import Dataset

    class _Offset(Dataset):
        def __init__(self, parts):
            self.parts = list(parts)
            self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

        def __len__(self):
            return int(self.offsets[-1])

        def __getitem__(self, i):
            k = int(np.searchsorted(self.offsets, i, side="right") - 1)
            sample = self.parts[k][i - int(self.offsets[k])]
            if sample is not None:
                sample = dict(sample)
                sample["index"] = sample["index"] + int(self.offsets[k])
            return sample

    return _Offset(datasets)


# -------------------------------------------------------------------------- evaluate
@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    metrics : dict
        DESIGN.md metric names for the descriptors the model and data share.
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
    #: ``evaluate(smooth=...)``: level, mu per task and the search (:mod:`affectlab.train.smoothing`)
    smoothing: dict | None = None


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
) -> EvaluationResult:
    """Evaluate a trained model on a dataset with the metrics of DESIGN.md.

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
        videos (see :mod:`affectlab.train.smoothing`).
    smooth_level : {"auto", "features", "outputs"}
        Smooth the features before the last FC (methods that expose them) or the outputs.

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
    from torch.utils.data import DataLoader

    from affectlab.data.batch import batch_size as count_batch
    from affectlab.data.batch import collate
    from affectlab.train.checkpoint import load_model
    from affectlab.train.module import collect_predictions, compute_metrics, concat_predictions

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if protocol not in (None, "abaw"):
        raise ConfigError(f"unknown protocol {protocol!r}; expected abaw")
    method, info = load_model(model)
    model_space: LabelSpace = info["label_space"]
    ds = _open(data, "--data")
    if len(ds) == 0:
        raise DatasetError(f"{_name(ds)} is empty")
    space = shared_label_space(model_space, ds.label_space)
    if not space.tasks:
        raise ConfigError(
            f"{_name(ds)} shares no descriptor with the model: the model predicts {', '.join(model_space.tasks)} "
            f"({', '.join(model_space.expressions[:8])}{'...' if len(model_space.expressions) > 8 else ''}"
            f"{'; ' + ', '.join(model_space.aus) if model_space.aus else ''}), the data carry "
            f"{', '.join(ds.label_space.tasks) or 'no labels'}"
        )
    ds = ds.with_label_space(space)
    if info.get("preprocessing") is not None:
        _set_transform(ds, image_transform(info["preprocessing"], info.get("transform", {}).get("eval"), False))
    _check_inputs(type(method), [ds])  # images for image models, cached features for feature models
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    method.to(dev).eval()
    smoother = None
    if smooth is not None:
        from affectlab.train.smoothing import EvalSmoother

        smoother = EvalSmoother(smooth, method, info, model_space, space, level=smooth_level)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    parts, skipped = [], 0
    # per-sample explanations the method declares (e.g. the archetype of an AURA head)
    extra_columns = method.extra_columns()
    extras: dict[str, list[np.ndarray]] = {k: [] for k in extra_columns}
    iterator: Iterable = loader
    if progress:
        from rich.progress import track

        iterator = track(loader, description=f"evaluating {_name(ds)}", total=len(loader), transient=True)
    with torch.inference_mode():
        for batch in iterator:
            skipped += int(batch.get("skipped", 0))
            if count_batch(batch) == 0:
                continue
            batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
            raw = method(batch)
            outputs = _subset_outputs(raw, model_space, space)
            parts.append(collect_predictions(outputs, batch, space))
            for key in extras:
                if torch.is_tensor(raw.extras.get(key)):
                    extras[key].append(raw.extras[key].cpu().numpy())
            if smoother is not None:
                smoother.collect(raw, batch)
    preds = concat_predictions(parts)
    if not preds:
        raise DatasetError(f"{_name(ds)}: no readable sample to evaluate ({skipped} unreadable)")
    smoothing = None
    if smoother is not None:
        from affectlab.train.smoothing import smoothing_metrics

        preds, smoothing = smoother.apply(preds, getattr(ds, "labels", None), _name(ds))
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
    metrics.update(native_va_metrics(metrics, _name(ds)))
    table = predictions_table(preds, space, getattr(ds, "labels", None))
    values = method.tabulate_extras({k: np.concatenate(v) for k, v in extras.items() if v})
    for key, dtype in extra_columns.items():
        if key in values and len(values[key]) == len(table):
            table[key] = pd.Series(np.asarray(values[key]), dtype=dtype)
    return EvaluationResult(
        metrics=metrics, predictions=table, label_space=space, confusion=confusion, skipped=skipped, smoothing=smoothing
    )


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


def run_training(
    *,
    method: str | None = None,
    train_specs: Sequence[str] | None = None,
    val_specs: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    preset: str | None = None,
    resume: str | os.PathLike | None = None,
    sets: Sequence[str] = (),
    progress: bool = True,
    **options,
) -> TrainResult:
    """What ``affectlab train`` does: resolve the configuration, then :func:`train`.

    A new run needs ``train_specs`` and ``out``; ``resume=RUN`` continues RUN with the
    settings of ``RUN/config.yaml`` (options given here override them, e.g. ``devices``).
    """
    from affectlab.train.config import resolve_config

    opts = {k: v for k, v in options.items() if v is not None}
    if method is not None:
        opts["method"] = method
    if train_specs:
        opts["train"] = list(train_specs) if len(train_specs) > 1 else train_specs[0]
    if val_specs:
        opts["val"] = list(val_specs) if len(val_specs) > 1 else val_specs[0]
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ConfigError("--resume continues a run in its own directory; drop --out (or give the same path)")
        rundir.check_resumable(resume)
        cfg = resolve_config(base=rundir.read_config(resume), preset=preset, options=opts, sets=sets)
        return train(cfg, resume, resume=True, progress=progress)
    if out is None:
        raise ConfigError("missing --out RUN: the run directory to write")
    if not train_specs:
        raise ConfigError("missing --train SPEC: the training data (e.g. manifest:synth/labels.csv)")
    cfg = resolve_config(preset=preset, options=opts, sets=sets)
    return train(cfg, out, progress=progress)


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
) -> EvaluationResult:
    """What ``affectlab evaluate`` does: :func:`evaluate`, then write the requested files.

    ``json_out`` gets the metrics (per-class entries included); ``predictions_out`` the
    prediction table (``.csv`` or ``.parquet``); ``plots`` (a folder) the expression
    confusion matrix ``confusion_matrix.png`` when ``per_class`` is set, and always the
    row-normalised confusion matrix and the cumulative absolute-error curves of
    :func:`affectlab.interpret.cage_plots.evaluation_plots`.
    """
    if isinstance(smooth, str) and smooth.strip().lower() == "auto" and not Path(model).exists():
        # a packaged model lives inside the installed package: storing mu there would be lost on upgrade
        raise ConfigError(
            f"--smooth auto stores the chosen mu in the model file, and {str(model)!r} is a packaged model; "
            f"copy it first (cp \"$(affectlab models path {model})\" my_model.ckpt) and evaluate my_model.ckpt"
        )
    result = evaluate(
        model, data, batch_size=batch_size, protocol=protocol, num_workers=num_workers, progress=progress,
        smooth=smooth, smooth_level=smooth_level,
    )
    if result.smoothing is not None and "search" in result.smoothing:
        # --smooth auto: keep the chosen mu with the model (evaluate --smooth stored, analyze --smooth auto)
        from affectlab.train.smoothing import store_smoothing

        for i, p in enumerate(store_smoothing(model, result.smoothing)):
            result.files["smoothing" if i == 0 else "smoothing_json"] = p
    if json_out is not None:
        result.files["json"] = rundir.write_metrics(json_out, result.metrics)
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
        from affectlab.interpret.cage_plots import evaluation_plots

        result.files.update(evaluation_plots(result, plots))
    if per_class and result.confusion is not None:
        if plots is not None:
            folder = Path(plots)
        elif json_out is not None:
            folder = Path(json_out).parent
        else:
            folder = Path(".")
        from affectlab.interpret.cage_plots import plot_confusion_normalized

        result.files["confusion"] = plot_confusion_normalized(
            result.confusion, result.label_space.expressions, folder / "confusion_matrix.png", title="expressions"
        )
    return result
