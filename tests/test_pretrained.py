"""Paper presets start from the papers' pretrained weights through torchvision's cache;
offline a missing file is named, never replaced by random weights."""

from __future__ import annotations

import pytest
import torch

from affectlab.cli import main
from affectlab.data.schema import LabelSpace
from affectlab.errors import ModelError
from affectlab.features.backbones import create_backbone, torchvision_weights_file
from affectlab.methods.base import create_method
from affectlab.train.config import method_config_for, resolve_config

SPACE = LabelSpace(expressions=("neutral", "happiness", "sadness", "surprise"), va=True)
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


@pytest.mark.parametrize(
    "preset, method, file",
    [("cage-combined", "cage", "maxvit_t-bc5ab103.pth"), ("smm", "smm", "inception_v3_google-0cc3c7bd.pth"),
     ("smm-synth", "smm", "mobilenet_v2-b0353104.pth")],
)
def test_paper_preset_offline_names_the_missing_file(preset, method, file):
    cfg = resolve_config(preset=preset)
    assert cfg.method_config["pretrained"] is True
    with pytest.raises(ModelError) as err:
        create_method(method, SPACE, method_config_for(cfg))
    text = str(err.value)
    assert file in text and "hub/checkpoints" in text and "download.pytorch.org" in text
    assert "--set pretrained=false" in text and "\n" not in text
    # the explicit way out trains from scratch
    cfg = resolve_config(preset=preset, sets=["pretrained=false"])
    m = create_method(method, SPACE, method_config_for(cfg))
    assert m.backbone.weights_info is None


def test_pretrained_weights_come_from_torchvision_cache(assets_home):
    path, url, enum = torchvision_weights_file("mobilenet_v2")
    assert path.is_file() and path.name == "mobilenet_v2-b0353104.pth" and enum.endswith("IMAGENET1K_V1")
    bb = create_backbone("torchvision:mobilenet_v2", pretrained=True)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = bb.state_dict()
    for key in ("body.features.0.0.weight", "body.features.18.1.running_mean"):
        torch.testing.assert_close(own[key], state[key.removeprefix("body.")])
    assert bb.weights_info == {"name": path.name, "sha256": MOBILENET_SHA256, "source": f"torchvision {enum}"}
    random = create_backbone("torchvision:mobilenet_v2")
    assert not torch.equal(random.state_dict()["body.features.0.0.weight"], state["features.0.0.weight"])
    assert random.weights_info is None


def test_recommended_smm_starts_from_imagenet_mobilenet(assets_home):
    """`train --method smm` (preset smm-synth) fine-tunes torchvision's ImageNet MobileNetV2 cut at features.13."""
    cfg = resolve_config(preset="smm-synth")
    space = LabelSpace(expressions=("neutral", "happiness"), va=True, aus=("AU1", "AU12"))
    m = create_method("smm", space, method_config_for(cfg))
    path, _, _ = torchvision_weights_file("mobilenet_v2")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = m.backbone.state_dict()
    for key in ("body.features.0.0.weight", "body.features.13.conv.3.running_var"):
        torch.testing.assert_close(own[key], state[key.removeprefix("body.")])
    assert m.backbone.weights_info["sha256"] == MOBILENET_SHA256
    m.eval()
    with torch.no_grad():
        out = m({"image": torch.randn(2, 3, cfg.image_size, cfg.image_size)})
    assert out.extras["attention"].shape == (2, 17, 4, 4)  # U ROI maps over a 4x4 map


def test_weights_file_is_recorded(tmp_path):
    bb = create_backbone("builtin:cnn-tiny")
    torch.save(bb.state_dict(), tmp_path / "w.pt")
    again = create_backbone("builtin:cnn-tiny", weights=tmp_path / "w.pt")
    assert again.weights_info["name"] == "w.pt" and len(again.weights_info["sha256"]) == 64


def test_extract_refuses_random_clip_weights(tmp_path, capsys):
    pytest.importorskip("open_clip")
    from affectlab.data.synth import generate

    generate(tmp_path / "s", 4, size=32, seed=0, progress=False)
    spec = f"manifest:{tmp_path / 's' / 'labels.csv'}"
    code = main(["extract", spec, "--backbone", "clip:ViT-B-32", "--out", str(tmp_path / "f.zarr"), "-q"])
    err = capsys.readouterr().err
    assert code != 0 and "random" in err and "--random-init" in err and "--weights" in err
    assert not (tmp_path / "f.zarr").exists()


def test_run_config_records_the_starting_weights(assets_home, tmp_path):
    import yaml

    from affectlab.data.synth import generate
    from affectlab.train.engine import train

    generate(tmp_path / "s", 24, size=32, seed=3, progress=False)
    spec = f"manifest:{tmp_path / 's' / 'labels.csv'}"
    cfg = resolve_config(
        options={"method": "baseline", "backbone": "torchvision:mobilenet_v2", "train": spec, "epochs": 1,
                 "batch_size": 12, "image_size": 32, "train_transform": "eval"},
        sets=["pretrained=true"],
    )
    train(cfg, tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["initial_weights"]["name"] == "mobilenet_v2-b0353104.pth"
    assert saved["initial_weights"]["sha256"] == MOBILENET_SHA256
    assert saved["method_config"]["pretrained"] is True
