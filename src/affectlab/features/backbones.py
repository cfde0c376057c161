"""Backbone registry: image encoders that give a global feature and, where they exist,
a spatial feature map and/or patch tokens.

Build one by name, timm-style::

    bb = create_backbone("builtin:cnn-small")            # trainable CPU CNN, 64 px
    bb = create_backbone("torchvision:inception_v3", weights="inception.pth")
    bb = create_backbone("timm:convnext_atto", pretrained=True)   # online users only
    out = bb(images)        # {"global": [B, D], "map": [B, C, h, w]} (and/or "tokens")

Every :class:`Backbone` carries ``out_dim`` (width of ``"global"``), ``map_channels``
(channels of ``"map"``, or ``None``), ``token_dim`` (width of ``"tokens"``, or ``None``)
and ``preprocessing`` (:class:`Preprocessing`: input size, mean, std), which the training
data pipeline and :class:`affectlab.runtime.predictor.Predictor` both read, so images are
resized and normalised the same way at training and at inference.

Weights are never downloaded unless ``pretrained=True`` is asked for explicitly (then
torchvision / timm fetch their standard ImageNet weights into their own caches).
``weights=PATH`` loads a local state-dict file instead: either the state dict of the
backbone itself (``torch.save(bb.state_dict(), PATH)``) or the state dict of the full
upstream model (e.g. torchvision's ``resnet18-f37072fd.pth``), whose classifier keys are
ignored.

Adding a backbone family
------------------------
Decorate a factory with :func:`register_backbone`. A name ending in ``":"`` registers a
prefix; the factory then receives the rest of the name::

    @register_backbone("clip:")
    def _clip(arch, *, pretrained=False, weights=None, **kw) -> Backbone: ...

Modules listed in :data:`PLUGIN_MODULES` (``affectlab.features.clip``,
``affectlab.runtime.run_backbone``) are imported on first use of the registry, so families
defined there are available without an explicit import.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import importlib
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from affectlab.errors import ConfigError, ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Modules that register more backbone families when imported (missing ones are skipped).
PLUGIN_MODULES: tuple[str, ...] = (
    "affectlab.features.clip",
    "affectlab.runtime.run_backbone",
)


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a backbone.

    An RGB image is resized to ``input_size`` x ``input_size`` (``interpolation``),
    scaled to [0, 1], then normalised per channel with ``(x - mean) / std``.

    Attributes
    ----------
    input_size : int
        Side of the square input, in pixels.
    mean, std : tuple of 3 floats
        Per-channel normalisation applied after scaling to [0, 1].
    normalize : str
        Name of the normalisation: ``"imagenet"``, ``"clip"``, ``"none"`` (mean 0, std 1)
        or ``"custom"``. Informative only: ``mean`` and ``std`` are authoritative.
    interpolation : str
        The upstream recipe's resize filter (``"bilinear"``, ``"bicubic"``, ``"area"``),
        recorded for reference: affectlab's transforms resize every backbone's input
        with antialiased bilinear interpolation, in training and inference alike.
    """

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalize: str = "imagenet"
    interpolation: str = "bilinear"
    #: How a face is cropped from a photograph before all this (``{"kind": "box", "margin":
    #: 0.2}`` or ``{"kind": "aligned", "scale": 0.8}``; see :mod:`affectlab.perception.align`).
    #: ``None``: box + margin 0.2, what models without the key were trained on.
    framing: Any = None

    def __post_init__(self):
        if self.framing is not None:
            if not isinstance(self.framing, Mapping) or self.framing.get("kind") not in ("box", "aligned"):
                raise ConfigError(
                    f"preprocessing framing must be a mapping with kind 'box' or 'aligned', got {self.framing!r}"
                )
            object.__setattr__(self, "framing", dict(self.framing))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if int(self.input_size) < 8:
            raise ConfigError(f"preprocessing input_size must be >= 8 pixels, got {self.input_size!r}")
        object.__setattr__(self, "input_size", int(self.input_size))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(
                f"preprocessing needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}"
            )
        if self.interpolation not in ("bilinear", "bicubic", "area", "nearest"):
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}; expected bilinear, bicubic, area or nearest"
            )

    @classmethod
    def named(cls, normalize: str, input_size: int, interpolation: str = "bilinear") -> "Preprocessing":
        """Preprocessing with a named normalisation (``imagenet``, ``clip`` or ``none``)."""
        table = {
            "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
            "clip": (CLIP_MEAN, CLIP_STD),
            "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        }
        if normalize not in table:
            raise ConfigError(f"unknown normalisation {normalize!r}; expected one of {', '.join(table)}")
        mean, std = table[normalize]
        return cls(input_size=input_size, mean=mean, std=std, normalize=normalize, interpolation=interpolation)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if d["framing"] is None:
            del d["framing"]  # files written before framing existed compare equal
        return d

    @classmethod
    def from_dict(cls, d: "Preprocessing | Mapping[str, Any]") -> "Preprocessing":
        if isinstance(d, Preprocessing):
            return d
        known = {"input_size", "mean", "std", "normalize", "interpolation", "framing"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown preprocessing keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**dict(d))


def _normalize_name(mean, std) -> str:
    def close(a, b):
        return all(abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b))

    if close(mean, IMAGENET_MEAN) and close(std, IMAGENET_STD):
        return "imagenet"
    if close(mean, CLIP_MEAN) and close(std, CLIP_STD):
        return "clip"
    if close(mean, (0, 0, 0)) and close(std, (1, 1, 1)):
        return "none"
    return "custom"


