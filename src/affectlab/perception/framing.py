"""Detect-then-frame for dataset photographs, so training and evaluation see analyze's crops.

``affectlab analyze`` finds faces with a detector and crops them as the model's framing
says (:func:`affectlab.perception.align.frame_faces`, at the model's input size). A
dataset of uncropped photographs read through a :class:`FaceFramer` gets exactly that
crop for each image, so the accuracy ``evaluate`` reports is the accuracy ``analyze``
delivers on the same photographs, and a model trained that way learns on that framing.

Which face: the row's own face box when the dataset has one (the detected face that
overlaps it most, IoU >= 0.3; none does: the given box, box-framed), otherwise the largest
detected face. No face found: the whole photograph (resized by the transform), counted in
:attr:`FaceFramer.missed`.

Detection results are cached per image key (its path), so every epoch after the first
reads the crop without detecting again; :meth:`FaceFramer.prepare` fills the cache up
front (then DataLoader workers, which get copies without the detector, never detect).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from affectlab.errors import ConfigError
from affectlab.perception.align import Framing, frame_faces
from affectlab.perception.detectors import Faces, as_faces, iou_matrix

#: A detected face must overlap the row's given box this much to stand for it.
MATCH_IOU = 0.3


class FaceFramer:
    """Crops the face of a photograph as analyze would (see the module docstring).

    Parameters
    ----------
    detector : callable
        A detector (``image -> Faces | [N, 5] | [N, 15]``), e.g. from
        :func:`affectlab.runtime.detection.resolve_detector`.
    framing : Framing or mapping or None
        The model's framing (``None``: box + margin 0.2).
    size : int or None
        Side of the crops (the model's input size; ``None`` keeps the crop's size).
    """

    def __init__(self, detector: Callable, framing: Framing | Mapping | None, size: int | None):
        if not callable(detector):
            raise ConfigError(f"detector must be callable, got {type(detector).__name__}")
        self.detector = detector
        self.framing = Framing.from_dict(framing)
        self.size = None if size is None else int(size)
        self._cache: dict[str, Faces] = {}
        self.missed: set[str] = set()

    def __getstate__(self):
        # a DataLoader worker gets the cache, not the detector (OpenCV objects do not pickle)
        state = dict(self.__dict__)
        state["detector"] = None
        return state

    def face(self, image: np.ndarray, key: str, box=None) -> Faces:
        """The one face of ``image`` this framer crops (cached under ``key``); empty if none."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if self.detector is None:
            raise ConfigError(
                f"{key}: no cached face and no detector in this copy of the framer; call FaceFramer.prepare "
                "before handing the dataset to DataLoader workers"
            )
        reset = getattr(self.detector, "reset", None)
        if callable(reset):
            reset()  # photographs are independent: no tracking window from the previous one
        faces = as_faces(self.detector(image))
        chosen = self._choose(faces, box)
        self._cache[key] = chosen
        if not len(chosen):
            self.missed.add(key)
        return chosen

    @staticmethod
    def _choose(faces: Faces, box) -> Faces:
        if box is not None:
            given = np.asarray(box, dtype=np.float64)[:4]
            if len(faces):
                ov = iou_matrix(given[None], faces.boxes)[0]
                if ov.max() >= MATCH_IOU:
                    return faces[int(ov.argmax())]
            return Faces(np.append(given, 1.0)[None])
        if not len(faces):
            return faces
        area = faces.boxes[:, 2] * faces.boxes[:, 3]
        return faces[int(np.argmax(area))]

    def __call__(self, image: np.ndarray, key: str, box=None) -> np.ndarray:
        face = self.face(image, key, box)
        if not len(face):
            return image
        return frame_faces(image, face, self.size, self.framing)[0]

    def prepare(self, items: Iterable[tuple[str, Callable[[], np.ndarray | None], object]], progress=None) -> None:
        """Detect the faces of ``(key, read_image, box)`` items not cached yet."""
        for key, read, box in items:
            if key in self._cache:
                continue
            image = read()
            if image is not None:
                self.face(image, key, box)
            if progress is not None:
                progress()

    @property
    def cached(self) -> int:
        return len(self._cache)
