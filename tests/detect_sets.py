"""Detection test sets built at test time from ``../shared/data`` photographs (never saved).

:func:`hard_set` gives 640x480 frames, one real face each, scaled so the face box is
48-260 px, rotated in-plane up to +-40 degrees, pasted through a feathered elliptical
mask onto a varied background (multi-octave colour noise, stripes and checkers, clutter
of shapes, or non-face parts of other photographs: clothes, shoulders, backdrop), then
darkened or brightened with a gamma of 0.6-2.2 and given mild sensor noise.
:func:`easy_set` is the same with upright faces of 100-300 px and no gamma.

Sources: the 204 London photographs (frontal, 512 px) and 150 in-the-wild photographs
of ``facial_expressions`` (news and film stills of at most 160 px, many grey, upscaled
when pasted large: blurred, as small video faces are). Ground truth: the face box of
each source photograph is YuNet's box on the clean, upright original (at >= 320 px), kept only where OpenCV's Haar cascade finds the same face
(IoU >= 0.5), so two independent detectors confirm it. In a frame the box keeps its
width and height (scaled) and is centred on where the face centre went; rotation does
not change a face's size, so the box is not the rotated rectangle's hull.

:func:`score` matches detections to ground truth greedily by score at IoU >= 0.4 (a
rotated face's upright box overlaps the unrotated-size truth less than an upright one);
a detection matching no face is a false box.

Used by ``tests/test_perception_detect.py`` and ``benchmarks/bench_detect.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LONDON = SHARED / "data" / "london" / "images"
WILD = SHARED / "data" / "facial_expressions" / "images"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

FRAME_W, FRAME_H = 640, 480
IOU = 0.4


@dataclass
class DetectionSet:
    frames: list[np.ndarray]  # RGB uint8 [480, 640, 3]
    truth: list[np.ndarray]  # [n_faces, 4] x, y, w, h per frame
    angles: np.ndarray  # in-plane rotation of each frame's face (degrees)
    sizes: np.ndarray  # face box longest side (pixels)


def available() -> bool:
    return LONDON.is_dir() and YUNET.is_file()


def _read(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=1)
def candidates(n_wild: int = 150) -> tuple[Path, ...]:
    """Every London photograph and ``n_wild`` in-the-wild ones (a fixed random pick)."""
    paths = sorted(LONDON.glob("*.jpg"))
    if WILD.is_dir():
        wild = sorted(WILD.glob("*.jpg"))
        paths += [wild[i] for i in np.random.default_rng(0).choice(len(wild), min(n_wild, len(wild)), replace=False)]
    return tuple(paths)


@functools.lru_cache(maxsize=1)
def _confirmers():
    from affectlab.perception.detectors import HaarDetector, YuNetDetector

    return YuNetDetector(YUNET, retry_angles=()), HaarDetector()


@functools.lru_cache(maxsize=None)
def confirmed_box(path: Path) -> tuple[float, float, float, float] | None:
    """The face box of a source photograph, or ``None`` unless exactly one face is found by
    YuNet and Haar agrees (see the module docstring)."""
    import cv2

    from affectlab.perception.detectors import iou_matrix

    yunet, haar = _confirmers()
    image = _read(path)
    # small in-the-wild photographs: confirm at 320 px, where both detectors are at ease
    k = max(1.0, 320 / min(image.shape[:2]))
    big = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC) if k > 1 else image
    y = yunet(big).boxes
    haar.reset()
    h = np.asarray(haar(big)).reshape(-1, 5)
    if len(y) != 1 or not len(h) or iou_matrix(y, h).max() < 0.5:
        return None
    return tuple(float(v) / k for v in y[0, :4])


def _draw(rng, paths) -> tuple[Path, tuple[float, float, float, float]]:
    """A random source photograph with a confirmed face (confirmed lazily, once per path)."""
    for _ in range(1000):
        path = paths[int(rng.integers(len(paths)))]
        box = confirmed_box(path)
        if box is not None:
            return path, box
    raise RuntimeError("no confirmed source face among the candidates")


def _noise(rng, h, w) -> np.ndarray:
    import cv2

    out = np.zeros((h, w, 3), np.float32)
    for octave in range(2, 7):
        cell = 2**octave
        small = rng.uniform(0, 1, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        out += cv2.resize(small, (w + cell, h + cell), interpolation=cv2.INTER_CUBIC)[:h, :w] * (octave / 6)
    out -= out.min()
    return (255 * out / max(out.max(), 1e-6)).astype(np.uint8)


def _pattern(rng, h, w) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, np.pi)
    period = rng.uniform(8, 60)
    u = (xx * np.cos(t) + yy * np.sin(t)) / period
    if rng.random() < 0.5:
        mask = (np.floor(u) % 2).astype(bool)
    else:
        v = (-xx * np.sin(t) + yy * np.cos(t)) / period
        mask = ((np.floor(u) + np.floor(v)) % 2).astype(bool)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return np.where(mask[..., None], a, b).astype(np.uint8)


def _photo_parts(rng, h, w) -> np.ndarray:
    """Mosaic of face-free parts of photographs: below the chin and the backdrop beside the head."""
    import cv2

    out = np.zeros((h, w, 3), np.uint8)
    tiles = int(rng.integers(1, 4))
    th, tw = -(-h // tiles), -(-w // tiles)
    for i in range(tiles):
        for j in range(tiles):
            # London photographs only: their backdrop and clothes hold no other face
            path, (x, y, bw, bh) = _draw(rng, [p for p in candidates() if p.parent == LONDON])
            img = _read(path)
            chin = int(min(img.shape[0] - 8, y + bh * 1.15))
            if rng.random() < 0.6:  # clothes and shoulders
                part = img[chin:, :]
            else:  # backdrop beside the head
                part = img[:, : max(8, int(x - 0.3 * bw))] if rng.random() < 0.5 else img[:, min(img.shape[1] - 8, int(x + 1.3 * bw)) :]
            out[i * th : (i + 1) * th, j * tw : (j + 1) * tw] = cv2.resize(part, (tw, th))[: h - i * th, : w - j * tw]
    return out


def _clutter(rng, image) -> np.ndarray:
    import cv2

    out = image.copy()
    for _ in range(int(rng.integers(0, 12))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, FRAME_W)), int(rng.integers(0, FRAME_H))
        r = int(rng.integers(5, 80))
        if rng.random() < 0.5:
            cv2.circle(out, (cx, cy), r, colour, -1 if rng.random() < 0.7 else 3)
        else:
            cv2.rectangle(out, (cx, cy), (cx + r, cy + int(rng.integers(5, 80))), colour, -1)
    return out


def background(rng) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:
        bg = _noise(rng, FRAME_H, FRAME_W)
    elif kind == 1:
        bg = _pattern(rng, FRAME_H, FRAME_W)
    elif kind == 2:
        bg = _photo_parts(rng, FRAME_H, FRAME_W)
    else:
        yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W] / max(FRAME_H, FRAME_W)
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        bg = (a + (b - a) * ((xx + yy) / 2)[..., None]).astype(np.uint8)
    return _clutter(rng, bg)


def paste_face(frame, image, box, size, angle, rng) -> np.ndarray:
    """Paste the face ``box`` of ``image`` into ``frame`` with its longest side ``size`` px,
    rotated by ``angle`` degrees, at a random place where it fits; returns the truth box."""
    import cv2

    x, y, w, h = box
    k = size / max(w, h)
    fw, fh = w * k, h * k
    # centre so the (rotated) face stays in the frame
    reach = 0.5 * np.hypot(fw, fh)
    cx = rng.uniform(reach, FRAME_W - reach) if FRAME_W > 2 * reach else FRAME_W / 2
    cy = rng.uniform(reach, FRAME_H - reach) if FRAME_H > 2 * reach else FRAME_H / 2
    if k < 1:  # shrink with area averaging first: warpAffine alone would alias
        image = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        x, y, w, h, k = x * k, y * k, w * k, h * k, 1.0
    m = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle, k)
    m[0, 2] += cx - (x + w / 2)
    m[1, 2] += cy - (y + h / 2)
    # tight in-the-wild photographs end inside the mask: mirror their edges, not black
    warped = cv2.warpAffine(image, m, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    # feathered ellipse over the head (face box plus some hair and ears), rotated with it
    mask = np.zeros((FRAME_H, FRAME_W), np.float32)
    axes = (int(0.62 * fw), int(0.68 * fh))
    cv2.ellipse(mask, (int(round(cx)), int(round(cy - 0.05 * fh))), axes, -angle, 0, 360, 1.0, -1)
    blur = max(3, int(0.08 * size) | 1)
    mask = cv2.GaussianBlur(mask, (blur, blur), 0)[..., None]
    frame[:] = (frame * (1 - mask) + warped * mask).astype(np.uint8)
    return np.array([cx - fw / 2, cy - fh / 2, fw, fh])


def _gamma(frame, gamma) -> np.ndarray:
    lut = (255 * (np.arange(256) / 255.0) ** gamma).clip(0, 255).astype(np.uint8)
    return lut[frame]


def build(n: int, seed: int, sizes: tuple[float, float], max_angle: float, gammas: tuple[float, float]) -> DetectionSet:
    paths = candidates()
    rng = np.random.default_rng(seed)
    frames, truth, angles, face_sizes = [], [], [], []
    for _ in range(n):
        path, box = _draw(rng, paths)
        frame = background(rng)
        size = float(rng.uniform(*sizes))
        angle = float(rng.uniform(-max_angle, max_angle))
        gt = paste_face(frame, _read(path), box, size, angle, rng)
        frame = _gamma(frame, float(rng.uniform(*gammas)))
        frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
        truth.append(gt[None])
        angles.append(angle)
        face_sizes.append(size)
    return DetectionSet(frames, truth, np.array(angles), np.array(face_sizes))


@functools.lru_cache(maxsize=2)
def hard_set(n: int = 150, seed: int = 13) -> DetectionSet:
    """Faces 48-260 px, rotated up to +-40 degrees, gamma 0.6-2.2 (see the module docstring)."""
    return build(n, seed, (48, 260), 40.0, (0.6, 2.2))


@functools.lru_cache(maxsize=2)
def easy_set(n: int = 150, seed: int = 14) -> DetectionSet:
    """Upright faces of 100-300 px, no gamma change."""
    return build(n, seed, (100, 300), 0.0, (1.0, 1.0))


def score(detections: list[np.ndarray], truth: list[np.ndarray], iou: float = IOU) -> dict:
    """Recall at ``iou`` (greedy matching by score) and false boxes over a set."""
    from affectlab.perception.detectors import iou_matrix

    found = false = total = 0
    missed = []
    for i, (det, gt) in enumerate(zip(detections, truth)):
        det = np.asarray(det, dtype=np.float64).reshape(-1, np.shape(det)[-1] if np.size(det) else 5)
        total += len(gt)
        used = np.zeros(len(gt), bool)
        for j in np.argsort(-det[:, 4], kind="stable") if len(det) else []:
            ov = iou_matrix(det[j : j + 1], gt)[0] if len(gt) else np.zeros(0)
            ov[used] = 0
            if len(ov) and ov.max() >= iou:
                used[int(ov.argmax())] = True
            else:
                false += 1
        found += int(used.sum())
        if not used.all():
            missed.append(i)
    return {"found": found, "total": total, "recall": found / max(total, 1), "false": false, "missed": missed}
