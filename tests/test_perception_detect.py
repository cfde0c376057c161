"""YuNet detection, the detector contract, aligned framing and the Haar fallback.

Real faces come from ``../shared/data`` and the YuNet file from ``../shared/models``;
tests that need them skip cleanly when they are absent. The hard and easy detection sets
are built at test time (``tests/detect_sets.py``) and never saved.
"""

import warnings

import numpy as np
import pytest

import detect_sets
from affectlab.errors import ConfigError, ModelError
from affectlab.perception.align import Framing, aligned_crop, alignment_matrix, frame_faces
from affectlab.perception.detectors import Faces, as_faces, create_detector, iou_matrix, register_detector

YUNET = detect_sets.YUNET
needs_yunet = pytest.mark.skipif(not YUNET.is_file(), reason="../shared/models (YuNet) is absent")
needs_faces = pytest.mark.skipif(not detect_sets.available(), reason="../shared/data or ../shared/models is absent")


@pytest.fixture(scope="module")
def yunet():
    if not YUNET.is_file():
        pytest.skip("../shared/models (YuNet) is absent")
    return create_detector("yunet", model=YUNET)


@pytest.fixture(scope="module")
def leveled():
    """YuNet as an aligned-framing model gets it: tilted faces re-detected upright."""
    if not YUNET.is_file():
        pytest.skip("../shared/models (YuNet) is absent")
    det = create_detector("yunet", model=YUNET)
    det.level_keypoints()
    return det


def _london(name="001_neutral.jpg"):
    return detect_sets._read(detect_sets.LONDON / name)


def _rotate(image, degrees, canvas=(480, 640)):
    """``image`` rotated about its centre by ``degrees`` (counter-clockwise) on a grey canvas."""
    import cv2

    h, w = canvas
    out = np.full((h, w, 3), 120, np.uint8)
    k = min(h, w) * 0.8 / max(image.shape[:2])
    small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    out[y0 : y0 + sh, x0 : x0 + sw] = small
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(out, m, (w, h), borderValue=(120, 120, 120))


def _eye_angle(keypoints) -> float:
    d = keypoints[1] - keypoints[0]
    return float(np.degrees(np.arctan2(d[1], d[0])))


# ----------------------------------------------------------------------- contract
def test_faces_result_and_array_layouts():
    kp = np.arange(10, dtype=float).reshape(1, 5, 2)
    faces = Faces([[1, 2, 30, 40, 0.9]], kp)
    arr = faces.to_array()
    assert arr.shape == (1, 15) and arr[0, 4] == 0.9 and arr[0, 5:].tolist() == list(range(10))
    back = as_faces(arr)
    np.testing.assert_array_equal(back.keypoints, kp)
    assert as_faces(np.array([[1, 2, 3, 4, 0.5]])).keypoints is None
    assert len(as_faces(np.zeros((0, 5)))) == 0
    with pytest.raises(ConfigError, match=r"\[N, 5\].*\[N, 15\].*shape \(2, 7\)"):
        as_faces(np.zeros((2, 7)))
    with pytest.raises(ConfigError, match="keypoints must be"):
        Faces([[1, 2, 3, 4, 1]], np.zeros((2, 5, 2)))


