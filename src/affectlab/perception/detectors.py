"""Face detectors: a registry, YuNet (the default when its model file is present),
OpenCV's Haar cascades (the fallback) and ``none``.

The detector contract
---------------------
A detector is any callable ``detector(image)`` taking an RGB ``uint8`` image
``[H, W, 3]`` and returning the faces in pixel coordinates of that image, as either

* a :class:`Faces` (``boxes [N, 5]`` = ``x, y, w, h, score`` and, when the detector
  finds them, ``keypoints [N, 5, 2]``: the subject's right eye, left eye, nose tip, right
  and left mouth corner; the subject's right eye is on the image's left in a frontal
  photograph), or
* an array ``[N, 5]`` (``x, y, w, h, score``: boxes only), or
* an array ``[N, 15]`` (``x, y, w, h, score`` then the five keypoints as ``x1, y1, ...,
  x5, y5``, the layout of :meth:`Faces.to_array`).

``score`` is in [0, 1], higher is surer. :func:`as_faces` turns any of these into a
:class:`Faces`. An optional attribute ``crop_margin`` overrides the margin the pipeline
adds around boxes; an optional method ``reset()`` is called at the start of every input
(for detectors that use the previous frame). Plug another one in with
:func:`register_detector`::

    from affectlab.perception.detectors import Faces, register_detector

    @register_detector("mydetector")
    def make(**options):
        model = load_my_model(**options)
        return lambda image: Faces(model.boxes(image), model.keypoints(image))

after which ``affectlab analyze --detector mydetector`` and
``affectlab.analyze(..., detector="mydetector")`` use it.

YuNet needs its model file (an asset, ``affectlab models fetch yunet``); this module
takes the file's path (``create_detector("yunet", model=PATH)``) and leaves finding it to
the layer above (:mod:`affectlab.runtime`), so perception never downloads anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from affectlab.errors import ConfigError, ModelError

#: Names of the five keypoints, in the order of :attr:`Faces.keypoints`.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")


@dataclass
class Faces:
    """Faces found in one image.

    Attributes
    ----------
    boxes : ndarray [N, 5]
        ``x, y, w, h, score`` per face (pixels; score in [0, 1]).
    keypoints : ndarray [N, 5, 2] or None
        ``x, y`` of :data:`KEYPOINTS` per face; ``None`` when the detector gives none.
    """

    boxes: np.ndarray
    keypoints: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 5)
        if self.keypoints is not None:
            kp = np.asarray(self.keypoints, dtype=np.float64)
            if kp.size != len(self.boxes) * 10:
                raise ConfigError(
                    f"keypoints must be [N, 5, 2] for {len(self.boxes)} boxes, got shape {kp.shape}"
                )
            self.keypoints = kp.reshape(-1, 5, 2)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Faces":
        """The faces at ``index`` (an int, slice, integer or boolean array) as a new :class:`Faces`."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        kp = None if self.keypoints is None else self.keypoints[index]
        return Faces(self.boxes[index], kp)

    @property
    def scores(self) -> np.ndarray:
        return self.boxes[:, 4]

    def to_array(self) -> np.ndarray:
        """``[N, 15]`` (``x, y, w, h, score, x1, y1, ..., x5, y5``), or ``[N, 5]`` without keypoints."""
        if self.keypoints is None:
            return self.boxes.copy()
        return np.concatenate([self.boxes, self.keypoints.reshape(-1, 10)], axis=1)

    def mirrored(self, width: float) -> "Faces":
        """The same faces in the image mirrored left-right (``width`` = the image width).

        Mirroring swaps the subject's sides, so right/left eye and mouth corners swap too.
        """
        b = self.boxes.copy()
        b[:, 0] = width - b[:, 0] - b[:, 2]
        kp = None
        if self.keypoints is not None:
            kp = self.keypoints[:, [1, 0, 2, 4, 3]].copy()
            kp[..., 0] = width - kp[..., 0]
        return Faces(b, kp)


def as_faces(result: Union[Faces, np.ndarray, Any]) -> Faces:
    """What a detector returned (:class:`Faces`, ``[N, 5]`` or ``[N, 15]``) as :class:`Faces`."""
    if isinstance(result, Faces):
        return result
    arr = np.asarray(result, dtype=np.float64)
    if arr.size == 0:
        return Faces(np.zeros((0, 5)))
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (5, 15):
        raise ConfigError(
            f"a detector must return Faces or an array [N, 5] (x, y, w, h, score) or [N, 15] "
            f"(x, y, w, h, score, 5 keypoints), got shape {arr.shape}"
        )
    return Faces(arr[:, :5], arr[:, 5:].reshape(-1, 5, 2) if arr.shape[1] == 15 else None)


Detector = Callable[[np.ndarray], Union[Faces, np.ndarray]]

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
    return CheckedDetector(name, _DETECTORS[name](**options))


