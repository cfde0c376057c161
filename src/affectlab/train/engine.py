"""``train``: the library function behind ``affectlab train``.

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

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from affectlab.data.schema import LabelSpace
from affectlab.data.transforms import preprocessing_transform
from affectlab.errors import ConfigError, DatasetError
from affectlab.runtime.data import check_inputs, dataset_name, open_dataset, set_transform
from affectlab.train import run as rundir
from affectlab.train.callbacks import last_checkpoint, make_recorder
from affectlab.train.config import MONITORABLE, TrainConfig, method_config_for
from affectlab.train.prepare import (
    concat_eval,
    fill_data_keys,
    holdout_split,
    model_preprocessing,
    training_label_space,
    training_stats,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run_dir : Path
    metrics : dict
        Best validation metrics (the names of ``metrics.METRIC_NAMES``), as written to ``metrics.json``.
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
        last = rundir.check_resumable(out)  # None: no epoch had ended; the run starts again
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
    train_sets = [open_dataset(d, "--train") for d in train_list]
    for d in train_sets:
        if len(d) == 0:
            raise DatasetError(f"training set {dataset_name(d)} is empty")
    space = training_label_space(train_sets, cfg.tasks)
    check_several_classes(train_sets, space)
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
        val_sets = [open_dataset(d, "--val") for d in val_list]
        for d in val_sets:
            if len(d) == 0:
                raise DatasetError(f"validation set {dataset_name(d)} is empty")
            shared = [t for t in space.tasks if t in d.label_space.tasks]
            if not shared:
                raise ConfigError(
                    f"validation set {dataset_name(d)} carries none of the trained descriptors ({', '.join(space.tasks)}); "
                    f"it carries: {', '.join(d.label_space.tasks) or 'no labels'}"
                )
        val_sets = [d.with_label_space(space) for d in val_sets]
    if len(val_sets) > 1:
        val_set = concat_eval(val_sets)
    else:
        val_set = val_sets[0]

    # -- model ----------------------------------------------------------------------
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    sample = check_inputs(method_cls, train_sets)
    mcfg = fill_data_keys(method_cls, method_config_for(cfg), sample)
    method = method_cls(space, mcfg)
    method.set_training_stats(training_stats(train_sets, space))
    if not resume:
        # config.yaml records which weights the run started from (name, sha256, source)
        info = getattr(getattr(method, "backbone", None), "weights_info", None)
        cfg = cfg.model_copy(update={"initial_weights": dict(info) if info else None})
    preprocessing = model_preprocessing(method, cfg)
    transform_info = {}
    if preprocessing is not None:
        transform_info = {"train": cfg.train_transform or "default", "eval": cfg.eval_transform or "eval"}
        for d in train_sets:
            set_transform(d, preprocessing_transform(preprocessing, transform_info["train"], True))
        for d in val_sets:
            set_transform(d, preprocessing_transform(preprocessing, transform_info["eval"], False))
        if cfg.detect_faces:
            from affectlab.runtime.framing import set_framing

            # faces found once here (cached per path), before any DataLoader worker starts
            set_framing([*train_sets, *val_sets], preprocessing, detector=cfg.detector, progress=progress)
    name = cfg.monitor_name
    needed = MONITORABLE.get(name)
    if needed is not None and needed not in space.tasks:
        raise ConfigError(f"monitor {name!r} needs {needed} labels, but the model learns {', '.join(space.tasks)}")

    module = AffectModule(method, cfg)
    data = AffectDataModule(train_sets, val_set, cfg)

    # -- trainer --------------------------------------------------------------------
    recorder = make_recorder(out, cfg, preprocessing, transform_info)
    cbs = [recorder, last_checkpoint(out / rundir.LAST_FILE), *callbacks]
    if cfg.max_steps:
        from affectlab.train.callbacks import step_budget

        cbs.append(step_budget(cfg.max_steps))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        cbs.append(RichProgressBar(leave=True))
    with quiet_lightning():
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
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
        threads = torch.get_num_threads()
        if cfg.threads is not None:
            # small CNNs on a shared CPU: extra OpenMP threads mostly wait for each other
            torch.set_num_threads(cfg.threads)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if last is not None else None, weights_only=True)
        finally:
            torch.set_num_threads(threads)
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
        from affectlab.modelfile import read_payload

        info = read_payload(out / rundir.MODEL_FILE).get("train", {})
        result.metrics = rundir.read_metrics(out)
        result.best_epoch = int(info.get("best_epoch", -1))
        result.monitor_value = float(info.get("monitor_value", float("nan")))
        result.epochs = len(pd_rows(out / rundir.LOG_FILE))
    return result


#: Lightning's loggers: device banners, tips and "fit stopped" lines are INFO records
_LIGHTNING_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's own output off while it runs: affectlab prints its bar and its summary.

    Lightning's INFO records (GPU/TPU banners, the litlogger tip, "weights_only was not
    set", "Trainer.fit stopped") are held back by raising its loggers to WARNING, and
    its performance hints (``PossibleUserWarning``) and a torch deprecation Lightning
    triggers are ignored, both only for the duration of the call.
    """
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    loggers = [logging.getLogger(n) for n in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_several_classes(train_sets, space: LabelSpace) -> None:
    """Refuse to learn expressions from a training set holding one class only.

    Its accuracy would be 1.0 and mean nothing; the message says which class and how to
    train the other descriptors.
    """
    import numpy as np

    if "expr" not in space.tasks or space.multilabel:
        return
    present: set[int] = set()
    for d in train_sets:
        targets = np.asarray(d.expr_targets)
        present.update(int(t) for t in np.unique(targets[targets >= 0]))
    if len(present) == 1:
        name = space.expressions[present.pop()]
        others = [t for t in space.tasks if t != "expr"]
        hint = f"train the other descriptors only with --tasks {','.join(others)}, or " if others else ""
        raise DatasetError(
            f"the training data hold one expression class only ({name}): a classifier of one class is always "
            f"right (accuracy 1.0) and learns nothing; {hint}add images of other classes"
        )


def pd_rows(path: Path) -> list[dict]:
    """Rows of a run's ``log.csv`` (empty when absent)."""
    import csv

    if not Path(path).is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


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
