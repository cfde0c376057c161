"""An image model carrying an AURA head on its frozen features: predictions plus archetypes.

AURA (:mod:`affectlab.methods.aura`) trains on cached backbone features. Once such a
head has been trained on the features of an image model's own encoder (``affectlab
extract ... --backbone run:MODEL``), the two can travel as one model file:
:func:`affectlab.interpret.attach.attach_aura` (``affectlab models attach-aura``) writes a
model of method ``aura-head`` that runs the image model once per face, hands the
encoder's global feature to the AURA head and reports, beside the image model's
predictions, which archetype the face is nearest to and what the training faces of
that archetype were labelled. ``affectlab analyze`` and the Predictor add these columns
(:meth:`AuraHeadModel.extra_columns`):

``archetype``
    Index of the nearest archetype of the head's codebook.
``archetype_label``
    Majority expression label of the archetype's training members (empty when no
    labelled training face was assigned to it).
``archetype_purity``
    Share of those members carrying that label (0-1; NaN without members).
``archetype_size``
    Number of training faces assigned to the archetype.
``archetype_distance``
    Euclidean distance between the face's projection and the archetype (unit sphere:
    0 identical, 2 opposite).

The member statistics are computed once, when the head is attached, by the AURA
explainer's own code (:func:`affectlab.interpret.aura_explain.archetype_stats`) and
stored as buffers, so analysis needs no training data.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np
import torch
from pydantic import Field

from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError, ModelError
from affectlab.methods.base import Method, MethodConfig, Outputs, create_method, register_method

#: Analysis columns an AURA head adds, with their table dtypes.
ARCHETYPE_COLUMNS: dict[str, str] = {
    "archetype": "Int64",
    "archetype_label": "string",
    "archetype_purity": "float64",
    "archetype_size": "Int64",
    "archetype_distance": "float64",
}


class AuraHeadConfig(MethodConfig):
    """What rebuilds the two parts (weights come from the model file).

    Attributes
    ----------
    base_method : str
        Registry name of the image model (e.g. ``"baseline"``).
    base_config : dict
        Its method configuration.
    base_label_space : dict
        Its :meth:`LabelSpace.to_dict`.
    head_config : dict
        The AURA head's :class:`~affectlab.methods.aura.AuraConfig`.
    head_label_space : dict
        The head's label space (whose expressions the archetype labels name).
    predict : {"base", "aura"}
        Whose predictions the model outputs: the image model's heads (``"base"``) or the
        AURA head's refined archetype predictions (``"aura"``; needs the same classes).
    """

    base_method: str = Field(min_length=1)
    base_config: dict[str, Any] = Field(default_factory=dict)
    base_label_space: dict[str, Any]
    head_config: dict[str, Any]
    head_label_space: dict[str, Any]
    predict: Literal["base", "aura"] = "base"


def image_encoder(method) -> "torch.nn.Module":
    """The :class:`~affectlab.features.backbones.Backbone` of an image model (what ``run:`` extracts with)."""
    from affectlab.features.backbones import Backbone
    from affectlab.modelfile import ENCODER_ATTRS as _ENCODER_ATTRS

    for attr in _ENCODER_ATTRS:
        candidate = getattr(method, attr, None)
        if isinstance(candidate, Backbone):
            return candidate
    raise ModelError(
        f"method {getattr(method, 'name', type(method).__name__)!r} has no image encoder "
        f"(attribute {' or '.join(_ENCODER_ATTRS)}); an AURA head needs a model trained on images"
    )


def _without_weight_sources(config: Mapping[str, Any], cls) -> dict:
    # the saved state_dict holds every weight: never fetch or read the original ones
    from affectlab.modelfile import WEIGHT_SOURCE_KEYS

    out = dict(config)
    for key, value in WEIGHT_SOURCE_KEYS.items():
        if key in cls.Config.model_fields and key in out:
            out[key] = value
    return out


@register_method("aura-head")
class AuraHeadModel(Method):
    """An image model and an AURA head on its encoder's global feature.

    Parameters
    ----------
    label_space : LabelSpace
        What the model predicts: the image model's label space.
    config : AuraHeadConfig or mapping

    Attributes
    ----------
    base : Method
        The image model (unchanged).
    head : Aura
        The AURA head.
    member_label : Tensor [N] long
        Per archetype, index (in the head's expressions) of the majority label of its
        training members, -1 when none.
    member_purity : Tensor [N] float
        Share of members with that label (NaN when none).
    member_count : Tensor [N] long
        Training members per archetype.

    Notes
    -----
    Build one with :func:`affectlab.interpret.attach.attach_aura`; this class only
    rebuilds it from a model file. ``loss`` is the loss of the part whose predictions
    are output (the model is meant for inference: train the parts separately).
    """

    Config = AuraHeadConfig
    input_kind = "image"
    #: built by attaching trained parts, not by ``affectlab train``
    trainable = False

    def __init__(self, label_space: LabelSpace, config: AuraHeadConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        from affectlab.methods.base import get_method_class

        cfg: AuraHeadConfig = self.config
        base_cls = get_method_class(cfg.base_method)
        if getattr(base_cls, "input_kind", "image") != "image":
            raise ModelError(f"the image model of an AURA head must work on images; {cfg.base_method!r} works on {base_cls.input_kind}")
        self.base = base_cls(LabelSpace.from_dict(cfg.base_label_space), _without_weight_sources(cfg.base_config, base_cls))
        encoder = image_encoder(self.base)
        head_config = dict(cfg.head_config)
        if head_config.get("feature_dim") is None:
            head_config["feature_dim"] = encoder.out_dim
        self.head = create_method("aura", LabelSpace.from_dict(cfg.head_label_space), head_config)
        if self.head.config.feature_dim != encoder.out_dim:
            raise ModelError(
                f"the AURA head takes {self.head.config.feature_dim}-d features but the image model's encoder "
                f"({encoder.name}) gives {encoder.out_dim}-d; train the head on features extracted with "
                "--backbone run:<this image model>"
            )
        if self.head.patch_proj is not None and encoder.token_dim is None and encoder.map_channels is None:
            raise ModelError(f"the AURA head uses patch tokens but the encoder {encoder.name} gives neither tokens nor a map")
        if cfg.predict == "aura" and not self._same_descriptors(label_space, self.head.label_space):
            raise ConfigError(
                f"predict='aura' needs the head to predict what the image model predicts; the image model has "
                f"{label_space.to_dict()}, the head {self.head.label_space.to_dict()}"
            )
        self.preprocessing = getattr(self.base, "preprocessing", None) or encoder.preprocessing
        n = self.head.config.num_archetypes
        self.register_buffer("member_label", torch.full((n,), -1, dtype=torch.long))
        self.register_buffer("member_purity", torch.full((n,), float("nan")))
        self.register_buffer("member_count", torch.zeros(n, dtype=torch.long))

    @staticmethod
    def _same_descriptors(a: LabelSpace, b: LabelSpace) -> bool:
        return list(a.expressions) == list(b.expressions) and bool(a.va) == bool(b.va) and list(a.aus) == list(b.aus)

    # -- attaching ---------------------------------------------------------------------------
    @torch.no_grad()
    def set_member_stats(self, label: np.ndarray, purity: np.ndarray, count: np.ndarray) -> None:
        """Store per-archetype label statistics of the training members (see the class attributes)."""
        n = self.member_count.numel()
        arrays = {"label": np.asarray(label), "purity": np.asarray(purity, dtype=np.float64), "count": np.asarray(count)}
        for name, arr in arrays.items():
            if arr.shape != (n,):
                raise ConfigError(f"member {name} must have one value per archetype ({n}), got shape {arr.shape}")
        k = self.head.label_space.num_expressions
        if ((arrays["label"] < -1) | (arrays["label"] >= max(k, 0))).any():
            raise ConfigError(f"member labels must be -1 or an expression index below {k}")
        self.member_label.copy_(torch.tensor(arrays["label"], dtype=torch.long))
        self.member_purity.copy_(torch.tensor(arrays["purity"], dtype=self.member_purity.dtype))
        self.member_count.copy_(torch.tensor(arrays["count"], dtype=torch.long))

    # -- contract ------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        from affectlab.features.cache import _tokens_of

        encoder = image_encoder(self.base)
        seen: list = []
        # the image model runs its encoder once; its output is what the head was trained on
        handle = encoder.register_forward_hook(lambda _m, _inp, out: seen.append(out))
        try:
            base_out = self.base(batch)
        finally:
            handle.remove()
        if seen:
            feats = seen[0]
        elif "image" in batch:
            feats = encoder(batch["image"])
        else:
            raise ModelError("a model with an AURA head needs batch['image'] (pixels)")
        head_batch = {"features": feats["global"]}
        if self.head.patch_proj is not None:
            head_batch["tokens"] = _tokens_of(feats)
        head_out = self.head(head_batch)
        idx = head_out.extras["archetype"]
        source = head_out if self.config.predict == "aura" else base_out
        extras = dict(base_out.extras)
        extras.update(
            archetype=idx,
            archetype_label=self.member_label[idx],
            archetype_purity=self.member_purity[idx],
            archetype_size=self.member_count[idx],
            archetype_distance=head_out.extras["archetype_distance"],
        )
        return Outputs(expr_logits=source.expr_logits, va=source.va, au_logits=source.au_logits, extras=extras)

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.config.predict == "aura":
            pred = {
                k: v
                for k, v in (("expr_logits", outputs.expr_logits), ("va", outputs.va), ("au_logits", outputs.au_logits))
                if v is not None
            }
            return {"loss": self.head.task_loss(pred, batch)}
        return self.base.loss(outputs, batch)

    # -- tables --------------------------------------------------------------------------------
    def extra_columns(self) -> dict[str, str]:
        return dict(ARCHETYPE_COLUMNS)

    def tabulate_extras(self, extras: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(extras)
        if "archetype_label" in out:
            codes = np.asarray(out["archetype_label"])
            names = np.asarray(list(self.head.label_space.expressions) + [None], dtype=object)
            # code -1 (no labelled member) indexes the trailing None
            out["archetype_label"] = names[codes]
        return out

    def extra_state(self) -> dict:
        return {"base": self.base.extra_state(), "head": self.head.extra_state()}

    def load_extra_state(self, state: Mapping) -> None:
        self.base.load_extra_state((state or {}).get("base") or {})
        self.head.load_extra_state((state or {}).get("head") or {})
