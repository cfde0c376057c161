"""CAGE: discrete expressions and valence/arousal with one backbone and a ``C + 2`` head.

Wagner et al., "CAGE: Circumplex Affect Guided Expression Inference"
(CAGE, arXiv:2404.14975, sections 4-5). A backbone (MaxViT-T in the
paper; any registry name here) feeds a single linear layer with one output per
expression class plus valence and arousal. Three variants (section 4.1):

``discrete``
    ``C`` outputs, class-weighted cross-entropy ``L_WeightedCE`` with the normalised
    inverse training frequencies of Table 4 (:func:`affectlab.losses.class_weights`).
``combined``
    ``C + 2`` outputs, ``L_WeightedCE + alpha * L_MSE`` (equation 1, ``alpha = 5``).
``valence-arousal``
    2 outputs, ``L_CCC + beta * L_MSE`` (equation 2, ``beta = 3``). The paper trains it
    on an expression-balanced subset (``sampler: balanced``) starting from the weights
    of the combined model (``init_from: RUN``).

EMOTIC (sections 4.3, 5.4): with a multi-label label space the cross-entropy becomes a
positive-weighted BCE (positive weight of a class = negatives / positives =
``1 / occurrence - 1``, :func:`affectlab.losses.multilabel_pos_weight`), and
``dominance: true`` adds a third regression output trained on the samples'
``dominance`` (the EMOTIC reader provides it; Table 8 reports valence, arousal and
dominance).

The variant decides which descriptors the model predicts: its ``label_space`` is the
training space restricted to ``expr`` (discrete), ``expr`` + ``va`` (combined) or
``va`` (valence-arousal). The training data keep their other labels, so a balanced
sampler can still use the expressions of a valence-arousal run.

Choices the paper leaves open, made here: valence/arousal (and dominance) outputs go
through ``tanh`` so they stay in [-1, 1] (``va_output="linear"`` keeps the raw output);
the MSE of equation 1 is the mean over all labelled valence/arousal entries; the MSE
and CCC of equation 2 are summed over the dimensions, as in the authors' code
(:func:`affectlab.losses.cage_va_loss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import torch
from pydantic import Field
from torch import nn

from affectlab import losses
from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError, ModelError
from affectlab.features.backbones import Backbone, create_backbone
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method

VARIANTS = ("discrete", "combined", "valence-arousal")
_VA_OUTPUTS = ("valence", "arousal", "dominance")


class CageConfig(MethodConfig):
    """Hyper-parameters of CAGE.

    Attributes
    ----------
    variant : {"discrete", "combined", "valence-arousal"}
        Which descriptors are learnt, and with which loss (module docstring).
    backbone : str
        Registry name of the feature extractor; the paper's is ``torchvision:maxvit_t``
        (ImageNet weights: ``pretrained=True`` online, or ``weights=PATH``).
    pretrained : bool
        Let torchvision / timm fetch the backbone's standard weights.
    weights : str or None
        Local state-dict file for the backbone.
    backbone_options : dict
        Extra options of the backbone family (``input_size`` of the built-in CNNs).
    dropout : float
        Dropout before the linear head.
    alpha : float
        Weight of the MSE in the combined loss (equation 1; Table 5: 5).
    beta : float
        Weight of the MSE in the valence-arousal loss (equation 2; Table 5: 3).
    class_weighted : bool
        Weight the cross-entropy by Table 4's inverse frequencies (multi-label: the
        BCE positives by negatives / positives).
    dominance : bool
        Predict dominance as a third continuous output (EMOTIC).
    va_output : {"tanh", "linear"}
        Bound the continuous outputs to [-1, 1] with ``tanh``, or keep them raw.
    head : {"linear", "tanh-mlp"}
        ``linear``: one linear layer (the paper's description). ``tanh-mlp``: the head of
        the authors' code, ``Linear(D, head_hidden) -> Tanh -> Linear(head_hidden, outputs,
        bias=False)`` on the (layer-normalised) backbone feature; for MaxViT-T D = 512 and
        ``head_hidden`` = 512.
    head_hidden : int
        Width of the ``tanh-mlp`` hidden layer.
    init_from : str or None
        Run directory or model file whose weights initialise this model: the whole
        backbone (same architecture) and the head rows of the outputs both share by
        name (expression classes, valence, arousal, dominance). The paper starts the
        valence-arousal model from the combined one.
    """

    variant: Literal["discrete", "combined", "valence-arousal"] = "combined"
    backbone: str = "torchvision:maxvit_t"
    pretrained: bool = False
    weights: Optional[str] = None
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    alpha: float = Field(5.0, ge=0.0)
    beta: float = Field(3.0, ge=0.0)
    class_weighted: bool = True
    dominance: bool = False
    va_output: Literal["tanh", "linear"] = "tanh"
    head: Literal["linear", "tanh-mlp"] = "linear"
    head_hidden: int = Field(512, ge=1)
    init_from: Optional[str] = None


def variant_label_space(space: LabelSpace, variant: str) -> LabelSpace:
    """The descriptors a variant predicts, from the training label space.

    Raises
    ------
    ConfigError
        When the training data lack a descriptor the variant needs.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown CAGE variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    needs = {"discrete": ["expr"], "combined": ["expr", "va"], "valence-arousal": ["va"]}[variant]
    absent = [t for t in needs if t not in space.tasks]
    if absent:
        raise ConfigError(
            f"CAGE variant {variant!r} learns {' and '.join(needs)}, but the training labels carry "
            f"{', '.join(space.tasks) or 'nothing'} (no {', '.join(absent)}); choose another variant "
            "(--set variant=discrete | combined | valence-arousal) or data with those labels"
        )
    return space.restrict(needs)


