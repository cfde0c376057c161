"""Head pose (yaw, pitch, roll in degrees) from the 478 landmarks and MediaPipe's canonical face.

The ``face_landmarker.task`` bundle carries ``geometry_pipeline_metadata_landmarks.binarypb``:
the canonical face mesh (468 vertices, centimetres, ``x`` to the face's left as seen by the
camera — the image's right —, ``y`` up, ``z`` towards the camera) and the 33 landmarks, with
weights, that MediaPipe's geometry pipeline fits with a weighted Procrustes alignment. This
module reads that file (a protobuf, parsed by its wire format: no ``mediapipe`` needed) and
fits the same weighted similarity transform to the detected landmarks under an orthographic
camera: image ``x``, ``-y`` and ``-z`` (MediaPipe's ``z`` grows away from the camera) give
a right-handed frame like the canonical one.

Sign convention (degrees, 0 = looking straight into the camera, upright)
------------------------------------------------------------------------
* ``yaw > 0``: the nose points to the image's right (the person turns to their left);
* ``pitch > 0``: the nose points up (chin up);
* ``roll > 0``: the face is rotated counter-clockwise in the image (the head tilts towards
  the person's right shoulder, on the image's left).

They are intrinsic Euler angles ``R = Ry(yaw) Rx(-pitch) Rz(roll)`` of the rotation taking the
canonical face to the observed one, in the camera frame ``x`` right, ``y`` up, ``z`` towards
the camera. A mirrored image flips the signs of yaw and roll and keeps pitch.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from affectlab.errors import ConfigError

GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"


def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: bytes) -> list[tuple[int, int, object]]:
    """Protobuf wire-format fields ``(number, wire type, value)`` of one message."""
    i, out = 0, []
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 5:
            v, i = b[i : i + 4], i + 4
        elif wt == 1:
            v, i = b[i : i + 8], i + 8
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        out.append((num, wt, v))
    return out


def _floats(values: list[tuple[int, int, object]], number: int) -> np.ndarray:
    out: list[float] = []
    for num, wt, v in values:
        if num != number:
            continue
        if wt == 5:
            out.append(struct.unpack("<f", v)[0])
        elif wt == 2:  # packed
            out.extend(struct.unpack(f"<{len(v) // 4}f", v))
    return np.array(out, dtype=np.float64)


def parse_geometry_metadata(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical vertices ``[468, 3]``, Procrustes landmark ids and weights from the metadata.

    ``GeometryPipelineMetadata``: field 1 the canonical ``Mesh3d`` (field 3 its vertex buffer
    of ``x, y, z, u, v`` per vertex), field 2 the repeated ``WeightedLandmarkRef``
    (``landmark_id`` 1, ``weight`` 2).
    """
    try:
        top = _fields(data)
        mesh = next(v for n, wt, v in top if n == 1 and wt == 2)
        vb = _floats(_fields(mesh), 3)
        vertices = vb.reshape(-1, 5)[:, :3]
        ids, weights = [], []
        for n, wt, v in top:
            if n == 2 and wt == 2:
                ref = {num: val for num, _t, val in _fields(v)}
                ids.append(int(ref.get(1, 0)))
                weights.append(struct.unpack("<f", ref[2])[0] if 2 in ref else 0.0)
    except (ValueError, IndexError, StopIteration, struct.error) as exc:
        raise ConfigError(f"{GEOMETRY_MEMBER}: not a geometry pipeline metadata file ({exc})") from None
    if len(vertices) != 468 or not ids:
        raise ConfigError(f"{GEOMETRY_MEMBER}: expected 468 canonical vertices and a landmark basis, "
                          f"got {len(vertices)} vertices and {len(ids)} basis landmarks")
    return vertices, np.array(ids), np.array(weights)


class HeadPose:
    """Weighted orthographic Procrustes fit of the canonical face to 478 landmarks.

    Parameters
    ----------
    metadata : bytes
        ``geometry_pipeline_metadata_landmarks.binarypb`` (from the bundle:
        ``FaceLandmarker(...).members[GEOMETRY_MEMBER]``).
    """

    def __init__(self, metadata: bytes):
        vertices, ids, weights = parse_geometry_metadata(metadata)
        self.canonical = vertices
        self.ids = ids
        self.weights = weights / weights.sum()

    def rotations(self, landmarks: np.ndarray) -> np.ndarray:
        """Rotation matrices ``[N, 3, 3]`` (canonical -> camera frame); NaN for NaN faces."""
        lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, np.shape(landmarks)[-2], 3)
        out = np.full((len(lm), 3, 3), np.nan)
        w = self.weights[:, None]
        src = self.canonical[self.ids]
        src_c = src - (w * src).sum(0)
        for i, face in enumerate(lm):
            dst = face[self.ids] * np.array([1.0, -1.0, -1.0])
            if not np.isfinite(dst).all():
                continue
            dst_c = dst - (w * dst).sum(0)
            # Kabsch: the rotation R minimising sum w |R src - s dst|^2 (scale drops out)
            h = (w * src_c).T @ dst_c
            u, _s, vt = np.linalg.svd(h)
            d = np.sign(np.linalg.det(vt.T @ u.T))
            out[i] = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
        return out

    def __call__(self, landmarks: np.ndarray) -> np.ndarray:
        """``[N, 3]`` yaw, pitch, roll in degrees (see the module docstring for signs)."""
        return euler_from_rotations(self.rotations(landmarks))


def euler_from_rotations(r: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll (degrees) of rotations ``[N, 3, 3]`` with ``R = Ry(yaw) Rx(-pitch) Rz(roll)``."""
    r = np.asarray(r, dtype=np.float64).reshape(-1, 3, 3)
    # Ry(a) Rx(b) Rz(c): R[1,2] = -sin b, R[0,2] = sin a cos b, R[2,2] = cos a cos b,
    # R[1,0] = cos b sin c, R[1,1] = cos b cos c
    b = np.arcsin(np.clip(-r[:, 1, 2], -1.0, 1.0))
    a = np.arctan2(r[:, 0, 2], r[:, 2, 2])
    c = np.arctan2(r[:, 1, 0], r[:, 1, 1])
    return np.degrees(np.stack([a, -b, c], axis=1))


@lru_cache(maxsize=4)
def _pose_for(path: str) -> HeadPose:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return HeadPose(z.read(GEOMETRY_MEMBER))


def head_pose(landmarks: np.ndarray, bundle: str | Path | None = None) -> np.ndarray:
    """Yaw, pitch, roll ``[N, 3]`` in degrees of landmarks ``[N, 478, 3]`` (NaN rows stay NaN)."""
    if bundle is None:
        from affectlab.runtime.assets import asset_path

        bundle = asset_path("face-landmarker")
    return _pose_for(str(bundle))(landmarks)
