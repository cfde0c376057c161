"""MediaPipe FaceLandmarker's networks run with LiteRT on the detector's faces.

The ``face_landmarker.task`` bundle (a zip) holds BlazeFace, the 478-point face mesh
(``face_landmarks_detector.tflite``, iris included), the blendshape regressor
(``face_blendshapes.tflite``) and the canonical face (for head pose, see
:mod:`affectlab.perception.pose`). affectlab runs the mesh and the blendshape networks with
LiteRT (``ai-edge-litert``): the ``mediapipe`` package itself depends on
``opencv-contrib-python``, which clashes with ``opencv-python-headless`` over ``cv2``.
What the tasks API does around the networks is reproduced here from its source
(``mediapipe/tasks/cc/vision/face_landmarker``):

* **region of interest** — MediaPipe turns a BlazeFace detection into a rectangle rotated
  so that the eye line is horizontal (``DetectionsToRectsCalculator``, keypoints 0 -> 1,
  target angle 0) and scales it by 1.5 (``RectTransformationCalculator``); when it tracks,
  the rectangle comes from the previous landmarks (33 -> 263, 1.5, square on the long
  side). Here the detector is YuNet, whose box is not BlazeFace's: the square ROI is
  centred on the midpoint of the eye centre and mouth centre, rotated by the eye line, with
  side ``ROI_SCALE`` times the eye-to-mouth distance (without keypoints: the box centre
  and ``BOX_SCALE`` times the box's longer side). Both factors were chosen so the ROI
  matches the one MediaPipe tracks from its own landmarks (see ``docs/perception.md``).
* **crop** — that rotated square resampled to 256 x 256 (bilinear, border replicated),
  RGB scaled to [0, 1] (the model's metadata: mean 0, std 255);
* **landmarks** — 478 x (x, y, z) in crop pixels, mapped back through the ROI: ``x, y`` in
  image pixels, ``z`` in the same pixel scale (relative depth, smaller is nearer the camera,
  origin near the head's centre, as MediaPipe's ``z * image_width``);
* **presence** — the sigmoid of the second output, the probability that a face fills the
  ROI; MediaPipe drops faces below 0.5 and so does :class:`FaceLandmarker` (their landmarks
  and blendshapes are NaN): profiles and faces too small to resolve fall there;
* **blendshapes** — the 146 landmarks of ``BLENDSHAPE_SUBSET`` (``kLandmarksSubsetIdxs``
  of ``face_blendshapes_graph.cc``), ``x, y`` in image pixels, into the regressor, giving
  the 52 coefficients of ``BLENDSHAPE_NAMES``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectlab.errors import ConfigError

#: Landmarks the blendshape network takes, in its order (``kLandmarksSubsetIdxs``).
BLENDSHAPE_SUBSET = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66,
    67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145,
    146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176,
    178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285,
    288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
    336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387,
    388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474,
    475, 476, 477,
])  # fmt: skip

#: The 52 blendshape coefficients, in the network's output order (``kBlendshapeNames``).
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)  # fmt: skip

N_LANDMARKS = 478
INPUT_SIZE = 256
#: ROI side as a multiple of the eye-to-mouth distance (YuNet keypoints).
ROI_SCALE = 3.6
#: ROI centre below the eye centre, as a fraction of the eye-to-mouth distance.
ROI_SHIFT = 0.5
#: ROI side as a multiple of the box's longer side when there are no keypoints.
BOX_SCALE = 1.5
#: Faces whose presence probability is below this get NaN landmarks (MediaPipe's default).
PRESENCE_THRESHOLD = 0.5
#: Faces whose ROI is smaller than this (pixels) are not run (too few pixels to resolve).
MIN_ROI = 40.0

_MEMBERS = ("face_landmarks_detector.tflite", "face_blendshapes.tflite")


def read_bundle(path: str | Path) -> dict[str, bytes]:
    """The members of a ``face_landmarker.task`` bundle, by name.

    Raises
    ------
    ConfigError
        When the file is not a zip or lacks one of the networks (a damaged download).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"{path}: not a readable face_landmarker.task bundle ({exc}); "
                          "fetch it again with `affectlab models fetch face-landmarker`") from None
    missing = [m for m in _MEMBERS if m not in members]
    if missing:
        raise ConfigError(f"{path}: the bundle lacks {', '.join(missing)}; "
                          "fetch it again with `affectlab models fetch face-landmarker`")
    return members


