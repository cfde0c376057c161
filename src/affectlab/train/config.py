"""Training configuration: a pydantic ``TrainConfig``, YAML presets and ``--set`` overrides.

A configuration is resolved in layers, each overriding the one before::

    TrainConfig defaults  <  preset YAML  <  explicit CLI options  <  --set key=value

A preset is a YAML file shipped in :mod:`affectlab.presets` (``--preset baseline``) or
any YAML file path (``--preset my_setting.yaml``). Its keys are the fields of
:class:`TrainConfig`; method hyper-parameters go under ``method_config``::

    description: multi-task baseline, built-in CNN, synthetic-data scale
    method: baseline
    backbone: builtin
    tasks: [expr, va, au]
    epochs: 10
    batch_size: 64
    optimizer: adamw          # or sgd (uses momentum, nesterov)
    lr: 1.0e-3
    weight_decay: 1.0e-4
    scheduler: cosine         # or none
    train_transform: light    # transform preset names of affectlab.data.transforms
    image_size: 64            # null: the backbone's input size
    sampler: shuffle          # or balanced (expression classes) or multitask
    method_config:
      hidden: 16

``--set key=value`` parses ``value`` as YAML (``--set lr=3e-4``, ``--set tasks=[expr,va]``).
A key that is not a training field is looked up in the method's own ``Config``
(``--set hidden=32`` or explicitly ``--set method_config.hidden=32``); anything else is
an error naming the valid keys.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from affectlab.errors import ConfigError
from affectlab.methods.base import _pydantic_message

TASKS = ("expr", "va", "au")

#: Validation metrics that can be monitored for the best checkpoint, with the task
#: they need (``None``: any task). ``score`` is the ``auto`` choice (see
#: :func:`monitor_score`).
MONITORABLE: dict[str, Optional[str]] = {
    "score": None,
    "loss": None,
    "expr_acc": "expr",
    "expr_f1_macro": "expr",
    "topk_acc": "expr",
    "valence_ccc": "va",
    "arousal_ccc": "va",
    "va_ccc": "va",
    "valence_rmse": "va",
    "arousal_rmse": "va",
    "valence_mae": "va",
    "arousal_mae": "va",
    "au_f1_mean": "au",
}

#: The metric of each task that the ``auto`` monitor averages.
SCORE_METRICS = {"expr": "expr_f1_macro", "va": "va_ccc", "au": "au_f1_mean"}


class TrainConfig(BaseModel):
    """Every setting of a training run; ``RUN/config.yaml`` is this model dumped.

    Attributes
    ----------
    method : str
        Registered method name (``affectlab.methods.available_methods()``).
    backbone : str or None
        Backbone name passed to the method when its ``Config`` has a ``backbone`` key.
    tasks : list of str or None
        Descriptors to learn among ``expr``, ``va``, ``au``; ``None`` = all that the
        training set carries.
    train, val : str, list of str or None
        Dataset specs (several ``--train`` specs: one per uni-task dataset, for
        ``sampler: multitask``). Without ``val`` a subject-disjoint ``val_fraction`` of
        each training set is held out (random rows when the data has no ``subject``).
    batch_size, global_batch_size : int
        ``batch_size`` is per process; ``global_batch_size`` (when set) is the batch over
        all DDP processes, split evenly (``devices x num_nodes`` must divide it), so a
        multi-GPU run keeps a paper's effective batch.
    max_steps : int or None
        Iteration budget (optimiser steps); training stops at ``max_steps`` or after
        ``epochs``, whichever comes first (SMM-EmotionNet trains 3e5 iterations).
    optimizer : {"adamw", "sgd"}
        AdamW, or SGD with ``momentum`` (and ``nesterov``).
    scheduler : {"cosine", "none"}
        Cosine annealing of the learning rate from ``lr`` to ``min_lr`` over the
        epochs (per step), after ``warmup_epochs`` of linear warm-up.
    sampler : {"shuffle", "balanced", "balanced-subset", "multitask"}
        Batch composition: uniform shuffling, expression-class balanced draws (with
        replacement, an epoch of the usual length), a new expression-balanced subset per
        epoch without replacement (CAGE's valence-arousal training; ``balanced_per_class``
        per class, default the smallest class), or equal parts per uni-task source.
    monitor : str
        Validation metric that selects the best checkpoint. ``auto`` = ``score``, the
        mean of ``expr_f1_macro``, ``va_ccc`` and ``au_f1_mean`` over the tasks being
        trained. ``loss`` = total validation loss; ``val_<term>`` = one term of the
        method's loss dict on the validation set. Losses, ``rmse`` and ``mae`` are
        minimised, the other metrics maximised.
    method_config : dict
        Hyper-parameters of the method, validated by the method's ``Config``.
    initial_weights : dict or None
        Written by the engine, not a setting: ``name``, ``sha256`` and ``source`` of the
        pretrained weights the backbone started from (``None``: random initialisation).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    description: str = ""
    preset: Optional[str] = None
    method: str = "baseline"
    backbone: Optional[str] = None
    tasks: Optional[list[str]] = None
    train: Optional[Union[str, list[str]]] = None
    val: Optional[Union[str, list[str]]] = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    global_batch_size: Optional[int] = Field(None, ge=1)  # over all processes; overrides batch_size
    max_steps: Optional[int] = Field(None, ge=1)  # an iteration budget (stops before epochs when reached)
    eval_batch_size: Optional[int] = Field(None, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0.0)
    grad_clip: Optional[float] = Field(None, gt=0.0)
    accumulate_grad_batches: int = Field(1, ge=1)
    train_transform: Optional[str] = None
    eval_transform: Optional[str] = None
    image_size: Optional[int] = Field(None, ge=8)
    normalize: Optional[str] = None
    # how faces are cropped, recorded in the model's preprocessing so analyze frames alike:
    # "box", "aligned" or a mapping (affectlab.perception.align.Framing); None: box + margin 0.2
    framing: Optional[Union[str, dict]] = None
    # the training images are uncropped photographs: detect and frame each face as analyze does
    detect_faces: bool = False
    detector: str = "auto"
    sampler: Literal["shuffle", "balanced", "balanced-subset", "multitask"] = "shuffle"
    balanced_per_class: Optional[int] = Field(None, ge=1)
    monitor: str = "auto"
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    threads: Optional[int] = Field(None, ge=1)  # torch threads while training; None: torch's default
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: Union[int, str] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    deterministic: bool = False
    method_config: dict[str, Any] = Field(default_factory=dict)
    initial_weights: Optional[dict[str, Any]] = None

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = [t for t in value.replace(" ", "").split(",") if t]
        tasks = [str(t).strip().lower() for t in value]
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; expected a subset of expr, va, au")
        if not tasks:
            raise ValueError("empty task list; expected a subset of expr, va, au")
        # canonical order, no duplicates
        return [t for t in TASKS if t in tasks]

    @field_validator("monitor")
    @classmethod
    def _check_monitor(cls, value: str):
        if value == "auto" or value in MONITORABLE or (value.startswith("val_") and len(value) > 4):
            return value
        raise ValueError(
            f"unknown monitor {value!r}; expected auto, {', '.join(MONITORABLE)} or a validation loss term "
            "'val_<term>' (the method's loss keys, e.g. val_loss)"
        )

    @property
    def monitor_name(self) -> str:
        return "score" if self.monitor == "auto" else self.monitor

    @property
    def monitor_mode(self) -> str:
        name = self.monitor_name
        return "min" if name.endswith(("loss", "rmse", "mae")) or name.startswith("val_") else "max"


