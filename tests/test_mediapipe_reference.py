"""affectlab's LiteRT landmarker agrees with the mediapipe tasks API on real faces.

``mediapipe`` depends on opencv-contrib-python and so never enters affectlab's environment:
the reference runs in another interpreter, named by ``AFFECTLAB_MEDIAPIPE_PYTHON`` (a venv
with ``pip install mediapipe``; ``.ci/run`` makes one). Skipped when it is unset or when
``../shared`` is absent.

The two differ in one documented way: MediaPipe crops around its own BlazeFace detection,
affectlab around YuNet's keypoints, so the 256-pixel crops are not the same pixels.
Tolerances (measured here on these 20 faces: mean error 0.0064 inter-ocular distances, worst
face 0.010; blendshapes mean |diff| 0.013, worst 0.20; pose within 1.2 deg yaw, 0.9 roll,
3.9 pitch); the constants below leave about a factor two.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED

#: mean landmark error over all faces, in inter-ocular distances (outer eye corners 33-263)
MEAN_NME = 0.012
#: the worst face's mean landmark error
MAX_NME = 0.025
#: mean and largest absolute blendshape difference
MEAN_BS = 0.03
MAX_BS = 0.4
#: head pose (degrees): yaw and roll; pitch differs more (MediaPipe fits a perspective camera)
MAX_YAW_ROLL = 3.0
MAX_PITCH = 6.0

HERE = Path(__file__).resolve().parent


@pytest.mark.realdata
def test_landmarks_and_blendshapes_match_mediapipe(assets_home, tmp_path):
    import cv2

    from affectlab.perception.landmarks import FaceLandmarker
    from affectlab.perception.pose import GEOMETRY_MEMBER, HeadPose, euler_from_rotations
    from affectlab.runtime.assets import asset_path

    python = os.environ.get("AFFECTLAB_MEDIAPIPE_PYTHON")
    if not python:
        pytest.skip("AFFECTLAB_MEDIAPIPE_PYTHON (an interpreter with mediapipe) is not set")
    images = SHARED / "data" / "london" / "images"
    if not images.is_dir():
        pytest.skip(f"real faces not found at {images}")
    paths = [images / f"{i:03d}_{k}.jpg" for i in range(1, 11) for k in ("neutral", "smiling")]
    bundle = asset_path("face-landmarker")
    out = tmp_path / "ref.npz"
    subprocess.run([python, str(HERE / "mediapipe_reference.py"), str(bundle), str(out), *map(str, paths)],
                   check=True, capture_output=True, timeout=600)
    ref = np.load(out)
    assert ref["found"].all()

    landmarker = FaceLandmarker()
    pose = HeadPose(landmarker.members[GEOMETRY_MEMBER])
    yunet = cv2.FaceDetectorYN.create(str(asset_path("yunet")), "", (320, 320), 0.6, 0.3, 50)
    nme, bs_diff, ypr_diff = [], [], []
    for p, ref_lm, ref_bs, ref_m in zip(paths, ref["landmarks"], ref["blendshapes"], ref["matrices"]):
        rgb = np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1])
        yunet.setInputSize((rgb.shape[1], rgb.shape[0]))
        _, f = yunet.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        f = f[np.argmax(f[:, -1])]
        res = landmarker(rgb, f[None, :4], f[None, 4:14].reshape(1, 5, 2))
        iod = np.linalg.norm(ref_lm[33, :2] - ref_lm[263, :2])
        nme.append(np.linalg.norm(res.landmarks[0, :, :2] - ref_lm[:, :2], axis=1).mean() / iod)
        bs_diff.append(np.abs(res.blendshapes[0] - ref_bs))
        ypr_diff.append(pose(res.landmarks)[0] - euler_from_rotations(ref_m[None, :3, :3])[0])
    nme, bs_diff, ypr_diff = np.array(nme), np.array(bs_diff), np.abs(np.array(ypr_diff))
    summary = (f"landmarks NME mean {nme.mean():.4f} max {nme.max():.4f}; blendshapes |diff| mean "
               f"{bs_diff.mean():.4f} max {bs_diff.max():.3f}; pose |diff| max yaw {ypr_diff[:, 0].max():.2f} "
               f"pitch {ypr_diff[:, 1].max():.2f} roll {ypr_diff[:, 2].max():.2f}")
    print(summary, file=sys.stderr)
    assert nme.mean() < MEAN_NME and nme.max() < MAX_NME, summary
    assert bs_diff.mean() < MEAN_BS and bs_diff.max() < MAX_BS, summary
    assert ypr_diff[:, [0, 2]].max() < MAX_YAW_ROLL and ypr_diff[:, 1].max() < MAX_PITCH, summary