@dataclass
class LandmarkResult:
    """Landmarks of ``N`` faces of one image.

    Attributes
    ----------
    landmarks : ndarray [N, 478, 3]
        ``x, y`` in image pixels, ``z`` relative depth in the same scale; NaN where
        ``ok`` is False.
    presence : ndarray [N]
        Probability that the ROI holds a face (NaN for faces not run: too small).
    blendshapes : ndarray [N, 52] or None
        Coefficients in [0, 1] in :data:`BLENDSHAPE_NAMES` order; NaN where not ``ok``.
    roi : ndarray [N, 4]
        The ROIs run: centre x, centre y, side (pixels), rotation (radians, clockwise
        on screen).
    """

    landmarks: np.ndarray
    presence: np.ndarray
    blendshapes: np.ndarray | None
    roi: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Faces with landmarks (presence at least :data:`PRESENCE_THRESHOLD`)."""
        return np.isfinite(self.presence) & (self.presence >= PRESENCE_THRESHOLD)


def roi_from_faces(boxes: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray:
    """Square rotated ROIs ``[N, 4]`` (cx, cy, side, rotation) for detector faces.

    Parameters
    ----------
    boxes : ndarray [N, >=4]
        ``x, y, w, h`` in pixels.
    keypoints : ndarray [N, 5, 2], optional
        YuNet's keypoints: the eye on the image's left, the eye on its right, nose tip,
        mouth corner on the left, mouth corner on the right. NaN rows fall back to the box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
    n = len(boxes)
    out = np.empty((n, 4))
    out[:, 0] = boxes[:, 0] + boxes[:, 2] / 2
    out[:, 1] = boxes[:, 1] + boxes[:, 3] / 2
    out[:, 2] = BOX_SCALE * np.maximum(boxes[:, 2], boxes[:, 3])
    out[:, 3] = 0.0
    if keypoints is None or n == 0:
        return out
    kp = np.asarray(keypoints, dtype=np.float64).reshape(n, 5, 2)
    good = np.isfinite(kp).all(axis=(1, 2))
    eyes = (kp[:, 0] + kp[:, 1]) / 2
    mouth = (kp[:, 3] + kp[:, 4]) / 2
    d = np.linalg.norm(mouth - eyes, axis=1)
    eye_vec = kp[:, 1] - kp[:, 0]
    angle = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    good &= d > 0
    c = eyes + ROI_SHIFT * (mouth - eyes)
    out[good, 0] = c[good, 0]
    out[good, 1] = c[good, 1]
    out[good, 2] = ROI_SCALE * d[good]
    out[good, 3] = angle[good]
    return out


