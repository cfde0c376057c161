"""face-api.js FaceExpressionNet in PyTorch: TF layouts and padding, manifest decoding, real weights on CK+.

The first tests build TensorFlow.js-style weights here (no files needed); those marked
with the shared folder use the real weights of ``../shared/models/face-api`` and CK+48 faces
of ``../shared/data`` and skip when they are absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from affectlab.cli import main
from affectlab.errors import ModelError
from affectlab.methods import faceapi as fa

from conftest import SHARED, SHARED_MODELS

FACEAPI_DIR = SHARED_MODELS / "face-api"
CKPLUS = SHARED / "data" / "ckplus48" / "CK+48"
CK_NAMES = {"anger": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "sadness": "sadness",
            "surprise": "surprise"}


def write_tfjs(folder, tensors: dict[str, np.ndarray], quantize=True, extra_bytes=0):
    """Write a TensorFlow.js manifest + .bin (uint8-quantised like face-api's), return (bin, manifest, dequantised)."""
    entries, chunks, values = [], [], {}
    for name, arr in tensors.items():
        entry = {"name": name, "shape": list(arr.shape), "dtype": "float32"}
        if quantize and name.split("/")[-1] != "bias":
            lo, hi = float(arr.min()), float(arr.max())
            scale = (hi - lo) / 255 or 1.0
            q = np.round((arr - lo) / scale).astype(np.uint8)
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo}
            chunks.append(q.tobytes())
            values[name] = q.astype(np.float32) * scale + lo
        else:
            chunks.append(arr.astype("<f4").tobytes())
            values[name] = arr.astype(np.float32)
        entries.append(entry)
    bin_path = folder / "face_expression_model.bin"
    bin_path.write_bytes(b"".join(chunks) + b"\0" * extra_bytes)
    manifest = folder / "face_expression_model-weights_manifest.json"
    manifest.write_text(json.dumps([{"paths": [bin_path.name], "weights": entries}]))
    return bin_path, manifest, values


def random_tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, 0.2, size=s).astype(np.float32) for n, s in fa.expected_tensors().items()}


