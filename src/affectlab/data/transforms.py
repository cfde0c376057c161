"""Image preprocessing and augmentation presets: face crop, resize, normalise.

Every dataset yields images as ``uint8`` ``H x W x 3`` RGB numpy arrays; a transform
built by :func:`build_transform` turns one into the ``float32 [3, H, W]`` tensor of the
sample contract (:mod:`affectlab.data.batch`). Pipelines are made of
:mod:`torchvision.transforms.v2` operations so they match what the papers used.

Presets
-------
``eval``
    Resize to the backbone's input size, scale to [0, 1], normalise. No randomness.
``default``
    A light training preset: small random resized crop, horizontal flip, mild colour
    jitter and rotation. Safe for every task (none of it changes an expression, its
    valence/arousal or its AUs).
``flip``
    Resize and a random horizontal flip only: for aligned synthetic faces, where crops,
    rotations and colour jitter only blur the small geometric cues of an expression.
``faces``
    For in-the-wild photographs, many of them gray (the packaged ``affectlab-base``
    model): the ``default`` operations a little stronger, plus ``RandomGrayscale(0.25)``.
``cage``
    The augmentation list of CAGE (section 4.2):
    RandomHorizontalFlip(p=0.5), RandomGrayscale(p=0.01), RandomRotation(10),
    ColorJitter(0.2, 0.2, 0.2, 0.1), RandomPerspective(0.2, p=0.5), Normalize,
    RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value="random").

With ``train=False`` every preset gives the ``eval`` pipeline, so one config names the
preset and training and evaluation stay consistent. The ``eval`` pipeline is computed with
torch alone, exactly as torchvision computes it (a test compares them), so analysing a
photo does not pay for importing torchvision (seconds: it imports ``torch._dynamo``).

Normalisations: ``imagenet`` (torchvision backbones), ``clip`` (open_clip's OpenAI
mean/std) and ``none`` (values stay in [0, 1]).

A backbone's preprocessing (input size, mean/std, resize filter) becomes a transform in
one place, :func:`preprocessing_transform`: training, evaluation, the Predictor and
feature extraction all call it, so the same image gives the same tensor everywhere.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from affectlab.errors import ConfigError

#: name -> (mean, std). The CLIP values are open_clip's OPENAI_DATASET_MEAN/STD, copied
#: so importing this module does not import open_clip (slow); a test checks they agree.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "none": None,
}

#: Preset names and what they do (shown by ``list_presets`` and in errors).
PRESETS: dict[str, str] = {
    "eval": "resize + normalise, no augmentation",
    "default": "light augmentation: resized crop (scale 0.85-1), flip, mild colour jitter, rotation 5 deg",
    "cage": "CAGE (001 sec. 4.2): flip, grayscale 1%, rotation 10, colour jitter, perspective 0.2, random erasing",
    "flip": "resize + horizontal flip only (aligned synthetic faces)",
    "faces": "in-the-wild faces (affectlab-base): the default preset plus grayscale 25%, rotation 10 deg",
}


def list_presets() -> list[str]:
    """Names of the transform presets accepted by :func:`build_transform`."""
    return list(PRESETS)


def list_normalizations() -> list[str]:
    """Names of the normalisation presets accepted by :func:`build_transform`."""
    return list(NORMALIZATIONS)


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"image size must be an int or (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"image size must be positive, got {size!r}")
    return h, w


def to_rgb_uint8(image) -> np.ndarray:
    """Coerce an image to a contiguous ``uint8`` ``H x W x 3`` RGB array.

    Accepts gray ``H x W``, ``H x W x 1``, RGB ``H x W x 3`` and RGBA ``H x W x 4``
    (alpha dropped). Gray images are replicated to three channels, so gray datasets
    (CK+, FER2013) feed RGB backbones unchanged.

    Raises
    ------
    ConfigError
        For other shapes or dtypes (the message says which).
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ConfigError(
            f"expected a uint8 image (0-255) as datasets produce, got dtype {arr.dtype} with shape {arr.shape}"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"expected an H x W (gray) or H x W x 1/3/4 image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def crop_face(image, box: Sequence[float], margin: float = 0.2, square: bool = True) -> np.ndarray:
    """Crop a face box from an image, enlarged by ``margin`` on each side.

    Parameters
    ----------
    image : ndarray
        ``H x W`` or ``H x W x C`` array.
    box : sequence of 4 floats
        ``(x, y, w, h)`` in pixels, top-left corner and size (AffectNet's ``face_x,
        face_y, face_width, face_height``).
    margin : float
        Fraction of the box size added on every side (0.2 -> the crop is 1.4x the box).
    square : bool
        Grow the shorter side so the crop is square (faces keep their aspect ratio when
        resized to a square backbone input).

    Returns
    -------
    ndarray
        The crop. Parts outside the image are padded with zeros (black) so the face
        stays centred.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ConfigError(f"expected an H x W or H x W x C image, got shape {arr.shape}")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ConfigError(f"face box must be (x, y, width, height), got {box!r}") from None
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise ConfigError(f"face box must have finite values and positive width/height, got {box!r}")
    if margin < 0:
        raise ConfigError(f"face crop margin must be >= 0, got {margin}")
    cx, cy = x + w / 2, y + h / 2
    cw, ch = w * (1 + 2 * margin), h * (1 + 2 * margin)
    if square:
        cw = ch = max(cw, ch)
    x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2))
    x1, y1 = x0 + max(1, int(round(cw))), y0 + max(1, int(round(ch)))
    H, W = arr.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + arr.shape[2:], dtype=arr.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


#: Resampling filters accepted by :func:`build_transform` (CLIP was trained with bicubic).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _crop_flip_rotate_jitter(size, mode, *, min_scale: float, degrees: float, jitter: float) -> list:
    """The light geometric + colour operations the ``default`` and ``faces`` presets share."""
    from torchvision.transforms import v2

    return [
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), ratio=(0.9, 1.1), interpolation=mode, antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomRotation(degrees),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
    ]


def _augmentations(preset: str, size: tuple[int, int], interpolation: str = "bilinear") -> tuple[list, list]:
    """(geometric/colour ops before normalisation, ops after it) for a training preset."""
    from torchvision.transforms import v2

    mode = v2.InterpolationMode(interpolation)
    if preset == "eval":
        return [v2.Resize(size, interpolation=mode, antialias=True)], []
    if preset == "default":
        return _crop_flip_rotate_jitter(size, mode, min_scale=0.85, degrees=5, jitter=0.1), []
    if preset == "flip":
        return [v2.Resize(size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip(p=0.5)], []
    if preset == "faces":
        # a mix of gray and colour photographs: the model must not rely on colour
        ops = _crop_flip_rotate_jitter(size, mode, min_scale=0.8, degrees=10, jitter=0.2)
        return [*ops, v2.RandomGrayscale(p=0.25)], []
    if preset == "cage":
        return [
            v2.Resize(size, interpolation=mode, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomGrayscale(p=0.01),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
            v2.RandomPerspective(distortion_scale=0.2, p=0.5),
        ], [v2.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value="random")]
    raise ConfigError(f"unknown transform preset {preset!r}; known presets: {', '.join(PRESETS)}")


class EvalPipeline:
    """``Resize(size, antialias=True)`` -> ``ToDtype(float32, scale=True)`` -> ``Normalize``
    of :mod:`torchvision.transforms.v2`, computed the way torchvision computes them, with
    torch alone: on ``uint8`` [C, H, W] or [N, C, H, W] tensors."""

    def __init__(self, size: tuple[int, int], interpolation: str, stats):
        self.size = (int(size[0]), int(size[1]))
        self.interpolation = interpolation
        self.mean = None if stats is None else torch.tensor(stats[0], dtype=torch.float32).view(-1, 1, 1)
        self.std = None if stats is None else torch.tensor(stats[1], dtype=torch.float32).view(-1, 1, 1)

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        # torchvision.transforms.v2.functional.resize_image, for the modes offered here
        mode = self.interpolation
        shape = image.shape
        channels, height, width = shape[-3:]
        if (height, width) == self.size or image.numel() == 0:
            return image
        antialias, align = (False, None) if mode == "nearest" else (True, False)
        dtype = image.dtype
        acceptable = [torch.float32, torch.float64]
        if mode == "nearest":
            acceptable.append(torch.uint8)
        elif image.device.type == "cpu" and (
            mode == "bicubic"
            or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            or platform.machine() in ("aarch64", "arm64")
        ):
            acceptable.append(torch.uint8)  # torch's native uint8 antialiased kernels
        numel = image.numel()
        image = image.reshape(-1, channels, height, width)
        strides = image.stride()
        if image.is_contiguous(memory_format=torch.channels_last) and image.shape[0] == 1 and numel != strides[0]:
            # as torchvision does: keep a single channels-last image channels-last (same values, one copy less)
            new_strides = list(strides)
            new_strides[0] = numel
            image = image.as_strided((1, channels, height, width), new_strides)
        cast = dtype not in acceptable
        if cast:
            image = image.to(torch.float32)
        image = torch.nn.functional.interpolate(image, size=list(self.size), mode=mode, align_corners=align,
                                                antialias=antialias)
        if cast:
            if mode == "bicubic" and dtype == torch.uint8:
                image = image.clamp_(min=0, max=255)
            if not dtype.is_floating_point:
                image = image.round_()
            image = image.to(dtype)
        return image.reshape(shape[:-3] + (channels, *self.size))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self._resize(image.as_subclass(torch.Tensor))
        out = image.to(torch.float32).mul_(1.0 / 255) if image.dtype == torch.uint8 else image.to(torch.float32)
        if self.mean is not None:
            out = out.sub(self.mean).div_(self.std)
        return out


@dataclass
class ImageTransform:
    """A preprocessing pipeline: ``uint8`` HWC RGB array (+ optional face box) -> float32 [3, H, W].

    Call it as ``transform(image)`` or ``transform(image, box=(x, y, w, h))``; with a box
    the face is cropped (with :attr:`margin`) before the pipeline runs.
    """

    preset: str
    size: tuple[int, int]
    normalize: str
    train: bool
    margin: float
    pipeline: Callable
    interpolation: str = "bilinear"

    def __call__(self, image, box: Sequence[float] | None = None) -> torch.Tensor:
        arr = to_rgb_uint8(image)
        if box is not None:
            arr = crop_face(arr, box, margin=self.margin)
        tensor = torch.from_numpy(arr).permute(2, 0, 1)
        if not isinstance(self.pipeline, EvalPipeline):
            from torchvision import tv_tensors

            tensor = tv_tensors.Image(tensor)
        return self.pipeline(tensor).as_subclass(torch.Tensor).contiguous()

    def describe(self) -> dict:
        """Settings that identify this preprocessing (stored with features and checkpoints)."""
        return {
            "preset": self.preset,
            "size": list(self.size),
            "normalize": self.normalize,
            "train": self.train,
            "margin": self.margin,
            "interpolation": self.interpolation,
        }


def build_transform(
    preset: str = "eval",
    size: int | Sequence[int] = 224,
    normalize: str = "imagenet",
    train: bool = False,
    *,
    margin: float = 0.2,
    interpolation: str = "bilinear",
    stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> ImageTransform:
    """Build the preprocessing for a backbone.

    Parameters
    ----------
    preset : {"eval", "default", "cage"}
        Augmentation preset (see the module docstring). Ignored (``eval``) when
        ``train`` is False.
    size : int or (int, int)
        The backbone's input size (224 for CLIP ViT-B/16 and MaxViT-T).
    normalize : {"imagenet", "clip", "none"}
        Mean/std preset applied after scaling to [0, 1].
    train : bool
        Whether to apply the preset's random augmentations.
    margin : float
        Face-crop margin used when the transform is called with a ``box``.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling filter of the resize (antialiased when shrinking).
    stats : (mean, std), optional
        Per-channel mean and std replacing the ``normalize`` preset's (a backbone with
        its own values, e.g. some timm models).

    Returns
    -------
    ImageTransform
        Callable ``(image, box=None) -> float32 tensor [3, H, W]``.

    Raises
    ------
    ConfigError
        For an unknown preset or normalisation (the message lists the known names), or
        an invalid size.

    Examples
    --------
    >>> import numpy as np
    >>> t = build_transform("cage", 112, "clip", train=True)
    >>> t(np.zeros((48, 48), np.uint8)).shape
    torch.Size([3, 112, 112])
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"unknown transform preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise ConfigError(
            f"unknown normalization {normalize!r}; known normalizations: {', '.join(NORMALIZATIONS)}"
        )
    hw = _check_size(size)
    if not (isinstance(margin, (int, float)) and np.isfinite(margin) and margin >= 0):
        raise ConfigError(f"face crop margin must be a number >= 0, got {margin!r}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {interpolation!r}; known: {', '.join(INTERPOLATIONS)}")
    if stats is None:
        stats = NORMALIZATIONS[normalize]
    if train:
        from torchvision.transforms import v2

        before, after = _augmentations(preset, hw, interpolation)
        ops = [*before, v2.ToDtype(torch.float32, scale=True)]
        if stats is not None:
            ops.append(v2.Normalize(mean=[float(v) for v in stats[0]], std=[float(v) for v in stats[1]]))
        ops.extend(after)
        pipeline = v2.Compose(ops)
    else:
        pipeline = EvalPipeline(hw, interpolation, stats)
    return ImageTransform(
        preset=preset,
        size=hw,
        normalize=normalize,
        train=bool(train),
        margin=float(margin),
        pipeline=pipeline,
        interpolation=interpolation,
    )


