"""The ``run:RUN_DIR`` backbone: the image encoder of a model affectlab trained.

``create_backbone("run:runs/cnn")`` loads ``runs/cnn/model.ckpt`` (a run directory or
a model file), takes the method's :class:`~affectlab.features.backbones.Backbone`
(its ``backbone`` attribute, or ``encoder``), freezes it and gives it the preprocessing
the model was trained with. This is how features "from a backbone affectlab trained"
feed AURA: ``affectlab extract SPEC --backbone run:runs/cnn --out FEAT.zarr``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from affectlab.errors import ConfigError, ModelError
from affectlab.features.backbones import Backbone, Preprocessing, register_backbone
from affectlab.modelfile import ENCODER_ATTRS


class RunBackbone(Backbone):
    """A frozen encoder taken from a trained affectlab model."""

    def __init__(self, encoder: Backbone, *, name: str, preprocessing: Preprocessing, source: str):
        super().__init__(
            name=name,
            out_dim=encoder.out_dim,
            preprocessing=preprocessing,
            map_channels=encoder.map_channels,
            token_dim=encoder.token_dim,
        )
        self.encoder = encoder
        self.source = source
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> "RunBackbone":
        # frozen: batch-norm statistics must not move, whatever the caller asks
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.encoder(x)

    def weight_targets(self) -> list:
        return [self, self.encoder]


@register_backbone("run:")
def _run(path: str, *, pretrained: bool = False, weights=None, **kw) -> Backbone:
    """``run:RUN_DIR`` or ``run:MODEL.ckpt``: the encoder of a trained model."""
    from affectlab.runtime.hub import load_model

    if pretrained or weights is not None:
        raise ConfigError("run:RUN_DIR backbones take their weights from the run; do not pass pretrained or weights")
    if kw:
        raise ConfigError(f"run:RUN_DIR backbones take no options, got {sorted(kw)}")
    method, info = load_model(Path(path).expanduser())
    encoder = None
    for attr in ENCODER_ATTRS:
        candidate = getattr(method, attr, None)
        if isinstance(candidate, Backbone):
            encoder = candidate
            break
    if encoder is None:
        raise ModelError(
            f"model {info['path']} (method {info['method']!r}) has no image encoder to extract features with; "
            "run:RUN_DIR needs a model trained on images (e.g. --method baseline)"
        )
    pre = info.get("preprocessing")
    preprocessing = Preprocessing.from_dict(pre) if pre else encoder.preprocessing
    return RunBackbone(encoder, name=f"run:{path}", preprocessing=preprocessing, source=info["path"])