@register_method("cage")
class CageMethod(Method):
    """Backbone + one linear layer with an output per class and per continuous dimension.

    Parameters
    ----------
    label_space : LabelSpace
        The training label space; restricted to the variant's descriptors
        (:func:`variant_label_space`).
    config : CageConfig or mapping, optional

    Attributes
    ----------
    backbone : Backbone
    head : nn.Linear
        ``D -> len(output_names)``.
    output_names : tuple of str
        Name of each head output: the expression classes, then ``valence``,
        ``arousal`` (and ``dominance``).
    expr_weight : Tensor [C]
        Table 4 class weights (single-label) or BCE positive weights (multi-label),
        from :meth:`set_training_stats`; ones until then.
    """

    Config = CageConfig
    input_kind = "image"

    def __init__(self, label_space: LabelSpace, config: CageConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        cfg: CageConfig = self.config
        self.label_space = variant_label_space(label_space, cfg.variant)
        space = self.label_space
        # init_from replaces every backbone weight: loading ImageNet weights first would only
        # cost a download (and fail offline for nothing)
        self.backbone: Backbone = create_backbone(
            cfg.backbone, pretrained=cfg.pretrained and not cfg.init_from, weights=cfg.weights, **cfg.backbone_options
        )
        self.preprocessing = self.backbone.preprocessing
        n_va = (3 if cfg.dominance else 2) if space.va else 0
        self.output_names: tuple[str, ...] = tuple(space.expressions) + _VA_OUTPUTS[:n_va]
        self.num_expr = len(space.expressions)
        self.dropout = nn.Dropout(cfg.dropout)
        n_out = len(self.output_names)
        if cfg.head == "tanh-mlp":
            self.head = nn.Sequential(
                nn.Linear(self.backbone.out_dim, cfg.head_hidden),
                nn.Tanh(),
                nn.Linear(cfg.head_hidden, n_out, bias=False),
            )
        else:
            self.head = nn.Linear(self.backbone.out_dim, n_out)
        self.register_buffer("expr_weight", torch.ones(max(self.num_expr, 1)))
        if cfg.init_from:
            self.init_from(cfg.init_from)

    # -- contract ------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        x = batch.get("image") if isinstance(batch, Mapping) else None
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ModelError(f"CAGE expects batch['image'] as a float tensor [B, 3, H, W], got {shape}")
        raw = self.head(self.dropout(self.backbone(x)["global"]))
        out = Outputs()
        if self.num_expr:
            out.expr_logits = raw[:, : self.num_expr]
        if raw.shape[1] > self.num_expr:
            cont = raw[:, self.num_expr :]
            out.va = torch.tanh(cont) if self.config.va_output == "tanh" else cont
        return out

    def va_target(self, batch: Mapping[str, torch.Tensor], width: int) -> torch.Tensor:
        """Valence, arousal (and dominance, NaN when the batch has none) targets [B, width]."""
        va = batch["va"].float()
        if width == 2:
            return va[:, :2]
        dom = batch.get("dominance")
        if dom is None:
            dom = torch.full((va.shape[0],), float("nan"), dtype=va.dtype, device=va.device)
        return torch.cat([va[:, :2], dom.float().reshape(-1, 1)], dim=1)

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The variant's loss (equations 1 and 2 of 001; BCE on multi-label data).

        Returns
        -------
        dict
            ``loss`` (the total) and its parts: ``ce`` (or ``bce``), ``mse``, ``ccc``
            (``1 - CCC`` summed over the dimensions), as far as the variant uses them.
        """
        cfg: CageConfig = self.config
        terms: dict[str, torch.Tensor] = {}
        total = None
        if outputs.expr_logits is not None:
            w = self.expr_weight if cfg.class_weighted else None
            if self.label_space.multilabel:
                terms["bce"] = losses.multilabel_bce(outputs.expr_logits, batch["expr"], w)
                total = terms["bce"]
            else:
                terms["ce"] = losses.weighted_cross_entropy(outputs.expr_logits, batch["expr"], w)
                total = terms["ce"]
        if outputs.va is not None:
            target = self.va_target(batch, outputs.va.shape[1])
            if cfg.variant == "valence-arousal":
                terms["ccc"] = losses.ccc_loss(outputs.va, target, reduction="sum")
                terms["mse"] = losses.masked_mse(outputs.va, target, reduction="none").sum()
                part = terms["ccc"] + cfg.beta * terms["mse"]
            else:
                terms["mse"] = losses.masked_mse(outputs.va, target)
                part = cfg.alpha * terms["mse"]
            total = part if total is None else total + part
        return {"loss": total, **terms}

    # -- training statistics -------------------------------------------------------------
    def set_training_stats(self, stats: Mapping[str, Any]) -> None:
        """Store the loss weights derived from training-set counts.

        Single-label: Table 4's ``w_c = (1 / n_c) / sum_k (1 / n_k)``
        (:func:`affectlab.losses.class_weights`). Multi-label: positive weight
        ``(N - n_c) / n_c`` (:func:`affectlab.losses.multilabel_pos_weight`; a class
        never positive keeps 1).

        Parameters
        ----------
        stats : mapping
            ``class_counts`` [C] (positives per class when multi-label) and
            ``num_samples``; without ``class_counts`` the weights stay at 1.
        """
        expr_w, _ = losses.weights_from_stats(
            stats, num_classes=self.num_expr, num_aus=0, multilabel=self.label_space.multilabel
        )
        if expr_w is not None:
            if not self.label_space.multilabel:
                expr_w = expr_w / self.num_expr  # Table 4's normalisation: the weights sum to 1
            self.expr_weight.copy_(torch.as_tensor(expr_w, dtype=self.expr_weight.dtype))

    # -- initialisation from another run -------------------------------------------------
    def init_from(self, path: str | Path) -> dict[str, int]:
        """Load the backbone and the head rows shared by name from a trained model.

        Parameters
        ----------
        path : str or Path
            Run directory or model file of a CAGE model (or any model whose
            ``backbone.*`` weights fit, e.g. the baseline with the same backbone).

        Returns
        -------
        dict
            ``backbone`` (tensors loaded) and ``head`` (output rows copied).

        Raises
        ------
        ModelError
            Unreadable file, a different backbone, or no weight in common.
        """
        from affectlab.modelfile import read_payload

        payload = read_payload(path)
        state = payload["state_dict"]
        own = self.state_dict()
        bb = {k: v for k, v in state.items() if k.startswith("backbone.")}
        mismatch = [k for k, v in bb.items() if k not in own or own[k].shape != v.shape]
        missing = [k for k in own if k.startswith("backbone.") and k not in bb]
        if not bb or mismatch or missing:
            src = (payload.get("method_config") or {}).get("backbone", "?")
            raise ModelError(
                f"init_from {str(path)!r}: its backbone ({src}) does not fit this model's "
                f"({self.config.backbone}); {len(mismatch)} tensors differ, {len(missing)} are absent"
            )
        with torch.no_grad():
            for k, v in bb.items():
                own[k].copy_(v)
            rows = 0
            # the output layer: the head itself (linear) or its last layer (tanh-mlp)
            own_last = self.head[-1] if isinstance(self.head, nn.Sequential) else self.head
            last_key = "head.2" if "head.2.weight" in state else "head"
            same_kind = isinstance(self.head, nn.Sequential) == (last_key == "head.2")
            if payload.get("method") == "cage" and f"{last_key}.weight" in state and same_kind:
                if last_key == "head.2" and state["head.0.weight"].shape == self.head[0].weight.shape:
                    self.head[0].weight.copy_(state["head.0.weight"])  # the hidden layer is shared by all outputs
                    self.head[0].bias.copy_(state["head.0.bias"])
                src_names = _output_names(payload)
                for j, name in enumerate(self.output_names):
                    if name in src_names:
                        i = src_names.index(name)
                        if state[f"{last_key}.weight"].shape[1] != own_last.weight.shape[1]:
                            continue
                        own_last.weight[j].copy_(state[f"{last_key}.weight"][i])
                        if own_last.bias is not None and f"{last_key}.bias" in state:
                            own_last.bias[j].copy_(state[f"{last_key}.bias"][i])
                        rows += 1
        return {"backbone": len(bb), "head": rows}


def _output_names(payload: Mapping[str, Any]) -> list[str]:
    """Output names of a saved CAGE model, rebuilt from its label space and config."""
    space = LabelSpace.from_dict(payload["label_space"])
    cfg = payload.get("method_config") or {}
    n_va = (3 if cfg.get("dominance") else 2) if space.va else 0
    return list(space.expressions) + list(_VA_OUTPUTS[:n_va])
