"""Feature cache: extraction, resumption, refusal to mix, FeatureDataset, clip:/run: backbones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from affectlab.data.datasets import load_dataset
from affectlab.data.synth import generate
from affectlab.errors import ConfigError, DatasetError
from affectlab.features.backbones import create_backbone
from affectlab.data.transforms import preprocessing_transform
from affectlab.features.cache import FeatureStore, dataset_fingerprint, extract_features
from affectlab.features.dataset import FeatureDataset, is_feature_spec, open_features


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root / "s", 40, size=32, seed=3, progress=False)
    return root / "s"


def _spec(d):
    return f"manifest:{d / 'labels.csv'}"


def _reference_features(spec, backbone):
    ds = load_dataset(spec)
    ds.set_transform(preprocessing_transform(backbone.preprocessing))
    backbone.eval()
    with torch.no_grad():
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])
        return backbone(x)


def test_extract_writes_features_labels_and_key(synth_dir, tmp_path):
    torch.manual_seed(0)
    bb = create_backbone("builtin:cnn-tiny")
    store = extract_features(_spec(synth_dir), bb, tmp_path / "f.zarr", batch_size=8, chunk_rows=16, progress=False)
    assert store.complete and store.num_samples == 40 and store.num_chunks == 3
    feats = store.global_features()
    assert feats.dtype == np.float16 and feats.shape == (40, bb.out_dim)
    ref = _reference_features(_spec(synth_dir), bb)["global"].numpy()
    np.testing.assert_allclose(feats.astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    attrs = store.attrs
    assert attrs["backbone"] == "builtin:cnn-tiny"
    assert attrs["preprocessing"]["input_size"] == bb.preprocessing.input_size
    assert attrs["fingerprint"] == dataset_fingerprint(load_dataset(_spec(synth_dir)))
    labels = store.labels()
    src = pd.read_csv(synth_dir / "labels.csv")
    assert list(labels["expression"]) == list(src["expression"])

    ds = FeatureDataset(tmp_path / "f.zarr")
    sample = ds[5]
    assert sample["features"].dtype == torch.float32
    np.testing.assert_allclose(sample["features"].numpy(), feats[5].astype(np.float32))
    assert int(sample["expr"]) == ds.label_space.expressions.index(src["expression"][5])
    np.testing.assert_allclose(sample["va"].numpy(), src[["valence", "arousal"]].to_numpy()[5], atol=1e-6)
    # subsets keep feature rows aligned with labels
    sub = ds.subset([7, 2])
    np.testing.assert_allclose(sub[1]["features"].numpy(), feats[2].astype(np.float32))


def test_extraction_resumes_without_recomputing_finished_chunks(synth_dir, tmp_path):
    torch.manual_seed(0)
    bb = create_backbone("builtin:cnn-tiny")
    seen = []
    orig = bb.forward

    def counting(x):
        seen.append(x.shape[0])
        return orig(x)

    bb.forward = counting
    out = tmp_path / "r.zarr"
    part = extract_features(_spec(synth_dir), bb, out, batch_size=8, chunk_rows=16, progress=False, max_chunks=1)
    assert not part.complete and sum(seen) == 16
    with pytest.raises(DatasetError, match="incomplete"):
        FeatureStore.open(out)
    seen.clear()
    full = extract_features(_spec(synth_dir), bb, out, batch_size=8, chunk_rows=16, progress=False)
    assert full.complete
    assert sum(seen) == 40 - 16  # only the two unfinished chunks
    ref = _reference_features(_spec(synth_dir), bb)["global"].numpy()
    np.testing.assert_allclose(full.global_features().astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    seen.clear()
    extract_features(_spec(synth_dir), bb, out, batch_size=8, chunk_rows=16, progress=False)
    assert sum(seen) == 0  # a finished store is not recomputed


def test_refuses_to_mix_backbones_or_datasets(synth_dir, tmp_path):
    out = tmp_path / "m.zarr"
    extract_features(_spec(synth_dir), "builtin:cnn-tiny", out, batch_size=8, chunk_rows=16, progress=False, max_chunks=1)
    with pytest.raises(DatasetError, match="backbone"):
        extract_features(_spec(synth_dir), "builtin:cnn-small", out, batch_size=8, chunk_rows=16, progress=False)
    other = tmp_path / "other"
    shutil.copytree(synth_dir, other)
    labels = pd.read_csv(other / "labels.csv")
    labels.loc[0, "expression"] = "anger" if labels.loc[0, "expression"] != "anger" else "fear"
    labels.to_csv(other / "labels.csv", index=False)
    # the copy has other paths and a changed label: a different dataset
    with pytest.raises(DatasetError, match="fingerprint"):
        extract_features(_spec(other), "builtin:cnn-tiny", out, batch_size=8, chunk_rows=16, progress=False)
    with pytest.raises(DatasetError, match="dtype"):
        extract_features(_spec(synth_dir), "builtin:cnn-tiny", out, batch_size=8, chunk_rows=16, dtype="float32", progress=False)
    # --overwrite replaces it
    store = extract_features(_spec(other), "builtin:cnn-tiny", out, batch_size=8, chunk_rows=16, overwrite=True, progress=False)
    assert store.complete


def test_fingerprint_sees_file_changes(synth_dir, tmp_path):
    other = tmp_path / "fp"
    shutil.copytree(synth_dir, other)
    before = dataset_fingerprint(load_dataset(_spec(other)))
    first = pd.read_csv(other / "labels.csv")["path"][0]
    (other / first).write_bytes((other / first).read_bytes() + b"\0")
    assert dataset_fingerprint(load_dataset(_spec(other))) != before


def test_patch_tokens_of_a_cnn_map(synth_dir, tmp_path):
    torch.manual_seed(0)
    bb = create_backbone("builtin:cnn-tiny")
    store = extract_features(_spec(synth_dir), bb, tmp_path / "p.zarr", batch_size=8, patch=True, dtype="float32", progress=False)
    ref = _reference_features(_spec(synth_dir), bb)["map"]
    tokens = ref.flatten(2).transpose(1, 2).numpy()
    assert store.attrs["tokens"] == list(tokens.shape[1:])
    ds = FeatureDataset(store.path)
    np.testing.assert_allclose(ds[3]["tokens"].numpy(), tokens[3], rtol=1e-4, atol=1e-5)


def test_bad_options_and_specs(synth_dir, tmp_path):
    with pytest.raises(ConfigError, match="dtype"):
        extract_features(_spec(synth_dir), "builtin:cnn-tiny", tmp_path / "x.zarr", dtype="int8", progress=False)
    with pytest.raises(DatasetError, match="not a feature store"):
        FeatureStore.open(tmp_path)
    assert is_feature_spec("features:a/b.zarr") and is_feature_spec("x.zarr/") and not is_feature_spec("manifest:x.csv")
    with pytest.raises(DatasetError, match="not a feature store"):
        open_features(f"features:{tmp_path / 'missing.zarr'}")


def test_cli_extract_and_one_line_error(synth_dir, tmp_path, capsys):
    from affectlab.cli import main

    out = tmp_path / "cli.zarr"
    # a built-in encoder without weights is random: refused unless asked for as a control
    assert main(["extract", _spec(synth_dir), "--backbone", "builtin:cnn-tiny", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "random" in err and "--random-init" in err and "run:" in err and not out.exists()
    assert main(["extract", _spec(synth_dir), "--backbone", "builtin:cnn-tiny", "--out", str(out), "-q",
                 "--random-init"]) == 0
    assert FeatureStore.open(out).num_samples == 40
    capsys.readouterr()
    code = main(["extract", _spec(synth_dir), "--backbone", "builtin:cnn-small", "--out", str(out), "-q", "--random-init"])
    err = capsys.readouterr().err
    assert code == 2 and "backbone" in err and "Traceback" not in err


# -- clip: and run: backbones ------------------------------------------------------------

TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    root = tmp_path_factory.mktemp("clipcfg")
    (root / "affectlab-test-tiny.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root)
    torch.manual_seed(0)
    model = open_clip.create_model("affectlab-test-tiny")
    torch.save(model.state_dict(), root / "tiny.pt")
    return model, root / "tiny.pt"


def test_clip_backbone_from_local_weights(tiny_clip, synth_dir, tmp_path):
    model, weights = tiny_clip
    bb = create_backbone("clip:affectlab-test-tiny", weights=weights)
    assert bb.out_dim == 24 and bb.token_dim == 32
    assert bb.preprocessing.input_size == 32 and bb.preprocessing.normalize == "clip"
    x = torch.randn(3, 3, 32, 32)
    out = bb(x)
    model.visual.eval()
    expected = model.visual(x)
    expected = expected[0] if isinstance(expected, tuple) else expected
    torch.testing.assert_close(out["global"], expected)
    assert out["tokens"].shape == (3, 16, 32)  # (32 / 8)^2 patches, class token dropped
    store = extract_features(_spec(synth_dir), bb, tmp_path / "c.zarr", patch=True, progress=False)
    assert store.dim == 24 and store.attrs["tokens"] == [16, 32]


def test_clip_never_downloads_implicitly(tiny_clip):
    with pytest.raises(ConfigError, match="pretrained"):
        create_backbone("clip:ViT-B-16@openai")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        create_backbone("clip:NoSuchModel")


def test_run_backbone_is_the_trained_encoder(tmp_path):
    import affectlab.runtime.run_backbone  # noqa: F401  (registers run:)
    from affectlab.data.schema import EXPRESSIONS, LabelSpace
    from affectlab.methods.base import create_method
    from affectlab.modelfile import save_model

    torch.manual_seed(1)
    method = create_method("baseline", LabelSpace(expressions=EXPRESSIONS), {"backbone": "builtin:cnn-tiny"})
    method.eval()
    save_model(tmp_path / "run" / "model.ckpt", method, preprocessing=method.backbone.preprocessing.to_dict())
    bb = create_backbone(f"run:{tmp_path / 'run'}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb(x)["global"], method.backbone(x)["global"])
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.encoder.training  # frozen: batch-norm statistics never move
    with pytest.raises(ConfigError):
        create_backbone(f"run:{tmp_path / 'run'}", pretrained=True)


def test_batched_fetch_equals_per_sample(synth_dir, tmp_path):
    from torch.utils.data import DataLoader

    from affectlab.data.batch import collate

    store = extract_features(_spec(synth_dir), "builtin:cnn-tiny", tmp_path / "b.zarr", patch=True, progress=False)
    ds = FeatureDataset(store.path).subset(np.arange(3, 40))
    idx = [5, 0, 5, 17, 36]  # unordered, repeated
    fast = collate(ds.__getitems__(idx))
    slow = collate([ds[i] for i in idx])
    assert set(fast) == set(slow)
    for key in ("features", "tokens", "expr", "va", "au", "index"):
        torch.testing.assert_close(fast[key], slow[key], equal_nan=True)
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate)
    got = torch.cat([b["features"] for b in loader])
    np.testing.assert_allclose(got.numpy(), ds.features_array())
