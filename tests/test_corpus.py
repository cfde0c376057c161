"""Corpus runs (``analyze --engine local|ray --out DIR``): per-input tables, index, re-runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import affectlab
from affectlab.analyze import corpus
from affectlab.analyze.corpus import INDEX_FILE, read_index, read_input_lists, run_corpus, table_name
from affectlab.errors import ConfigError

from analyze_media import synth_clip, write_video

N_FRAMES = 8
OPTIONS = {"detector": "none", "batch_size": 4}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six short synthetic videos: two named clip.mp4 in different folders, one truncated."""
    root = tmp_path_factory.mktemp("corpus")
    paths = []
    for k, rel in enumerate(["a/clip.mp4", "b/clip.mp4", "c/one.mp4", "c/two.mp4", "c/three.mp4"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        paths.append(write_video(root / rel, synth_clip(N_FRAMES, size=64, seed=k)[0], fps=10))
    rng = np.random.default_rng(0)
    full = write_video(root / "full.mkv", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)])
    cut = root / "c" / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return [str(p) for p in paths] + [str(cut)]


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    index = read_index(out)
    return {inp: pd.read_parquet(out / row["table"]) for inp, row in index.items()}


def test_table_names_are_stable_and_unique_per_path(tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    assert table_name(a) != table_name(b)
    assert table_name(a) == table_name(str(a)) and table_name(a).startswith("clip-")
    assert table_name(a).endswith(".parquet")


def test_input_lists_are_read_relative_to_the_list(tmp_path):
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "inputs.txt"
    listing.write_text("# recordings\nx.mp4\n\n/abs/y.mp4\n")
    assert read_input_lists([listing, "z.mp4"]) == [str(tmp_path / "lists" / "x.mp4"), "/abs/y.mp4", "z.mp4"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="empty"):
        read_input_lists([empty])


def test_local_engine_index_failures_and_tables_equal_a_single_table_run(clips, predictor, tmp_path):
    result = run_corpus(clips, tmp_path / "out", model=predictor, progress=False, **OPTIONS)
    index = pd.read_csv(tmp_path / "out" / INDEX_FILE)
    assert len(index) == 6 and sorted(index["status"]) == ["failed"] + ["ok"] * 5
    failed = index[index["status"] == "failed"].iloc[0]
    assert failed["input"].endswith("cut.mkv") and "cut.mkv" in failed["error"] and "frames read" in failed["error"]
    assert index["table"].nunique() == 6  # the two clip.mp4 get their own tables
    assert result.summary()["failed"] == 1
    # each ok table holds exactly the rows a single-table run gives that input
    single = affectlab.analyze(clips, predictor, progress=False, **OPTIONS)
    for inp, table in _tables(tmp_path / "out").items():
        expected = single[single["input"] == inp].reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.DataFrame(table), pd.DataFrame(expected), check_dtype=False)


def test_rerun_keeps_finished_redoes_failed_and_refuses_other_settings(clips, predictor, tmp_path):
    out = tmp_path / "out"
    run_corpus(clips[:3], out, model=predictor, progress=False, **OPTIONS)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    seen = []
    result = run_corpus(clips, out, model=predictor, progress=False, on_entry=seen.append, **OPTIONS)
    assert sorted(e["input"] for e in seen) == sorted(clips[3:])  # only the rest
    assert len(result.kept) == 3
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in out.glob("*.parquet") if p.name in mtimes)
    again = run_corpus(clips, out, model=predictor, progress=False, **OPTIONS)
    assert [e["input"] for e in again.done] == [clips[-1]]  # the failed input is tried again
    with pytest.raises(ConfigError, match="every"):
        run_corpus(clips, out, model=predictor, progress=False, every=2, **OPTIONS)


def test_a_line_cut_by_a_kill_is_dropped_and_the_index_still_appends(tmp_path):
    (tmp_path / INDEX_FILE).write_text(
        "input,table,rows,frames,status,seconds,error,attempt,worker,peak_rss_mb\nx.mp4,x.parquet,3,3,ok,0.1,,1,7,100\ny.mp4,y.par")  # cut mid-line
    assert list(read_index(tmp_path)) == ["x.mp4"]
    w = corpus.IndexWriter(tmp_path)
    w.add({"input": "z.mp4", "table": "z.parquet", "rows": 1, "frames": 1, "status": "ok", "seconds": 0, "attempt": 1})
    w.close()
    assert list(read_index(tmp_path)) == ["x.mp4", "z.mp4"]


