"""`affectlab train --method aura --backbone NAME --train IMAGES`: features extracted once,
kept in the feature cache, reused while backbone and data are unchanged."""

from __future__ import annotations

import pandas as pd
import pytest

from affectlab.cli import main
from affectlab.data.synth import generate
from affectlab.features.cache import FeatureStore


@pytest.fixture
def images(tmp_path):
    generate(tmp_path / "s", 40, size=32, seed=5, progress=False)
    return tmp_path / "s" / "labels.csv"


def _train(labels, out, cache):
    return main([
        "train", "--method", "aura", "--backbone", "builtin:cnn-tiny", "--train", f"manifest:{labels}",
        "--out", str(out), "--epochs", "1", "--batch-size", "16", "--feature-cache", str(cache),
        "--set", "num_archetypes=8", "--set", "dim=16", "--set", "hidden=16", "-q",
    ])


def test_aura_trains_from_images_in_one_command(images, tmp_path):
    cache = tmp_path / "cache"
    assert _train(images, tmp_path / "run1", cache) == 0
    assert (tmp_path / "run1" / "model.ckpt").is_file()
    stores = sorted(cache.glob("*.zarr"))
    assert len(stores) == 1 and stores[0].name.startswith("builtin-cnn-tiny-")
    store = FeatureStore.open(stores[0])
    assert store.num_samples == 40 and store.attrs["backbone"] == "builtin:cnn-tiny"
    stamp = (stores[0] / "global").stat().st_mtime_ns, store.attrs["finished_at"]
    # same data, same backbone: the store is reused, nothing is re-encoded
    assert _train(images, tmp_path / "run2", cache) == 0
    assert sorted(cache.glob("*.zarr")) == stores
    again = FeatureStore.open(stores[0])
    assert ((stores[0] / "global").stat().st_mtime_ns, again.attrs["finished_at"]) == stamp
    # a changed label changes the fingerprint: a new store, never stale features
    table = pd.read_csv(images)
    table.loc[0, "expression"] = "anger" if table.loc[0, "expression"] != "anger" else "fear"
    table.to_csv(images, index=False)
    from affectlab.features.auto import cached_features

    spec = cached_features(f"manifest:{images}", "builtin:cnn-tiny", cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.zarr"))) == 2 and spec != f"features:{stores[0]}"
