"""Predictor: in-memory and on-disk models, preprocessing parity with training, tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectlab.data.schema import AU_SETS, EXPRESSIONS, LabelSpace
from affectlab.data.transforms import build_transform
from affectlab.errors import ConfigError, ModelError
from affectlab.methods.base import create_method
from affectlab.methods.baseline import BaselineMethod
from affectlab.runtime.hub import available_packaged_models, register_packaged_model
from affectlab.runtime.predictor import Predictor

SPACE = LabelSpace(expressions=EXPRESSIONS, aus=AU_SETS["abaw12"], va=True)


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    m = create_method("baseline", SPACE, {"backbone": "builtin:cnn-tiny"})
    # non-trivial batch-norm statistics, so eval mode matters
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m({"image": torch.randn(16, 3, 32, 32) * 2 + 0.5})
    return m.eval()


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, (57, 41, 3), dtype=np.uint8),  # odd size, not square
        rng.integers(0, 256, (48, 48), dtype=np.uint8),  # grayscale
        rng.integers(0, 256, (20, 90, 1), dtype=np.uint8),  # grayscale with a channel axis
        rng.integers(0, 256, (64, 64, 4), dtype=np.uint8),  # RGBA
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
    ]


def _direct(method, images):
    """What the method says when fed the training pipeline's eval transform, one by one."""
    t = build_transform("eval", method.preprocessing.input_size, method.preprocessing.normalize)
    with torch.no_grad():
        out = method({"image": torch.stack([t(im) for im in images])})
    return {
        "expr_prob": torch.softmax(out.expr_logits, 1).numpy(),
        "va": out.va.numpy(),
        "au_prob": torch.sigmoid(out.au_logits).numpy(),
    }


def test_from_method_matches_calling_the_method(method):
    pred = Predictor.from_method(method, batch_size=4)
    assert pred.label_space == SPACE and pred.input_size == 32
    images = _images()
    got = pred.predict(images)
    want = _direct(method, images)
    for key in ("expr_prob", "va", "au_prob"):
        assert got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["expr_prob"].sum(1), 1.0, rtol=1e-5)
    assert got["extras"] == {}
    # batching does not change the answer
    one = pred.predict(images, batch_size=1)
    np.testing.assert_allclose(one["au_prob"], got["au_prob"], rtol=1e-5, atol=1e-6)


def test_gray_image_equals_its_rgb_replica(method):
    pred = Predictor.from_method(method)
    gray = np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8)
    out = pred.predict([gray, np.repeat(gray[:, :, None], 3, axis=2)])
    np.testing.assert_allclose(out["expr_prob"][0], out["expr_prob"][1], rtol=1e-6)


def test_array_inputs(method):
    pred = Predictor.from_method(method)
    stack = np.random.default_rng(2).integers(0, 256, (5, 36, 36, 3), dtype=np.uint8)
    np.testing.assert_allclose(pred.predict(stack)["va"], pred.predict(list(stack))["va"], rtol=1e-6)
    assert pred.predict(stack[..., 0])["va"].shape == (5, 2)  # N x H x W gray stack
    empty = pred.predict([])
    assert empty["expr_prob"].shape == (0, 8) and empty["au_prob"].shape == (0, 12)


def test_predict_table_columns(method):
    pred = Predictor.from_method(method)
    images = _images()
    table = pred.predict_table(images)
    expected = (
        [f"expr_{e}" for e in EXPRESSIONS] + ["expression", "valence", "arousal"] + list(AU_SETS["abaw12"])
    )
    assert list(table.columns) == expected
    assert len(table) == len(images)
    out = pred.predict(images)
    assert table["expression"].tolist() == [EXPRESSIONS[i] for i in out["expr_prob"].argmax(1)]
    np.testing.assert_allclose(table["arousal"], out["va"][:, 1])
    np.testing.assert_allclose(table["AU12"], out["au_prob"][:, SPACE.aus.index("AU12")])


def test_only_predicted_descriptors_appear():
    m = create_method("baseline", LabelSpace(va=True), {"backbone": "builtin:cnn-tiny"})
    pred = Predictor.from_method(m)
    out = pred.predict(_images()[:2])
    assert set(out) == {"va", "extras"}
    assert list(pred.predict_table(_images()[:2]).columns) == ["valence", "arousal"]