def preprocessing_transform(
    preprocessing: Mapping[str, Any] | Any, preset: str | None = None, train: bool = False
) -> ImageTransform:
    """The transform for a backbone's stored preprocessing: the one route from settings to tensors.

    Parameters
    ----------
    preprocessing : Preprocessing or mapping
        ``input_size``, ``mean``, ``std`` (authoritative when given; else the ``normalize``
        preset's) and ``interpolation`` (the backbone's resize filter, honoured: CLIP's
        is bicubic; ``area`` resizes with antialiased bilinear, which averages like it).
    preset : str, optional
        Augmentation preset; default ``"default"`` when ``train`` else ``"eval"``.
    train : bool
        Whether to apply the preset's random augmentations.

    Returns
    -------
    ImageTransform

    Raises
    ------
    ConfigError
        Unknown normalisation without explicit mean/std, or an unknown preset.
    """
    get = preprocessing.get if isinstance(preprocessing, Mapping) else lambda k, d=None: getattr(preprocessing, k, d)
    normalize = get("normalize", "imagenet") or "imagenet"
    mean, std = get("mean"), get("std")
    if mean is None or std is None:
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalisation {normalize!r} has no transform preset; use imagenet, clip or none")
        stats = NORMALIZATIONS[normalize]
    else:
        stats = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    interpolation = get("interpolation", "bilinear") or "bilinear"
    if interpolation == "area":
        interpolation = "bilinear"
    return build_transform(
        preset or ("default" if train else "eval"),
        int(get("input_size")),
        normalize if normalize in NORMALIZATIONS else "none",
        train,
        interpolation=interpolation,
        stats=stats,
    )
