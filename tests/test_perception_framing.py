"""One framing everywhere: dataset photographs are cropped as ``analyze`` crops them.

The agreement test runs ``evaluate --detect-faces`` and ``analyze`` on the same real
photographs (``../shared/data/london``, 20 people neutral and smiling; skipped without
``../shared``) and compares the predictions image by image.
"""

import os
import pickle

import numpy as np
import pandas as pd
import pytest

import detect_sets
from affectlab.errors import ConfigError
from affectlab.features.backbones import Preprocessing
from affectlab.perception.align import frame_faces
from affectlab.perception.detectors import Faces
from affectlab.perception.framing import FaceFramer

needs_faces = pytest.mark.skipif(not detect_sets.available(), reason="../shared/data or ../shared/models is absent")


class CountingDetector:
    """A fixed detector that counts its calls (the cache must spare them)."""

    def __init__(self, faces):
        self.faces, self.calls = faces, 0

    def __call__(self, image):
        self.calls += 1
        return self.faces


def test_preprocessing_carries_a_framing():
    pre = Preprocessing.from_dict({"input_size": 64, "framing": {"kind": "aligned", "scale": 0.9}})
    assert pre.to_dict()["framing"] == {"kind": "aligned", "scale": 0.9}
    assert "framing" not in Preprocessing(input_size=64).to_dict()  # old model files compare equal
    with pytest.raises(ConfigError, match="framing must be a mapping with kind"):
        Preprocessing.from_dict({"input_size": 64, "framing": {"kind": "tight"}})


def test_framer_caches_per_key_chooses_the_largest_face_and_pickles_without_detector():
    image = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    faces = Faces([[5, 5, 20, 20, 0.99], [40, 30, 50, 50, 0.8]])
    det = CountingDetector(faces)
    framer = FaceFramer(det, {"kind": "box", "margin": 0.0}, 32)
    crop = framer(image, "a.jpg")
    np.testing.assert_array_equal(crop, frame_faces(image, faces[1], 32, {"kind": "box", "margin": 0.0})[0])
    framer(image, "a.jpg")
    assert det.calls == 1  # the second epoch does not detect again
    # a row's own face box picks the detected face over it
    np.testing.assert_array_equal(framer(image, "b.jpg", (4, 6, 22, 19)), frame_faces(image, faces[0], 32, {"kind": "box", "margin": 0.0})[0])
    # no face: the whole image, counted
    empty = FaceFramer(CountingDetector(Faces(np.zeros((0, 5)))), None, 32)
    assert empty(image, "c.jpg") is image and empty.missed == {"c.jpg"}
    copy = pickle.loads(pickle.dumps(framer))  # what a DataLoader worker gets
    assert copy.detector is None
    np.testing.assert_array_equal(copy(image, "a.jpg"), crop)
    with pytest.raises(ConfigError, match="new.jpg: no cached face.*prepare"):
        copy(image, "new.jpg")