class CheckedDetector:
    """A registered detector behind the input check every detector shares (attributes pass through)."""

    def __init__(self, name: str, detector: Detector):
        self.name = name
        self.detector = detector

    def __call__(self, image, *args, **kwargs):
        shape = getattr(image, "shape", None)
        if shape is None or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)) or 0 in shape:
            what = f"shape {tuple(shape)}" if shape is not None else type(image).__name__
            raise ConfigError(f"face detector {self.name!r} takes an H x W x 3 RGB image, got {what}")
        return self.detector(image, *args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self.__dict__["detector"], attr)


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


def _rotation(shape: tuple[int, int], degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Affine ``[2, 3]`` rotating an ``H x W`` image by ``degrees`` about its centre onto a
    canvas large enough to hold all of it, and that canvas's ``(width, height)``."""
    import cv2

    h, w = shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
    m[0, 2] += nw / 2.0 - w / 2.0
    m[1, 2] += nh / 2.0 - h / 2.0
    return m, (nw, nh)


class YuNetDetector:
    """YuNet (libfacedetection, OpenCV model zoo) through ``cv2.FaceDetectorYN``.

    Gives boxes, scores and the five keypoints of :data:`KEYPOINTS` for a frame of any
    size: the network's input size follows the frame (``setInputSize``, redone only when
    the frame size changes). Boxes and keypoints are clipped to the frame.

    Parameters
    ----------
    model : path
        The ONNX file (asset ``yunet``: ``face_detection_yunet_2023mar.onnx``).
    score_threshold : float
        Faces scoring below this are dropped. 0.7 was chosen on hard detection sets
        (``tests/detect_sets.py``, seeds other than the reported one): every false box
        there scored below 0.61 and was a tiny (< 11 px) hit on a texture, while 0.7 keeps
        all but 1 % of the true faces 0.5 keeps.
    nms_threshold : float
        Overlapping detections (IoU above this) are merged by non-maximum suppression.
    top_k : int
        Candidates kept before NMS.
    upscale_below : int
        Frames whose shorter side is below this many pixels are upscaled to it first:
        YuNet's smallest anchors are 10-20 px, so faces filling a small image are found,
        and small faces in it get more pixels.
    retry_angles : sequence of float
        When nothing is found in a frame, it is searched again rotated by each of these
        angles (degrees; YuNet is trained on roughly upright faces); ``()`` turns the
        retry off. The boxes found are mapped back to the frame (upright boxes of the
        same size around the face's centre; keypoints exactly).
    refine_above : float
        YuNet's keypoints lag behind a tilted head: its eye line turns by about 0.6
        degree per degree of in-plane head rotation (a face turned 30 degrees reads as
        17-20). A face whose eye line reads as tilted by more than this many degrees is
        cut out, turned upright and detected again, and its keypoints are taken from
        there (see :meth:`_refine`); aligned crops then level the eyes. ``0`` (default)
        turns it off: it costs a re-detection or two per tilted face (about doubling the
        time per frame), which only aligned framing needs, so :func:`frame_faces` users
        switch it on with :meth:`level_keypoints` (analyze and the dataset framing step do
        that for a model with aligned framing).
    refine_steps : int
        Most re-detections per face.
    detect_size : int
        Frames whose longer side exceeds this are searched upright downscaled to it first
        (boxes and keypoints are mapped back to the frame's pixels; never below
        ``upscale_below``); only when nothing is found there is the frame searched as
        before, at full resolution, upright and then with the rotated re-try. At the
        default 320, a 640x480 frame with an upright face costs about a third of the time
        (the network's cost follows the pixel count) and faces down to ~20-25 px are found
        downscaled (YuNet's smallest anchors are 10-15 px); a frame with no face found there
        costs about 5 % more than before (the downscaled pass comes on top). What is lost:
        in a frame where a face is found downscaled, a second face under ~20 px (or a
        second, strongly rotated one) is not looked for at full resolution. On the hard set
        of the tests (faces 48-260 px) nothing is lost: 150/150 found, 0 false boxes, as at
        full resolution. ``0`` always searches at full resolution (the behaviour before), and so
        does a detector whose keypoints are levelled (``refine_above`` /
        :meth:`level_keypoints`): aligned crops need YuNet's full-resolution keypoints
        (downscaled ones are off by about a degree of eye-line tilt more).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        upscale_below: int = 160,
        retry_angles: tuple[float, ...] | list[float] = (30.0, -30.0),
        refine_above: float = 0.0,
        refine_steps: int = 3,
        detect_size: int = 320,
    ):
        import cv2

        if isinstance(detect_size, bool) or not isinstance(detect_size, (int, np.integer)) or (
            detect_size and detect_size < 64
        ):
            raise ConfigError(f"detect_size must be 0 (full resolution) or an integer >= 64, got {detect_size!r}")
        self.detect_size = int(detect_size)
        if not 0 < float(score_threshold) < 1:
            raise ConfigError(f"score_threshold must be in (0, 1), got {score_threshold!r}")
        if not 0 < float(nms_threshold) <= 1:
            raise ConfigError(f"nms_threshold must be in (0, 1], got {nms_threshold!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        if isinstance(upscale_below, bool) or not isinstance(upscale_below, (int, np.integer)) or upscale_below < 0:
            raise ConfigError(f"upscale_below must be an integer >= 0, got {upscale_below!r}")
        try:
            angles = tuple(float(a) for a in retry_angles)
        except (TypeError, ValueError):
            raise ConfigError(f"retry_angles must be a list of degrees, got {retry_angles!r}") from None
        if not all(np.isfinite(angles)) or any(abs(a) >= 180 for a in angles):
            raise ConfigError(f"retry_angles must be finite degrees in (-180, 180), got {retry_angles!r}")
        if not np.isfinite(float(refine_above)) or float(refine_above) < 0:
            raise ConfigError(f"refine_above must be degrees >= 0, got {refine_above!r}")
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, (int, np.integer)) or refine_steps < 0:
            raise ConfigError(f"refine_steps must be an integer >= 0, got {refine_steps!r}")
        self.refine_above = float(refine_above)
        self.refine_steps = int(refine_steps)
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelError(f"YuNet model file {path} not found (get it with: affectlab models fetch yunet)")
        self.model = path
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.upscale_below = int(upscale_below)
        self.retry_angles = angles
        try:
            self._net = cv2.FaceDetectorYN.create(
                path, "", (320, 320), self.score_threshold, self.nms_threshold, self.top_k
            )
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"YuNet model file {path} cannot be loaded ({first}); it is damaged or not YuNet: "
                "fetch it again with: affectlab models fetch yunet"
            ) from None
        self._size: tuple[int, int] | None = None

    def level_keypoints(self, above: float = 1.5) -> None:
        """Re-detect faces whose eye line reads as tilted by more than ``above`` degrees
        upright (see ``refine_above``): what aligned framing needs for level eyes."""
        if not np.isfinite(float(above)) or float(above) <= 0:
            raise ConfigError(f"level_keypoints needs a tilt in degrees > 0, got {above!r}")
        self.refine_above = float(above)

    def _detect(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        if self._size != (w, h):
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, found = self._net.detect(bgr)
        if found is None:
            return np.zeros((0, 15))
        found = np.asarray(found, dtype=np.float64).reshape(-1, 15)
        found = found[np.isfinite(found).all(axis=1)]  # a degenerate tiny input can give NaN rows
        # YuNet's layout is box, 5 keypoints, score: ours is box, score, keypoints
        return np.concatenate([found[:, :4], found[:, 14:15], found[:, 4:14]], axis=1)

    def _detect_rotated(self, bgr: np.ndarray, degrees: float) -> np.ndarray:
        import cv2

        m, (nw, nh) = _rotation(bgr.shape[:2], degrees)
        rotated = cv2.warpAffine(bgr, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        found = self._detect(rotated)
        if not len(found):
            return found
        back = cv2.invertAffineTransform(m)
        kp = found[:, 5:].reshape(-1, 5, 2)
        kp = kp @ back[:, :2].T + back[:, 2]
        centre = (found[:, :2] + found[:, 2:4] / 2) @ back[:, :2].T + back[:, 2]
        out = found.copy()
        out[:, 0:2] = centre - found[:, 2:4] / 2
        out[:, 5:] = kp.reshape(-1, 10)
        return out

    def __call__(self, image: np.ndarray) -> Faces:
        import cv2

        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"detector expects an RGB image [H, W, 3], got shape {image.shape}")
        h, w = image.shape[:2]
        scale = 1.0
        if self.upscale_below and min(h, w) < self.upscale_below:
            scale = self.upscale_below / min(h, w)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale != 1.0:
            bgr = cv2.resize(bgr, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_LINEAR)
        small = 1.0
        if self.detect_size and scale == 1.0 and not (self.refine_above and self.refine_steps):
            # (levelled keypoints frame aligned crops: they are measured at full resolution)
            # never below the upscale floor: a wide, low frame keeps faces YuNet can see
            small = min(1.0, max(self.detect_size / max(h, w), self.upscale_below / min(h, w)))
        if small < 1.0:
            # the cheap pass: upright on the downscaled frame
            # (INTER_AREA keeps the small faces' detail that INTER_LINEAR aliases away)
            sized = (int(round(w * small)), int(round(h * small)))
            found = self._detect(cv2.resize(bgr, sized, interpolation=cv2.INTER_AREA))
            per_axis = np.array([sized[0] / w, sized[1] / h])  # exact, despite the rounding
            found[:, 0:4] /= np.tile(per_axis, 2)
            found[:, 5:] /= np.tile(per_axis, 5)
        if small == 1.0 or not len(found):
            # full resolution: tiny faces (a 16-px face is only found here, and only rotated)
            found = self._upright_then_rotated(bgr)
        if self.refine_above and self.refine_steps:
            for row in found:  # at full resolution: the levelled keypoints frame the crop
                self._refine(bgr, row)
        found[:, :4] /= scale
        found[:, 5:] /= scale
        return _clip_faces(found, w, h)

    def _upright_then_rotated(self, bgr: np.ndarray) -> np.ndarray:
        found = self._detect(bgr)
        if not len(found) and self.retry_angles:
            found = np.concatenate([self._detect_rotated(bgr, a) for a in self.retry_angles])
            if len(found) > 1:
                found = found[_nms_rows(found, self.nms_threshold)]
        return found

    #: Side of the upright patch a tilted face is re-detected in.
    _PATCH = 256
    #: YuNet's eye-line tilt per degree of true in-plane tilt (measured on London faces
    #: rotated by -30..30 degrees: 0.55-0.68).
    _TILT_SLOPE = 0.6

    def _refine(self, bgr: np.ndarray, row: np.ndarray) -> None:
        """Re-detect a tilted face turned upright and take its keypoints from there (in place).

        YuNet reports about 0.6 of a head's in-plane tilt, and is least biased on an
        upright face; so the face is turned by the tilt estimate divided by that slope,
        re-detected, and the turn corrected (Newton steps with the known slope) until the
        face reads as upright (< 1 degree) in the patch. Keypoints come from the last patch.
        """
        import cv2

        kp = row[5:].reshape(5, 2)
        centre = row[:2] + row[2:4] / 2
        side = 1.6 * max(row[2], row[3])
        d = kp[1] - kp[0]
        seen = float(np.degrees(np.arctan2(d[1], d[0])))
        if abs(seen) <= self.refine_above:
            return
        turn = 0.0
        for _ in range(self.refine_steps):
            turn += seen / self._TILT_SLOPE
            # rotating the image by +turn (counter-clockwise on screen) levels an eye line tilted by turn
            m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), turn, self._PATCH / side)
            m[:, 2] += self._PATCH / 2 - centre
            patch = cv2.warpAffine(bgr, m, (self._PATCH, self._PATCH), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT)
            again = self._detect(patch)
            if not len(again):
                return
            # the face that was cut out is the one nearest the patch centre
            mid = again[:, :2] + again[:, 2:4] / 2
            best = again[int(np.argmin(np.hypot(*(mid - self._PATCH / 2).T)))]
            back = cv2.invertAffineTransform(m)
            row[5:] = (best[5:].reshape(5, 2) @ back[:, :2].T + back[:, 2]).reshape(-1)
            d = best[7:9] - best[5:7]
            seen = float(np.degrees(np.arctan2(d[1], d[0])))
            if abs(seen) < 1.0:
                return


def _nms_rows(rows: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices of ``rows`` (``[N, >=5]``, score in column 4) kept by greedy NMS."""
    order = np.argsort(-rows[:, 4], kind="stable")
    keep: list[int] = []
    for i in order:
        if keep and (iou_matrix(rows[i : i + 1], rows[keep])[0] > iou_threshold).any():
            continue
        keep.append(int(i))
    return keep


def _clip_faces(rows: np.ndarray, width: int, height: int) -> Faces:
    """``[N, 15]`` rows as :class:`Faces` with boxes and keypoints clipped to the frame."""
    if not len(rows):
        return Faces(np.zeros((0, 5)), np.zeros((0, 5, 2)))
    x0 = np.clip(rows[:, 0], 0, width)
    y0 = np.clip(rows[:, 1], 0, height)
    x1 = np.clip(rows[:, 0] + rows[:, 2], 0, width)
    y1 = np.clip(rows[:, 1] + rows[:, 3], 0, height)
    boxes = np.column_stack([x0, y0, x1 - x0, y1 - y0, np.clip(rows[:, 4], 0, 1)])
    kp = rows[:, 5:].reshape(-1, 5, 2).copy()
    kp[..., 0] = np.clip(kp[..., 0], 0, width)
    kp[..., 1] = np.clip(kp[..., 1], 0, height)
    ok = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return Faces(boxes[ok], kp[ok])


@register_detector("yunet")
def _yunet(model: str | os.PathLike | None = None, **options) -> Detector:
    if model is None:
        raise ConfigError(
            "detector 'yunet' needs its model file: pass model=PATH, or let affectlab find the asset "
            "(affectlab.runtime resolves it; get it with: affectlab models fetch yunet)"
        )
    return YuNetDetector(model, **options)