def roi_matrix(roi: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The 2x3 affine map from crop pixels to image pixels of one ROI."""
    cx, cy, side, theta = (float(v) for v in roi)
    s = side / size
    cos, sin = np.cos(theta) * s, np.sin(theta) * s
    # crop pixel centres (u + 0.5) about the crop centre size / 2, rotated and scaled
    h = size / 2 - 0.5
    return np.array([[cos, -sin, cx - cos * h + sin * h], [sin, cos, cy - sin * h - cos * h]])


def crop_roi(image: np.ndarray, roi: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The ROI of an RGB ``uint8`` image resampled to ``size x size`` (``uint8``)."""
    import cv2

    m = roi_matrix(roi, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


class FaceLandmarker:
    """478 landmarks, face presence and 52 blendshapes for given faces of an image.

    Parameters
    ----------
    path : str or Path, optional
        The ``face_landmarker.task`` bundle; default: the ``face-landmarker`` asset
        (:func:`affectlab.runtime.assets.asset_path`), which raises
        ``AssetMissingError`` naming how to get it.
    blendshapes : bool
        Also run the blendshape network.
    num_threads : int
        LiteRT threads per network. The mesh network of several faces runs as one batch.
    max_batch : int
        Most faces per call of the mesh network.

    Examples
    --------
    >>> lm = FaceLandmarker()                                   # doctest: +SKIP
    >>> res = lm(image, boxes[:, :4], keypoints)                # doctest: +SKIP
    >>> res.landmarks.shape, res.blendshapes.shape              # doctest: +SKIP
    ((1, 478, 3), (1, 52))
    """

    def __init__(self, path: str | Path | None = None, *, blendshapes: bool = True, num_threads: int = 1,
                 max_batch: int = 8):
        from ai_edge_litert.interpreter import Interpreter

        if path is None:
            from affectlab.runtime.assets import asset_path

            path = asset_path("face-landmarker")
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise ConfigError(f"num_threads must be a positive integer, got {num_threads!r}")
        self.path = Path(path)
        members = read_bundle(self.path)
        self.members = members
        self._mesh = Interpreter(model_content=members["face_landmarks_detector.tflite"], num_threads=int(num_threads))
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        outs = self._mesh.get_output_details()
        # outputs by shape: [B,1,1,1434] landmarks, [B,1,1,1] presence logit
        self._mesh_lm = next(d["index"] for d in outs if d["shape"][-1] == N_LANDMARKS * 3)
        self._mesh_pr = next(d["index"] for d in outs if len(d["shape"]) == 4 and d["shape"][-1] == 1)
        self._batch = 0
        self.max_batch = int(max_batch)
        self._bs = None
        if blendshapes:
            self._bs = Interpreter(model_content=members["face_blendshapes.tflite"], num_threads=1)
            self._bs.allocate_tensors()
            self._bs_in = self._bs.get_input_details()[0]["index"]
            self._bs_out = self._bs.get_output_details()[0]["index"]

    def _run_mesh(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(crops)
        if n != self._batch:
            self._mesh.resize_tensor_input(self._mesh_in, [n, INPUT_SIZE, INPUT_SIZE, 3])
            self._mesh.allocate_tensors()
            self._batch = n
        self._mesh.set_tensor(self._mesh_in, crops)
        self._mesh.invoke()
        lm = self._mesh.get_tensor(self._mesh_lm).reshape(n, N_LANDMARKS, 3)
        logit = self._mesh.get_tensor(self._mesh_pr).reshape(n)
        return lm.astype(np.float64), 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))

    def blendshapes(self, landmarks: np.ndarray) -> np.ndarray:
        """Blendshapes ``[N, 52]`` from image-pixel landmarks ``[N, 478, >=2]`` (NaN rows stay NaN)."""
        if self._bs is None:
            raise ConfigError("this FaceLandmarker was built with blendshapes=False")
        landmarks = np.asarray(landmarks, dtype=np.float64)
        out = np.full((len(landmarks), len(BLENDSHAPE_NAMES)), np.nan)
        for i, lm in enumerate(landmarks):
            if not np.isfinite(lm[:, :2]).all():
                continue
            self._bs.set_tensor(self._bs_in, lm[BLENDSHAPE_SUBSET, :2][None].astype(np.float32))
            self._bs.invoke()
            out[i] = self._bs.get_tensor(self._bs_out).reshape(-1)
        return out

    def __call__(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> LandmarkResult:
        """Landmarks of the faces ``boxes`` (``x, y, w, h, ...``) of an RGB ``uint8`` image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ConfigError(f"FaceLandmarker takes an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        roi = roi_from_faces(boxes, keypoints)
        n = len(roi)
        landmarks = np.full((n, N_LANDMARKS, 3), np.nan)
        presence = np.full(n, np.nan)
        run = np.flatnonzero(roi[:, 2] >= MIN_ROI)
        for start in range(0, len(run), self.max_batch):
            idx = run[start : start + self.max_batch]
            crops = np.stack([crop_roi(image, roi[i]) for i in idx]).astype(np.float32) * (1.0 / 255.0)
            lm, pr = self._run_mesh(crops)
            for j, i in enumerate(idx):
                presence[i] = pr[j]
                if pr[j] < PRESENCE_THRESHOLD:
                    continue
                m = roi_matrix(roi[i])
                # the network's coordinates are continuous (pixel centres at +0.5), as are
                # the returned ones (MediaPipe's ``x * width``)
                xy = (lm[j, :, :2] - 0.5) @ m[:, :2].T + m[:, 2] + 0.5
                landmarks[i, :, :2] = xy
                landmarks[i, :, 2] = lm[j, :, 2] * (roi[i, 2] / INPUT_SIZE)
        bs = self.blendshapes(landmarks) if self._bs is not None else None
        return LandmarkResult(landmarks, presence, bs, roi)
