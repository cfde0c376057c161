"""Face framing: how a face found by a detector becomes the square crop a model sees.

Two framings, declared by a model in its preprocessing (``preprocessing["framing"]``):

``{"kind": "box", "margin": 0.2}``
    The detector's box, enlarged by ``margin`` of its size on every side and made square
    (:func:`affectlab.data.transforms.crop_face`, the crop datasets with face boxes use).
    What a model that declares no framing gets.
``{"kind": "aligned", "scale": 0.8}``
    A similarity transform (rotation, uniform scale, translation) that puts the five
    keypoints on a fixed template: eyes level at fixed positions, nose and mouth below.
    In-plane head rotation is undone and the face has the same size and place in every
    crop. ``scale`` is the size of the face in the crop (1.0: the eyes are 0.32 of the
    crop apart, as in the ArcFace template; smaller values show more around the face).

The rotation of the aligned crop comes from the eye line alone, so the eyes are level
in the crop exactly; scale and translation are the least-squares fit of all five points
given that rotation, which keeps the size right when one keypoint is off (a closed
form; ``cv2.estimateAffinePartial2D`` would tilt the eye line towards the mouth's).

:func:`frame_faces` applies a framing to every face a detector found; a detector that
gives no keypoints (Haar) gets the box framing of an aligned spec (its ``margin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from affectlab.errors import ConfigError

#: The five keypoints of a face at ``scale`` 1 in a unit square crop, in the order of
#: :data:`affectlab.perception.detectors.KEYPOINTS` (subject's right eye first, which is
#: on the left of the image). The ArcFace 112 px template divided by 112, made symmetric.
TEMPLATE = np.array(
    [
        [0.3418, 0.4608],  # right eye
        [0.6582, 0.4608],  # left eye
        [0.5000, 0.6405],  # nose tip
        [0.3727, 0.8240],  # right mouth corner
        [0.6273, 0.8240],  # left mouth corner
    ]
)

FRAMING_KINDS = ("box", "aligned")


@dataclass(frozen=True)
class Framing:
    """A framing spec (see the module docstring).

    Attributes
    ----------
    kind : {"box", "aligned"}
    margin : float
        Box framing: fraction of the box added on each side (also used by ``aligned``
        when the detector gives no keypoints).
    scale : float
        Aligned framing: size of the face in the crop (1.0 = ArcFace's tight template).
    """

    kind: str = "box"
    margin: float = 0.2
    scale: float = 0.8

    def __post_init__(self):
        if self.kind not in FRAMING_KINDS:
            raise ConfigError(f"framing kind must be one of {', '.join(FRAMING_KINDS)}, got {self.kind!r}")
        for name, lo in (("margin", 0.0), ("scale", 1e-6)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ConfigError(f"framing {name} must be a number, got {value!r}")
            if not np.isfinite(value) or value < lo or value > 10:
                raise ConfigError(f"framing {name} must be a finite number in [{lo:g}, 10], got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_dict(cls, spec: "Framing | Mapping[str, Any] | None", *, margin: float = 0.2) -> "Framing":
        """A :class:`Framing` from a preprocessing entry; ``None``: box framing with ``margin``."""
        if isinstance(spec, Framing):
            return spec
        if spec is None:
            return cls("box", margin=margin)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"framing must be a mapping like {{'kind': 'aligned'}}, got {spec!r}")
        known = {"kind", "margin", "scale"}
        unknown = set(spec) - known
        if unknown:
            raise ConfigError(f"unknown framing keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**{"margin": margin, **dict(spec)})

    def to_dict(self) -> dict:
        if self.kind == "box":
            return {"kind": "box", "margin": self.margin}
        return {"kind": "aligned", "scale": self.scale, "margin": self.margin}


def alignment_matrix(keypoints: np.ndarray, size: int, scale: float = 0.8) -> np.ndarray:
    """Affine ``[2, 3]`` mapping image pixels to a ``size x size`` aligned crop.

    Parameters
    ----------
    keypoints : array [5, 2]
        The face's five keypoints (:data:`~affectlab.perception.detectors.KEYPOINTS` order).
    size : int
        Side of the crop.
    scale : float
        Size of the face in the crop (see :class:`Framing`).
    """
    src = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(src).all():
        raise ConfigError(f"keypoints must be finite, got {src.tolist()}")
    dst = (0.5 + (TEMPLATE - 0.5) * scale) * size
    eye = src[1] - src[0]
    if np.hypot(*eye) < 1e-6:
        raise ConfigError(f"the two eye keypoints coincide ({src[0].tolist()}); cannot align")
    # rotation that makes the eye line horizontal (template eyes are level)
    angle = np.arctan2(eye[1], eye[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    p = src @ rot.T
    pc, qc = p - p.mean(0), dst - dst.mean(0)
    k = float((pc * qc).sum() / max((pc**2).sum(), 1e-12))
    t = dst.mean(0) - k * p.mean(0)
    return np.hstack([k * rot, t[:, None]])


def aligned_crop(image: np.ndarray, keypoints: np.ndarray, size: int, scale: float = 0.8) -> np.ndarray:
    """The ``size x size`` aligned crop of one face (parts outside the image are black).

    A crop much smaller than the face is first warped at about the face's own resolution
    and then shrunk with area interpolation, so it is not aliased.
    """
    import cv2

    size = int(size)
    m = alignment_matrix(keypoints, size, scale)
    zoom = float(np.hypot(m[0, 0], m[0, 1]))  # output pixels per image pixel
    if zoom >= 0.5:
        return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    big = int(np.ceil(size / zoom))
    big_m = m * (big / size)
    warped = cv2.warpAffine(image, big_m, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)


def box_crop(image: np.ndarray, box: Sequence[float], size: int | None, margin: float = 0.2) -> np.ndarray:
    """Square crop around ``box`` (``x, y, w, h``) enlarged by ``margin``, resized to ``size``.

    The crop is :func:`affectlab.data.transforms.crop_face`, the one datasets with face
    boxes use for training. ``size=None`` keeps the crop's own size.
    """
    import cv2

    from affectlab.data.transforms import crop_face

    crop = crop_face(image, np.asarray(box, dtype=np.float64)[:4], margin=margin, square=True)
    if size is not None and crop.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (int(size), int(size)), interpolation=interp)
    return crop


def frame_faces(image: np.ndarray, faces, size: int | None, framing: Framing | Mapping | None = None) -> list[np.ndarray]:
    """One crop per face of ``faces`` (:class:`~affectlab.perception.detectors.Faces` or
    an array ``[N, 5]`` / ``[N, 15]``), framed as ``framing`` says.

    ``size`` is the model's input side: cropping straight to it makes the model's own
    resize a no-op. An aligned framing needs a size (``None`` is taken as 112) and
    keypoints; faces without keypoints get the box framing with the spec's margin.
    """
    from affectlab.perception.detectors import as_faces

    framing = Framing.from_dict(framing)
    faces = as_faces(faces)
    if framing.kind == "aligned" and faces.keypoints is not None:
        side = 112 if size is None else int(size)
        return [aligned_crop(image, kp, side, framing.scale) for kp in faces.keypoints]
    return [box_crop(image, b, size, framing.margin) for b in faces.boxes]


def crop_faces(image: np.ndarray, boxes: np.ndarray, size: int | None, margin: float = 0.2) -> list[np.ndarray]:
    """Box-framed crops of ``boxes`` ``[N, >=4]`` (:func:`box_crop` for each)."""
    rows = np.asarray(boxes, dtype=np.float64)
    if not rows.size:
        return []
    return [box_crop(image, b, size, margin) for b in rows.reshape(len(rows), -1)]
