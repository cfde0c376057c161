"""Face detectors: a registry, OpenCV's Haar cascades (the default) and ``none``.

A detector is any callable ``detector(image) -> ndarray [N, 5]`` taking an RGB ``uint8``
image ``[H, W, 3]`` and returning one row ``x, y, w, h, score`` per face in pixel
coordinates of that image (``score`` in [0, 1], higher is surer). An optional attribute
``crop_margin`` overrides the margin the pipeline adds around its boxes; an optional
method ``reset()`` is called at the start of every input (for detectors that use the
previous frame). Plug another one in
with :func:`register_detector`::

    from affectlab.analyze.detectors import register_detector

    @register_detector("mydetector")
    def make(**options):
        model = load_my_model(**options)
        return lambda image: model.boxes(image)  # [N, 5] x, y, w, h, score

after which ``affectlab analyze --detector mydetector`` and
``affectlab.analyze(..., detector="mydetector")`` use it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from affectlab.errors import ConfigError

Detector = Callable[[np.ndarray], np.ndarray]

_DETECTORS: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Decorator registering a detector factory under ``name``.

    The factory takes keyword options and returns a detector callable (see the module
    docstring). Registering a different factory under a taken name is an error.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"detector name must be a non-empty string, got {name!r}")

    def deco(factory):
        if name in _DETECTORS and _DETECTORS[name] is not factory:
            raise ConfigError(f"detector {name!r} is already registered")
        _DETECTORS[name] = factory
        return factory

    return deco


def available_detectors() -> list[str]:
    """Names of the registered detectors."""
    return sorted(_DETECTORS)


def create_detector(name: str | Detector = "haar", **options: Any) -> Detector:
    """Build a detector by registry name (or pass a detector callable through)."""
    if callable(name):
        return name
    if name not in _DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; available: {', '.join(available_detectors())}")
    return _DETECTORS[name](**options)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` [N, >=4] and ``b`` [M, >=4] given as x, y, w, h."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, max(4, np.shape(a)[-1] if np.size(a) else 4))[:, :4]
    b = np.asarray(b, dtype=np.float64).reshape(-1, max(4, np.shape(b)[-1] if np.size(b) else 4))[:, :4]
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def merge_boxes(boxes: np.ndarray, iou_threshold: float = 0.3) -> np.ndarray:
    """Merge overlapping detections: greedy non-maximum suppression by score.

    A box is also dropped when most of it (70 %) lies inside a kept, surer box, which
    removes the small "face in a face" hits cascades produce.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if len(boxes) <= 1:
        return boxes
    order = np.argsort(-boxes[:, 4], kind="stable")
    boxes = boxes[order]
    keep: list[int] = []
    for i in range(len(boxes)):
        if keep:
            kept = boxes[keep]
            iou = iou_matrix(boxes[i : i + 1], kept)[0]
            x1 = np.maximum(boxes[i, 0], kept[:, 0])
            y1 = np.maximum(boxes[i, 1], kept[:, 1])
            x2 = np.minimum(boxes[i, 0] + boxes[i, 2], kept[:, 0] + kept[:, 2])
            y2 = np.minimum(boxes[i, 1] + boxes[i, 3], kept[:, 1] + kept[:, 3])
            inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None) / max(boxes[i, 2] * boxes[i, 3], 1e-9)
            if (iou > iou_threshold).any() or (inside > 0.7).any():
                continue
        keep.append(i)
    return boxes[keep]


