"""affectlab's copy of torchvision's MobileNetV2 trunk (used to rebuild saved models without
importing torchvision) against torchvision itself, and the packaged model rebuilt with it
against the same model built on torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from affectlab.errors import ConfigError
from affectlab.features.backbones import GraphBackbone, create_backbone, rebuilding
from affectlab.features.mobilenet import MobileNetV2Trunk


def _scramble_batch_norms(module: torch.nn.Module, seed: int) -> None:
    # fresh batch norms are identities in eval mode: give them statistics that matter
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def test_trunk_has_torchvisions_names_and_shapes():
    ours = MobileNetV2Trunk().state_dict()
    theirs = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    assert list(ours) == [f"features.{k}" for k in theirs]
    assert all(ours[f"features.{k}"].shape == v.shape for k, v in theirs.items())


@pytest.mark.parametrize("train", [False, True])
def test_trunk_computes_what_torchvision_computes(train):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None).features
    _scramble_batch_norms(reference, seed=1)
    ours = MobileNetV2Trunk()
    ours.features.load_state_dict(reference.state_dict(), strict=True)
    reference.train(train)
    ours.train(train)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = reference(x), ours(x)["map"]
    assert got.shape == want.shape == (3, 1280, 2, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    if train:  # the batch statistics moved the same way
        torch.testing.assert_close(ours.features.state_dict(), reference.state_dict(), rtol=0, atol=1e-6)


def _same_weights_outputs(trained, rebuilt, *, size, seed):
    """Both backbones' outputs on one random batch, ``rebuilt`` holding ``trained``'s weights (same names)."""
    state = trained.state_dict()
    assert list(rebuilt.state_dict()) == list(state)
    rebuilt.load_state_dict(state, strict=True)
    trained.eval(), rebuilt.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return trained(x), rebuilt(x)


def test_backbone_is_rebuilt_from_the_copy_only_inside_rebuilding():
    trained = create_backbone("torchvision:mobilenet_v2")
    with rebuilding():
        rebuilt = create_backbone("torchvision:mobilenet_v2")
    assert not isinstance(trained.body, MobileNetV2Trunk)  # training builds on torchvision
    assert isinstance(rebuilt, GraphBackbone) and isinstance(rebuilt.body, MobileNetV2Trunk)
    assert (rebuilt.name, rebuilt.out_dim, rebuilt.map_channels, rebuilt.preprocessing) == (
        trained.name, trained.out_dim, trained.map_channels, trained.preprocessing)
    a, b = _same_weights_outputs(trained, rebuilt, size=96, seed=3)
    assert torch.equal(a["map"], b["map"]) and torch.equal(a["global"], b["global"])


def test_packaged_model_predicts_bit_for_bit_as_when_built_on_torchvision():
    """Analysis rows of the default model do not depend on which definition rebuilt it."""
    from affectlab.data.schema import LabelSpace
    from affectlab.data.synth import sample_batch
    from affectlab.methods.base import get_method_class
    from affectlab.modelfile import WEIGHT_SOURCE_KEYS, read_payload
    from affectlab.runtime.hub import BASE_MODEL, resolve_model
    from affectlab.runtime.predictor import Predictor

    rebuilt = Predictor.load(BASE_MODEL)
    payload = read_payload(resolve_model(BASE_MODEL))
    cls = get_method_class(payload["method"])
    config = {k: (WEIGHT_SOURCE_KEYS[k] if k in WEIGHT_SOURCE_KEYS and k in cls.Config.model_fields else v)
              for k, v in (payload.get("method_config") or {}).items()}
    on_torchvision = cls(LabelSpace.from_dict(payload["label_space"]), config)  # outside rebuilding(): torchvision
    on_torchvision.load_state_dict(payload["state_dict"], strict=True)
    on_torchvision.load_extra_state(payload.get("extra_state") or {})
    traced = Predictor(on_torchvision.eval(), payload.get("preprocessing"))

    trunks = [m for m in rebuilt.method.modules() if isinstance(m, MobileNetV2Trunk)]
    assert len(trunks) == 1 and not any(isinstance(m, MobileNetV2Trunk) for m in traced.method.modules())
    # the inference copies fold the same convolution + batch-norm pairs
    count = lambda p: sum(isinstance(m, torch.nn.BatchNorm2d) for m in p._model.modules())  # noqa: E731
    assert count(rebuilt) == count(traced) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in rebuilt.method.modules())

    crops, _ = sample_batch(6, seed=4, size=80)
    want, got = traced.predict(list(crops)), rebuilt.predict(list(crops))
    assert set(got) == set(want) and {"expr_prob", "au_prob"} <= set(got)
    for key in ("expr_prob", "va", "au_prob"):
        if key in want:
            assert np.array_equal(got[key], want[key]), key
    assert set(got["extras"]) == set(want["extras"]) and got["extras"]
    for key, value in want["extras"].items():
        a, b = np.asarray(got["extras"][key]), np.asarray(value)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), key


def test_cut_backbone_is_rebuilt_with_the_same_cut():
    """A model trained on MobileNetV2 cut at features.13 (the smm-synth preset) reloads from the copy."""
    trained = create_backbone("torchvision:mobilenet_v2", map_node="features.13")
    with rebuilding():
        rebuilt = create_backbone("torchvision:mobilenet_v2", map_node="features.13")
        with pytest.raises(ConfigError, match=r"no module 'features\.19'.*features\.18"):
            create_backbone("torchvision:mobilenet_v2", map_node="features.19")
    assert isinstance(rebuilt.body, MobileNetV2Trunk) and rebuilt.map_channels == trained.map_channels == 96
    a, b = _same_weights_outputs(trained, rebuilt, size=64, seed=4)
    assert a["map"].shape == (2, 96, 4, 4) and torch.equal(a["map"], b["map"])
