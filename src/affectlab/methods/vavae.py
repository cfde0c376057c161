"""A VAE whose latent space is aligned with valence and arousal (the VA-VAE report; ARCHITECTURE.md, Papers).

"The Bridge from D to E" (Nath and Udandarao) splits a VAE latent code into a valence
part ``z_v``, an arousal part ``z_a`` and a rest ``z_z`` and, in the *regularized* VAE,
adds a loss that makes a projection of ``z_v`` predict valence and a projection of
``z_a`` predict arousal::

    L = MSE(x, x_hat) + KL(z_v) + KL(z_a) + KL(z_z)
        + BCE/MSE(Proj_v(z_v), V) + BCE/MSE(Proj_a(z_a), A)

The *vanilla* VAE (``regularize=False``) drops the last two terms. Encoder and decoder
are 4 conv / 4 transposed-conv layers with batch normalisation and ReLU, as in the
paper.

affectlab's choices where the slides are silent (all configurable):

* Input: ``image_size`` x ``image_size`` RGB in [0, 1] (default 64 px; any multiple of
  16). The method's ``preprocessing`` asks the engine for un-normalised pixels
  (``normalize: none``) because the decoder ends in a sigmoid and reconstructs the
  input itself.
* Layers: channels ``32, 64, 128, 256``, kernel 4, stride 2, padding 1 (each layer
  halves the side), then linear layers to the latent means / log-variances; the
  decoder mirrors it (the last transposed conv has no batch norm and ends in a sigmoid).
* Scale of the terms: the reconstruction error is summed over pixels and the KL over
  latent dimensions (one sample's ELBO), both averaged over the batch; each
  projection term is averaged over the labelled samples of the batch and weighted by
  ``va_weight`` / ``arousal_weight`` (default 100, so that one unit of squared VA error
  weighs like a visible change of the reconstruction). ``kl_weight`` is beta.
* Projections: ``Proj_v`` and ``Proj_a`` are linear. With a 1-d ``z_v`` (default
  ``dim_v=1``) the regulariser makes ``z_v`` itself an affine copy of valence, which is
  what the paper's direct comparison of latent means with V (Task 2) measures.
* Discrete labels (``va_loss="ce"`` or ``"bce"``): 21 integer bins of [-10, 10]
  (``round(10 * v)``); the projection gives 21 logits; ``ce`` is the cross-entropy,
  ``bce`` the binary cross-entropy against the one-hot bin (the paper's "BCE"). The
  reported ``va`` is the expected bin value / 10.
* The projection reads the sampled latent while training (so the regulariser also
  shrinks the posterior variance of ``z_v``) and the mean at evaluation.

Outputs
-------
``va`` [B, 2]
    Regularized: ``(Proj_v(z_v), Proj_a(z_a))`` clamped to [-1, 1], so
    ``affectlab evaluate`` reports the CCC of the aligned latents. Vanilla: the raw
    latent means ``(mu_v[:, 0], mu_a[:, 0])`` -- the unsupervised alignment of Task 2.
extras
    ``z_v`` [B, dim_v], ``z_a`` [B, dim_a], ``z_z`` [B, dim_z] (posterior means),
    ``logvar`` [B, D] and ``recon`` [B, 3, H, W] (decoder output from the means at
    evaluation, from the sample while training).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from affectlab.errors import ConfigError, ModelError
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method

#: Integer bins of the discrete labels (AFEW-VA style -10 ... 10).
NUM_BINS = 21


class VAVAEConfig(MethodConfig):
    """Hyper-parameters of the VA-aligned VAE.

    Attributes
    ----------
    image_size : int
        Side of the square input in pixels (multiple of 16; default 64).
    channels : list of 4 int
        Channels of the four encoder conv layers (the decoder mirrors them).
    dim_v, dim_a, dim_z : int
        Sizes of the valence, arousal and residual latent parts.
    regularize : bool
        Add the projection terms (regularized VAE); ``False`` gives the vanilla VAE.
    va_loss : {"mse", "ce", "bce"}
        Continuous labels (MSE) or 21 integer bins of [-10, 10] (cross-entropy, or
        BCE against the one-hot bin).
    recon_weight, kl_weight, va_weight, arousal_weight : float
        Weights of the reconstruction, KL (beta), valence and arousal terms.
    """

    image_size: int = Field(64, ge=16)
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256])
    dim_v: int = Field(1, ge=1)
    dim_a: int = Field(1, ge=1)
    dim_z: int = Field(14, ge=1)
    regularize: bool = True
    va_loss: Literal["mse", "ce", "bce"] = "mse"
    recon_weight: float = Field(1.0, ge=0.0)
    kl_weight: float = Field(1.0, ge=0.0)
    va_weight: float = Field(100.0, ge=0.0)
    arousal_weight: float = Field(100.0, ge=0.0)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"image_size must be a multiple of 16 (4 stride-2 layers), got {value}")
        return value

    @field_validator("channels")
    @classmethod
    def _four_channels(cls, value: list[int]) -> list[int]:
        if len(value) != 4 or min(value) < 1:
            raise ValueError(f"channels must be 4 positive integers (one per conv layer), got {value}")
        return value


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _deconv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def va_to_bins(values: torch.Tensor) -> torch.Tensor:
    """Canonical [-1, 1] values -> integer bin index 0..20 (``round(10 v) + 10``)."""
    return (torch.round(values.clamp(-1, 1) * 10) + 10).long()


@register_method("vavae")
class VAVAEMethod(Method):
    """VAE with a valence / arousal / residual latent split (see the module docstring).

    Parameters
    ----------
    label_space : LabelSpace
        The regularized VAE needs valence/arousal in it; the vanilla VAE accepts any.
    config : VAVAEConfig or mapping, optional

    Attributes
    ----------
    encoder, decoder : nn.Sequential
        The 4-layer conv / transposed-conv stacks.
    proj_v, proj_a : nn.Linear or None
        The projections of the regularized VAE.
    preprocessing : Preprocessing
        Un-normalised ``image_size`` inputs (what the engine feeds the model).
    """

    Config = VAVAEConfig
    input_kind = "image"

    def __init__(self, label_space, config: VAVAEConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        cfg: VAVAEConfig = self.config
        if cfg.regularize and not label_space.va:
            raise ConfigError(
                "the regularized VAE needs valence/arousal labels (tasks include va); the label space has "
                f"{', '.join(label_space.tasks)}. Train the vanilla VAE with --set regularize=false, or give the "
                "data VA first (affectlab transfer-va)"
            )
        if label_space.va:
            # what it predicts: valence and arousal (expressions and AUs are for the probes of the evaluation)
            self.label_space = label_space.restrict(["va"])
        from affectlab.features.backbones import Preprocessing

        self.preprocessing = Preprocessing.named("none", cfg.image_size)
        c = list(cfg.channels)
        self.side = cfg.image_size // 16
        self.encoder = nn.Sequential(_conv_block(3, c[0]), _conv_block(c[0], c[1]), _conv_block(c[1], c[2]), _conv_block(c[2], c[3]))
        flat = c[3] * self.side * self.side
        self.latent_dim = cfg.dim_v + cfg.dim_a + cfg.dim_z
        self.to_mu = nn.Linear(flat, self.latent_dim)
        self.to_logvar = nn.Linear(flat, self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim, flat)
        self.decoder = nn.Sequential(
            _deconv_block(c[3], c[2]),
            _deconv_block(c[2], c[1]),
            _deconv_block(c[1], c[0]),
            nn.ConvTranspose2d(c[0], 3, 4, 2, 1),
            nn.Sigmoid(),
        )
        out = 1 if cfg.va_loss == "mse" else NUM_BINS
        self.proj_v = nn.Linear(cfg.dim_v, out) if cfg.regularize else None
        self.proj_a = nn.Linear(cfg.dim_a, out) if cfg.regularize else None

    # -- parts -----------------------------------------------------------------------------
    def _check_image(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = batch.get("image") if isinstance(batch, Mapping) else None
        size = self.config.image_size
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (size, size):
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ModelError(
                f"the VA-VAE expects batch['image'] as a float tensor [B, 3, {size}, {size}] in [0, 1], got {shape}"
            )
        return x.float()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior means and log-variances [B, dim_v + dim_a + dim_z] of images in [0, 1]."""
        h = self.encoder(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h).clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] from latents [B, D] (order: z_v, z_a, z_z)."""
        c = self.config.channels[3]
        return self.decoder(self.from_latent(z).view(-1, c, self.side, self.side))

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_v, z_a, z_z)`` parts of latents [B, D]."""
        cfg: VAVAEConfig = self.config
        return z[:, : cfg.dim_v], z[:, cfg.dim_v : cfg.dim_v + cfg.dim_a], z[:, cfg.dim_v + cfg.dim_a :]

    def project(self, z_v: torch.Tensor, z_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw projection outputs (values [B, 1] or bin logits [B, 21]) of the regularized VAE."""
        if self.proj_v is None:
            raise ModelError("the vanilla VAE (regularize=false) has no VA projection")
        return self.proj_v(z_v), self.proj_a(z_a)

    def _value(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.shape[1] == 1:
            return raw[:, 0].clamp(-1.0, 1.0)
        centers = torch.arange(-10, 11, device=raw.device, dtype=raw.dtype) / 10.0
        return (raw.softmax(dim=1) * centers).sum(dim=1)

    # -- contract --------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        x = self._check_image(batch)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        recon = self.decode(z)
        z_v, z_a, z_z = self.split(mu)
        out = Outputs(extras={"z_v": z_v, "z_a": z_a, "z_z": z_z, "logvar": logvar, "recon": recon, "mu": mu})
        if self.proj_v is not None:
            s_v, s_a, _ = self.split(z)
            raw_v, raw_a = self.project(s_v, s_a)
            out.extras["proj_v"], out.extras["proj_a"] = raw_v, raw_a
            out.va = torch.stack([self._value(raw_v), self._value(raw_a)], dim=1)
        elif self.label_space.va:
            out.va = torch.stack([z_v[:, 0], z_a[:, 0]], dim=1)
        return out

    def _va_term(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = torch.isfinite(target)
        if not keep.any():
            return raw.sum() * 0.0
        raw, target = raw[keep], target[keep]
        loss = self.config.va_loss
        if loss == "mse":
            return F.mse_loss(raw[:, 0], target)
        bins = va_to_bins(target)
        if loss == "ce":
            return F.cross_entropy(raw, bins)
        return F.binary_cross_entropy_with_logits(raw, F.one_hot(bins, NUM_BINS).to(raw.dtype))

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reconstruction + per-part KL (+ projection terms when regularized).

        Returns
        -------
        dict
            ``loss`` (weighted total), ``recon`` (squared error summed over pixels,
            batch mean), ``kl_v``, ``kl_a``, ``kl_z`` and, for the regularized VAE with
            VA in the batch, ``valence`` and ``arousal`` (unweighted).
        """
        cfg: VAVAEConfig = self.config
        x = self._check_image(batch)
        ex = outputs.extras
        if "recon" not in ex or "mu" not in ex:
            raise ModelError("VA-VAE loss needs the outputs of VAVAEMethod.forward (extras recon, mu, logvar)")
        recon = (ex["recon"] - x).pow(2).flatten(1).sum(dim=1).mean()
        mu_v, mu_a, mu_z = self.split(ex["mu"])
        lv_v, lv_a, lv_z = self.split(ex["logvar"])
        terms = {
            "recon": recon,
            "kl_v": kl_normal(mu_v, lv_v),
            "kl_a": kl_normal(mu_a, lv_a),
            "kl_z": kl_normal(mu_z, lv_z),
        }
        total = cfg.recon_weight * recon + cfg.kl_weight * (terms["kl_v"] + terms["kl_a"] + terms["kl_z"])
        if self.proj_v is not None and "va" in batch:
            va = batch["va"].float()
            terms["valence"] = self._va_term(ex["proj_v"], va[:, 0])
            terms["arousal"] = self._va_term(ex["proj_a"], va[:, 1])
            total = total + cfg.va_weight * terms["valence"] + cfg.arousal_weight * terms["arousal"]
        return {"loss": total, **terms}