def test_plugin_detector_with_keypoints_drives_aligned_framing():
    """A registered detector returning [N, 15] rows gets aligned crops: the plug-in contract."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[40:44, 30:34] = 255  # a bright "right eye" where the keypoint says

    @register_detector("test-keypoints")
    def _make():
        def detect(img):
            return np.array([[20, 20, 60, 60, 0.9, 32, 42, 68, 42, 50, 55, 38, 70, 62, 70]])

        return detect

    faces = as_faces(create_detector("test-keypoints")(image))
    (crop,) = frame_faces(image, faces, 64, {"kind": "aligned", "scale": 1.0})
    m = alignment_matrix(faces.keypoints[0], 64, 1.0)
    eye = m[:, :2] @ faces.keypoints[0, 0] + m[:, 2]
    assert crop[int(round(eye[1])), int(round(eye[0]))].max() == 255
    # same detector through the box framing: a plain square crop of the box
    (box,) = frame_faces(image, faces, 60, {"kind": "box", "margin": 0.0})
    np.testing.assert_array_equal(box, image[20:80, 20:80])


def test_framing_spec_validation():
    assert Framing.from_dict(None, margin=0.3) == Framing("box", margin=0.3)
    assert Framing.from_dict({"kind": "aligned"}).to_dict() == {"kind": "aligned", "scale": 0.8, "margin": 0.2}
    with pytest.raises(ConfigError, match="framing kind"):
        Framing.from_dict({"kind": "tight"})
    with pytest.raises(ConfigError, match="unknown framing keys"):
        Framing.from_dict({"kind": "box", "pad": 1})
    with pytest.raises(ConfigError, match="framing scale"):
        Framing.from_dict({"kind": "aligned", "scale": -1})


def test_yunet_needs_its_file(tmp_path):
    with pytest.raises(ConfigError, match="needs its model file"):
        create_detector("yunet")
    with pytest.raises(ModelError, match="not found.*affectlab models fetch yunet"):
        create_detector("yunet", model=tmp_path / "nope.onnx")
    bad = tmp_path / "face_detection_yunet_2023mar.onnx"
    bad.write_bytes(b"not an onnx file" * 100)
    with pytest.raises(ModelError, match=f"{bad}.*damaged"):
        create_detector("yunet", model=bad)
    with pytest.raises(ConfigError, match="score_threshold"):
        create_detector("yunet", model=bad, score_threshold=2)


# ----------------------------------------------------------------------- YuNet
@needs_yunet
def test_yunet_finds_synthetic_faces_at_any_frame_size(yunet):
    from affectlab.data.synth import sample_batch

    for size in (64, 112):
        images, _ = sample_batch(8, seed=3, size=size)
        for im in images:
            faces = yunet(im)
            assert len(faces) == 1 and faces.keypoints.shape == (1, 5, 2)
            x, y, w, h, s = faces.boxes[0]
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size and 0.7 <= s <= 1
            # a frontal synthetic face: the subject's right eye is on the image's left, above the mouth
            kp = faces.keypoints[0]
            assert kp[0, 0] < kp[1, 0] and kp[4, 0] > kp[3, 0] and kp[2, 1] < kp[3, 1]
    # the same face in a larger frame of another shape: found where it was pasted
    frame = np.full((240, 320, 3), 90, np.uint8)
    frame[50:162, 150:262] = images[0]
    faces = yunet(frame)
    assert len(faces) == 1
    assert iou_matrix(faces.boxes, yunet(images[0]).boxes + [150, 50, 0, 0, 0])[0, 0] > 0.8


@needs_faces
def test_yunet_on_real_faces_keypoint_order_and_mirror(yunet):
    for name in ("001_neutral.jpg", "002_smiling.jpg", "010_neutral.jpg"):
        image = _london(name)
        faces = yunet(image)
        assert len(faces) == 1
        kp = faces.keypoints[0]
        eye_dist = np.hypot(*(kp[1] - kp[0]))
        assert kp[0, 0] < kp[2, 0] < kp[1, 0], "right eye, nose, left eye from the image's left"
        assert kp[3, 0] < kp[4, 0] and kp[2, 1] < min(kp[3, 1], kp[4, 1])
        assert abs(_eye_angle(kp)) < 8  # frontal, upright photographs
        mirrored = yunet(np.ascontiguousarray(image[:, ::-1]))
        expected = faces.mirrored(image.shape[1])
        # the mirror swaps the subject's sides: its right eye is the original left eye, mirrored
        # (YuNet is not exactly mirror-symmetric: its keypoints move by up to ~0.15 eye distances)
        np.testing.assert_allclose(mirrored.keypoints, expected.keypoints, atol=0.2 * eye_dist)
        unswapped = expected.keypoints[:, [1, 0, 2, 4, 3]]
        assert np.abs(mirrored.keypoints - expected.keypoints).sum() < np.abs(mirrored.keypoints - unswapped).sum()
        assert iou_matrix(mirrored.boxes, expected.boxes)[0, 0] > 0.9


def _turn(keypoints) -> float:
    """The in-plane rotation (degrees) the aligned crop applies to a face."""
    m = alignment_matrix(keypoints, 192)
    return float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


@needs_faces
def test_aligned_crop_levels_the_eyes_of_a_rotated_real_face(leveled, yunet):
    """Faces rotated in-plane by known angles give crops with their eyes turned level.

    The crop of a face rotated by ``a`` must undo exactly ``a`` more than the crop of the
    same face upright (then its eyes are as level as in the upright photograph). YuNet's
    keypoints are noisy at the degree level (about 2 px of a 100 px eye distance), which
    bounds this; measured on 10 London faces x 11 angles in [-40, 40]: mean error 0.9
    degrees, 90 % within 2.2, worst 3.6. Without the upright re-detection the error
    grows with the angle (20 degrees at 40).
    """
    angles = np.array([-40, -30, -16, -8, -4, 4, 8, 16, 30, 40])
    errors = []
    for name in ("001_neutral.jpg", "009_neutral.jpg", "020_smiling.jpg", "033_neutral.jpg"):
        image = _london(name)
        upright = _turn(leveled(_rotate(image, 0)).keypoints[0])
        for a in angles:
            faces = leveled(_rotate(image, a))
            assert len(faces) == 1
            # cv2 turns counter-clockwise on screen; undoing it turns by +a in alignment_matrix's terms
            errors.append(_turn(faces.keypoints[0]) - upright - a)
    errors = np.abs(errors)
    assert np.median(errors) < 1.5 and np.percentile(errors, 90) < 2.5 and errors.max() < 5, np.round(errors, 1)
    # and the crop itself: YuNet run again on it finds the eyes level, where the template puts them
    frame = _rotate(_london("009_neutral.jpg"), 30)
    crop = aligned_crop(frame, leveled(frame).keypoints[0], 192, scale=0.8)
    again = yunet(crop)
    assert len(again) == 1 and abs(_eye_angle(again.keypoints[0])) < 3
    template = (0.5 + (np.array([[0.3418, 0.4608], [0.6582, 0.4608]]) - 0.5) * 0.8) * 192
    np.testing.assert_allclose(again.keypoints[0, :2], template, atol=0.05 * 192)
    # the upright re-detection matters: plain YuNet keypoints turn the crop too little
    assert abs(_turn(yunet(frame).keypoints[0]) - _turn(leveled(frame).keypoints[0])) > 5


@needs_faces
def test_ten_faces_in_one_frame(yunet):
    import cv2

    frame = np.full((480, 640, 3), 60, np.uint8)
    names = [f"{i:03d}_{'neutral' if i % 2 else 'smiling'}.jpg" for i in range(1, 11)]
    truth = []
    for k, name in enumerate(names):
        tile = cv2.resize(_london(name), (120, 120), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, 5)
        y, x = 40 + r * 220, 8 + c * 126
        frame[y : y + 120, x : x + 120] = tile
        truth.append([x + 30, y + 25, 60, 75])
    faces = yunet(frame)
    assert len(faces) == 10
    assert (iou_matrix(np.array(truth), faces.boxes).max(axis=1) > 0.3).all()
    assert len(frame_faces(frame, faces, 64, {"kind": "aligned"})) == 10


@needs_faces
def test_tiny_faces(yunet):
    import cv2

    image = _london("005_neutral.jpg")
    box = yunet(image).boxes[0]
    for side in (16, 24):
        k = side / max(box[2], box[3])
        small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        frame = np.full((480, 640, 3), 128, np.uint8)
        frame[200 : 200 + small.shape[0], 300 : 300 + small.shape[1]] = small
        faces = yunet(frame)
        assert len(faces) == 1 and max(faces.boxes[0, 2:4]) < 2 * side
        # an aligned crop of a tiny face is still the model's input size
        (crop,) = frame_faces(frame, faces, 64, {"kind": "aligned"})
        assert crop.shape == (64, 64, 3)
    # a tiny image that is all face: upscaled before detection, so found
    k = 12 / max(box[2], box[3])
    alone = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    assert len(yunet(alone)) == 1
    assert len(create_detector("yunet", model=YUNET, upscale_below=0)(alone)) == 0


@needs_faces
def test_hard_set_recall_and_false_boxes(yunet):
    """The figure of issue 13: recall >= 0.9 at IoU >= 0.4 with at most 1 false box.

    Plain YuNet misses some strongly rotated faces; the rotated re-try finds them. (The
    Haar baseline is measured in ``benchmarks/bench_detect.py``: too slow for a test.)
    """
    hard = detect_sets.hard_set()
    assert len(hard.frames) == 150 and hard.frames[0].shape == (480, 640, 3)
    assert hard.sizes.min() >= 48 and hard.sizes.max() <= 260 and np.abs(hard.angles).max() <= 40
    got = detect_sets.score([yunet(f).boxes for f in hard.frames], hard.truth)
    assert got["recall"] >= 0.9 and got["false"] <= 1, got
    plain = create_detector("yunet", model=YUNET, retry_angles=())
    base = detect_sets.score([plain(f).boxes for f in hard.frames], hard.truth)
    assert base["false"] <= 1 and base["found"] < got["found"], base
    assert np.abs(hard.angles[base["missed"]]).min() > 15  # what plain YuNet misses is rotated
    # the default searches a 320-px copy first; full resolution throughout finds the same faces
    full = create_detector("yunet", model=YUNET, detect_size=0)
    boxes = [full(f).boxes for f in hard.frames]
    slow = detect_sets.score(boxes, hard.truth)
    assert slow["recall"] >= 0.9 and slow["false"] <= 1, slow
    same = [iou_matrix(a, yunet(f).boxes).max() for a, f in zip(boxes[:20], hard.frames) if len(a)]
    assert np.median(same) > 0.85, np.round(same, 2)
    with pytest.raises(ConfigError, match="detect_size must be 0"):
        create_detector("yunet", model=YUNET, detect_size=32)


# ----------------------------------------------------------------------- default and fallback
def test_auto_falls_back_to_haar_with_one_notice(tmp_path):
    import cv2

    from affectlab.analyze.api import AnalyzeNotice, analyze
    from affectlab.runtime.detection import HAAR_FALLBACK_NOTICE, reset_notices
    from analyze_media import untrained_predictor

    reset_notices()
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two runs of three images each: said once
            table = analyze(tmp_path, untrained_predictor(), progress=False)
    notes = [w for w in caught if issubclass(w.category, AnalyzeNotice) and "yunet" in str(w.message).lower()]
    # the empty home lacks the landmarker too: one notice names both (analyze.defaults.missing_assets_notice)
    assert len(notes) == 1 and "affectlab models fetch yunet face-landmarker" in str(notes[0].message)
    assert "\n" not in HAAR_FALLBACK_NOTICE and "affectlab models fetch yunet" in HAAR_FALLBACK_NOTICE
    assert table.model_info["detector"] == "haar"


def test_explicit_yunet_without_its_asset_names_it(tmp_path):
    import cv2

    from affectlab.analyze.api import analyze
    from affectlab.runtime.assets import AssetMissingError

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(AssetMissingError, match="'yunet'.*face_detection_yunet_2023mar.onnx.*affectlab models add"):
        analyze(tmp_path, None, detector="yunet", progress=False)


def test_damaged_asset_is_refused(tmp_path, monkeypatch):
    from affectlab.runtime.assets import AssetMissingError, asset_file
    from affectlab.runtime.detection import resolve_detector, reset_notices

    path = asset_file("yunet")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(AssetMissingError, match="yunet.*damaged"):
        resolve_detector("yunet")
    reset_notices()
    det, name, note = resolve_detector("auto")  # a damaged copy is not "present": Haar, with the notice
    assert name == "haar" and note is not None


@needs_yunet
def test_auto_is_yunet_when_the_asset_is_present(assets_home):
    from affectlab.runtime.detection import resolve_detector

    det, name, note = resolve_detector("auto")
    assert name == "yunet" and note is None
    faces = det(np.zeros((120, 160, 3), np.uint8))
    assert isinstance(faces, Faces) and len(faces) == 0


@needs_yunet
def test_aligned_framing_turns_on_level_keypoints(yunet):
    from affectlab.analyze.pipeline import Analyzer

    det = create_detector("yunet", model=YUNET)
    Analyzer(None, det, framing={"kind": "box"})
    assert det.refine_above == 0  # box framing: no extra cost
    Analyzer(None, det, framing={"kind": "aligned"})
    assert det.refine_above > 0
