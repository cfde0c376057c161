"""The landmark stage of analyze: head pose, AUs, blendshapes and landmarks per face.

One :class:`MeshStage` runs MediaPipe's face mesh and blendshape networks
(:mod:`affectlab.perception.landmarks`, asset ``face-landmarker``) on the detector's faces of a
frame and gives one row of values per face for these columns:

==========================================  ==================================================
column                                      what
==========================================  ==================================================
``pose_yaw, pose_pitch, pose_roll``         head pose in degrees (:mod:`affectlab.perception.pose`
                                            gives the sign convention)
``AU<k>``                                   FACS AU probabilities of :mod:`affectlab.perception.au`
                                            (present at >= 0.5). When the expression model also
                                            predicts ``AU<k>``, the model's column keeps the name
                                            and the landmarker's is ``lm_AU<k>``
``bs_<name>``                               the 52 blendshape coefficients (``blendshapes=True``;
                                            ``_neutral`` is ``bs_neutral``)
``lm<i>_x, lm<i>_y, lm<i>_z``                the 478 landmarks (``landmarks=True``): image pixels,
                                            ``z`` relative depth in the same scale
``lm_presence``                             the mesh network's face-presence probability
==========================================  ==================================================

Faces the mesh cannot be fitted to — profiles, faces under :data:`~affectlab.perception.landmarks.MIN_ROI`
pixels, false detections (presence below 0.5) — keep their row with NaN in these columns;
:attr:`MeshStage.failed` counts them and analyze reports the count once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectlab.perception.au import AUS, au_probabilities
from affectlab.perception.landmarks import BLENDSHAPE_NAMES, N_LANDMARKS, FaceLandmarker
from affectlab.perception.pose import GEOMETRY_MEMBER, HeadPose

ASSET = "face-landmarker"
POSE_COLUMNS = ("pose_yaw", "pose_pitch", "pose_roll")
BLENDSHAPE_COLUMNS = tuple("bs_" + n.lstrip("_") for n in BLENDSHAPE_NAMES)
LANDMARK_COLUMNS = tuple(f"lm{i}_{a}" for i in range(N_LANDMARKS) for a in "xyz")


class MeshStage:
    """Landmarks -> pose, AUs, blendshapes and landmark columns for the faces of one frame.

    Parameters
    ----------
    pose, aus, blendshapes, landmarks : bool
        Which column groups to give (see the module docstring).
    model_aus : sequence of str
        AU columns the expression model already writes; the landmarker's AUs of the same
        names are renamed ``lm_AU<k>``.
    bundle : path, optional
        ``face_landmarker.task``; default: the ``face-landmarker`` asset (raises
        ``AssetMissingError`` naming how to get it).
    num_threads : int
        LiteRT threads of the mesh network.
    """

    def __init__(self, *, pose: bool = True, aus: bool = True, blendshapes: bool = False, landmarks: bool = False,
                 model_aus=(), bundle: str | Path | None = None, num_threads: int = 1):
        self.landmarker = FaceLandmarker(bundle, blendshapes=aus or blendshapes, num_threads=num_threads)
        self.head_pose = HeadPose(self.landmarker.members[GEOMETRY_MEMBER]) if pose else None
        self.want = dict(pose=pose, aus=aus, blendshapes=blendshapes, landmarks=landmarks)
        taken = set(model_aus)
        self.au_columns = [("lm_" + a) if a in taken else a for a in AUS] if aus else []
        self.columns: list[str] = ["lm_presence"]
        if pose:
            self.columns += POSE_COLUMNS
        self.columns += self.au_columns
        if blendshapes:
            self.columns += BLENDSHAPE_COLUMNS
        if landmarks:
            self.columns += LANDMARK_COLUMNS
        self.faces = 0
        self.failed = 0

    @property
    def sources(self) -> dict[str, str]:
        """Column group -> the asset that produced it (for ``affectlab models`` and the report)."""
        groups = ["lm_presence"] + [k for k, v in self.want.items() if v]
        names = {"pose": "pose_*", "aus": "AU<k> (landmarker)", "blendshapes": "bs_*", "landmarks": "lm<i>_x/y/z"}
        return {names.get(g, g): ASSET for g in groups}

    def __call__(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray:
        """Values ``[N, len(columns)]`` for the ``N`` faces ``boxes`` (``x, y, w, h, ...``)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
        out = np.full((len(boxes), len(self.columns)), np.nan)
        if len(boxes) == 0:
            return out
        res = self.landmarker(image, boxes[:, :4], keypoints)
        self.faces += len(boxes)
        self.failed += int((~res.ok).sum())
        parts = [res.presence[:, None]]
        if self.head_pose is not None:
            parts.append(self.head_pose(res.landmarks))
        if self.want["aus"]:
            parts.append(au_probabilities(res.blendshapes, res.landmarks))
        if self.want["blendshapes"]:
            parts.append(res.blendshapes)
        if self.want["landmarks"]:
            parts.append(res.landmarks.reshape(len(boxes), -1))
        out[:] = np.concatenate(parts, axis=1)
        return out