def _error_text(exc: ValidationError, where: str) -> str:
    return f"{where}: " + _pydantic_message(exc)


def available_presets() -> list[str]:
    """Names accepted by ``--preset`` (YAML files shipped in :mod:`affectlab.presets`)."""
    folder = resources.files("affectlab.presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str | Path) -> dict[str, Any]:
    """The settings of a preset: a shipped name (``baseline``) or a YAML file path.

    Raises
    ------
    ConfigError
        For an unknown name, an unreadable file or YAML that is not a mapping.
    """
    text_name = str(name)
    path = Path(text_name)
    if text_name.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"preset file {text_name!r} does not exist")
        source, text = str(path), path.read_text()
    else:
        resource = resources.files("affectlab.presets") / f"{text_name}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown preset {text_name!r}; available: {', '.join(available_presets()) or 'none'} "
                "(or a path to a YAML file)"
            )
        source, text = f"preset {text_name!r}", resource.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of settings, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------ --set
def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML (``3e-4``, ``[expr,va]``, ``null``)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def _method_config_class(method: str):
    from affectlab.methods.base import get_method_class

    return get_method_class(method).Config


def resolve_config(
    *,
    preset: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    sets: Iterable[str] | Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Build a :class:`TrainConfig` from defaults, a preset, options and ``--set`` items.

    Parameters
    ----------
    preset : str or Path, optional
        Shipped preset name or YAML path.
    options : mapping, optional
        Explicit settings (CLI options); ``None`` values are ignored.
    sets : iterable of ``"key=value"`` or mapping, optional
        Final overrides. Keys that are not training fields go to ``method_config``
        when the method's ``Config`` knows them.
    base : mapping, optional
        Starting settings instead of the defaults (a resumed run's ``config.yaml``).

    Raises
    ------
    ConfigError
        Unknown preset, unknown key, or a value of the wrong type / range.
    """
    data: dict[str, Any] = dict(base or {})
    data["method_config"] = dict(data.get("method_config") or {})
    if preset is not None:
        pdata = load_preset(preset)
        pmethod = pdata.pop("method_config", None) or {}
        unknown = sorted(set(pdata) - set(TrainConfig.model_fields))
        if unknown:
            raise ConfigError(
                f"preset {str(preset)!r}: unknown key(s) {unknown}; method hyper-parameters go under 'method_config'"
            )
        data.update(pdata)
        data["method_config"].update(pmethod)
        data["preset"] = str(preset)
    for key, value in (options or {}).items():
        if value is not None:
            data[key] = value
    overrides = parse_set(sets) if sets is not None and not isinstance(sets, Mapping) else dict(sets or {})
    method_sets: dict[str, Any] = {}
    for key, value in overrides.items():
        if key.startswith(("method_config.", "method.")):
            method_sets[key.split(".", 1)[1]] = value
        elif key in TrainConfig.model_fields and key != "method_config":
            data[key] = value
        else:
            method_sets[key] = value
    explicit = {k for k, v in (options or {}).items() if v is not None} | set(overrides)
    if "batch_size" in explicit and "global_batch_size" not in explicit:
        # an explicit per-process batch replaces the preset's global one (never both silently)
        data["global_batch_size"] = None
    try:
        cfg = TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_error_text(exc, "training configuration")) from None
    method_fields = set(_method_config_class(cfg.method).model_fields)
    unknown = sorted(k for k in method_sets if k not in method_fields)
    if unknown:
        raise ConfigError(
            f"unknown --set key(s) {unknown}: not a training setting ({', '.join(sorted(TrainConfig.model_fields))}) "
            f"nor a hyper-parameter of method {cfg.method!r} ({', '.join(sorted(method_fields)) or 'none'})"
        )
    merged = {**cfg.method_config, **method_sets}
    cfg = cfg.model_copy(update={"method_config": merged})
    from affectlab.methods.base import get_method_class

    # validate now (bad values fail before any data is read) and record every method
    # hyper-parameter with its default, so config.yaml is the complete setting
    full = get_method_class(cfg.method).make_config(method_config_for(cfg)).model_dump(mode="json")
    update: dict[str, Any] = {"method_config": full}
    if cfg.backbone is None and isinstance(full.get("backbone"), str):
        update["backbone"] = full["backbone"]
    return cfg.model_copy(update=update)


def method_config_for(cfg: TrainConfig) -> dict[str, Any]:
    """The method's hyper-parameters, with ``backbone`` filled in when the method takes one."""
    fields = _method_config_class(cfg.method).model_fields
    out = dict(cfg.method_config)
    if cfg.backbone is not None and "backbone" in fields:
        out["backbone"] = cfg.backbone
    return out


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of a configuration (what ``RUN/config.yaml`` holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