def tf_same_conv(x, w, stride):
    """Reference NHWC conv with TF 'same' padding; w [kh, kw, in, out] (depthwise: groups handled by caller)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    oh, ow = -(-h // stride), -(-wd // stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - wd, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def tf_separable(x, dw, pw, bias, stride):
    """tf.separableConv2d + bias, written out: depthwise per channel, then 1x1."""
    depth = np.concatenate(
        [tf_same_conv(x[..., c : c + 1], dw[:, :, c : c + 1, :], stride) for c in range(x.shape[-1])], axis=-1
    )
    return np.einsum("nhwc,co->nhwo", depth, pw[0, 0]) + bias


def test_same_padding_is_tensorflows():
    x = torch.zeros(1, 1, 112, 112)
    assert fa._same_pad(x, 3, 2).shape[-2:] == (113, 113)  # nothing before, one after
    assert fa._same_pad(x, 3, 1).shape[-2:] == (114, 114)
    assert fa._same_pad(torch.zeros(1, 1, 7, 7), 3, 2).shape[-2:] == (9, 9)  # odd: one each side


@torch.no_grad()
def test_layers_match_a_written_out_tensorflow_reference(tmp_path):
    tensors = random_tensors()
    bin_path, manifest, values = write_tfjs(tmp_path, tensors, quantize=False)
    net = fa.load_faceapi_expression(bin_path, manifest).net.double()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 10, 10, 3))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    # first layer: plain conv, stride 2, bias, TF padding
    ref = tf_same_conv(x, values["dense0/conv0/filters"], 2) + values["dense0/conv0/bias"]
    got = net.dense0.conv0(xt).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    # a separable conv with stride 2 and one with stride 1
    h = rng.normal(size=(2, 9, 9, 32))
    ht = torch.from_numpy(h).permute(0, 3, 1, 2)
    for conv, stride in (("dense1/conv0", 2), ("dense0/conv2", 1)):
        ref = tf_separable(h, values[f"{conv}/depthwise_filter"], values[f"{conv}/pointwise_filter"],
                           values[f"{conv}/bias"], stride)
        block, c = conv.split("/")
        got = getattr(getattr(net, block), c)(ht).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    # the dense block: relu(o1 + o2 + o3 + o4) with relu'd partial sums as inputs
    o1 = np.maximum(tf_same_conv(x, values["dense0/conv0/filters"], 2) + values["dense0/conv0/bias"], 0)
    sep = lambda z, k: tf_separable(z, values[f"dense0/conv{k}/depthwise_filter"],  # noqa: E731
                                    values[f"dense0/conv{k}/pointwise_filter"], values[f"dense0/conv{k}/bias"], 1)
    o2 = sep(o1, 1)
    o3 = sep(np.maximum(o1 + o2, 0), 2)
    o4 = sep(np.maximum(o1 + o2 + o3, 0), 3)
    ref = np.maximum(o1 + o2 + o3 + o4, 0)
    np.testing.assert_allclose(net.dense0(xt).permute(0, 2, 3, 1).numpy(), ref, rtol=1e-9, atol=1e-9)
    # fully connected layer: x @ W [256, 7] + b
    f = rng.normal(size=(3, 256))
    np.testing.assert_allclose(net.fc(torch.from_numpy(f)).numpy(), f @ values["fc/weights"] + values["fc/bias"],
                               rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_uint8_dequantisation_and_output_order(tmp_path):
    tensors = random_tensors(2)
    bin_path, manifest, values = write_tfjs(tmp_path, tensors)
    decoded = fa.read_tfjs_weights(bin_path, manifest)
    assert set(decoded) == set(tensors)
    for name in tensors:
        np.testing.assert_allclose(decoded[name], values[name], rtol=1e-6, atol=1e-6)
    # expr_logits come in canonical order, mapped by name from face-api's order
    method = fa.load_faceapi_expression(bin_path, manifest)
    x = torch.rand(2, 3, 112, 112)
    raw = method.net(x - method.mean)
    out = method({"image": x})
    for j, name in enumerate(method.label_space.expressions):
        torch.testing.assert_close(out.expr_logits[:, j], raw[:, fa.FACEAPI_EXPRESSIONS.index(name)])
    assert out.extras["features"].shape == (2, 256)
    assert "contempt" not in method.label_space.expressions and len(method.label_space.expressions) == 7


def test_bad_weight_files_are_refused_by_name(tmp_path):
    tensors = random_tensors()
    bin_path, manifest, _ = write_tfjs(tmp_path, tensors, extra_bytes=4)
    with pytest.raises(ModelError, match="does not belong"):
        fa.read_tfjs_weights(bin_path, manifest)
    bin_path.write_bytes(bin_path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="end inside tensor 'dense0/conv"):
        fa.read_tfjs_weights(bin_path, manifest)
    del tensors["dense2/conv1/bias"]
    bin_path, manifest, _ = write_tfjs(tmp_path, tensors)
    with pytest.raises(ModelError, match="missing.*dense2/conv1/bias"):
        fa.load_faceapi_expression(bin_path, manifest)
    tensors = random_tensors()
    tensors["fc/weights"] = tensors["fc/weights"][:, :6]
    bin_path, manifest, _ = write_tfjs(tmp_path, tensors)
    with pytest.raises(ModelError, match=r"'fc/weights' has shape \(256, 6\), expected \(256, 7\)"):
        fa.load_faceapi_expression(bin_path, manifest)


def test_inference_only(tmp_path):
    method = fa.FaceApiExpression()
    with pytest.raises(ModelError, match="inference only"):
        method.loss(None, {})
    assert not fa.FaceApiExpression.trainable


# -- real weights -----------------------------------------------------------------------------


def real_files():
    if not (FACEAPI_DIR / "face_expression_model.bin").is_file():
        pytest.skip(f"face-api weights not found in {FACEAPI_DIR}")
    return FACEAPI_DIR / "face_expression_model.bin", FACEAPI_DIR / "face_expression_model-weights_manifest.json"


@pytest.fixture(scope="module")
def real_method():
    return fa.load_faceapi_expression(*real_files())


def ck_subset(step=8):
    if not CKPLUS.is_dir():
        pytest.skip(f"CK+48 not found at {CKPLUS}")
    from PIL import Image

    files = [f for f in sorted(CKPLUS.glob("*/*.png")) if f.parent.name in CK_NAMES][::step]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files], np.array([CK_NAMES[f.parent.name] for f in files])


def test_every_manifest_tensor_is_consumed_with_its_shape():
    bin_path, manifest = real_files()
    entries = [w for g in json.loads(manifest.read_text()) for w in g["weights"]]
    expected = fa.expected_tensors()
    assert [e["name"] for e in entries] == list(expected)  # same tensors, same order
    assert all(tuple(e["shape"]) == expected[e["name"]] for e in entries)
    decoded = fa.read_tfjs_weights(bin_path, manifest)  # consumes the .bin to its last byte
    state = fa._torch_state(decoded)
    net = fa.FaceExpressionNet()
    assert set(state) == set(net.state_dict())
    assert sum(v.numel() for v in state.values()) == sum(int(np.prod(s)) for s in expected.values())


def test_ckplus_accuracy(real_method):
    from sklearn.metrics import accuracy_score

    from affectlab.runtime.predictor import Predictor

    images, y = ck_subset()
    pred = Predictor.from_method(real_method).predict_table(images)["expression"].to_numpy()
    acc = accuracy_score(y, pred)
    # the port scores 0.878 on all 927 non-contempt CK+48 faces (benchmarks/faceapi_expression.py)
    assert acc >= 0.8, acc


def test_predictions_do_not_depend_on_dtype_or_batch(real_method):
    from affectlab.runtime.predictor import Predictor

    images, _ = ck_subset(step=40)
    pred = Predictor.from_method(real_method, batch_size=64)
    x = pred.preprocess(images)
    with torch.no_grad():
        p32 = torch.softmax(real_method({"image": x}).expr_logits, 1)
        m64 = fa.load_faceapi_expression(*real_files()).double()
        p64 = torch.softmax(m64({"image": x.double()}).expr_logits, 1)
    torch.testing.assert_close(p32.double(), p64, atol=1e-4, rtol=0)
    one = Predictor.from_method(real_method, batch_size=1).predict(images)["expr_prob"]
    many = pred.predict(images)["expr_prob"]
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_import_from_the_hub_and_evaluate(assets_home, tmp_path, capsys):
    images, y = ck_subset(step=25)
    assert main(["models", "import", "faceapi:expression"]) == 0
    assert "faceapi:expression" in capsys.readouterr().err
    from affectlab.runtime.hub import imported_models

    [info] = [i for i in imported_models() if i["name"] == "faceapi:expression"]
    assert info["path"].startswith(str(assets_home / "models"))
    assert "contempt" not in info["classes"] and len(info["classes"]) == 7 and "no contempt" in info["description"]
    assert main(["models", "list"]) == 0
    assert "faceapi:expression" in capsys.readouterr().out

    from PIL import Image

    data = tmp_path / "ck"
    data.mkdir()
    rows = ["path,expression"]
    for i, (im, label) in enumerate(zip(images, y)):
        Image.fromarray(im).save(data / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", "faceapi:expression", "--data", f"manifest:{data / 'labels.csv'}",
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    metrics = metrics.get("metrics", metrics)
    assert metrics["expr_acc"] >= 0.75

    # its encoder is a backbone: run:MODEL.ckpt gives the same 256-d features as the method
    from affectlab.features.backbones import create_backbone
    from affectlab.runtime.predictor import Predictor

    model_file = Path(info["path"]) / "model.ckpt"
    backbone = create_backbone(f"run:{model_file}")
    pred = Predictor.load("faceapi:expression")
    x = pred.preprocess(images[:4])
    with torch.no_grad():
        feats = backbone(x)
        ref = pred.method.features(x)
    assert feats["global"].shape == (4, 256) and feats["map"].shape == (4, 256, 7, 7)
    torch.testing.assert_close(feats["global"], ref)
    assert backbone.preprocessing.input_size == 112


def test_import_from_file_refuses_a_missing_manifest(tmp_path):
    bin_path, _ = real_files()
    lone = tmp_path / "face_expression_model.bin"
    shutil.copyfile(bin_path, lone)
    assert main(["models", "import", "faceapi:expression", "--file", str(lone)]) == 2


def test_import_offline_without_assets_names_the_command(capsys):
    assert main(["models", "import", "faceapi:expression"]) == 2
    err = capsys.readouterr().err
    assert "affectlab models add face_expression_model.bin" in err and len(err.strip().splitlines()) == 1


def test_a_copy_converted_by_another_version_is_converted_again(assets_home, monkeypatch):
    """An import made with other preprocessing (an older affectlab) is refreshed, not reused."""
    from affectlab.runtime import importers
    from affectlab.runtime.hub import imported_models

    first = importers.import_model("faceapi:expression")
    assert importers.import_model("faceapi:expression")["converter"] == first["converter"]  # reused as is
    monkeypatch.setattr(importers, "FACEAPI_CONVERTER_VERSION", importers.FACEAPI_CONVERTER_VERSION + 1)
    again = importers.import_model("faceapi:expression")
    assert again["converter"] != first["converter"]
    [info] = [i for i in imported_models() if i["name"] == "faceapi:expression"]
    assert info["converter"] == again["converter"]
