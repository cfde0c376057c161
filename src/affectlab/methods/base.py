"""The method contract and the method registry.

A method is a plain :class:`torch.nn.Module`:

* ``forward(batch) -> Outputs`` where ``batch`` is the dict a data loader yields
  (see :mod:`affectlab.data.batch`) and :class:`Outputs` carries any subset of
  ``expr_logits`` [B, C], ``va`` [B, 2] and ``au_logits`` [B, K] plus method extras
  (archetype indices, latents, ...).
* ``loss(outputs, batch) -> dict`` of named scalar terms; the key ``"loss"`` is the total
  that is optimised. Missing labels (expression -1, VA NaN, AU -1) are masked.

Training, evaluation, analysis and interpretation never special-case a method beyond
what :class:`Outputs` carries. Methods declare their hyper-parameters as a pydantic
model (``Config``) so unknown ``--set`` keys and bad values fail with a clear message.

Register a method with :func:`register_method`; build one by name with
:func:`create_method` (timm-style registry rather than if-chains).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError


@dataclass
class Outputs:
    """What a method predicts for a batch. Any field may be ``None``.

    Attributes
    ----------
    expr_logits : Tensor [B, C] or None
        Unnormalised expression scores in the order of ``label_space.expressions``
        (multi-label methods: independent logits, apply a sigmoid).
    va : Tensor [B, 2] or None
        Valence and arousal, canonical scale [-1, 1].
    au_logits : Tensor [B, K] or None
        AU presence logits in the order of ``label_space.aus``.
    extras : dict of str to Tensor
        Method-specific outputs (``archetype``, ``z_v``, ``features`` ...), one row per
        sample where that makes sense, so they can be tabulated.
    """

    expr_logits: torch.Tensor | None = None
    va: torch.Tensor | None = None
    au_logits: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def detach(self) -> "Outputs":
        return Outputs(
            expr_logits=None if self.expr_logits is None else self.expr_logits.detach(),
            va=None if self.va is None else self.va.detach(),
            au_logits=None if self.au_logits is None else self.au_logits.detach(),
            extras={k: v.detach() if torch.is_tensor(v) else v for k, v in self.extras.items()},
        )


class MethodConfig(BaseModel):
    """Base of every method's hyper-parameters. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class Method(nn.Module, abc.ABC):
    """Base class of affectlab methods.

    Subclasses set ``name`` and ``Config`` and implement ``forward`` and ``loss``.
    ``input_kind`` says what the batch must carry: ``"image"`` (pixels, key ``image``)
    or ``"features"`` (cached backbone features, key ``features``).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    input_kind: ClassVar[str] = "image"
    #: False for inference-only wrappers (imported ONNX graphs): ``affectlab train`` refuses them
    trainable: ClassVar[bool] = True

    def __init__(self, label_space: LabelSpace, config: MethodConfig | Mapping[str, Any] | None = None):
        super().__init__()
        if not label_space.tasks:
            raise ConfigError("the label space has no descriptor (no expressions, no VA, no AUs) to learn")
        self.label_space = label_space
        self.config = self.make_config(config)

    @classmethod
    def make_config(cls, config: MethodConfig | Mapping[str, Any] | None) -> MethodConfig:
        if isinstance(config, cls.Config):
            return config
        try:
            return cls.Config(**dict(config or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid configuration for method {cls.name!r}: {_pydantic_message(exc)}") from None

    # -- contract -------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        """Predict for a batch (see :mod:`affectlab.data.batch`)."""

    @abc.abstractmethod
    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms, masked for missing labels; ``"loss"`` is the total."""

    # -- helpers the engine uses ------------------------------------------------------
    def set_training_stats(self, stats: Mapping[str, Any]) -> None:
        """Receive training-set statistics before training starts.

        The engine passes ``class_counts`` (np.ndarray [C], per expression class),
        ``au_positive`` / ``au_negative`` (np.ndarray [K], labelled counts per AU) and
        ``num_samples``. Methods that weight their losses by them store the weights as
        buffers so the checkpoint keeps them. The default ignores them.
        """
        return None

    def extra_state(self) -> dict:
        """Anything beyond ``state_dict`` a checkpoint must keep to rebuild the model."""
        return {}

    def load_extra_state(self, state: Mapping) -> None:
        return None

    # -- analysis tables ------------------------------------------------------------------
    def extra_columns(self) -> dict[str, str]:
        """Per-sample ``Outputs.extras`` that analysis tables show: column name -> pandas dtype.

        ``affectlab analyze`` appends these columns (empty on rows without a face) after
        the prediction columns. The default shows none.
        """
        return {}

    def tabulate_extras(self, extras: Mapping[str, Any]) -> dict[str, Any]:
        """Turn per-sample extras (numpy arrays, one row per sample) into table values.

        For example class codes into names. The default returns them unchanged.
        """
        return dict(extras)


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method to the registry under ``name``."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__qualname__}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _import_builtin_methods() -> None:
    # one module per method family; importing registers them
    import importlib

    for mod in ("baseline", "aura", "aura_head", "cage", "smm", "vavae", "faceapi"):
        try:
            importlib.import_module(f"affectlab.methods.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"affectlab.methods.{mod}":
                raise
    # imported third-party models (ONNX) are methods too, so model files holding them load
    importlib.import_module("affectlab.methods.onnx_model")


def available_methods(trainable_only: bool = True) -> list[str]:
    """Names accepted by ``--method`` (with ``trainable_only=False``: also the
    inference-only methods model files may hold, such as ``onnx``)."""
    _import_builtin_methods()
    return sorted(n for n, cls in _METHODS.items() if cls.trainable or not trainable_only)


def get_method_class(name: str) -> type[Method]:
    _import_builtin_methods()
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS)) or 'none'}")
    return _METHODS[name]


def create_method(name: str, label_space: LabelSpace, config: Mapping[str, Any] | None = None) -> Method:
    """Build a registered method by name: ``create_method("baseline", space, {"backbone": ...})``."""
    return get_method_class(name)(label_space, config)
