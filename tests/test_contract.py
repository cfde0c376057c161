"""The contract every registered component keeps, as timm and scikit-learn check theirs.

The components are read from the registries when the tests are collected, so a method,
backbone, face detector or dataset reader registered later is checked without editing
this file:

- **methods**: ``forward`` -> :class:`~affectlab.methods.base.Outputs` with one column per
  descriptor of the label space; ``loss`` -> named terms with a finite ``"loss"`` (or an
  affectlab error for inference-only methods); save -> load round trip equal to 1e-6 with
  the label space preserved; a batch without the model's input, or with a wrong shape,
  raises an :class:`~affectlab.errors.AffectlabError`. A method needs a small example to be
  built here: a ``example()`` classmethod on the class, or an entry of ``EXAMPLES``;
- **backbones**: every concrete name builds offline without pretrained weights, maps
  ``[B, 3, S, S]`` at its preprocessing size to ``"global"`` ``[B, out_dim]`` and refuses
  a wrong input with an affectlab error; name patterns (``clip:<name>``) need an unknown
  name refused with an affectlab error;
- **detectors** (built as ``analyze`` builds them, :func:`affectlab.runtime.detection.resolve_detector`):
  boxes ``[N, 5]`` (x, y, w, h, score) inside the image for an RGB image, an affectlab error
  for a non-image (a detector needing a pretrained asset gets a home seeded from
  ``../shared/models``, and is skipped when that is absent);
- **dataset readers**: options introspectable, a layout described, an affectlab error
  naming the path for a missing folder and for an empty one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectlab.data.datasets import available_formats, load_dataset
from affectlab.data.schema import EXPRESSIONS, LabelSpace
from affectlab.errors import AffectlabError
from affectlab.features.backbones import Preprocessing, available_backbones, create_backbone
from affectlab.methods.base import Method, Outputs, available_methods, create_method, get_method_class
from affectlab.perception.detectors import available_detectors

AUS = ("AU1", "AU4", "AU12")
FULL = LabelSpace(expressions=EXPRESSIONS, aus=AUS, va=True)
EXPR = LabelSpace(expressions=EXPRESSIONS)


def _tiny_onnx(classes=EXPRESSIONS, size: int = 8) -> bytes:
    """A graph N x 3 x size x size -> N x len(classes) (flatten, matmul), made with onnx.helper."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(3 * size * size, len(classes))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["out"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", len(classes)])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _onnx_example():
    return get_method_class("onnx").from_onnx(_tiny_onnx(), list(EXPRESSIONS))


#: method name -> a small instance (label space, config) or a function building one
EXAMPLES = {
    "baseline": (FULL, {"backbone": "builtin:cnn-tiny"}),
    "cage": (LabelSpace(expressions=EXPRESSIONS, va=True), {"backbone": "builtin:cnn-tiny", "variant": "combined"}),
    "smm": (FULL, {"backbone_options": {"input_size": 48}, "transformer_ff": 16, "roi_dim": 8}),
    "aura": (FULL, {"feature_dim": 16, "dim": 8, "hidden": 8, "num_archetypes": 4}),
    "vavae": (LabelSpace(expressions=EXPRESSIONS, va=True), {"image_size": 16, "channels": [4, 4, 8, 8], "dim_z": 2}),
    "aura-head": (
        EXPR,
        {
            "base_method": "baseline",
            "base_config": {"backbone": "builtin:cnn-tiny"},
            "base_label_space": EXPR.to_dict(),
            "head_config": {"dim": 8, "hidden": 8, "num_archetypes": 4},
            "head_label_space": EXPR.to_dict(),
        },
    ),
    "faceapi": lambda: get_method_class("faceapi")(),
    "onnx": _onnx_example,
}


def _example(name: str) -> Method:
    cls = get_method_class(name)
    torch.manual_seed(0)
    if hasattr(cls, "example"):
        return cls.example()
    if name not in EXAMPLES:
        pytest.fail(f"method {name!r} has no small example: give its class an example() classmethod "
                    "(or add it to EXAMPLES in tests/test_contract.py)")
    spec = EXAMPLES[name]
    method = spec() if callable(spec) else create_method(name, spec[0], spec[1])
    return method.eval()


def _input_size(method: Method) -> int:
    pre = getattr(method, "preprocessing", None)
    if pre is not None:
        return int(Preprocessing.from_dict(pre).input_size)
    if getattr(method, "name", "") == "onnx":
        return 8
    return int(getattr(method.config, "image_size", 32))


