"""Backbone registry: every entry builds (no downloads) and returns the documented shapes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from affectlab.errors import AffectlabError, ConfigError, ModelError
from affectlab.features.backbones import (
    Backbone,
    Preprocessing,
    available_backbones,
    create_backbone,
    load_weights,
    register_backbone,
)


def _forward(bb: Backbone, size: int, batch: int = 2) -> dict[str, torch.Tensor]:
    bb.eval()
    with torch.inference_mode():
        return bb(torch.randn(batch, 3, size, size))


def _check(out: dict, bb: Backbone, batch: int, map_hw: tuple[int, int] | None):
    assert out["global"].shape == (batch, bb.out_dim)
    assert torch.isfinite(out["global"]).all()
    if map_hw is None:
        assert "map" not in out and bb.map_channels is None
    else:
        assert out["map"].shape == (batch, bb.map_channels, *map_hw)


@pytest.mark.parametrize(
    "name, size, dim, map_hw",
    [
        ("builtin:cnn-small", 64, 192, (4, 4)),
        ("builtin:cnn-tiny", 32, 32, (2, 2)),
        ("torchvision:resnet18", 64, 512, (2, 2)),
        ("torchvision:resnet50", 64, 2048, (2, 2)),
        ("torchvision:efficientnet_v2_s", 64, 1280, (2, 2)),
    ],
)
def test_cnn_backbones_shapes(name, size, dim, map_hw):
    bb = create_backbone(name)
    assert bb.name == name and bb.out_dim == dim and bb.map_channels == dim
    _check(_forward(bb, size), bb, 2, map_hw)
    # the global feature is the average of the map for these architectures
    out = _forward(bb, size)
    torch.testing.assert_close(out["global"], out["map"].mean(dim=(2, 3)))


def test_builtin_cnn_size_and_preprocessing():
    bb = create_backbone("builtin:cnn-small")
    n_params = sum(p.numel() for p in bb.parameters())
    assert 200_000 <= n_params <= 1_000_000
    assert bb.preprocessing.input_size == 64 and bb.preprocessing.normalize == "imagenet"
    assert create_backbone("builtin:cnn-small", input_size=112).preprocessing.input_size == 112
    # any input size works thanks to global pooling; the map is input / 16
    _check(_forward(bb, 112, batch=1), bb, 1, (7, 7))


def test_inception_v3_gives_mixed_6e_map_at_299():
    bb = create_backbone("torchvision:inception_v3")
    assert bb.preprocessing.input_size == 299
    out = _forward(bb, 299, batch=1)
    # SMM-EmotionNet (002) uses Mixed_6e: 17 x 17 x 768
    assert out["map"].shape == (1, 768, 17, 17)
    assert out["global"].shape == (1, 768)
    assert not any(k.startswith(("Mixed_7", "fc", "AuxLogits")) for k in bb.body.state_dict())


def test_torchvision_cut_at_an_earlier_node():
    # smm-synth cuts MobileNetV2 after features.13: stride 16, 96 channels (a 4x4 map at 64 px)
    bb = create_backbone("torchvision:mobilenet_v2", map_node="features.13")
    assert bb.map_channels == 96 and bb.out_dim == 96
    out = _forward(bb, 64)
    assert out["map"].shape == (2, 96, 4, 4)
    torch.testing.assert_close(out["global"], out["map"].mean(dim=(2, 3)))
    assert not any(k.startswith(("features.14", "features.18", "classifier")) for k in bb.body.state_dict())
    # the output is that of the upstream module, not of a lookalike
    full = torchvision.models.mobilenet_v2(weights=None)
    full.load_state_dict({k: v for k, v in bb.body.state_dict().items()}, strict=False)
    full.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x)["map"], full.features[:14](x))
    with pytest.raises(ConfigError, match=r"no module 'features\.99'.*map_node.*features\.13"):
        create_backbone("torchvision:mobilenet_v2", map_node="features.99")
    with pytest.raises(ConfigError, match="maxvit_t has no map_node"):
        create_backbone("torchvision:maxvit_t", map_node="blocks.0")


def test_maxvit_t_at_224():
    bb = create_backbone("torchvision:maxvit_t")
    assert bb.preprocessing.input_size == 224
    out = _forward(bb, 224, batch=1)
    assert out["map"].shape == (1, 512, 7, 7)
    assert out["global"].shape == (1, 512)
    # the classifier MLP is dropped: every parameter contributes to the features
    assert not any(k.startswith(("body.classifier.3", "body.classifier.5")) for k in bb.state_dict())
    # "global" is the classifier's LayerNorm output (what CAGE's head reads): with a known
    # affine LayerNorm every feature vector has that mean and std, whatever the input
    # (checked to fail with the LayerNorm dropped from MaxVitBackbone)
    ln = bb.body.classifier[-1]
    assert isinstance(ln, torch.nn.LayerNorm) and ln.normalized_shape == (512,)
    with torch.no_grad():
        ln.weight.fill_(2.0)
        ln.bias.fill_(0.5)
    glob = _forward(bb, 224, batch=1)["global"]
    assert float(glob.mean()) == pytest.approx(0.5, abs=1e-4)
    assert float(glob.std(unbiased=False)) == pytest.approx(2.0, rel=1e-3)


def test_timm_backbones_map_and_tokens():
    cnn = create_backbone("timm:test_resnet")
    assert cnn.name == "timm:test_resnet"
    size = cnn.preprocessing.input_size
    out = _forward(cnn, size)
    assert out["global"].shape == (2, cnn.out_dim)
    assert out["map"].shape[:2] == (2, cnn.map_channels)
    vit = create_backbone("timm:test_vit")
    assert vit.map_channels is None and vit.token_dim is not None
    size = vit.preprocessing.input_size
    out = _forward(vit, size)
    patch = vit.model.patch_embed.patch_size[0]
    # patch tokens only: the class token is dropped
    assert out["tokens"].shape == (2, (size // patch) ** 2, vit.token_dim)
    assert vit.preprocessing.normalize in ("imagenet", "clip", "none", "custom")


def test_train_mode_gradients_flow():
    bb = create_backbone("builtin:cnn-tiny")
    bb.train()
    out = bb(torch.randn(4, 3, 32, 32))
    out["global"].sum().backward()
    assert all(p.grad is not None for p in bb.parameters())


def test_local_weights_roundtrip(tmp_path):
    src = create_backbone("builtin:cnn-small")
    path = tmp_path / "cnn.pt"
    torch.save(src.state_dict(), path)
    dst = create_backbone("builtin:cnn-small", weights=path)
    x = torch.randn(2, 3, 64, 64)
    src.eval(), dst.eval()
    torch.testing.assert_close(src(x)["global"], dst(x)["global"])
    # a fresh one differs, so the equality above is the weights' doing
    other = create_backbone("builtin:cnn-small").eval()
    assert not torch.allclose(other(x)["global"], dst(x)["global"])


def test_full_upstream_checkpoint_loads_into_truncated_backbone(tmp_path):
    # a torchvision classifier checkpoint (with fc and a DDP "module." prefix, wrapped in
    # {"state_dict": ...}) fits the truncated backbone; the classifier is ignored
    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, path)
    bb = create_backbone("torchvision:resnet18", weights=str(path))
    torch.testing.assert_close(bb.body.conv1.weight, full.conv1.weight)
    sd = bb.body.state_dict()
    torch.testing.assert_close(sd["layer4.1.bn2.running_var"], full.layer4[1].bn2.running_var)


def test_weights_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_backbone("builtin:cnn-small", weights=tmp_path / "missing.pt")
    wrong = tmp_path / "tiny.pt"
    torch.save(create_backbone("builtin:cnn-tiny").state_dict(), wrong)
    with pytest.raises(ModelError, match="do not fit 'builtin:cnn-small'.*wrong shape"):
        create_backbone("builtin:cnn-small", weights=wrong)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read"):
        create_backbone("builtin:cnn-small", weights=junk)
    with pytest.raises(ConfigError, match="not both"):
        create_backbone("torchvision:resnet18", pretrained=True, weights=wrong)
    with pytest.raises(ConfigError, match="no standard pretrained"):
        create_backbone("builtin:cnn-small", pretrained=True)


def test_unknown_names_list_what_is_available():
    with pytest.raises(AffectlabError) as info:
        create_backbone("torchvision:resnet51")
    msg = str(info.value)
    assert "resnet51" in msg and "builtin:cnn-small" in msg and "torchvision:inception_v3" in msg
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'"):
        create_backbone("timm:no_such_net")
    with pytest.raises(ConfigError):
        create_backbone("")
    names = available_backbones()
    assert {"builtin:cnn-small", "builtin:cnn-tiny", "torchvision:maxvit_t", "timm:<name>"} <= set(names)


def test_register_prefix_and_exact_name():
    calls = []

    @register_backbone("unittest-family:")
    def _family(arch, *, pretrained=False, weights=None, width=4):
        calls.append((arch, width))
        bb = create_backbone("builtin:cnn-tiny")
        return bb

    bb = create_backbone("unittest-family:foo", width=8)
    assert calls == [("foo", 8)] and bb.name == "unittest-family:foo"
    assert "unittest-family:<name>" in available_backbones()
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("unittest-family:")(lambda arch, **kw: None)
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("unittest-family:")


def test_preprocessing_roundtrip_and_validation():
    pre = Preprocessing.named("clip", 224)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert pre.normalize == "clip" and pre.mean[0] == pytest.approx(0.48145466)
    with pytest.raises(ConfigError, match="unknown normalisation"):
        Preprocessing.named("zscore", 64)
    with pytest.raises(ConfigError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({"input_size": 64, "size": 3})
    with pytest.raises(ConfigError, match="positive"):
        Preprocessing(input_size=64, std=(0.0, 1.0, 1.0))


def test_load_weights_into_existing_backbone(tmp_path):
    a, b = create_backbone("builtin:cnn-tiny"), create_backbone("builtin:cnn-tiny")
    path = tmp_path / "w.pt"
    torch.save({"model": a.state_dict()}, path)
    load_weights(b, path)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