def test_bad_requests_are_refused_before_any_work(clips, predictor, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="table file"):
        run_corpus(clips, tmp_path / "t.csv", model=predictor, progress=False)
    with pytest.raises(ConfigError, match="engine ray"):
        run_corpus(clips, tmp_path / "o", model=predictor, workers=2, progress=False)
    with pytest.raises(ConfigError, match="engine"):
        run_corpus(clips, tmp_path / "o", engine="spark", model=predictor, progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'affectlab\[cluster\]'"):
        run_corpus(clips, tmp_path / "o2", engine="ray", model=predictor, progress=False)
    assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_engine_gives_the_local_engines_tables(clips, model_file, tmp_path, ray_cluster):
    local = run_corpus(clips, tmp_path / "local", model=str(model_file), progress=False, **OPTIONS)
    remote = run_corpus(clips, tmp_path / "ray", engine="ray", workers=2, model=str(model_file), progress=False,
                        **OPTIONS)
    assert remote.workers == 2 and len(remote.done) == 6 and len(remote.failed) == 1
    assert remote.failed[0]["error"] == local.failed[0]["error"]
    a, b = _tables(tmp_path / "local"), _tables(tmp_path / "ray")
    assert sorted(a) == sorted(b) == sorted(clips)
    for inp in a:
        pd.testing.assert_frame_equal(a[inp], b[inp])


def test_ray_worker_killed_mid_run_is_replaced_and_its_input_redone(clips, model_file, tmp_path, ray_cluster):
    killed = []

    def kill_its_worker(entry):
        if not killed:  # the worker that sent the first entry: its next input meets a dead process
            os.kill(int(entry["worker"]), signal.SIGKILL)
            killed.append(entry["worker"])

    result = run_corpus(clips, tmp_path / "out", engine="ray", workers=2, model=str(model_file), progress=False,
                        on_entry=kill_its_worker, **OPTIONS)
    index = read_index(tmp_path / "out")
    assert sorted(index) == sorted(clips)
    assert sum(r["status"] == "ok" for r in index.values()) == 5
    assert any(int(e["attempt"]) == 2 for e in result.done)  # the input of the dead worker, given again
    assert killed[0] not in {e["worker"] for e in result.done[1:]}


@pytest.fixture(scope="module")
def long_clips(clips, tmp_path_factory):
    """Eight clips long enough (40 frames each) that a kill lands while inputs remain."""
    root = tmp_path_factory.mktemp("long")
    paths = [str(write_video(root / f"s{k}.mp4", synth_clip(40, size=64, seed=10 + k)[0], fps=10)) for k in range(7)]
    return paths + [clips[-1]]  # and the truncated one


@pytest.mark.slow
def test_killed_driver_then_rerun_computes_only_the_rest(long_clips, model_file, tmp_path):
    pytest.importorskip("ray")
    clips = long_clips
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "affectlab", "analyze", *clips, "--model", str(model_file), "--detector", "none",
           "--engine", "ray", "--workers", "1", "--out", str(out), "-q"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(read_index(out)) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the cluster it started
    proc.wait()
    first = read_index(out)
    assert 2 <= len(first) < len(clips), f"driver finished {len(first)} inputs before the kill"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # the truncated video fails
    after = pd.read_csv(out / INDEX_FILE)
    redone = after.iloc[len(first):]
    assert set(redone["input"]) == set(clips) - {k for k, r in first.items() if r["status"] == "ok"}
    assert sorted(read_index(out)) == sorted(clips)


def test_default_stack_on_real_photos_gives_the_single_table_rows(assets_home, tmp_path):
    """No model, no detector: the corpus run uses the same default stack (YuNet, face-api,
    landmarker pose and AUs) as analyze, and gives each photo the same rows."""
    faces = Path(__file__).resolve().parents[2] / "shared" / "data" / "london" / "images"
    if not faces.is_dir():
        pytest.skip("needs ../shared/data/london")
    photos = [str(p) for p in sorted(faces.glob("*.jpg"))[:2]]
    result = run_corpus(photos, tmp_path / "out", progress=False)
    assert not result.failed
    single = affectlab.analyze(photos, progress=False)
    for inp, table in _tables(tmp_path / "out").items():
        assert {"pose_yaw", "AU12"} <= set(table.columns)
        expected = single[single["input"] == inp].reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.DataFrame(table), pd.DataFrame(expected), check_dtype=False)
