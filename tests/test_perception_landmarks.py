"""MediaPipe landmarks, blendshapes, head pose and AUs run with LiteRT (affectlab.perception)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from affectlab.errors import ConfigError
from affectlab.perception import au as au_mod
from affectlab.perception import landmarks as lmk
from affectlab.perception import pose as pose_mod

from conftest import SHARED

LONDON = SHARED / "data" / "london" / "images"


@pytest.fixture(scope="session")
def models(assets_home_session):
    """The landmarker, the head-pose fit and a YuNet detector, loaded once."""
    import cv2

    from affectlab.runtime.assets import asset_path

    landmarker = lmk.FaceLandmarker()
    pose = pose_mod.HeadPose(landmarker.members[pose_mod.GEOMETRY_MEMBER])
    yunet = cv2.FaceDetectorYN.create(str(asset_path("yunet")), "", (320, 320), 0.6, 0.3, 50)
    return landmarker, pose, yunet


def _faces(yunet, image: np.ndarray):
    """YuNet boxes [N, 4] and keypoints [N, 5, 2] of an RGB image, left to right."""
    yunet.setInputSize((image.shape[1], image.shape[0]))
    _, f = yunet.detect(np.ascontiguousarray(image[:, :, ::-1]))
    if f is None:
        return np.zeros((0, 4)), np.zeros((0, 5, 2))
    f = f[np.argsort(f[:, 0])]
    return f[:, :4].astype(np.float64), f[:, 4:14].reshape(-1, 5, 2).astype(np.float64)


def _london(name: str) -> np.ndarray:
    import cv2

    path = LONDON / name
    if not path.exists():
        pytest.skip(f"real faces not found at {LONDON}")
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


# -- no real data needed ------------------------------------------------------------------


def test_damaged_bundle_is_refused_by_name(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match="face_landmarker.task: not a readable"):
        lmk.read_bundle(bad)
    partial = tmp_path / "partial.task"
    with zipfile.ZipFile(partial, "w") as z:
        z.writestr("face_detector.tflite", b"x")
    with pytest.raises(ConfigError, match="lacks face_landmarks_detector.tflite, face_blendshapes.tflite"):
        lmk.read_bundle(partial)


def test_first_use_offline_names_the_asset():
    # the per-test home is empty and offline (conftest): the landmarker says what is missing
    from affectlab.runtime.assets import AssetMissingError

    with pytest.raises(AssetMissingError, match="face-landmarker"):
        lmk.FaceLandmarker()


def test_blendshape_subset_is_mediapipes():
    assert len(lmk.BLENDSHAPE_SUBSET) == 146 and len(set(lmk.BLENDSHAPE_SUBSET)) == 146
    assert lmk.BLENDSHAPE_SUBSET.max() == 477 and np.all(np.diff(lmk.BLENDSHAPE_SUBSET) > 0)
    assert len(lmk.BLENDSHAPE_NAMES) == 52 and lmk.BLENDSHAPE_NAMES[25] == "jawOpen"


def test_roi_follows_the_eye_line():
    # keypoints of an upright face, then the same face rotated 30 degrees clockwise on screen
    kp = np.array([[40.0, 50], [80, 50], [60, 70], [45, 90], [75, 90]])
    boxes = np.array([[30.0, 30, 60, 80]])
    roi = lmk.roi_from_faces(boxes, kp[None])[0]
    assert roi[3] == pytest.approx(0.0)
    assert roi[2] == pytest.approx(lmk.ROI_SCALE * 40.0)
    t = np.radians(30)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    roi_r = lmk.roi_from_faces(boxes, ((kp - 60) @ rot.T + 60)[None])[0]
    assert roi_r[3] == pytest.approx(t)
    assert roi_r[2] == pytest.approx(roi[2])
    # crop pixel centres map back onto the ROI: the crop centre is the ROI centre
    m = lmk.roi_matrix(roi_r)
    centre = m[:, :2] @ np.array([127.5, 127.5]) + m[:, 2]
    np.testing.assert_allclose(centre, roi_r[:2], atol=1e-9)


def test_pose_of_the_rotated_canonical_face_is_exact(tmp_path):
    from scipy.spatial.transform import Rotation

    pytest.importorskip("ai_edge_litert")
    bundle = SHARED / "models" / "face_landmarker.task"
    if not bundle.exists():
        pytest.skip(f"{bundle} not found")
    with zipfile.ZipFile(bundle) as z:
        hp = pose_mod.HeadPose(z.read(pose_mod.GEOMETRY_MEMBER))
    faces = []
    truth = [(25.0, -10.0, 5.0), (-40.0, 15.0, -20.0), (0.0, 0.0, 60.0)]
    for yaw, pitch, roll in truth:
        r = Rotation.from_euler("YXZ", np.radians([yaw, -pitch, roll])).as_matrix()
        cam = hp.canonical @ r.T * 9.0 + np.array([300.0, 200.0, 0.0])
        img = cam * np.array([1.0, -1.0, -1.0])  # camera frame -> image x, y down, z away
        faces.append(np.concatenate([img, np.zeros((10, 3))]))  # 478 rows, iris unused
    np.testing.assert_allclose(hp(np.array(faces)), np.array(truth), atol=1e-6)
    assert np.isnan(hp(np.full((1, 478, 3), np.nan))).all()


def test_au_probabilities_are_calibrated_monotone_and_nan_safe():
    assert set(au_mod.CALIBRATION) == set(au_mod.AUS)
    n = 5
    bs = np.zeros((n, 52))
    j = lmk.BLENDSHAPE_NAMES.index("mouthSmileLeft"), lmk.BLENDSHAPE_NAMES.index("mouthSmileRight")
    bs[:, j[0]] = bs[:, j[1]] = np.linspace(0, 1, n)
    lm = np.random.default_rng(0).normal(size=(n, 478, 3))
    p = au_mod.au_probabilities(bs, lm)
    k = au_mod.AUS.index("AU12")
    assert np.all(np.diff(p[:, k]) > 0) and p[0, k] < 0.05 and p[-1, k] > 0.95
    nan = au_mod.au_probabilities(np.full((1, 52), np.nan), np.full((1, 478, 3), np.nan))
    assert np.isnan(nan).all()
    # the threshold sits at the neutral faces' 95th percentile
    med, q95 = au_mod.CALIBRATION["AU12"]
    bs1 = np.zeros((1, 52))
    bs1[0, list(j)] = q95
    assert au_mod.au_probabilities(bs1, lm[:1])[0, k] == pytest.approx(au_mod.AU_THRESHOLD)


# -- real faces ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_landmarks_blendshapes_and_aus_on_real_faces(models):
    landmarker, _pose, yunet = models
    smile_wins = 0
    pairs = ("001", "002", "003", "004", "005", "006")
    for sid in pairs:
        out = {}
        for kind in ("neutral", "smiling"):
            image = _london(f"{sid}_{kind}.jpg")
            boxes, kps = _faces(yunet, image)
            assert len(boxes) == 1
            res = landmarker(image, boxes, kps)
            assert res.ok.all() and res.presence[0] > 0.9
            x, y, w, h = boxes[0]
            xy = res.landmarks[0, :, :2]
            # the mesh lies on the face: the nose tip (1) inside the box, the chin (152) near its bottom
            assert x < xy[1, 0] < x + w and y < xy[1, 1] < y + h
            assert abs(xy[152, 1] - (y + h)) < 0.2 * h
            assert np.all((res.blendshapes >= 0) & (res.blendshapes <= 1))
            out[kind] = au_mod.au_probabilities(res.blendshapes, res.landmarks)[0]
        k = au_mod.AUS.index("AU12")
        smile_wins += out["smiling"][k] > out["neutral"][k]
    assert smile_wins == len(pairs)


@pytest.mark.realdata
def test_in_plane_rotation_gives_roll_and_mirror_flips_yaw(models):
    import cv2

    landmarker, pose, yunet = models
    for sid in ("001", "002", "007"):
        image = _london(f"{sid}_neutral.jpg")
        base = pose(landmarker(image, *_faces(yunet, image)).landmarks)[0]
        for angle in (-35.0, -15.0, 20.0, 40.0):
            m = cv2.getRotationMatrix2D((256.0, 256.0), angle, 1.0)  # counter-clockwise on screen
            rotated = cv2.warpAffine(image, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
            boxes, kps = _faces(yunet, rotated)
            ypr = pose(landmarker(rotated, boxes, kps).landmarks)[0]
            assert abs(ypr[2] - base[2] - angle) < 3.0, (sid, angle, ypr, base)
        mirrored = np.ascontiguousarray(image[:, ::-1])
        ypr_m = pose(landmarker(mirrored, *_faces(yunet, mirrored)).landmarks)[0]
        assert abs(base[0]) > 1.0 and np.sign(ypr_m[0]) == -np.sign(base[0]), (sid, base, ypr_m)
        assert abs(ypr_m[0] + base[0]) < 2.5 and abs(ypr_m[1] - base[1]) < 2.5


@pytest.mark.realdata
def test_tiny_profile_and_non_faces_get_nan_landmarks(models):
    import cv2

    landmarker, _pose, yunet = models
    image = _london("001_neutral.jpg")
    boxes, kps = _faces(yunet, image)
    # too small: a 13-pixel face
    s = 0.06
    tiny = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    res = landmarker(tiny, boxes * s, kps * s)
    assert not res.ok.any() and np.isnan(res.presence).all() and np.isnan(res.landmarks).all()
    # edge-on: the face foreshortened to a quarter of its width, as a head turned ~75 degrees
    # looks (../shared has no profile photographs); and a box on the plain background
    edge = cv2.resize(image, None, fx=0.25, fy=1.0)
    res = landmarker(edge, np.vstack([boxes * [0.25, 1, 0.25, 1], [[0, 0, 40, 120]]]))
    assert not res.ok.any() and (res.presence < lmk.PRESENCE_THRESHOLD).all()
    assert np.isnan(res.landmarks).all() and np.isnan(res.blendshapes).all()


@pytest.mark.realdata
def test_ten_faces_in_one_frame_batch_like_one_by_one(models):
    import cv2

    landmarker, _pose, yunet = models
    frame = np.full((560, 1400, 3), 200, np.uint8)
    for i in range(10):
        face = cv2.resize(_london(f"{i + 1:03d}_smiling.jpg"), (256, 256))
        r, c = divmod(i, 5)
        frame[20 + r * 270 : 276 + r * 270, 20 + c * 275 : 276 + c * 275] = face
    boxes, kps = _faces(yunet, frame)
    assert len(boxes) == 10
    both = landmarker(frame, boxes, kps)  # two calls of the mesh network (max_batch 8)
    assert both.ok.all()
    for i in (0, 9):
        one = landmarker(frame, boxes[i : i + 1], kps[i : i + 1])
        np.testing.assert_allclose(both.landmarks[i], one.landmarks[0], atol=1e-3)
        np.testing.assert_allclose(both.blendshapes[i], one.blendshapes[0], atol=1e-5)
