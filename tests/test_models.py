"""Packaged-model registry, `affectlab models`, and the EmotiEffLib / CLIP importers.

The ONNX files are built here with torch.onnx.export (same input/output signature as
EmotiEffLib's graphs); nothing is downloaded.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from affectlab.cli import main
from affectlab.data.schema import EXPRESSIONS
from affectlab.errors import ConfigError, ModelError

UPSTREAM_ORDER = ["anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test imports into its own user model folder."""
    monkeypatch.setenv("AFFECTLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class TinyNet(torch.nn.Module):
    """EmotiEffLib's signature: N x 3 x S x S -> N x (C [+ 2]); outputs depend on colour and layout."""

    def __init__(self, outputs: int):
        super().__init__()
        torch.manual_seed(0)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.fc = torch.nn.Linear(12, outputs)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


def export(path, outputs=10, size=224):
    net = TinyNet(outputs).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, torch.zeros(1, 3, size, size), str(path), input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "n"}, "output": {0: "n"}}, dynamo=False,
        )
    return net


def reference_scores(net, images):
    """What EmotiEffLib computes: /255, ImageNet mean/std, NCHW (images already S x S)."""
    x = (np.stack(images).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def test_emotiefflib_import_maps_classes_by_name_and_keeps_va(tmp_path):
    from affectlab.runtime.importers import import_model
    from affectlab.runtime.predictor import Predictor

    onnx = tmp_path / "enet_b0_8_va_mtl.onnx"
    net = export(onnx, outputs=10)
    info = import_model("emotiefflib:enet_b0_8_va_mtl", onnx)
    assert info["name"] == "emotiefflib:enet_b0_8_va_mtl"

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(5)]
    ref = reference_scores(net, images)
    pred = Predictor.load("emotiefflib:enet_b0_8_va_mtl").predict(images)

    assert pred["expr_prob"].shape == (5, 8)
    # the upstream column of each canonical class, by name
    logits = ref[:, [UPSTREAM_ORDER.index(e) for e in EXPRESSIONS]]
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(pred["expr_prob"], expected, atol=1e-4)
    np.testing.assert_allclose(pred["va"], np.clip(ref[:, 8:10], -1, 1), atol=1e-4)


def test_seven_class_model_has_no_contempt(tmp_path):
    from affectlab.runtime.importers import import_model
    from affectlab.runtime.predictor import Predictor

    onnx = tmp_path / "m.onnx"
    net = export(onnx, outputs=7, size=260)
    import_model("emotiefflib:enet_b2_7", onnx)
    predictor = Predictor.load("emotiefflib:enet_b2_7")
    assert predictor.input_size == 260
    assert "contempt" not in predictor.label_space.expressions
    assert not predictor.label_space.va
    image = np.full((260, 260, 3), 90, np.uint8)
    table = predictor.predict_table([image])
    upstream = [c for c in UPSTREAM_ORDER if c != "contempt"]
    assert table["expression"][0] == upstream[int(reference_scores(net, [image])[0].argmax())]