def test_dataset_framer_replaces_the_box_crop(tmp_path):
    import cv2

    from affectlab.data.datasets import load_dataset
    from affectlab.runtime.framing import set_framing

    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 255, (80, 90, 3), dtype=np.uint8))
    pd.DataFrame({"path": [f"{i}.png" for i in range(3)], "expression": ["neutral", "happiness", "neutral"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    ds = load_dataset(f"manifest:{tmp_path / 'labels.csv'}")
    det = CountingDetector(Faces([[10, 10, 40, 40, 0.9]], np.array([[[20, 25], [40, 25], [30, 35], [22, 42], [38, 42]]])))
    framer = set_framing(ds, {"input_size": 48, "framing": {"kind": "aligned"}}, detector=det)
    assert det.calls == 3 and framer.cached == 3  # detected once, when the step is set up
    for i in range(3):
        image = ds.read_rgb(i)
        assert image.shape == (48, 48, 3)
        raw = cv2.cvtColor(cv2.imread(str(tmp_path / f"{i}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(image, frame_faces(raw, det.faces, 48, {"kind": "aligned"})[0])
    assert det.calls == 3


@needs_faces
def test_evaluate_reports_what_analyze_delivers_on_the_same_photos(tmp_path, assets_home):
    """Same 38 London photographs: evaluate --detect-faces and analyze give the same
    predictions per image (probabilities renormalised over the classes the data share)."""
    import affectlab
    from affectlab.evaluate.engine import evaluate

    labels = pd.read_csv(detect_sets.SHARED / "data" / "london" / "labels.csv")
    labels = labels[labels.subject <= 20]
    (tmp_path / "images").mkdir()
    for p in labels.path:
        os.symlink(detect_sets.SHARED / "data" / "london" / p, tmp_path / p)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    spec = f"manifest:{tmp_path / 'labels.csv'}"

    res = evaluate("affectlab-base", spec, detect_faces=True, progress=False)
    assert res.framing["detector"] == "yunet" and res.framing["no_face"] == 0 and res.framing["images"] == len(labels)
    table = affectlab.analyze(tmp_path / "images", "affectlab-base", progress=False)
    assert table.model_info["detector"] == "yunet"
    table = table.assign(area=table.w * table.h).sort_values("area", ascending=False).drop_duplicates("input")
    merged = res.predictions.merge(table, left_on="path", right_on="input", suffixes=("_ev", "_an"))
    assert len(merged) == len(labels)
    names = ["expr_neutral", "expr_happiness"]
    ev = merged[[n + "_ev" for n in names]].to_numpy(float)
    an = merged[[n + "_an" for n in names]].to_numpy(float)
    an = an / an.sum(axis=1, keepdims=True)  # evaluate's softmax runs over the shared classes
    np.testing.assert_allclose(ev, an, atol=1e-5)
    truth = merged.expression_true.map({"neutral": 0, "happiness": 1}).to_numpy()
    assert res.metrics["expr_acc"] == pytest.approx((an.argmax(axis=1) == truth).mean())
    # without the framing step the same model sees whole photographs: other predictions
    plain = evaluate("affectlab-base", spec, progress=False)
    assert np.abs(plain.predictions[names].to_numpy(float) - res.predictions[names].to_numpy(float)).max() > 0.05


@pytest.mark.skipif(not detect_sets.YUNET.is_file(), reason="../shared/models (YuNet) is absent")
def test_training_on_photographs_frames_them_and_the_model_declares_its_framing(tmp_path, assets_home, monkeypatch):
    """detect_faces at training crops each synthetic photograph as analyze would, and
    framing=aligned is stored in the model so analyze frames alike."""
    from affectlab.data.synth import generate
    from affectlab.runtime.predictor import Predictor
    from affectlab.train.config import resolve_config
    from affectlab.train.engine import train

    generate(tmp_path / "faces", 24, size=96, seed=4, progress=False)
    cfg = resolve_config(options=dict(
        method="baseline", backbone="builtin:cnn-tiny", train=f"manifest:{tmp_path / 'faces' / 'labels.csv'}",
        batch_size=16, image_size=32, train_transform="eval", seed=0, epochs=1, framing="aligned", detect_faces=True,
    ))
    seen = []
    original = FaceFramer.__call__

    def spy(self, image, key, box=None):
        out = original(self, image, key, box)
        seen.append((key, out.shape, self.framing.kind, len(self.face(image, key, box))))
        return out

    monkeypatch.setattr(FaceFramer, "__call__", spy)
    train(cfg, tmp_path / "run", progress=False)
    # every image went through the framer: one aligned 32 px crop of the face YuNet found
    assert len({k for k, *_ in seen}) == 24
    assert all(shape == (32, 32, 3) and kind == "aligned" and n == 1 for _, shape, kind, n in seen)
    pred = Predictor.load(tmp_path / "run")
    assert pred.preprocessing.framing == {"kind": "aligned", "scale": 0.8, "margin": 0.2}
    from affectlab.analyze.pipeline import Analyzer
    from affectlab.runtime.detection import resolve_detector

    det, name, _ = resolve_detector("auto")
    analyzer = Analyzer(pred, det)
    assert name == "yunet" and analyzer.framing.kind == "aligned" and det.refine_above > 0
