"""Face detectors (registry, Haar, none), box merging, cropping and IoU tracking."""

import numpy as np
import pytest

from affectlab.perception.detectors import (
    HaarDetector,
    available_detectors,
    create_detector,
    iou_matrix,
    merge_boxes,
    register_detector,
)
from affectlab.analyze.tracking import IoUTracker
from affectlab.errors import ConfigError
from affectlab.perception.align import crop_faces
from analyze_media import FACES


def test_iou_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]])
    # overlap 5x10 = 50, union 150
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0.0, 1.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_merge_keeps_the_surest_of_overlapping_boxes_and_drops_nested_ones():
    boxes = np.array([
        [0, 0, 100, 100, 0.6],
        [5, 5, 100, 100, 0.9],     # overlaps the first: kept instead of it
        [30, 30, 20, 20, 0.5],     # inside the kept box
        [300, 300, 50, 50, 0.4],   # elsewhere
    ])
    out = merge_boxes(boxes)
    np.testing.assert_array_equal(out[:, 4], [0.9, 0.4])


def test_registry_none_and_plugins():
    assert {"haar", "none"} <= set(available_detectors())
    whole = create_detector("none")
    np.testing.assert_array_equal(whole(np.zeros((30, 40, 3), np.uint8)), [[0, 0, 40, 30, 1.0]])
    with pytest.raises(ConfigError, match="unknown face detector 'nope'"):
        create_detector("nope")

    @register_detector("test-fixed")
    def _fixed(box=(1, 2, 3, 4)):
        return lambda image: np.array([[*box, 0.5]])

    assert create_detector("test-fixed", box=(5, 6, 7, 8))(np.zeros((9, 9, 3), np.uint8)).tolist() == [[5, 6, 7, 8, 0.5]]
    with pytest.raises(ConfigError, match="already registered"):
        register_detector("test-fixed")(lambda: None)


def test_haar_rejects_bad_settings():
    with pytest.raises(ConfigError, match="min_face"):
        HaarDetector(min_face=2)
    with pytest.raises(ConfigError, match="profile"):
        HaarDetector(profile="sometimes")


def test_haar_finds_nothing_in_a_blank_frame():
    assert len(HaarDetector()(np.full((480, 640, 3), 127, np.uint8))) == 0


@pytest.mark.realdata
@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data is absent")
def test_haar_finds_a_real_face_on_a_large_frame_at_full_resolution_coordinates():
    from PIL import Image

    name = sorted(p for p in FACES.iterdir() if p.suffix == ".jpg")[0]
    face = np.asarray(Image.open(name).convert("RGB").resize((200, 200)))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[300:500, 700:900] = face
    boxes = HaarDetector()(frame)
    assert len(boxes) >= 1
    x, y, w, h, s = boxes[np.argmax(boxes[:, 4])]
    # detection ran on a 320-wide copy; the box is back in 1280x720 coordinates on the photo
    assert 680 <= x <= 800 and 280 <= y <= 400 and 60 <= w <= 220 and 0 < s <= 1


def test_crops_are_square_resized_and_padded():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255
    (crop,) = crop_faces(img, np.array([[90, 40, 20, 20, 1.0]]), 32, margin=0.0)
    assert crop.shape == (32, 32, 3) and crop.min() == 255
    # a face at the corner: the square crop is padded, the face stays centred
    (edge,) = crop_faces(img, np.array([[0, 0, 20, 40, 1.0]]), 16, margin=0.2)
    assert edge.shape == (16, 16, 3)
    assert crop_faces(img, np.zeros((0, 5)), 16) == []


def test_tracker_keeps_ids_through_motion_gaps_and_crossings():
    tr = IoUTracker(iou_threshold=0.3, max_age=2)
    a, b = np.array([0.0, 0, 50, 50]), np.array([200.0, 0, 50, 50])
    assert tr.update(np.stack([a, b])).tolist() == [0, 1]
    # both move a little, given in the other order: ids follow the boxes
    assert tr.update(np.stack([b + [5, 0, 0, 0], a + [5, 0, 0, 0]])).tolist() == [1, 0]
    # face 1 missed for two frames, then back: same id
    assert tr.update(np.stack([a + [10, 0, 0, 0]])).tolist() == [0]
    assert tr.update(np.stack([a + [15, 0, 0, 0]])).tolist() == [0]
    assert tr.update(np.stack([a + [20, 0, 0, 0], b + [5, 0, 0, 0]])).tolist() == [0, 1]
    # gone for longer than max_age: its id ends and is not reused
    for _ in range(3):
        tr.update(np.stack([a + [20, 0, 0, 0]]))
    assert 1 in tr.ended or 1 not in tr.active
    assert tr.update(np.stack([a + [20, 0, 0, 0], b])).tolist() == [0, 2]
    assert tr.update(np.zeros((0, 5))).tolist() == []