def test_imported_model_is_listed_and_runs_in_analyze_and_evaluate(tmp_path, capsys, monkeypatch):
    import cv2
    import pandas as pd

    import affectlab

    onnx = tmp_path / "enet_b0_8_best_afew.onnx"
    export(onnx, outputs=8)
    assert main(["models", "import", "emotiefflib:enet_b0_8_best_afew", "--file", str(onnx)]) == 0
    monkeypatch.setenv("COLUMNS", "300")  # one table row per model, unwrapped
    assert main(["models"]) == 0
    assert "emotiefflib:enet_b0_8_best_afew" in capsys.readouterr().out

    rng = np.random.default_rng(1)
    rows = []
    for i, expr in enumerate(["happiness", "anger", "neutral", "surprise"]):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        rows.append({"path": f"f{i}.png", "expression": expr})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)

    table = affectlab.analyze(tmp_path / "f0.png", model="emotiefflib:enet_b0_8_best_afew", detector="none",
                              progress=False)
    frame = pd.DataFrame(table)
    assert len(frame) == 1
    probs = frame[[f"expr_{e}" for e in EXPRESSIONS]].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    model_file = json.loads((tmp_path / "home" / "models" / "emotiefflib--enet_b0_8_best_afew" / "info.json").read_text())
    assert model_file["kind"] == "model"
    out = tmp_path / "eval.json"
    ckpt = tmp_path / "home" / "models" / "emotiefflib--enet_b0_8_best_afew" / "model.ckpt"
    assert main(["evaluate", "--model", str(ckpt), "--data", f"manifest:{tmp_path / 'labels.csv'}", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    flat = json.dumps(metrics)
    assert "expr_acc" in flat or "accuracy" in flat


def test_offline_without_file_fails_with_one_line_naming_file(monkeypatch, capsys):
    from affectlab.runtime import importers

    # a closed local port: the download fails at once, as it does without a network
    monkeypatch.setattr(importers, "EMOTIEFFLIB_URL", "http://127.0.0.1:9/{name}.onnx")
    assert main(["models", "import", "emotiefflib:enet_b0_8_best_afew"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--file" in err
    assert len(err.replace("\n", " ").split("error:")) == 2
    with pytest.raises(ModelError, match="--file"):
        importers.import_model("emotiefflib:enet_b0_8_va_mtl")


def test_wrong_signature_and_bad_names_are_refused(tmp_path):
    from affectlab.runtime.importers import import_model

    onnx = tmp_path / "seven.onnx"
    export(onnx, outputs=7)
    with pytest.raises(ModelError, match="N x 10 output"):
        import_model("emotiefflib:enet_b0_8_va_mtl", onnx)
    with pytest.raises(ModelError, match="3 x 260 x 260"):
        import_model("emotiefflib:enet_b2_8", onnx)
    with pytest.raises(ConfigError, match="unknown EmotiEffLib model"):
        import_model("emotiefflib:resnet", onnx)
    with pytest.raises(ConfigError, match="unknown model source"):
        import_model("hub:x", onnx)
    with pytest.raises(ConfigError, match="does not exist"):
        import_model("emotiefflib:enet_b0_8_best_afew", tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="not a loadable ONNX"):
        import_model("emotiefflib:enet_b0_8_best_afew", tmp_path / "junk.onnx")


def test_default_model_resolves_to_packaged_file():
    from affectlab.analyze.api import load_predictor
    from affectlab.runtime.hub import BASE_MODEL_FILE, list_models
    from affectlab.runtime.hub import available_packaged_models, resolve_model

    assert {"default", "affectlab-base"} <= set(available_packaged_models())
    assert list_models()[0]["name"] == "affectlab-base"
    if not BASE_MODEL_FILE.is_file():
        with pytest.raises(ModelError, match="missing from this installation"):
            resolve_model("default")
        pytest.skip("packaged weights not built in this checkout")
    assert resolve_model("default") == BASE_MODEL_FILE
    # at most 10 MB, predicts the eight expressions and the landmarker's AUs (v2), no VA
    assert BASE_MODEL_FILE.stat().st_size <= 10 * 1024 * 1024
    predictor = load_predictor(None)
    assert predictor.label_space.expressions == EXPRESSIONS
    from affectlab.perception.au import AUS

    assert not predictor.label_space.va and predictor.label_space.aus == AUS
    # gray and colour crops of any size are accepted; probabilities are distributions
    rng = np.random.default_rng(0)
    out = predictor.predict([rng.integers(0, 256, (80, 80), dtype=np.uint8),
                             rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)])
    np.testing.assert_allclose(out["expr_prob"].sum(axis=1), 1.0, atol=1e-5)


def test_clip_import_registers_checkpoint_for_backbone(tmp_path, capsys):
    open_clip = pytest.importorskip("open_clip")
    from affectlab.features.backbones import create_backbone
    from affectlab.runtime.importers import imported_weights

    # a tiny open_clip architecture so the checkpoint is small
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "Tiny-ViT-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    model = open_clip.create_model("Tiny-ViT-test")
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)

    assert main(["models", "import", "clip:Tiny-ViT-test", "--file", str(ckpt)]) == 0
    stored = imported_weights("clip:Tiny-ViT-test")
    assert stored.is_file() and stored.read_bytes() == ckpt.read_bytes()
    backbone = create_backbone("clip:Tiny-ViT-test", weights=str(stored))
    with torch.no_grad():
        expected = model.encode_image(torch.ones(1, 3, 32, 32))
        got = backbone.eval()(torch.ones(1, 3, 32, 32))["global"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert main(["models", "path", "clip:Tiny-ViT-test"]) == 0
    assert capsys.readouterr().out.strip().endswith("tiny.pt")
    with pytest.raises(ConfigError, match="--file"):
        from affectlab.runtime.importers import import_model

        import_model("clip:Tiny-ViT-test")