class HaarDetector:
    """OpenCV Haar cascades (shipped in the opencv-python wheel): frontal, then profile.

    Speed comes from three choices:

    * detection runs on a grey copy of the frame downscaled to ``detect_width`` pixels
      (boxes are mapped back to full resolution);
    * the slower fallbacks (the second frontal cascade, then the profile cascade on the
      image and on its mirror image, for faces turned either way) run only when the
      first frontal cascade finds nothing;
    * in a video, faces found in the previous frame are searched for again only in a
      window around their last box and over a narrow range of sizes; the whole frame is
      scanned every ``full_every`` frames (to catch faces that enter) and whenever a
      known face is not found again. The pipeline calls :meth:`reset` at every new
      input.

    Parameters
    ----------
    detect_width : int
        Frames wider than this are downscaled to it before detection.
    min_face : float
        Smallest face to find, as a fraction of the shorter side of the frame.
    scale_factor : float
        Image pyramid step of ``detectMultiScale`` (smaller: slower, finds more).
    min_neighbors : int
        Overlapping raw hits needed to accept a face (larger: fewer false alarms).
    profile : {"fallback", "always", "never"}
        When to run the profile cascades.
    merge_iou : float
        Detections overlapping more than this are merged.
    full_every : int
        Scan the whole frame at least every this many frames of a video (1: always).
    """

    def __init__(
        self,
        detect_width: int = 320,
        min_face: float = 0.1,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        profile: str = "fallback",
        merge_iou: float = 0.3,
        full_every: int = 10,
    ):
        import cv2

        if not isinstance(detect_width, (int, np.integer)) or detect_width < 48:
            raise ConfigError(f"detect_width must be an integer >= 48, got {detect_width!r}")
        if not 0 < float(min_face) < 1:
            raise ConfigError(f"min_face must be a fraction in (0, 1), got {min_face!r}")
        if not float(scale_factor) > 1:
            raise ConfigError(f"scale_factor must be > 1, got {scale_factor!r}")
        if int(min_neighbors) < 0:
            raise ConfigError(f"min_neighbors must be >= 0, got {min_neighbors!r}")
        if profile not in ("fallback", "always", "never"):
            raise ConfigError(f"profile must be 'fallback', 'always' or 'never', got {profile!r}")
        if isinstance(full_every, bool) or not isinstance(full_every, (int, np.integer)) or full_every < 1:
            raise ConfigError(f"full_every must be an integer >= 1, got {full_every!r}")
        self.detect_width = int(detect_width)
        self.min_face = float(min_face)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.profile = profile
        self.merge_iou = float(merge_iou)
        self.full_every = int(full_every)
        root = cv2.data.haarcascades
        self._frontal = [
            cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml"),
            cv2.CascadeClassifier(root + "haarcascade_frontalface_alt2.xml"),
        ]
        self._profile = cv2.CascadeClassifier(root + "haarcascade_profileface.xml")
        for c in (*self._frontal, self._profile):
            if c.empty():
                raise ConfigError(f"OpenCV Haar cascades not found under {root}; reinstall opencv-python-headless")
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame's faces (a new image or video begins)."""
        self._last = np.zeros((0, 5))  # boxes in detection-scale pixels
        self._since_full = 0
        self._shape = None

    def _run(self, cascade, gray: np.ndarray, min_size: int, max_size: int = 0) -> np.ndarray:
        rects, _levels, weights = cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
            maxSize=(max_size, max_size) if max_size else (0, 0),
            outputRejectLevels=True,
        )
        if len(rects) == 0:
            return np.zeros((0, 5))
        # the last stage's weight is a margin: squash it to (0, 1) as a confidence
        score = 1.0 / (1.0 + np.exp(-np.asarray(weights, dtype=np.float64).ravel()))
        return np.column_stack([np.asarray(rects, dtype=np.float64), score])

    def _full(self, gray: np.ndarray) -> np.ndarray:
        min_size = max(20, int(self.min_face * min(gray.shape)))
        found = [self._run(self._frontal[0], gray, min_size)]
        if not len(found[0]):
            found.append(self._run(self._frontal[1], gray, min_size))
        if self.profile == "always" or (self.profile == "fallback" and not any(len(f) for f in found)):
            found.append(self._run(self._profile, gray, min_size))
            flipped = self._run(self._profile, np.ascontiguousarray(gray[:, ::-1]), min_size)
            if len(flipped):
                flipped[:, 0] = gray.shape[1] - flipped[:, 0] - flipped[:, 2]
            found.append(flipped)
        return merge_boxes(np.concatenate(found), self.merge_iou)

    def _around(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Search a window of twice the box around it, for faces of 0.7x to 1.5x its size."""
        x, y, w, h = box[:4]
        side = max(w, h)
        H, W = gray.shape
        x0, y0 = int(max(0, x - 0.5 * side)), int(max(0, y - 0.5 * side))
        x1, y1 = int(min(W, x + w + 0.5 * side)), int(min(H, y + h + 0.5 * side))
        roi = gray[y0:y1, x0:x1]
        lo, hi = max(20, int(0.7 * side)), int(1.5 * side) + 1
        if min(roi.shape) < lo:
            return np.zeros((0, 5))
        found = self._run(self._frontal[0], roi, lo, hi)
        if not len(found):
            return found
        found[:, 0] += x0
        found[:, 1] += y0
        # the face is the hit closest in size and place to where it was
        return found[[int(np.argmax(iou_matrix(box[None], found)[0]))]]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"detector expects an RGB image [H, W, 3], got shape {image.shape}")
        h, w = image.shape[:2]
        scale = min(1.0, self.detect_width / w)
        small = image if scale == 1.0 else cv2.resize(image, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if self._shape != gray.shape:
            self.reset()
            self._shape = gray.shape
        boxes = None
        if len(self._last) and self._since_full + 1 < self.full_every:
            again = [self._around(gray, b) for b in self._last]
            if all(len(a) for a in again):
                boxes = merge_boxes(np.concatenate(again), self.merge_iou)
                self._since_full += 1
        if boxes is None:
            boxes = self._full(gray)
            self._since_full = 0
        self._last = boxes.copy()
        out = boxes.copy()
        out[:, :4] /= scale
        return out


class WholeImageDetector:
    """The whole image is the face (``--detector none``: images already cropped).

    ``crop_margin = 0`` tells the pipeline not to pad the crop: the image already is
    the framing the model expects.
    """

    crop_margin = 0.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.array([[0.0, 0.0, float(w), float(h), 1.0]])


@register_detector("haar")
def _haar(**options) -> Detector:
    return HaarDetector(**options)


@register_detector("none")
def _none(**options) -> Detector:
    if options:
        raise ConfigError(f"detector 'none' takes no options, got {sorted(options)}")
    return WholeImageDetector()


def crop_faces(image: np.ndarray, boxes: np.ndarray, size: int | None, margin: float = 0.2) -> list[np.ndarray]:
    """Square crops around ``boxes`` enlarged by ``margin`` on each side, resized to ``size``.

    The crop is :func:`affectlab.data.transforms.crop_face`, the one datasets with face
    boxes use for training, so analysis feeds the model the framing it learned on.
    Resizing here (``size`` = the model's input side; ``None`` keeps the crop size)
    means the model's own resize is a no-op and only small arrays travel further.
    """
    import cv2

    from affectlab.data.transforms import crop_face

    crops = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 5)[:, :4] if np.size(boxes) else []:
        crop = crop_face(image, box, margin=margin, square=True)
        if size is not None and crop.shape[:2] != (size, size):
            interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (int(size), int(size)), interpolation=interp)
        crops.append(crop)
    return crops
