"""The multi-task baseline: a backbone and one small head per descriptor.

This is the "multi-task baseline model" of SMM-EmotionNet
(SMM-EmotionNet, CVPRW 2022, section 5.1): "an InceptionV3 feature
extractor followed by parallel branches of FC layers corresponding to different tasks.
In each branch, the sizes of consecutive FC layers are: 768 x 16 -> 16 x C". Here the
feature extractor is any registered backbone (:mod:`affectlab.features.backbones`;
``torchvision:inception_v3`` gives the paper's 768-d Mixed_6e feature) and each head is
``Linear(D, embed_dim) -> activation -> dropout -> Linear(embed_dim, C)``. The paper
names no activation between the two FC layers; affectlab puts a ReLU there by default
(``activation="identity"`` gives the purely linear branch).

Outputs
-------
``expr_logits`` [B, C]
    Expression scores (independent logits when the label space is multi-label).
``va`` [B, 2]
    Valence and arousal in [-1, 1]: ``tanh`` of the head output (default), or the raw
    output clamped to [-1, 1] (``va_output="clamp"``; no gradient beyond the bounds).
``au_logits`` [B, K]
    AU presence logits.

Loss (each term masks its missing labels; a task with no label in the batch adds 0)::

    L = w_expr * CE_w(expr) + w_va * [sum_d (1 - CCC_d) + beta * sum_d MSE_d] + w_au * BCE_P(au)

``CE_w`` is the cross-entropy weighted by normalised inverse class frequencies
(:func:`affectlab.losses.class_weights`, CAGE Table 4), or the positive-weighted BCE for
multi-label expressions; ``BCE_P`` weights AU positives by negatives / positives
(equation 4 of 002). The weights come from :meth:`BaselineMethod.set_training_stats`
and are stored as buffers, so a checkpoint keeps them.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import torch
from pydantic import Field
from torch import nn

from affectlab import losses
from affectlab.errors import ModelError
from affectlab.features.backbones import Backbone, create_backbone
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method


class BaselineConfig(MethodConfig):
    """Hyper-parameters of the multi-task baseline.

    Attributes
    ----------
    backbone : str
        Registry name of the feature extractor (``builtin:cnn-small``,
        ``torchvision:inception_v3``, ``timm:<name>`` ...).
    pretrained : bool
        Let torchvision / timm fetch the backbone's standard weights (needs internet once).
    weights : str or None
        Local state-dict file for the backbone.
    backbone_options : dict
        Extra options of the backbone family (e.g. ``input_size`` of the built-in CNNs).
    embed_dim : int
        Width of each head's hidden layer (002: 16).
    dropout : float
        Dropout after the hidden layer of each head.
    activation : {"relu", "gelu", "identity"}
        Non-linearity between the two layers of each head.
    freeze_backbone : bool
        Keep the backbone fixed (no gradients, batch-norm statistics frozen): a
        two-layer probe on its features.
    va_output : {"tanh", "clamp"}
        How the VA head is bounded to [-1, 1].
    va_mse_weight : float
        ``beta`` of the VA loss ``sum (1 - CCC) + beta * sum MSE``.
    class_weighted : bool
        Weight the expression loss by inverse class frequency (expression classes) or
        negatives / positives (multi-label expressions).
    au_pos_weighted : bool
        Weight AU positives by negatives / positives.
    expr_loss_weight, va_loss_weight, au_loss_weight : float
        Weights of the three task terms in the total loss.
    """

    backbone: str = "builtin:cnn-small"
    pretrained: bool = False
    weights: Optional[str] = None
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    embed_dim: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "identity"] = "relu"
    freeze_backbone: bool = False
    va_output: Literal["tanh", "clamp"] = "tanh"
    va_mse_weight: float = Field(1.0, ge=0.0)
    class_weighted: bool = True
    au_pos_weighted: bool = True
    expr_loss_weight: float = Field(1.0, ge=0.0)
    va_loss_weight: float = Field(1.0, ge=0.0)
    au_loss_weight: float = Field(1.0, ge=0.0)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity}


def _head(in_dim: int, embed_dim: int, out_dim: int, activation: str, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, embed_dim),
        _ACTIVATIONS[activation](),
        nn.Dropout(dropout),
        nn.Linear(embed_dim, out_dim),
    )


@register_method("baseline")
class BaselineMethod(Method):
    """Backbone + one ``D -> embed_dim -> C`` head per descriptor (see the module docstring).

    Parameters
    ----------
    label_space : LabelSpace
        Descriptors to predict; one head per task it carries.
    config : BaselineConfig or mapping, optional

    Attributes
    ----------
    backbone : Backbone
        The feature extractor (its ``preprocessing`` is what the engine and the
        Predictor feed it).
    heads : nn.ModuleDict
        ``expr`` / ``va`` / ``au`` heads for the tasks of the label space.
    """

    Config = BaselineConfig
    input_kind = "image"

    def __init__(self, label_space, config: BaselineConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        cfg: BaselineConfig = self.config
        self.backbone: Backbone = create_backbone(
            cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights, **cfg.backbone_options
        )
        self.preprocessing = self.backbone.preprocessing
        d = self.backbone.out_dim
        space = self.label_space
        heads = {}
        if space.expressions:
            heads["expr"] = _head(d, cfg.embed_dim, space.num_expressions, cfg.activation, cfg.dropout)
            self.register_buffer("expr_weight", torch.ones(space.num_expressions))
        if space.va:
            heads["va"] = _head(d, cfg.embed_dim, 2, cfg.activation, cfg.dropout)
        if space.aus:
            heads["au"] = _head(d, cfg.embed_dim, space.num_aus, cfg.activation, cfg.dropout)
            self.register_buffer("au_pos_weight", torch.ones(space.num_aus))
        self.heads = nn.ModuleDict(heads)
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "BaselineMethod":
        super().train(mode)
        if self.config.freeze_backbone:
            # a frozen backbone keeps its batch-norm statistics and has no dropout
            self.backbone.eval()
        return self

    # -- contract ------------------------------------------------------------------------
    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's global feature [B, D] of a batch's ``image``.

        A batch that carries precomputed ``features`` [B, D] (the backbone's global
        feature, e.g. from the feature cache) skips the backbone.
        """
        if "image" in batch:
            x = batch["image"]
            if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
                shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
                raise ModelError(
                    f"the baseline expects batch['image'] as a float tensor [B, 3, H, W], got {shape}"
                )
            return self.backbone(x)["global"]
        if "features" in batch:
            f = batch["features"]
            if not torch.is_tensor(f) or f.ndim != 2 or f.shape[1] != self.backbone.out_dim:
                shape = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
                raise ModelError(
                    f"batch['features'] must be [B, {self.backbone.out_dim}] global features of "
                    f"{self.config.backbone!r}, got {shape}"
                )
            return f.float()
        raise ModelError("the baseline needs batch['image'] (pixels) or batch['features'] (global features)")

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        feat = self.features(batch)
        out = Outputs()
        if "expr" in self.heads:
            out.expr_logits = self.heads["expr"](feat)
        if "va" in self.heads:
            raw = self.heads["va"](feat)
            out.va = torch.tanh(raw) if self.config.va_output == "tanh" else raw.clamp(-1.0, 1.0)
        if "au" in self.heads:
            out.au_logits = self.heads["au"](feat)
        return out

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Masked, weighted sum of the task losses (see the module docstring).

        Returns
        -------
        dict
            ``loss`` (the total) and one term per task the model and the batch share
            (``expr``, ``va``, ``au``), each unweighted by the task weights.
        """
        cfg: BaselineConfig = self.config
        terms: dict[str, torch.Tensor] = {}
        total = None
        if outputs.expr_logits is not None and "expr" in batch:
            if self.label_space.multilabel:
                w = self.expr_weight if cfg.class_weighted else None
                terms["expr"] = losses.multilabel_bce(outputs.expr_logits, batch["expr"], w)
            else:
                w = self.expr_weight if cfg.class_weighted else None
                terms["expr"] = losses.weighted_cross_entropy(outputs.expr_logits, batch["expr"], w)
            total = cfg.expr_loss_weight * terms["expr"]
        if outputs.va is not None and "va" in batch:
            terms["va"] = losses.cage_va_loss(outputs.va, batch["va"], beta=cfg.va_mse_weight)
            term = cfg.va_loss_weight * terms["va"]
            total = term if total is None else total + term
        if outputs.au_logits is not None and "au" in batch:
            w = self.au_pos_weight if cfg.au_pos_weighted else None
            terms["au"] = losses.weighted_bce(outputs.au_logits, batch["au"], w)
            term = cfg.au_loss_weight * terms["au"]
            total = term if total is None else total + term
        if total is None:
            ref = next(t for t in (outputs.expr_logits, outputs.va, outputs.au_logits) if t is not None)
            total = ref.sum() * 0.0
        return {"loss": total, **terms}

    def set_training_stats(self, stats: Mapping[str, Any]) -> None:
        """Derive the loss weights from training-set counts and store them as buffers.

        Parameters
        ----------
        stats : mapping
            ``class_counts`` [C] (per class; positives per class when multi-label),
            ``num_samples``, ``au_positive`` / ``au_negative`` [K]. Missing keys leave
            the corresponding weights at 1.
        """
        space = self.label_space
        expr_w, au_w = losses.weights_from_stats(
            stats, num_classes=space.num_expressions, num_aus=space.num_aus, multilabel=space.multilabel
        )
        if expr_w is not None:
            self.expr_weight.copy_(torch.as_tensor(expr_w, dtype=self.expr_weight.dtype))
        if au_w is not None:
            self.au_pos_weight.copy_(torch.as_tensor(au_w, dtype=self.au_pos_weight.dtype))
