"""AURA: affect understanding through a codebook of learned archetypes, on frozen features.

AURA (appendix) trains at feature level:
backbone features are extracted once (``affectlab extract``) and every training step
only sees cached vectors. A sample's global feature (and, when cached, its patch tokens)
is projected into a ``dim``-dimensional space; the projection ``z`` is assigned to its
nearest archetype ``e_k`` of a codebook of ``num_archetypes`` learnable vectors; the
prediction is read from the archetype, corrected by a small refinement of the residual
``z - e_k``. Every prediction is therefore explained by the archetype it came from
(``Outputs.extras["archetype"]``).

Losses (all weights 1 and ``beta = 1`` as in appendix A.2)::

    L = L_task(refined) + λ_proj L_proj + λ_vpo L_vpo + λ_refine L_refine + L_vq
    L_vq     = ||sg[z] - e_k||² + β ||z - sg[e_k]||²          (codebook + commitment)
    L_proj   = L_task(heads(z))                                  (projection is affective)
    L_vpo    = L_task(heads(e_k)) + ||e_i - sg[c_i]||² (live i)  (archetypes carry labels,
                                                                  track their EMA cluster mean)
    L_refine = L_task(heads(e_k + R(z - e_k)))                   (residual refinement)

``L_task`` is cross-entropy for expressions (BCE when multi-label), MSE + (1 - CCC) for
valence/arousal and BCE for AUs, all masked for missing labels. The usage-aware reset of
appendix B runs every ``reset_every`` training steps. docs/methods/aura.md says which
parts come from the paper and which are affectlab's design.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from affectlab import losses
from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method


class AuraConfig(MethodConfig):
    """Hyper-parameters of AURA (defaults: appendix A.2 where it gives them).

    Attributes
    ----------
    feature_dim : int or None
        Width of the cached global features. ``None``: taken from the feature store by
        the training engine (or from the first batch).
    token_dim : int or None
        Width of cached patch tokens; ``None`` disables the patch-level projector
        unless the store has tokens.
    backbone : str or None
        Name of the backbone the features came from (recorded, checked against the store).
    dim : int
        Width of the projected space the archetypes live in.
    hidden : int
        Hidden width of the projectors.
    num_archetypes : int
        Codebook size N.
    dropout : float
        Dropout of both projectors (A.2: 0.2).
    beta : float
        Weight of the commitment term in the VQ loss (A.2: 1).
    lambda_proj, lambda_vpo, lambda_refine : float
        Loss weights (A.2: all 1).
    ema_decay : float
        Decay of the cluster accumulators c_i (mean) and n_i (size).
    reset_every : int
        Steps between usage-aware resets (appendix B: "periodically"); 0 disables.
    reset_threshold : float
        tau of appendix B: archetypes whose usage ratio is below it are re-seeded.
    reset_noise : float
        sigma of appendix B: std of the Gaussian noise added to the re-seeding feature
        (in units of the unit sphere the archetypes live on).
    normalize : bool
        Compare projections and archetypes on the unit sphere (cosine geometry). Keeps
        the codebook and the projection on one scale so the VQ loss cannot be lowered by
        shrinking either.
    va_ccc_weight : float
        Weight of the (1 - CCC) part of the valence/arousal loss (the MSE part has 1).
    data_init : bool
        Seed every archetype from the first training batch's projections (plus the
        reset noise) instead of keeping the random unit vectors: random archetypes in
        a high-dimensional space are all far from the data and the nearest one takes
        every sample (collapse before the first reset).
    """

    feature_dim: Optional[int] = Field(None, ge=1)
    token_dim: Optional[int] = Field(None, ge=1)
    backbone: Optional[str] = None
    dim: int = Field(256, ge=2)
    hidden: int = Field(256, ge=2)
    num_archetypes: int = Field(64, ge=2)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    beta: float = Field(1.0, ge=0.0)
    lambda_proj: float = Field(1.0, ge=0.0)
    lambda_vpo: float = Field(1.0, ge=0.0)
    lambda_refine: float = Field(1.0, ge=0.0)
    ema_decay: float = Field(0.99, gt=0.0, lt=1.0)
    reset_every: int = Field(50, ge=0)
    reset_threshold: float = Field(0.002, gt=0.0, lt=1.0)
    reset_noise: float = Field(0.01, ge=0.0)
    normalize: bool = True
    va_ccc_weight: float = Field(1.0, ge=0.0)
    data_init: bool = True


def _projector(in_dim: int | None, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    # in_dim None: the width is taken from the first batch (nn.LazyLinear)
    first = nn.LazyLinear(hidden) if in_dim is None else nn.Linear(in_dim, hidden)
    return nn.Sequential(first, nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def _ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - CCC of one column (needs >= 2 samples)."""
    pm, tm = pred.mean(), target.mean()
    pv, tv = pred.var(unbiased=False), target.var(unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean()
    return 1.0 - 2.0 * cov / (pv + tv + (pm - tm) ** 2 + 1e-8)


@register_method("aura")
class Aura(Method):
    """AURA on cached features: projectors, archetype codebook, refinement, task heads.

    Parameters
    ----------
    label_space : LabelSpace
        Descriptors to predict (any subset of expressions, VA, AUs).
    config : AuraConfig or mapping
        See :class:`AuraConfig`.

    Notes
    -----
    The batch must carry ``features`` [B, D] and may carry ``tokens`` [B, T, Dt].
    ``forward`` returns the refined predictions plus extras ``archetype`` (index) and
    ``archetype_distance`` (Euclidean distance on the unit sphere); the archetypes' own
    predictions are :meth:`archetype_predictions`.
    """

    Config = AuraConfig
    input_kind = "features"

    def __init__(self, label_space: LabelSpace, config: AuraConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        cfg: AuraConfig = self.config
        d = cfg.dim
        self.global_proj = _projector(cfg.feature_dim, cfg.hidden, d, cfg.dropout)
        self.patch_proj = _projector(cfg.token_dim, cfg.hidden, d, cfg.dropout) if cfg.token_dim else None
        # archetypes start as random unit vectors; the reset re-seeds the unused ones
        self.codebook = nn.Parameter(F.normalize(torch.randn(cfg.num_archetypes, d), dim=1))
        # refinement of the residual z - e_k, zero-initialised: training starts from
        # the archetype's own prediction and learns only the correction it needs
        self.refine = nn.Linear(d, d)
        nn.init.zeros_(self.refine.weight)
        nn.init.zeros_(self.refine.bias)
        space = label_space
        self.expr_head = nn.Linear(d, space.num_expressions) if space.expressions else None
        self.va_head = nn.Linear(d, 2) if space.va else None
        self.au_head = nn.Linear(d, space.num_aus) if space.aus else None
        n = cfg.num_archetypes
        self.register_buffer("usage", torch.zeros(n, dtype=torch.float64))  # u of appendix B
        self.register_buffer("cluster_mean", self.codebook.detach().clone())  # c_i
        self.register_buffer("cluster_size", torch.zeros(n))  # n_i
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("resets", torch.zeros(n, dtype=torch.long))
        self.register_buffer("au_pos_weight", torch.ones(max(space.num_aus, 1)))
        # the heads see vectors of norm ~sqrt(d): unit vectors would need tiny logits
        self._scale = math.sqrt(d) if cfg.normalize else 1.0

    # -- geometry -----------------------------------------------------------------------
    def archetypes(self) -> torch.Tensor:
        """The codebook as used for assignment ([N, dim]; unit vectors when ``normalize``)."""
        return F.normalize(self.codebook, dim=1) if self.config.normalize else self.codebook

    def project(self, features: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Project cached features into the archetype space (z, [B, dim])."""
        if features.ndim != 2:
            raise ConfigError(f"AURA expects global features of shape [B, D], got {tuple(features.shape)}")
        cfg: AuraConfig = self.config
        if cfg.feature_dim is not None and features.shape[1] != cfg.feature_dim:
            raise ConfigError(
                f"AURA was built for {cfg.feature_dim}-d features (backbone {cfg.backbone!r}), "
                f"got {features.shape[1]}-d; extract features with the same backbone"
            )
        # features of any backbone arrive on their own scale: standardise each vector
        # (a parameter-free layer norm, so the lazy and the sized projector agree)
        x = features.float()
        z = self.global_proj(F.layer_norm(x, x.shape[-1:]))
        if self.patch_proj is not None and tokens is not None:
            t = tokens.float()
            p = self.patch_proj(F.layer_norm(t, t.shape[-1:]))  # [B, T, d]
            # attention pooling of the patch projections with the global projection as query
            att = torch.softmax(torch.einsum("bd,btd->bt", z, p) / math.sqrt(z.shape[1]), dim=1)
            z = z + torch.einsum("bt,btd->bd", att, p)
        return F.normalize(z, dim=1) if cfg.normalize else z

    def assign(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest archetype of each row of ``z``: (indices [B], Euclidean distances [B])."""
        e = self.archetypes()
        d2 = (z * z).sum(1, keepdim=True) - 2.0 * z @ e.t() + (e * e).sum(1)[None, :]
        dist, idx = d2.min(dim=1)
        return idx, dist.clamp_min(0).sqrt()

    def _heads(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        v = v * self._scale
        out = {}
        if self.expr_head is not None:
            out["expr_logits"] = self.expr_head(v)
        if self.va_head is not None:
            out["va"] = torch.tanh(self.va_head(v))
        if self.au_head is not None:
            out["au_logits"] = self.au_head(v)
        return out

    @torch.no_grad()
    def archetype_predictions(self) -> dict[str, torch.Tensor]:
        """What each archetype predicts: ``expr_prob`` [N, C], ``va`` [N, 2], ``au_prob`` [N, K]."""
        heads = self._heads(self.archetypes())
        out = {}
        if "expr_logits" in heads:
            logits = heads["expr_logits"]
            out["expr_prob"] = torch.sigmoid(logits) if self.label_space.multilabel else torch.softmax(logits, 1)
        if "va" in heads:
            out["va"] = heads["va"]
        if "au_logits" in heads:
            out["au_prob"] = torch.sigmoid(heads["au_logits"])
        return out

    # -- training-time codebook maintenance ------------------------------------------------
    @torch.no_grad()
    def _update_accumulators(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        n = self.config.num_archetypes
        onehot = F.one_hot(idx, n).to(z.dtype)  # [B, N]
        counts = onehot.sum(0)
        sums = onehot.t() @ z
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.usage += counts.to(self.usage.dtype)
        g = self.config.ema_decay
        hit = counts > 0
        self.cluster_size.mul_(g).add_(counts, alpha=1 - g)
        # c_i is a running *mean*: only clusters present in the batch move towards it
        batch_mean = sums[hit] / counts[hit, None]
        self.cluster_mean[hit] = g * self.cluster_mean[hit] + (1 - g) * batch_mean

    @torch.no_grad()
    def reset_unused(self, z: torch.Tensor) -> torch.Tensor:
        """Usage-aware reset (appendix B); returns the indices of the re-seeded archetypes.

        Archetypes whose usage ratio ``u_i / sum(u)`` is below ``reset_threshold`` are
        re-seeded from randomly drawn rows of ``z`` (this batch's projections) plus
        Gaussian noise; their ``c_i`` becomes the new archetype, ``n_i`` becomes 0, and
        the whole usage counter is cleared.
        """
        total = float(self.usage.sum())
        if total <= 0 or z.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=z.device)
        ratio = self.usage / total
        dead = torch.nonzero(ratio < self.config.reset_threshold).flatten()
        if dead.numel():
            self.seed_archetypes(z, dead)
            self.resets[dead] += 1
        self.usage.zero_()
        return dead

    @torch.no_grad()
    def seed_archetypes(self, z: torch.Tensor, which: torch.Tensor) -> None:
        """Set archetypes ``which`` to random rows of ``z`` plus N(0, reset_noise²) noise.

        Their accumulators follow appendix B: ``c_i <- e_i``, ``n_i <- 0``, ``u_i <- 0``.
        """
        k = int(which.numel())
        if k == 0 or z.shape[0] == 0:
            return
        # distinct rows while the batch has enough of them
        if z.shape[0] >= k:
            pick = torch.randperm(z.shape[0], device=z.device)[:k]
        else:
            pick = torch.randint(0, z.shape[0], (k,), device=z.device)
        new = z[pick] + self.config.reset_noise * torch.randn(k, z.shape[1], device=z.device, dtype=z.dtype)
        if self.config.normalize:
            new = F.normalize(new, dim=1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank must hold the same codebook: rank 0's draw wins
            torch.distributed.broadcast(new, 0)
        self.codebook.data[which] = new.to(self.codebook.dtype)
        self.cluster_mean[which] = new.to(self.cluster_mean.dtype)
        self.cluster_size[which] = 0
        self.usage[which] = 0

    # -- contract -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        if "features" not in batch:
            raise ConfigError(
                "AURA trains on cached features (batch key 'features'); run `affectlab extract` "
                "and train with --train features:FEAT.zarr"
            )
        z = self.project(batch["features"], batch.get("tokens"))
        cfg: AuraConfig = self.config
        if self.training:
            self.steps += 1
            if int(self.steps) == 1 and cfg.data_init:
                self.seed_archetypes(z.detach(), torch.arange(cfg.num_archetypes, device=z.device))
            elif cfg.reset_every and int(self.steps) % cfg.reset_every == 0:
                # before the codebook enters this step's graph: an in-place change after
                # it would invalidate the saved tensors autograd needs
                self.reset_unused(z.detach())
        idx, dist = self.assign(z)
        if self.training:
            self._update_accumulators(z.detach(), idx)
        e = self.archetypes()
        e_k = e[idx]
        refined = e_k + self.refine(z - e_k)
        main = self._heads(refined)
        out = Outputs(
            expr_logits=main.get("expr_logits"),
            va=main.get("va"),
            au_logits=main.get("au_logits"),
            extras={"archetype": idx, "archetype_distance": dist},
        )
        # what loss() needs beyond the tabulated outputs rides on the Outputs object
        out._aura_state = (z, e_k)  # type: ignore[attr-defined]
        return out

    def set_training_stats(self, stats: Mapping[str, Any]) -> None:
        if self.au_head is None:
            return
        _, au_w = losses.weights_from_stats(stats, num_classes=0, num_aus=self.label_space.num_aus)
        if au_w is not None:
            # clipped: archetype heads see few samples per AU, and huge weights destabilise them
            self.au_pos_weight.copy_(torch.as_tensor(np.clip(au_w, 1.0, 10.0), dtype=self.au_pos_weight.dtype))

    def task_loss(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Masked sum of the expression, valence/arousal and AU losses of one prediction set."""
        total = None
        ref = next(iter(pred.values()))
        zero = ref.sum() * 0.0
        if "expr_logits" in pred and "expr" in batch:
            logits, y = pred["expr_logits"], batch["expr"]
            if self.label_space.multilabel:
                mask = y >= 0
                term = (
                    F.binary_cross_entropy_with_logits(logits[mask], y[mask].float()) if mask.any() else zero
                )
            else:
                mask = y >= 0
                term = F.cross_entropy(logits[mask], y[mask]) if mask.any() else zero
            total = term if total is None else total + term
        if "va" in pred and "va" in batch:
            p, y = pred["va"], batch["va"].to(pred["va"].dtype)
            term = zero
            for j in range(2):
                m = torch.isfinite(y[:, j])
                if m.sum() >= 2:
                    term = term + F.mse_loss(p[m, j], y[m, j])
                    if self.config.va_ccc_weight:
                        term = term + self.config.va_ccc_weight * _ccc_loss(p[m, j], y[m, j])
            total = term if total is None else total + term
        if "au_logits" in pred and "au" in batch:
            logits, y = pred["au_logits"], batch["au"].to(pred["au_logits"].dtype)
            mask = y >= 0
            if mask.any():
                w = self.au_pos_weight[: y.shape[1]].to(logits.dtype).expand_as(y)
                term = F.binary_cross_entropy_with_logits(logits[mask], y[mask], pos_weight=w[mask])
            else:
                term = zero
            total = term if total is None else total + term
        return zero if total is None else total

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg: AuraConfig = self.config
        ex = outputs.extras
        state = getattr(outputs, "_aura_state", None)
        if state is None:
            raise ConfigError("AURA.loss needs the Outputs of AURA.forward (not a detached copy)")
        z, e_k = state
        main = {
            k: v
            for k, v in (("expr_logits", outputs.expr_logits), ("va", outputs.va), ("au_logits", outputs.au_logits))
            if v is not None
        }
        arche = self._heads(e_k)
        l_refine = self.task_loss(main, batch)
        l_proj = self.task_loss(self._heads(z), batch)
        # archetype optimisation: the archetype itself predicts its members' labels, and
        # live archetypes follow the EMA mean of the projections assigned to them
        live = self.cluster_size > 1e-3
        e = self.archetypes()
        if live.any():
            target = self.cluster_mean[live]
            if cfg.normalize:
                target = F.normalize(target, dim=1)
            pull = ((e[live] - target.detach()) ** 2).sum(1).mean()
        else:
            pull = e.sum() * 0.0
        l_vpo = self.task_loss(arche, batch) + pull
        codebook = ((z.detach() - e_k) ** 2).sum(1).mean()
        commit = ((z - e_k.detach()) ** 2).sum(1).mean()
        l_vq = codebook + cfg.beta * commit
        total = cfg.lambda_refine * l_refine + cfg.lambda_proj * l_proj + cfg.lambda_vpo * l_vpo + l_vq
        with torch.no_grad():
            counts = torch.bincount(ex["archetype"], minlength=cfg.num_archetypes).float()
            p = counts / counts.sum().clamp_min(1)
            perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return {
            "loss": total,
            "refine": l_refine.detach(),
            "proj": l_proj.detach(),
            "vpo": l_vpo.detach(),
            "vq": l_vq.detach(),
            "perplexity": perplexity,
        }

    def extra_state(self) -> dict:
        return {"feature_dim": self.config.feature_dim, "token_dim": self.config.token_dim}