def _check_images(module: "Backbone", args) -> None:
    # every backbone takes a batch of RGB images; anything else is a caller's mistake, said in one line
    x = args[0] if args else None
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        what = f"shape {tuple(x.shape)} ({x.dtype})" if torch.is_tensor(x) else type(x).__name__
        raise ModelError(f"backbone {module.name!r} takes float images [B, 3, H, W], got {what}")


class Backbone(nn.Module, abc.ABC):
    """An image encoder: ``forward(x [B, 3, H, W]) -> dict`` of features.

    Keys of the returned dict: ``"global"`` [B, out_dim] always; ``"map"``
    [B, map_channels, h, w] for architectures with a spatial feature map; ``"tokens"``
    [B, N, token_dim] for token-based architectures (patch tokens, without class token).

    Attributes
    ----------
    name : str
        Registry name it was built from (``"builtin:cnn-small"``).
    out_dim : int
    map_channels : int or None
    token_dim : int or None
    preprocessing : Preprocessing
    """

    def __init__(
        self,
        *,
        name: str,
        out_dim: int,
        preprocessing: Preprocessing,
        map_channels: int | None = None,
        token_dim: int | None = None,
    ):
        super().__init__()
        self.name = name
        self.out_dim = int(out_dim)
        self.map_channels = None if map_channels is None else int(map_channels)
        self.token_dim = None if token_dim is None else int(token_dim)
        self.preprocessing = preprocessing
        #: name, sha256 and source of the weights it started from (None: random initialisation)
        self.weights_info: dict[str, str] | None = None
        self.register_forward_pre_hook(_check_images)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"global": [B, D]}`` plus ``"map"`` [B, C, h, w] and/or ``"tokens"`` [B, N, D]."""

    def weight_targets(self) -> list[nn.Module]:
        """Modules a weights file may match, most specific first (see :func:`load_weights`)."""
        return [self]

    def describe(self) -> dict:
        """Name, feature sizes and preprocessing, for checkpoints and caches."""
        return {
            "name": self.name,
            "out_dim": self.out_dim,
            "map_channels": self.map_channels,
            "token_dim": self.token_dim,
            "preprocessing": self.preprocessing.to_dict(),
        }


# -- registry -----------------------------------------------------------------------

BackboneFactory = Callable[..., Backbone]
_EXACT: dict[str, BackboneFactory] = {}
_PREFIX: dict[str, BackboneFactory] = {}
_PLUGINS_LOADED = False


def register_backbone(prefix_or_name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator adding a backbone factory to the registry.

    Parameters
    ----------
    prefix_or_name : str
        An exact name (``"builtin:cnn-small"``), whose factory is called as
        ``fn(pretrained=..., weights=..., **kw)``, or a prefix ending in ``":"``
        (``"timm:"``), whose factory is called as ``fn(rest, pretrained=..., weights=..., **kw)``.
    """
    if not isinstance(prefix_or_name, str) or not prefix_or_name.strip():
        raise ValueError("register_backbone needs a non-empty name or prefix")

    def deco(fn: BackboneFactory) -> BackboneFactory:
        table = _PREFIX if prefix_or_name.endswith(":") else _EXACT
        if prefix_or_name in table and table[prefix_or_name] is not fn:
            raise ValueError(f"backbone {prefix_or_name!r} is already registered by {table[prefix_or_name]!r}")
        table[prefix_or_name] = fn
        return fn

    return deco


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def available_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`; prefixes are shown as ``prefix<name>``."""
    _load_plugins()
    return sorted(_EXACT) + sorted(f"{p}<name>" for p in _PREFIX)


_REBUILDING = contextvars.ContextVar("affectlab_rebuilding_backbones", default=False)


@contextlib.contextmanager
def rebuilding():
    """Build backbones, in this block, only to load a saved state dict into them.

    A model file holds every weight, so a backbone rebuilt from one needs its architecture
    (the same parameter names and operations), not its upstream code path: inside this
    block ``torchvision:mobilenet_v2`` without ``pretrained`` is built from
    :mod:`affectlab.features.mobilenet` and does not import torchvision (about a second).
    :func:`affectlab.runtime.hub.build_method` rebuilds models in it; training does not.
    """
    token = _REBUILDING.set(True)
    try:
        yield
    finally:
        _REBUILDING.reset(token)


def create_backbone(name: str, *, pretrained: bool = False, weights: str | os.PathLike | None = None, **kw) -> Backbone:
    """Build a registered backbone.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"builtin:cnn-small"``, ``"torchvision:maxvit_t"``,
        ``"timm:convnext_atto"``. See :func:`available_backbones`.
    pretrained : bool
        Let torchvision / timm fetch their standard weights (needs internet once).
    weights : path, optional
        Local state-dict file to load (backbone's own or the full upstream model's).
    **kw
        Family-specific options (e.g. ``input_size`` for the built-in CNNs; ``map_node`` for
        torchvision CNNs: the graph node to cut at, e.g. ``"features.13"`` of MobileNetV2).

    Raises
    ------
    ConfigError
        Unknown name, or both ``pretrained`` and ``weights`` given.
    ModelError
        The weights file is missing or does not fit the architecture.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"backbone name must be a non-empty string, got {name!r}")
    if pretrained and weights is not None:
        raise ConfigError("give either pretrained=True (download standard weights) or weights=PATH, not both")
    if weights is not None:
        _check_weights_path(weights)
    _load_plugins()
    name = name.strip()
    if name in _EXACT:
        bb = _EXACT[name](pretrained=pretrained, weights=weights, **kw)
    else:
        prefix = next((p for p in sorted(_PREFIX, key=len, reverse=True) if name.startswith(p)), None)
        if prefix is None or not name[len(prefix):]:
            raise ConfigError(
                f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
            )
        bb = _PREFIX[prefix](name[len(prefix):], pretrained=pretrained, weights=weights, **kw)
    bb.name = name
    return bb


def _check_weights_path(weights) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"backbone weights file {str(path)!r} does not exist; pass a local state-dict file "
            "(torch.save(model.state_dict(), PATH)) or use pretrained=True to let torchvision/timm download"
        )
    return path


_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "_orig_mod.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from affectlab.modelfile import safe_load

    obj = safe_load(path, "backbone weights file")
    for key in ("state_dict", "model", "state_dict_ema", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelError(f"backbone weights {str(path)!r} is not a state dict (a mapping of names to tensors)")
    return dict(obj)


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def load_weights(backbone: Backbone, weights: str | os.PathLike) -> Backbone:
    """Load a local state-dict file into ``backbone``.

    The file may hold the backbone's own state dict or that of a module returned by
    :meth:`Backbone.weight_targets` (typically the full upstream model, whose extra keys
    such as the classifier are ignored). Every parameter and buffer of the matched module
    must be present with the right shape.

    Raises
    ------
    ModelError
        Missing file, unreadable file, or no target module matches its keys and shapes.
    """
    path = _check_weights_path(weights)
    raw = _read_state_dict(path)
    candidates = [raw] + [_strip(raw, p) for p in _WRAPPER_PREFIXES if any(k.startswith(p) for k in raw)]
    best: tuple[int, str] | None = None
    for target in backbone.weight_targets():
        expected = target.state_dict()
        for sd in candidates:
            missing = [k for k in expected if k not in sd]
            wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
            if not missing and not wrong:
                target.load_state_dict({k: sd[k] for k in expected}, strict=True)
                return backbone
            problems = len(missing) + len(wrong)
            if best is None or problems < best[0]:
                detail = []
                if missing:
                    detail.append(f"{len(missing)} missing keys (first: {missing[0]!r})")
                if wrong:
                    k = wrong[0]
                    detail.append(
                        f"{len(wrong)} keys with the wrong shape (first: {k!r} is "
                        f"{tuple(sd[k].shape)}, expected {tuple(expected[k].shape)})"
                    )
                best = (problems, "; ".join(detail))
    raise ModelError(
        f"backbone weights {str(path)!r} do not fit {backbone.name!r}: {best[1] if best else 'no keys'}"
    )


def _finish(bb: Backbone, *, weights) -> Backbone:
    if weights is not None:
        load_weights(bb, weights)
        bb.weights_info = weights_record(weights, "weights file")
    return bb


# -- built-in CNNs --------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PerImageNorm(nn.Module):
    """Standardise each image channel by its own spatial mean and std.

    Removes a global lighting level and colour cast, which carry no expression: the
    network then spends its capacity on where features move, not on how bright they are.
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True)
        return (x - mean) / (std + self.eps)


class SmallCNN(Backbone):
    """A plain conv-bn-relu CNN for CPU work: four stages, each halving the resolution.

    Stage ``i`` is a stride-2 block followed by ``depths[i] - 1`` stride-1 blocks;
    ``"map"`` is the last stage's output (input_size / 16 on a side), ``"global"`` its
    average. Convolutions run in channels-last memory layout (2-3x faster on CPU for
    these narrow layers); the returned map is contiguous.

    Two options make the ``builtin:cnn-grid*`` variants (the defaults keep the layout
    of ``builtin:cnn-small`` / ``builtin:cnn-tiny``):

    ``per_image_norm``
        Standardise each input image per channel (:class:`PerImageNorm`) before the
        first convolution.
    ``grid``
        ``"global"`` is the map average-pooled to a ``grid x grid`` layout, flattened,
        dropped out with ``dropout`` and projected by ``Linear -> ReLU`` to
        ``global_dim``, instead of the map's spatial average: an expression is *where*
        brows, lids and lips move, which a global average throws away.
    """

    def __init__(
        self,
        *,
        name: str,
        widths=(24, 48, 96, 192),
        depths=(1, 2, 2, 2),
        input_size: int = 64,
        per_image_norm: bool = False,
        grid: int | None = None,
        global_dim: int = 128,
        dropout: float = 0.0,
    ):
        widths = tuple(int(w) for w in widths)
        depths = tuple(int(d) for d in depths)
        if len(widths) != len(depths) or min(depths) < 1:
            raise ConfigError(f"SmallCNN needs one depth >= 1 per stage, got widths={widths} depths={depths}")
        if grid is not None and (isinstance(grid, bool) or int(grid) != grid or int(grid) < 1):
            raise ConfigError(f"SmallCNN grid must be a positive integer or None, got {grid!r}")
        if int(global_dim) < 1 or not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(
                f"SmallCNN needs global_dim >= 1 and 0 <= dropout < 1, got {global_dim!r} and {dropout!r}"
            )
        super().__init__(
            name=name,
            out_dim=widths[-1] if grid is None else int(global_dim),
            map_channels=widths[-1],
            preprocessing=Preprocessing.named("imagenet", input_size),
        )
        # submodules exist only when asked for, so the default state dict is unchanged
        if per_image_norm:
            self.norm = PerImageNorm()
        layers: list[nn.Module] = []
        cin = 3
        for w, d in zip(widths, depths):
            layers.append(_conv_bn_relu(cin, w, 2))
            layers.extend(_conv_bn_relu(w, w, 1) for _ in range(d - 1))
            cin = w
        self.body = nn.Sequential(*layers)
        if grid is not None:
            g = int(grid)
            self.pool = nn.Sequential(
                nn.AdaptiveAvgPool2d(g),
                nn.Flatten(),
                nn.Dropout(float(dropout)),
                nn.Linear(widths[-1] * g * g, int(global_dim)),
                nn.ReLU(inplace=True),
            )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if hasattr(self, "norm"):
            x = self.norm(x)
        fmap = self.body(x.contiguous(memory_format=torch.channels_last)).contiguous()
        glob = self.pool(fmap) if hasattr(self, "pool") else fmap.mean(dim=(2, 3))
        return {"global": glob, "map": fmap}


def _builtin(name, widths, depths, default_size, **variant):
    def factory(*, pretrained: bool = False, weights=None, input_size: int = default_size, **options) -> Backbone:
        if pretrained:
            raise ConfigError(
                "built-in CNNs have no standard pretrained weights; train one or pass weights=PATH "
                "(with a paper preset, which sets pretrained: true, add --set pretrained=false)"
            )
        allowed = {"per_image_norm", "grid", "global_dim", "dropout"} if variant else set()
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for {name!r}; expected input_size"
                + (", " + ", ".join(sorted(allowed)) if allowed else "")
            )
        bb = SmallCNN(name=name, widths=widths, depths=depths, input_size=input_size, **{**variant, **options})
        return _finish(bb, weights=weights)

    return factory


register_backbone("builtin:cnn-small")(_builtin("builtin:cnn-small", (24, 48, 96, 192), (1, 2, 2, 2), 64))
register_backbone("builtin:cnn-tiny")(_builtin("builtin:cnn-tiny", (8, 16, 32, 32), (1, 1, 1, 1), 32))
# per-image normalisation + a 4x4 spatial layout of the last map: these learn synthetic
# expressions on held-out identities in a few CPU minutes (docs/methods/baseline.md)
register_backbone("builtin:cnn-grid")(
    _builtin("builtin:cnn-grid", (16, 32, 64, 64), (1, 1, 1, 1), 64,
             per_image_norm=True, grid=4, global_dim=128, dropout=0.3)
)
register_backbone("builtin:cnn-grid-small")(
    _builtin("builtin:cnn-grid-small", (24, 48, 96, 128), (1, 2, 2, 1), 64,
             per_image_norm=True, grid=4, global_dim=128, dropout=0.3)
)


# -- torchvision ------------------------------------------------------------------------


class GraphBackbone(Backbone):
    """A truncated upstream CNN (a torch.fx feature extractor up to one node, or a module
    returning the same ``{"map": ...}``, e.g. :class:`~affectlab.features.mobilenet.MobileNetV2Trunk`).

    ``"map"`` is that node's output, ``"global"`` its spatial average. The extractor
    keeps the upstream module names, so a state dict of the full upstream model fits
    ``body`` once its extra (classifier) keys are ignored.
    """

    def __init__(self, *, body: nn.Module, **kw):
        super().__init__(**kw)
        self.body = body

    def weight_targets(self) -> list[nn.Module]:
        return [self, self.body]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.body(x)["map"]
        return {"global": fmap.mean(dim=(2, 3)), "map": fmap}


class MaxVitBackbone(Backbone):
    """torchvision MaxViT-T without its MLP head: ``"map"`` is the last stage (7x7x512 at
    224 px), ``"global"`` the average-pooled, layer-normalised feature that the upstream
    classifier feeds its MLP. Written out rather than fx-traced: tracing MaxViT costs
    seconds, and the module names stay the upstream ones."""

    def __init__(self, full: nn.Module, **kw):
        super().__init__(**kw)
        full.classifier = full.classifier[:3]  # pool, flatten, LayerNorm; drop the MLP
        self.body = full

    def weight_targets(self) -> list[nn.Module]:
        return [self, self.body]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.body.stem(x)
        for block in self.body.blocks:
            x = block(x)
        return {"global": self.body.classifier(x), "map": x}


_TV_SPECS: dict[str, dict[str, Any]] = {
    # node whose output is the map, its channels (= global dim), default input size
    "resnet18": {"map": "layer4", "c": 512, "size": 224},
    "resnet50": {"map": "layer4", "c": 2048, "size": 224},
    "efficientnet_v2_s": {"map": "features", "c": 1280, "size": 384},
    # the last stage; global = the classifier's pool + LayerNorm (MaxVitBackbone)
    "maxvit_t": {"map": "blocks", "c": 512, "size": 224},
    # a small ImageNet CNN (7x7x1280 at 224 px) whose weights are at hand offline in tests; the
    # packaged affectlab-base backbone, fine-tuned at 112 px; the smm-synth preset cuts it
    # at features.13 (stride 16, 96 channels: a 4x4 map at 64 px)
    "mobilenet_v2": {"map": "features", "c": 1280, "size": 224},
    # SMM-EmotionNet (002) cuts InceptionV3 after Mixed_6e: 17x17x768 at 299 px, and its
    # multi-task baseline's heads start from that 768-d feature (768x16 -> 16xC)
    "inception_v3": {"map": "Mixed_6e", "c": 768, "size": 299},
}


#: torchvision weights enum member per architecture (default: ``DEFAULT``). MobileNetV2 takes
#: V1, the file affectlab's asset hub registers (``mobilenet-v2-imagenet``).
_TV_WEIGHTS = {"mobilenet_v2": "IMAGENET1K_V1"}
#: torchvision files that affectlab's asset hub (affectlab.runtime.assets) also registers
_HUB_FILES = frozenset({"mobilenet_v2-b0353104.pth"})


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_record(path: str | os.PathLike, source: str) -> dict[str, str]:
    """What a run records of the weights it started from: file name, sha256 and source."""
    return {"name": Path(path).name, "sha256": file_sha256(path), "source": source}


def torchvision_weights_file(arch: str) -> tuple[Path, str, str]:
    """(cache file, URL, weights enum name) of torchvision's default ImageNet weights for ``arch``.

    The file is where torchvision's own mechanism (``torch.hub``) keeps it:
    ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``.
    """
    import torchvision.models as tvm

    enum = tvm.get_model_weights(arch)
    w = getattr(enum, _TV_WEIGHTS.get(arch, "DEFAULT"))
    name = w.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name, w.url, f"{type(w).__name__}.{w.name}"


def _offline() -> bool:
    return os.environ.get("AFFECTLAB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _torchvision_pretrained_state(arch: str) -> tuple[dict, dict]:
    """torchvision's ImageNet state dict for ``arch`` from torch.hub's cache (downloaded
    there once when online), loaded with ``weights_only=True``; and its record."""
    path, url, enum = torchvision_weights_file(arch)
    if not path.is_file():
        hub = f" (or `affectlab models add {path.name}`)" if path.name in _HUB_FILES else ""
        how = f"put {path.name} (from {url}) at {path}{hub}; or train from scratch with --set pretrained=false"
        if _offline():
            raise ModelError(f"torchvision:{arch} starts from {enum} weights but {path} is missing and downloads are off "
                             f"(AFFECTLAB_OFFLINE): {how}")
        try:
            torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any network or disk failure is the same user error
            raise ModelError(f"could not download torchvision's {enum} weights for {arch!r} ({exc}): {how}") from None
    from affectlab.modelfile import safe_load

    state = safe_load(path, "torchvision weights file (delete it and try again)")
    return state, weights_record(path, f"torchvision {enum}")


def _torchvision_model(arch: str, pretrained: bool) -> nn.Module:
    import torchvision.models as tvm

    builder = getattr(tvm, arch)
    if arch == "inception_v3":
        # transform_input=True always: torchvision's ImageNet weights expect it, and it is
        # a fixed affine map that a randomly initialised model trains through unchanged
        model = builder(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    else:
        model = builder(weights=None)
    if pretrained:
        state, record = _torchvision_pretrained_state(arch)
        model.load_state_dict(state, strict=True)
        model._affectlab_weights = record
    return model


def _torchvision_factory(arch: str):
    spec = _TV_SPECS[arch]

    def factory(*, pretrained: bool = False, weights=None, input_size: int | None = None,
                map_node: str | None = None) -> Backbone:
        if map_node is not None and arch == "maxvit_t":
            raise ConfigError("torchvision:maxvit_t has no map_node option (its map is the last stage)")
        common = dict(name=f"torchvision:{arch}",
                      preprocessing=Preprocessing.named("imagenet", input_size or spec["size"]))
        if arch == "mobilenet_v2" and not pretrained and _REBUILDING.get():
            from affectlab.features.mobilenet import MobileNetV2Trunk

            trunk = MobileNetV2Trunk(cut=map_node)
            c = trunk.out_channels
            return _finish(GraphBackbone(body=trunk, out_dim=c, map_channels=c, **common), weights=weights)
        from torchvision.models.feature_extraction import create_feature_extractor

        full = _torchvision_model(arch, pretrained)
        record = getattr(full, "_affectlab_weights", None)
        node, channels = spec["map"], spec["c"]
        if map_node is not None:
            modules = dict(full.named_modules())
            if map_node not in modules:
                # the stage outputs are what one cuts at; listing every module would drown them
                top = modules.get(spec["map"])
                stages = [f"{spec['map']}.{n}" for n, _ in top.named_children()] if top is not None else []
                raise ConfigError(
                    f"torchvision:{arch} has no module {map_node!r} to cut at (map_node); "
                    f"e.g. {', '.join(stages[:20]) or spec['map']}"
                )
            node = map_node
        if arch == "maxvit_t":
            bb = MaxVitBackbone(full, out_dim=channels, map_channels=channels, **common)
        else:
            with warnings.catch_warnings():
                # inception's eval-mode graph lacks the aux branch; we cut before it anyway
                warnings.filterwarnings("ignore", message=".*eval mode are a subsequence.*")
                body = create_feature_extractor(full, return_nodes={node: "map"})
            if node != spec["map"]:
                # an earlier cut has fewer channels: one dry run at the smallest size the
                # architecture takes tells how many (InceptionV3 needs 75 px)
                was = body.training
                body.eval()
                with torch.no_grad():
                    channels = int(body(torch.zeros(1, 3, 75, 75))["map"].shape[1])
                body.train(was)
            bb = GraphBackbone(body=body, out_dim=channels, map_channels=channels, **common)
        bb.weights_info = record
        return _finish(bb, weights=weights)

    return factory


for _arch in _TV_SPECS:
    register_backbone(f"torchvision:{_arch}")(_torchvision_factory(_arch))


# -- timm ---------------------------------------------------------------------------------


class TimmBackbone(Backbone):
    """A timm model used through ``forward_features`` / ``forward_head(pre_logits=True)``."""

    def __init__(self, model: nn.Module, *, name: str, preprocessing: Preprocessing, map_channels, token_dim):
        out_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        super().__init__(
            name=name, out_dim=out_dim, preprocessing=preprocessing, map_channels=map_channels, token_dim=token_dim
        )
        self.model = model
        self._prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model.forward_features(x)
        out = {"global": self.model.forward_head(feats, pre_logits=True)}
        if feats.ndim == 4:
            out["map"] = feats
        elif feats.ndim == 3:
            out["tokens"] = feats[:, self._prefix_tokens:]
        return out

    def weight_targets(self) -> list[nn.Module]:
        return [self, self.model]


@register_backbone("timm:")
def _timm(arch: str, *, pretrained: bool = False, weights=None, **kw) -> Backbone:
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is in the clip extra
        raise ConfigError("timm backbones need the 'timm' package: pip install 'affectlab[clip]'") from None
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:10]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown timm model {arch!r}{hint} (see timm.list_models())")
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0, **kw)
    except Exception as exc:  # noqa: BLE001 - download failures and bad kwargs
        if pretrained:
            raise ModelError(
                f"could not fetch timm's pretrained weights for {arch!r} ({exc}); pass weights=PATH to a local file"
            ) from None
        raise ConfigError(f"cannot build timm model {arch!r} with options {kw}: {exc}") from None
    cfg = timm.data.resolve_data_config(model=model)
    size = int(cfg["input_size"][-1])
    interp = cfg.get("interpolation", "bilinear")
    pre = Preprocessing(
        input_size=size,
        mean=cfg["mean"],
        std=cfg["std"],
        normalize=_normalize_name(cfg["mean"], cfg["std"]),
        interpolation=interp if interp in ("bilinear", "bicubic") else "bilinear",
    )
    # one dry run at the model's input size tells which feature kinds it returns
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(torch.zeros(1, 3, size, size))
    model.train(was_training)
    bb = TimmBackbone(
        model,
        name=f"timm:{arch}",
        preprocessing=pre,
        map_channels=int(feats.shape[1]) if feats.ndim == 4 else None,
        token_dim=int(feats.shape[-1]) if feats.ndim == 3 else None,
    )
    return _finish(bb, weights=weights)
