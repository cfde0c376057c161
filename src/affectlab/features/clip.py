"""The ``clip:<open_clip name>`` backbones: the visual tower of an open_clip model.

AURA's encoder is "a frozen, pre-trained [CLIP] model from OpenAI" (appendix A.2 of
the AURA paper). Names follow open_clip (``open_clip.list_models()``), optionally
with a pretrained tag after ``@``::

    create_backbone("clip:ViT-B-16", weights="ViT-B-16-openai.bin")  # local file
    create_backbone("clip:ViT-B-16@openai", pretrained=True)          # open_clip's cache
                                                                      # (downloads once)
    create_backbone("clip:ViT-B-16")                                  # random weights

Nothing is downloaded unless ``pretrained=True``. ``"global"`` is the projected image
embedding (what CLIP compares with text); ViT towers also give ``"tokens"``, the patch
tokens of the last block (class token dropped), before the projection. The
preprocessing (input size, mean/std, interpolation) is open_clip's for the model.
"""

from __future__ import annotations

import os

import torch

from affectlab.errors import ConfigError, ModelError
from affectlab.features.backbones import Backbone, Preprocessing, _normalize_name, register_backbone, weights_record


def _open_clip():
    try:
        import open_clip
    except ImportError:  # pragma: no cover - open_clip is in the clip extra
        raise ConfigError("clip: backbones need open_clip: pip install 'affectlab[clip]'") from None
    return open_clip


class ClipBackbone(Backbone):
    """The visual tower of an open_clip model, frozen for feature extraction."""

    def __init__(self, visual: torch.nn.Module, *, name: str, out_dim: int, token_dim: int | None, preprocessing: Preprocessing):
        super().__init__(name=name, out_dim=out_dim, preprocessing=preprocessing, token_dim=token_dim)
        self.visual = visual

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.visual(x)
        if isinstance(out, tuple):  # output_tokens=True: (pooled, tokens)
            pooled, tokens = out
            return {"global": pooled, "tokens": tokens}
        return {"global": out}

    def weight_targets(self) -> list[torch.nn.Module]:
        return [self, self.visual]


def _split_tag(arch: str) -> tuple[str, str | None]:
    if "@" in arch:
        name, tag = arch.split("@", 1)
        return name, tag or None
    return arch, None


@register_backbone("clip:")
def _clip(arch: str, *, pretrained: bool = False, weights: str | os.PathLike | None = None, cache_dir: str | None = None) -> Backbone:
    """Build ``clip:<model>[@tag]``; see the module docstring."""
    open_clip = _open_clip()
    name, tag = _split_tag(arch)
    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower() in m.lower()][:10]
        raise ConfigError(
            f"unknown open_clip model {name!r}" + (f"; similar: {', '.join(close)}" if close else "")
            + " (see open_clip.list_models())"
        )
    if tag is not None and not pretrained and weights is None:
        raise ConfigError(
            f"clip:{arch} names pretrained weights ({tag!r}): pass pretrained=True to let open_clip fetch or "
            "reuse them from its cache, or weights=PATH for a local file"
        )
    source = None
    if weights is not None:
        source = str(weights)
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if tag is None:
            if not tags:
                raise ConfigError(f"open_clip has no pretrained weights for {name!r}; pass weights=PATH")
            tag = "openai" if "openai" in tags else tags[0]
        elif tag not in tags:
            raise ConfigError(f"unknown pretrained tag {tag!r} for {name!r}; known: {', '.join(tags)}")
        source = tag
    try:
        model = open_clip.create_model(name, pretrained=source, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - download failures and bad files alike
        where = f"weights file {source!r}" if weights is not None else f"pretrained tag {source!r}"
        raise ModelError(f"cannot build open_clip model {name!r} with {where}: {exc}") from None
    visual = model.visual
    visual.eval()
    token_dim = None
    if hasattr(visual, "output_tokens") and hasattr(visual, "transformer"):
        visual.output_tokens = True
        token_dim = int(getattr(visual.transformer, "width", 0) or visual.conv1.out_channels)
    out_dim = int(getattr(visual, "output_dim", 0) or model.text_projection.shape[1])
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean, std = tuple(cfg.get("mean")), tuple(cfg.get("std"))
    interp = cfg.get("interpolation", "bicubic")
    pre = Preprocessing(
        input_size=size,
        mean=mean,
        std=std,
        normalize=_normalize_name(mean, std),
        interpolation=interp if interp in ("bilinear", "bicubic") else "bicubic",
    )
    del model  # the text tower is not needed
    bb = ClipBackbone(visual, name=f"clip:{arch}", out_dim=out_dim, token_dim=token_dim, preprocessing=pre)
    if weights is not None:
        bb.weights_info = weights_record(weights, "weights file")
    elif pretrained:
        # open_clip keeps the file in its own (Hugging Face) cache; the tag names it
        bb.weights_info = {"name": f"{name}@{tag}", "sha256": None, "source": "open_clip pretrained tag"}
    return bb