class _WithExtras(BaselineMethod):
    def forward(self, batch):
        out = super().forward(batch)
        out.extras = {"archetype": out.va[:, 0].ge(0).long(), "z": out.va * 2, "scalar": torch.tensor(1.0)}
        return out


def test_extras_are_collected_per_sample():
    m = _WithExtras(LabelSpace(va=True), {"backbone": "builtin:cnn-tiny"}).eval()
    pred = Predictor.from_method(m, batch_size=2)
    images = _images()
    out = pred.predict(images)
    assert set(out["extras"]) == {"archetype", "z"}  # the scalar is not per-sample
    np.testing.assert_array_equal(out["extras"]["archetype"], (out["va"][:, 0] >= 0).astype(np.int64))
    np.testing.assert_allclose(out["extras"]["z"], out["va"] * 2, rtol=1e-6)
    table = pred.predict_table(images)
    assert list(table.columns) == ["valence", "arousal", "archetype"]


def test_multilabel_uses_sigmoid():
    space = LabelSpace(expressions=("Anger", "Fear", "Peace"), multilabel=True)
    m = create_method("baseline", space, {"backbone": "builtin:cnn-tiny"}).eval()
    images = _images()[:3]
    prob = Predictor.from_method(m).predict(images)["expr_prob"]
    t = build_transform("eval", 32, "imagenet")
    with torch.no_grad():
        logits = m({"image": torch.stack([t(im) for im in images])}).expr_logits
    np.testing.assert_allclose(prob, torch.sigmoid(logits).numpy(), rtol=1e-5)


def test_load_run_directory_and_packaged_name(method, tmp_path):
    from affectlab.modelfile import save_model

    run = tmp_path / "run"
    save_model(run / "model.ckpt", method, preprocessing=method.preprocessing.to_dict())
    images = _images()
    want = Predictor.from_method(method).predict(images)
    for target in (run, run / "model.ckpt", str(run)):
        got = Predictor.load(target).predict(images)
        np.testing.assert_allclose(got["expr_prob"], want["expr_prob"], rtol=1e-5, atol=1e-7)
    register_packaged_model("unittest-packaged", lambda: run)
    assert "unittest-packaged" in available_packaged_models()
    got = Predictor.load("unittest-packaged")
    assert got.input_size == 32
    np.testing.assert_allclose(got.predict(images)["va"], want["va"], rtol=1e-5, atol=1e-7)


def test_errors(method, tmp_path):
    with pytest.raises(ModelError, match="does not exist: it is neither a run directory"):
        Predictor.load(tmp_path / "nothing")
    pred = Predictor.from_method(method)
    with pytest.raises(ConfigError, match="image 1: .*uint8"):
        pred.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ConfigError, match="image 0: .*H x W"):
        pred.predict([np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(ConfigError, match="wrap a single image"):
        pred.predict(np.zeros((8, 8), np.uint8))
    with pytest.raises(ConfigError, match="list of H x W x 3"):
        pred.predict("face.jpg")
    with pytest.raises(ConfigError, match="batch_size"):
        Predictor.from_method(method, batch_size=0)
    with pytest.raises(ModelError, match="affectlab Method"):
        Predictor(torch.nn.Linear(2, 2))


def test_feature_level_model_needs_features():
    class Probe(BaselineMethod):
        input_kind = "features"

    m = Probe(LabelSpace(va=True), {"backbone": "builtin:cnn-tiny"}).eval()
    pred = Predictor.from_method(m)
    assert pred.input_size is None
    with pytest.raises(ModelError, match="predict_features"):
        pred.predict(_images()[:1])
    feats = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    out = pred.predict_features(feats)
    with torch.no_grad():
        want = m({"features": torch.from_numpy(feats)}).va.numpy()
    np.testing.assert_allclose(out["va"], want, rtol=1e-6)


def test_inference_copy_folds_batch_norm_and_leaves_the_method_alone(method):
    pred = Predictor.from_method(method)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in pred._model.modules())
    assert sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in method.modules()) > 0
    assert all(p.requires_grad for p in method.parameters())
    plain = Predictor.from_method(method, fuse=False)
    assert plain._model is method
    images = _images()
    np.testing.assert_allclose(pred.predict(images)["au_prob"], plain.predict(images)["au_prob"], rtol=1e-5, atol=1e-6)