def _batch(method: Method, n: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    space = method.label_space
    batch: dict = {"index": torch.arange(n)}
    if method.input_kind == "features":
        batch["features"] = torch.randn(n, method.config.feature_dim, generator=g)
    else:
        s = _input_size(method)
        batch["image"] = torch.rand(n, 3, s, s, generator=g)
    if space.expressions:
        if space.multilabel:
            batch["expr"] = (torch.rand(n, len(space.expressions), generator=g) > 0.5).float()
        else:
            batch["expr"] = torch.randint(0, len(space.expressions), (n,), generator=g)
    if space.va:
        batch["va"] = torch.rand(n, 2, generator=g) * 2 - 1
    if space.aus:
        batch["au"] = (torch.rand(n, len(space.aus), generator=g) > 0.5).float()
    return batch


METHODS = available_methods(trainable_only=False)


@pytest.mark.parametrize("name", METHODS)
def test_method_forward_gives_one_column_per_descriptor(name):
    method = _example(name)
    with torch.no_grad():
        out = method(_batch(method))
    assert isinstance(out, Outputs)
    space = method.label_space
    if space.expressions:
        assert out.expr_logits is not None and tuple(out.expr_logits.shape) == (3, len(space.expressions))
        assert torch.isfinite(out.expr_logits).all()
    if space.va:
        assert out.va is not None and out.va.shape[0] == 3 and out.va.shape[1] >= 2
    else:
        assert out.va is None
    if space.aus:
        assert out.au_logits is not None and tuple(out.au_logits.shape) == (3, len(space.aus))
    else:
        assert out.au_logits is None


@pytest.mark.parametrize("name", METHODS)
def test_method_loss_terms(name):
    method = _example(name)
    batch = _batch(method)
    method.train()
    out = method(batch)
    if not type(method).trainable:
        # inference-only: the loss is refused with an affectlab error, or is that of the part it outputs
        try:
            terms = method.loss(out, batch)
        except AffectlabError:
            return
    else:
        terms = method.loss(out, batch)
    assert isinstance(terms, dict) and "loss" in terms
    assert all(torch.is_tensor(v) for v in terms.values())
    assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()  # the total is differentiable
    assert any(p.grad is not None for p in method.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", METHODS)
def test_method_save_load_round_trip(name, tmp_path):
    from affectlab.modelfile import save_model
    from affectlab.runtime.hub import load_model

    method = _example(name)
    pre = getattr(method, "preprocessing", None)
    save_model(tmp_path / "m.ckpt", method, preprocessing=None if pre is None else Preprocessing.from_dict(pre).to_dict())
    loaded, info = load_model(tmp_path / "m.ckpt")
    assert type(loaded) is type(method)
    assert info["label_space"] == method.label_space == loaded.label_space
    batch = _batch(method, seed=1)
    with torch.no_grad():
        a, b = method.eval()(batch), loaded(batch)
    for field in ("expr_logits", "va", "au_logits"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_method_bad_input_is_an_affectlab_error(name):
    method = _example(name)
    key = "features" if method.input_kind == "features" else "image"
    batch = _batch(method)
    with pytest.raises(AffectlabError):
        method({k: v for k, v in batch.items() if k != key})  # the input is missing
    bad = dict(batch)
    bad[key] = batch[key][..., :1] if key == "features" else batch[key][:, :2]  # a wrong shape
    with pytest.raises(AffectlabError):
        method(bad)


# ------------------------------------------------------------------------------- backbones
BACKBONES = available_backbones()


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_contract(name):
    if "<" in name:  # a family of names (clip:<name>): an unknown member is refused in one line
        with pytest.raises(AffectlabError):
            create_backbone(name.split("<")[0] + "no-such-model-xyz")
        return
    torch.manual_seed(0)
    bb = create_backbone(name, pretrained=False).eval()
    s = bb.preprocessing.input_size
    with torch.no_grad():
        out = bb(torch.rand(2, 3, s, s))
    assert tuple(out["global"].shape) == (2, bb.out_dim) and torch.isfinite(out["global"]).all()
    with pytest.raises(AffectlabError):
        bb(torch.rand(2, s, s))  # not a batch of RGB images


# ------------------------------------------------------------------------------- detectors
@pytest.mark.parametrize("name", available_detectors())
def test_detector_contract(name, request):
    from affectlab.runtime.detection import resolve_detector

    try:
        detect, _, _ = resolve_detector(name)
    except AffectlabError as first:
        # a detector with a pretrained asset: seed a home from ../shared/models (skips when absent)
        request.getfixturevalue("assets_home")
        try:
            detect, _, _ = resolve_detector(name)
        except AffectlabError as exc:
            pytest.skip(f"{name}: needs a pretrained file not on this machine ({first}; {exc})")
    image = np.full((96, 128, 3), 127, np.uint8)
    found = detect(image)
    boxes = np.asarray(getattr(found, "boxes", found), dtype=np.float64).reshape(-1, 5)
    assert (boxes[:, 2:4] > 0).all() and (boxes[:, 0] >= -1).all() and (boxes[:, 0] + boxes[:, 2] <= 129).all()
    with pytest.raises(AffectlabError):
        detect(np.zeros((4,), np.float32))  # not an image


# --------------------------------------------------------------------------------- readers
@pytest.mark.parametrize("fmt", sorted(available_formats()))
def test_reader_contract(fmt, tmp_path):
    info = available_formats()[fmt]
    assert info.layout.strip()
    assert isinstance(info.options, dict)
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(AffectlabError, match="no_such_dataset"):
        load_dataset(f"{fmt}:{missing}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AffectlabError):
        load_dataset(f"{fmt}:{empty}")
