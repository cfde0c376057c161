"""Robust image loading: any readable file becomes a uint8 HWC RGB array, else ``None``.

Training must never die on one bad file, so :func:`read_image` returns ``None`` for a
missing, truncated or undecodable image and leaves the decision (skip and count) to
the dataset. OpenCV decodes the common formats fast; Pillow is the fallback for the
formats OpenCV lacks (GIF, some TIFF/WebP variants).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("affectlab.data")

#: File suffixes treated as images when scanning folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has an image suffix (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any decoded array (gray, gray+alpha, RGB, RGBA, 16-bit, float in [0, 1]) as uint8 HWC RGB.

    Parameters
    ----------
    image : ndarray
        ``[H, W]``, ``[H, W, 1]``, ``[H, W, 2]``, ``[H, W, 3]`` or ``[H, W, 4]``; channels
        are taken as RGB(A) order.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"expected an [H, W] or [H, W, C] image, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    if channels in (1, 2):  # gray or gray+alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels == 4:
        arr = arr[:, :, :3]
    elif channels != 3:
        raise ValueError(f"expected 1-4 channels, got {channels}")
    return np.ascontiguousarray(arr)


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    """Decode encoded image bytes to uint8 HWC RGB; ``None`` when undecodable."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        return None
    import cv2  # here, not at import: listing formats or reading a table needs no OpenCV

    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is not None and img.size:
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        # IMREAD_UNCHANGED keeps 16-bit depth but also ignores the EXIF orientation: a photo
        # taken sideways would be trained on sideways (analyze reads it upright)
        return np.ascontiguousarray(orient(to_rgb(img), exif_orientation(bytes(buf))))
    return _decode_with_pillow(bytes(buf))


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of encoded image bytes; 1 (upright) when absent or unreadable."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            code = int(im.getexif().get(0x0112, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError):
        return 1
    return code if 1 <= code <= 8 else 1


def orient(image: np.ndarray, code: int) -> np.ndarray:
    """Turn stored pixels upright for EXIF orientation ``code`` (as ``PIL.ImageOps.exif_transpose``)."""
    if code == 2:
        return image[:, ::-1]
    if code == 3:
        return image[::-1, ::-1]
    if code == 4:
        return image[::-1]
    if code == 5:
        return image.transpose(1, 0, 2)
    if code == 6:
        return np.rot90(image, k=-1)
    if code == 7:
        return image[::-1, ::-1].transpose(1, 0, 2)
    if code == 8:
        return np.rot90(image, k=1)
    return image


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_rgb(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """Read an image file as uint8 HWC RGB.

    Returns ``None`` (and logs at debug level) when the file is missing, empty,
    truncated or not an image. Paths with non-ASCII characters work on every platform
    because the bytes are read by Python and decoded in memory.
    """
    import cv2

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        log.debug("cannot read image %s: %s", path, exc)
        return None
    try:
        img = decode_image(data)
    except (cv2.error, ValueError) as exc:
        log.debug("cannot decode image %s: %s", path, exc)
        return None
    if img is None:
        log.debug("cannot decode image %s", path)
    return img


def crop_box(image: np.ndarray, x: float, y: float, w: float, h: float) -> np.ndarray | None:
    """Crop ``[x, x+w) x [y, y+h)`` clamped to the image; ``None`` if nothing is left."""
    height, width = image.shape[:2]
    x0 = int(max(0, min(width, round(x))))
    y0 = int(max(0, min(height, round(y))))
    x1 = int(max(0, min(width, round(x + w))))
    y1 = int(max(0, min(height, round(y + h))))
    if x1 <= x0 or y1 <= y0:
        return None
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` (area interpolation when shrinking, linear when growing)."""
    h, w = image.shape[:2]
    if h == size and w == size:
        return image
    import cv2

    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)
