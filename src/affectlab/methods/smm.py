"""SMM-EmotionNet: separate sign-vehicle (AU) and message (EXPR, VA) spaces.

Deng & Shi, "Estimating Multiple Emotion Descriptors by Separating Description and
Inference" (SMM-EmotionNet, CVPRW 2022, Figure 1):

Part I -- ROI features
    A backbone feature map ``F`` (InceptionV3 up to ``Mixed_6e``: 17x17x768 at 299 px,
    ``torchvision:inception_v3``; any registry backbone with a spatial ``"map"``) feeds
    ``U`` ROI attention modules (``num_rois``, 17 in the paper). Each gives a spatial map
    ``a_u`` in [0, 1] of the feature map's size; the ROI embedding of region ``u`` is the
    spatial mean of ``ReLU(a_u * (W_u F + b_u))``, a ``D``-dimensional vector
    ``f^(u)`` (``roi_dim``, D = 16). ``W_u`` is a per-region 1x1 convolution; it is applied
    before the attention product (``W_u (a_u * F) = a_u * (W_u F)``), which never
    materialises ``U`` masked copies of ``F``.
Part II -- sign-vehicle space (equations 1-2)
    The first ``H`` ROI features (H = number of AUs of the label space) plus a sinusoidal
    positional encoding go through a Transformer encoder:
    ``S^(H) = Phi(F^(H) + PE)``; ``S^(h)`` is the feature of AU ``h``'s space and
    ``y_h = <W_h, S^(h)> + b_h`` its logit (one FC per AU).
Part III -- message space (equation 3)
    One linear map ``A^(u)`` (D x D, no bias) per ROI, over **all** U regions:
    ``M^(u) = A^(u) f^(u)``, averaged: ``M = (1/U) sum_u M^(u)``. Two FC layers on ``M``
    give the expression logits and valence/arousal (``tanh``, or clamped).
    ``message_space="separate"`` is the MSS ablation of section 6 (Figure 4): separate
    maps ``A_expr^(u)`` and ``A_va^(u)``, hence two message spaces.

Outputs
-------
``expr_logits`` [B, C], ``va`` [B, 2], ``au_logits`` [B, H], and extras:
``message`` [B, D] (shared space) or ``message_expr`` / ``message_va`` [B, D] (MSS),
``sign`` [B, H, D] (the AU spaces), ``roi`` [B, U, D] (ROI embeddings) and
``attention`` [B, U, h, w].

Loss (equation 7, :func:`affectlab.losses.smm_loss`)::

    L = L_AU + L_EXPR + L_VA

with ``L_AU`` the BCE weighting AU positives by P = negatives / positives (eq. 4),
``L_EXPR`` the cross-entropy weighted by the training-set class distribution (eq. 5,
normalised inverse frequency rescaled to mean 1) and ``L_VA = (1 - CCC_V) + (1 - CCC_A)``
(eq. 6). Each term masks its missing labels, so batches mixing uni-task datasets
(``--train A --train B --train C --set sampler=multitask``) train every head on the
samples that carry its label only; a task with no label in a batch adds exactly 0.

Temporal smoothing (equation 9) at feature level: :attr:`SMMMethod.smoothing_features`
names the extra each task's last FC reads, and :meth:`SMMMethod.predict_from_features`
applies that FC, so ``affectlab evaluate --smooth`` can smooth ``S`` or ``M`` before the
last layer as the paper does (section 5.2).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Optional

import torch
from pydantic import Field
from torch import nn

from affectlab import losses
from affectlab.errors import ConfigError, ModelError
from affectlab.features.backbones import Backbone, create_backbone
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method


class SMMConfig(MethodConfig):
    """Hyper-parameters of SMM-EmotionNet (section 4.2 of 002).

    Attributes
    ----------
    backbone : str
        Registry name of a backbone with a spatial feature map
        (``torchvision:inception_v3`` in the paper; ``builtin:cnn-small`` on a CPU).
    pretrained, weights, backbone_options
        As for the baseline: download standard weights, a local state-dict file, extra
        options of the backbone family.
    num_rois : int
        U, the number of ROI attention maps (17). Must be >= the number of AUs.
    roi_dim : int
        D, the ROI embedding / AU space / message space width (16).
    attention_kernel : int
        Kernel size of the convolution that produces the attention maps (odd).
    transformer_layers, transformer_heads, transformer_ff : int
        Transformer encoder depth, attention heads (must divide ``roi_dim``) and
        feed-forward width.
    dropout : float
        Dropout inside the Transformer.
    message_space : {"shared", "separate"}
        ``shared``: one message space for EXPR and VA (SMM-EmotionNet);
        ``separate``: the MSS ablation (one set of maps A^(u) per task).
    va_output : {"tanh", "clamp"}
        How valence/arousal are bounded to [-1, 1].
    freeze_backbone : bool
        Keep the backbone fixed.
    class_weighted, au_pos_weighted : bool
        Use P^EXPR (eq. 5) and P^AU (eq. 4); off = unweighted losses.
    """

    backbone: str = "builtin:cnn-small"
    pretrained: bool = False
    weights: Optional[str] = None
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    num_rois: int = Field(17, ge=1)
    roi_dim: int = Field(16, ge=2)
    attention_kernel: int = Field(3, ge=1)
    transformer_layers: int = Field(2, ge=1)
    transformer_heads: int = Field(4, ge=1)
    transformer_ff: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    message_space: Literal["shared", "separate"] = "shared"
    va_output: Literal["tanh", "clamp"] = "tanh"
    freeze_backbone: bool = False
    class_weighted: bool = True
    au_pos_weighted: bool = True


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """The positional encoding of Vaswani et al. [length, dim]."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    freq = torch.exp(-math.log(10000.0) * i / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class ROIEmbedding(nn.Module):
    """Part I of Figure 1: U attention maps and U D-dimensional ROI embeddings.

    Parameters
    ----------
    channels : int
        Channels of the backbone map.
    num_rois, dim : int
        U and D.
    kernel : int
        Kernel of the attention convolution.
    """

    def __init__(self, channels: int, num_rois: int, dim: int, kernel: int = 3):
        super().__init__()
        self.num_rois, self.dim = num_rois, dim
        self.attention = nn.Conv2d(channels, num_rois, kernel, padding=kernel // 2)
        # U per-region 1x1 convolutions C -> D as one grouped-free weight tensor
        self.weight = nn.Parameter(torch.empty(num_rois, dim, channels))
        self.bias = nn.Parameter(torch.zeros(num_rois, dim))
        nn.init.kaiming_uniform_(self.weight.view(num_rois * dim, channels), a=math.sqrt(5))

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``fmap`` [B, C, h, w] -> (ROI features [B, U, D], attention [B, U, h, w])."""
        att = torch.sigmoid(self.attention(fmap))
        proj = torch.einsum("bchw,udc->budhw", fmap, self.weight) + self.bias[None, :, :, None, None]
        feats = torch.relu(att[:, :, None] * proj).mean(dim=(3, 4))
        return feats, att


@register_method("smm")
class SMMMethod(Method):
    """SMM-EmotionNet (see the module docstring).

    Parameters
    ----------
    label_space : LabelSpace
        Single-label expressions, VA and/or AUs. H = ``label_space.num_aus`` must not
        exceed ``num_rois``.
    config : SMMConfig or mapping, optional

    Attributes
    ----------
    backbone : Backbone
    rois : ROIEmbedding
    transformer : nn.TransformerEncoder or None
        Present when the label space has AUs.
    au_weight, au_bias : Parameter [H, D], [H]
        The H per-AU FC layers (equation 2).
    message_maps : ParameterDict
        ``"shared"`` -> A [U, D, D]; MSS: ``"expr"`` and ``"va"``.
    expr_head, va_head : nn.Linear or None
    """

    Config = SMMConfig
    input_kind = "image"

    def __init__(self, label_space, config: SMMConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        cfg: SMMConfig = self.config
        space = self.label_space
        if space.multilabel:
            raise ConfigError("method 'smm' predicts single-label expressions; this label space is multi-label")
        if space.num_aus > cfg.num_rois:
            raise ConfigError(
                f"method 'smm' feeds the first H ROI features to the AU spaces, so num_rois ({cfg.num_rois}) must be "
                f">= the number of AUs ({space.num_aus}); pass --set num_rois={space.num_aus} or restrict the AUs"
            )
        if cfg.roi_dim % cfg.transformer_heads:
            raise ConfigError(
                f"transformer_heads ({cfg.transformer_heads}) must divide roi_dim ({cfg.roi_dim})"
            )
        if cfg.attention_kernel % 2 == 0:
            raise ConfigError(f"attention_kernel must be odd, got {cfg.attention_kernel}")
        self.backbone: Backbone = create_backbone(
            cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights, **cfg.backbone_options
        )
        if not self.backbone.map_channels:
            raise ConfigError(
                f"method 'smm' needs a backbone with a spatial feature map; {cfg.backbone!r} has none "
                "(use torchvision:inception_v3, builtin:cnn-small, a resnet ...)"
            )
        self.preprocessing = self.backbone.preprocessing
        U, D, H = cfg.num_rois, cfg.roi_dim, space.num_aus
        self.rois = ROIEmbedding(self.backbone.map_channels, U, D, cfg.attention_kernel)

        self.transformer: nn.TransformerEncoder | None = None
        if H:
            layer = nn.TransformerEncoderLayer(
                d_model=D,
                nhead=cfg.transformer_heads,
                dim_feedforward=cfg.transformer_ff,
                dropout=cfg.dropout,
                batch_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)
            self.register_buffer("position", sinusoidal_encoding(H, D), persistent=False)
            self.au_weight = nn.Parameter(torch.randn(H, D) / math.sqrt(D))
            self.au_bias = nn.Parameter(torch.zeros(H))
            self.register_buffer("au_pos_weight", torch.ones(H))

        self.message_maps = nn.ParameterDict()
        if space.expressions or space.va:
            names = ["shared"] if cfg.message_space == "shared" else [t for t in ("expr", "va") if t in space.tasks]
            for name in names:
                # identity plus noise: at initialisation the message space is the mean ROI feature
                a = torch.eye(D).repeat(U, 1, 1) + 0.1 * torch.randn(U, D, D) / math.sqrt(D)
                self.message_maps[name] = nn.Parameter(a)
        self.expr_head = nn.Linear(D, space.num_expressions) if space.expressions else None
        if space.expressions:
            self.register_buffer("expr_weight", torch.ones(space.num_expressions))
        self.va_head = nn.Linear(D, 2) if space.va else None
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "SMMMethod":
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    # -- pieces -----------------------------------------------------------------------
    def _map_key(self, task: str) -> str:
        return "shared" if self.config.message_space == "shared" else task

    def message_key(self, task: str) -> str:
        """Name of the extra holding the message-space feature the ``task`` head reads."""
        return "message" if self.config.message_space == "shared" else f"message_{task}"

    @property
    def smoothing_features(self) -> dict[str, str]:
        """Task -> the extra its last FC reads (for feature-level temporal smoothing)."""
        out = {}
        if self.transformer is not None:
            out["au"] = "sign"
        for task in ("expr", "va"):
            if task in self.label_space.tasks:
                out[task] = self.message_key(task)
        return out

    def feature_map(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's spatial map [B, C, h, w] of ``batch['image']``."""
        x = batch.get("image") if isinstance(batch, Mapping) else None
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ModelError(f"method 'smm' expects batch['image'] as a float tensor [B, 3, H, W], got {shape}")
        return self.backbone(x)["map"]

    def sign_space(self, roi: torch.Tensor) -> torch.Tensor:
        """Equation 1: the first H ROI features + PE through the Transformer -> [B, H, D]."""
        H = self.label_space.num_aus
        return self.transformer(roi[:, :H] + self.position)

    def message_space(self, roi: torch.Tensor, task: str) -> torch.Tensor:
        """Equation 3: the mean over ROIs of ``A^(u) f^(u)`` -> [B, D]."""
        a = self.message_maps[self._map_key(task)]
        return torch.einsum("uij,buj->bi", a, roi) / roi.shape[1]

    def predict_from_features(self, task: str, feature: torch.Tensor) -> torch.Tensor:
        """The last FC of ``task`` on its (possibly smoothed) space feature.

        ``au``: ``sign`` [N, H, D] -> logits [N, H] (equation 2); ``expr``: ``message``
        [N, D] -> logits [N, C]; ``va``: ``message`` [N, D] -> valence/arousal [N, 2].
        """
        if task == "au" and self.transformer is not None:
            return (feature * self.au_weight).sum(-1) + self.au_bias
        if task == "expr" and self.expr_head is not None:
            return self.expr_head(feature)
        if task == "va" and self.va_head is not None:
            raw = self.va_head(feature)
            return torch.tanh(raw) if self.config.va_output == "tanh" else raw.clamp(-1.0, 1.0)
        raise ModelError(f"this SMM model has no {task!r} head (it predicts {', '.join(self.label_space.tasks)})")

    # -- contract -----------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        roi, att = self.rois(self.feature_map(batch))
        out = Outputs(extras={"roi": roi, "attention": att})
        if self.transformer is not None:
            sign = self.sign_space(roi)
            out.extras["sign"] = sign
            out.au_logits = self.predict_from_features("au", sign)
        for task in ("expr", "va"):
            if task not in self.label_space.tasks:
                continue
            key = self.message_key(task)
            if key not in out.extras:
                out.extras[key] = self.message_space(roi, task)
            pred = self.predict_from_features(task, out.extras[key])
            if task == "expr":
                out.expr_logits = pred
            else:
                out.va = pred
        return out

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Equation 7 with each term masked (see the module docstring).

        Returns
        -------
        dict
            ``loss`` and the terms ``au``, ``expr``, ``va`` the model and batch share.
        """
        cfg: SMMConfig = self.config
        kwargs: dict[str, Any] = {}
        if outputs.au_logits is not None and "au" in batch:
            kwargs.update(au_logits=outputs.au_logits, au_target=batch["au"])
            kwargs["au_pos_weight"] = self.au_pos_weight if cfg.au_pos_weighted else None
        if outputs.expr_logits is not None and "expr" in batch:
            kwargs.update(expr_logits=outputs.expr_logits, expr_target=batch["expr"])
            kwargs["expr_weight"] = self.expr_weight if cfg.class_weighted else None
        if outputs.va is not None and "va" in batch:
            kwargs.update(va_pred=outputs.va, va_target=batch["va"])
        if not any(k in kwargs for k in ("au_logits", "expr_logits", "va_pred")):
            ref = next(t for t in (outputs.expr_logits, outputs.va, outputs.au_logits) if t is not None)
            return {"loss": ref.sum() * 0.0}
        return losses.smm_loss(return_terms=True, **kwargs)

    def set_training_stats(self, stats: Mapping[str, Any]) -> None:
        """P^EXPR and P^AU from the training-set counts (equations 4-5), kept as buffers.

        Parameters
        ----------
        stats : mapping
            ``class_counts`` [C] and ``au_positive`` / ``au_negative`` [K]; missing
            keys leave the weights at 1.
        """
        space = self.label_space
        expr_w, au_w = losses.weights_from_stats(stats, num_classes=space.num_expressions, num_aus=space.num_aus)
        if expr_w is not None:
            self.expr_weight.copy_(torch.as_tensor(expr_w, dtype=self.expr_weight.dtype))
        if au_w is not None:
            self.au_pos_weight.copy_(torch.as_tensor(au_w, dtype=self.au_pos_weight.dtype))
