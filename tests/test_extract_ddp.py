"""``affectlab extract --devices 2 --strategy ddp``: two CPU ranks write one store equal to a
one-process extraction, and resume one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from affectlab.features.cache import DONE_DIR, FeatureStore, extract_features, read_attrs
from affectlab.features.distributed import _batch_plan

from analyze_media import untrained_predictor


def test_batch_plan_splits_chunks_over_ranks_without_crossing_them():
    n, rows, bs = 50, 16, 6
    plans = [_batch_plan(range(4), n, rows, bs, rank, 2) for rank in range(2)]
    assert {c for c, _ in plans[0]} == {0, 2} and {c for c, _ in plans[1]} == {1, 3}
    covered = sorted(i for plan in plans for _, idx in plan for i in idx)
    assert covered == list(range(n))  # every row once
    for plan in plans:
        for c, idx in plan:
            assert c * rows <= idx[0] and idx[-1] < min((c + 1) * rows, n) and len(idx) <= bs


@pytest.fixture(scope="module")
def data_and_run(tmp_path_factory):
    from affectlab.data.synth import generate
    from affectlab.modelfile import save_model

    root = tmp_path_factory.mktemp("ddp")
    generate(root / "synth", n=90, size=32, seed=3)
    run = root / "run"
    run.mkdir()
    save_model(run / "model.ckpt", untrained_predictor().method)  # fixed weights: every process has the same
    return f"manifest:{root / 'synth' / 'labels.csv'}", f"run:{run}"


def _ddp(spec, backbone, out, *extra):
    cmd = [sys.executable, "-m", "affectlab", "extract", spec, "--backbone", backbone, "--out", str(out),
           "--batch-size", "8", "--chunk-rows", "16", "--devices", "2", "--strategy", "ddp", "-q", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_two_rank_extraction_equals_one_process_and_resumes_a_partial_store(data_and_run, tmp_path):
    spec, backbone = data_and_run
    one = extract_features(spec, backbone, tmp_path / "one.zarr", batch_size=8, chunk_rows=16, progress=False)
    # the same store cut after its first chunk, finished by two ranks
    partial = tmp_path / "two.zarr"
    extract_features(spec, backbone, partial, batch_size=8, chunk_rows=16, progress=False, max_chunks=1)
    done = _ddp(spec, backbone, partial)
    assert done.stdout.count("wrote") + done.stderr.count("wrote") == 1  # one summary, not one per rank
    two = FeatureStore.open(partial)
    np.testing.assert_array_equal(two.global_features(), one.global_features())
    np.testing.assert_array_equal(two.valid(), one.valid())
    assert sorted(two.attrs["completed"]) == list(range(one.num_chunks))
    assert not (partial / DONE_DIR).exists()  # rank markers folded into the attrs
    # a store of another backbone is refused by every rank, as in one process
    other = tmp_path / "other.zarr"
    extract_features(spec, "builtin:cnn-small", other, batch_size=8, chunk_rows=16, progress=False, max_chunks=1)
    cmd = [sys.executable, "-m", "affectlab", "extract", spec, "--backbone", backbone, "--out", str(other),
           "--batch-size", "8", "--chunk-rows", "16", "--devices", "2", "-q"]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "extracted differently" in bad.stderr


def test_ranks_resume_from_markers_of_an_interrupted_run(data_and_run, tmp_path):
    """Chunk markers left by killed ranks count as done for any later run."""
    spec, backbone = data_and_run
    out = tmp_path / "f.zarr"
    full = extract_features(spec, backbone, tmp_path / "full.zarr", batch_size=8, chunk_rows=16, progress=False)
    extract_features(spec, backbone, out, batch_size=8, chunk_rows=16, progress=False, max_chunks=2)
    # as if a rank had written chunk 3 and been killed before the attrs were merged
    import affectlab.features.cache as cache

    group = cache._open_group(out, "a")
    group["global"][48:64] = full.global_features()[48:64]
    group["valid"][48:64] = True
    cache.mark_done(out, 3)
    assert read_attrs(out)["completed"] == [0, 1]
    calls = []
    real = cache.encode_batch
    cache.encode_batch = lambda bb, batch, *a, **k: calls.append(batch["index"].tolist()) or real(bb, batch, *a, **k)
    try:
        store = extract_features(spec, backbone, out, batch_size=8, chunk_rows=16, progress=False)
    finally:
        cache.encode_batch = real
    assert not any(48 <= i < 64 for idx in calls for i in idx)  # chunk 3 not recomputed
    np.testing.assert_array_equal(store.global_features(), full.global_features())
    assert store.complete and not (out / DONE_DIR).exists()
