"""``analyze --resume``: an interrupted run, continued, gives the table of one uninterrupted run."""

import json

import pandas as pd
import pytest
import torch
from PIL import Image

import affectlab
from affectlab.analyze import pipeline
from affectlab.analyze.resume import progress_path
from affectlab.analyze.table import AffectTable
from affectlab.cli import main
from affectlab.errors import ConfigError
from analyze_media import decode_count, synth_clip, untrained_predictor, write_video

N_FRAMES = 12

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [write_video(folder / f"v{k}.mp4", synth_clip(N_FRAMES, size=64, seed=k)[0], fps=10) for k in range(3)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    frames = synth_clip(6, size=64, seed=7)[0]
    paths = []
    for k in range(3):
        Image.fromarray(frames[2 * k]).save(folder / f"i{k}.png")
        paths.append(folder / f"i{k}.png")
    return paths


def _stop_after(monkeypatch, n):
    """Ctrl-C when the run asks for its (n+1)-th frame (counted over all inputs)."""
    real = pipeline.iter_frames
    seen = {"n": 0}

    def frames(*args, **kwargs):
        for frame in real(*args, **kwargs):
            if seen["n"] == n:
                raise KeyboardInterrupt
            seen["n"] += 1
            yield frame

    monkeypatch.setattr(pipeline, "iter_frames", frames)


def _run(inputs, predictor, out, **kw):
    kw = {"detector": "none", "batch_size": 4, "progress": False, **kw}
    return affectlab.analyze(inputs, predictor, out=out, **kw)


def _interrupted(monkeypatch, inputs, predictor, out, n, **kw):
    _stop_after(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt):
        _run(inputs, predictor, out, **kw)
    monkeypatch.undo()


def _read(path) -> pd.DataFrame:
    return pd.DataFrame(AffectTable.read(path))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_resume_after_ctrl_c_mid_video_equals_one_run(videos, predictor, tmp_path, monkeypatch, suffix):
    full = _run(videos, predictor, tmp_path / f"full{suffix}")
    out = tmp_path / f"t{suffix}"
    # stopped at frame 5 of the second video: its 5 rows are in the file, unfinished
    _interrupted(monkeypatch, videos, predictor, out, N_FRAMES + 5)
    partial = _read(out)
    assert partial["input"].value_counts().to_dict() == {str(videos[0]): N_FRAMES, str(videos[1]): 5}
    assert [e["input"] for e in json.loads(progress_path(out).read_text())["finished"]] == [str(videos[0])]

    table = _run(videos, predictor, out, resume=True)
    pd.testing.assert_frame_equal(_read(out), _read(tmp_path / f"full{suffix}"))
    # the returned table is the whole table too, with the pipeline's dtypes
    pd.testing.assert_frame_equal(pd.DataFrame(table), pd.DataFrame(full))
    assert table.model_info["resume"]["kept_rows"] == N_FRAMES and table.model_info["resume"]["dropped_rows"] == 5
    assert table.model_info["stats"]["inputs"] == 2  # the first video was not analysed again
    back = _read(out)
    assert not back.duplicated(["input", "frame", "face"]).any()
    assert back.groupby("input")["frame"].apply(list).to_dict() == {str(v): list(range(N_FRAMES)) for v in videos}
    assert [e["rows"] for e in json.loads(progress_path(out).read_text())["finished"]] == [N_FRAMES] * 3


def test_images_and_videos_report_and_annotated_videos(videos, images, predictor, tmp_path, monkeypatch):
    inputs = [*images, *videos[:2]]
    full = tmp_path / "full.csv"
    _run(inputs, predictor, full, batch_size=2)
    out = tmp_path / "t.csv"
    # stopped while reading the third image: the first two (one model batch) are finished
    _interrupted(monkeypatch, inputs, predictor, out, 2, batch_size=2, video_out=tmp_path / "ann.mp4",
                 report=tmp_path / "rep")
    assert _read(out)["input"].tolist() == [str(p) for p in images[:2]]
    table = _run(inputs, predictor, out, batch_size=2, video_out=tmp_path / "ann.mp4", report=tmp_path / "rep",
                 resume=True)
    pd.testing.assert_frame_equal(_read(out), _read(full))
    assert table.model_info["resume"]["kept_inputs"] == 2
    # one annotated file per video, named as a single run names them
    assert {decode_count(tmp_path / f"ann_{v.stem}.mp4") for v in videos[:2]} == {N_FRAMES}
    # the report covers the kept images as well as the new inputs
    page = (tmp_path / "rep" / "images.html").read_text()
    assert all(p.name in page for p in images) and "A face was found in 3 of 3 images" in page
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "v0.html" in index and "v1.html" in index and index.count("images.html") == 3


def test_a_second_interruption_and_a_kill_mid_line_still_resume(videos, predictor, tmp_path, monkeypatch):
    _run(videos, predictor, tmp_path / "full.parquet")
    full = _read(tmp_path / "full.parquet")
    out = tmp_path / "t.parquet"
    _interrupted(monkeypatch, videos, predictor, out, 3)
    # the resumed run is stopped too (mid third video): the file is still a valid table
    _interrupted(monkeypatch, videos, predictor, out, 2 * N_FRAMES + 4, resume=True)
    assert _read(out)["input"].value_counts().to_dict() == {str(videos[0]): N_FRAMES, str(videos[1]): N_FRAMES,
                                                            str(videos[2]): 4}
    _run(videos, predictor, out, resume=True)
    pd.testing.assert_frame_equal(_read(out), full)

    # a kill in the middle of a CSV write leaves half a line: it is dropped with its input
    csv = tmp_path / "k.csv"
    _interrupted(monkeypatch, videos, predictor, csv, N_FRAMES + 2)
    text = csv.read_text()
    csv.write_text(text + text.splitlines()[-1][:25])
    _run(videos, predictor, csv, resume=True)
    _run(videos, predictor, tmp_path / "full.csv")
    pd.testing.assert_frame_equal(_read(csv), _read(tmp_path / "full.csv"))


@pytest.mark.parametrize(
    ("change", "named"),
    [({"every": 2}, "--every"), ({"smooth": 3.0}, "--smooth"), ({"detector": "haar"}, "--detector"),
     ({"model": "other"}, "other weights"), ({"end": 0.5}, "--end")],
)
def test_other_settings_are_refused_naming_the_setting(videos, predictor, tmp_path, monkeypatch, change, named):
    out = tmp_path / "t.csv"
    _interrupted(monkeypatch, videos, predictor, out, 5)
    before = out.read_bytes()
    change = dict(change)
    model = untrained_predictor(seed=1) if change.pop("model", None) else predictor
    with pytest.raises(ConfigError, match=f"cannot resume {out}.*{named}") as exc:
        _run(videos, model, out, resume=True, **change)
    assert "\n" not in str(exc.value)
    assert out.read_bytes() == before  # nothing was touched


def test_cli_resume_nothing_left_missing_table_and_mismatch(videos, model_file, tmp_path, capsys):
    out = tmp_path / "t.csv"
    args = ["analyze", *map(str, videos[:2]), "--model", str(model_file), "--out", str(out), "--detector", "none", "-q"]
    # --resume without a table yet: an ordinary run
    assert main([*args, "--resume"]) == 0
    assert len(_read(out)) == 2 * N_FRAMES
    before, sidecar = out.read_bytes(), progress_path(out).read_bytes()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr().err.replace("\n", " ")
    assert "nothing to resume" in printed and f"kept {2 * N_FRAMES} rows of 2 finished inputs" in printed
    assert out.read_bytes() == before and progress_path(out).read_bytes() == sidecar
    # a report asked for then covers the rows already in the table
    assert main([*args, "--resume", "--report", str(tmp_path / "rep")]) == 0
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "v0.html" in index and "v1.html" in index and (tmp_path / "rep" / "v1.html").stat().st_size > 1000
    assert out.read_bytes() == before
    # a new input given later is appended
    assert main([*args, str(videos[2]), "--resume"]) == 0
    assert _read(out)["input"].tolist() == [str(v) for v in videos for _ in range(N_FRAMES)]
    capsys.readouterr()
    assert main([*args, "--resume", "--every", "3"]) == 2
    line = capsys.readouterr().err.strip().replace("\n", " ")
    assert "--every differs" in line and "made with 1, this run has 3" in line
    progress_path(out).unlink()
    assert main([*args, "--resume"]) == 2
    assert "t.csv.progress.json is missing" in capsys.readouterr().err.replace("\n", "")


def test_a_failed_input_counts_as_finished_and_is_reported_again(videos, predictor, tmp_path, monkeypatch):
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    inputs = [bad, *videos[:2]]
    out = tmp_path / "t.csv"
    with pytest.warns(UserWarning, match="1 of 3 inputs failed"):
        _run(inputs, predictor, tmp_path / "full.csv")
    _stop_after(monkeypatch, N_FRAMES + 3)
    with pytest.raises(KeyboardInterrupt):
        _run(inputs, predictor, out)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=f"1 of 3 inputs failed: {bad}"):
        table = _run(inputs, predictor, out, resume=True)
    assert table.model_info["stats"]["inputs"] == 1  # only the second video was analysed again
    pd.testing.assert_frame_equal(_read(out), _read(tmp_path / "full.csv"))


def test_resume_needs_an_out_file(videos, predictor):
    with pytest.raises(ConfigError, match="resume needs out"):
        affectlab.analyze(videos[0], predictor, detector="none", resume=True, progress=False)


def test_sidecar_cut_by_a_kill_mid_append_keeps_its_whole_entries(videos, predictor, tmp_path):
    full = tmp_path / "full.csv"
    _run(videos, predictor, full)
    out = tmp_path / "t.csv"
    _run(videos, predictor, out)
    sidecar = progress_path(out)
    text = sidecar.read_text()
    # appended in place: a header line, one line per finished input, a closing line
    assert len(text.splitlines()) == 1 + len(videos) + 1
    assert [e["rows"] for e in json.loads(text)["finished"]] == [N_FRAMES] * 3
    # a kill while the third entry was being appended: half a line, no closing bracket
    sidecar.write_text(text[: text.rindex(str(videos[2]))])
    with open(out) as f:  # and the table holds only the rows of the first two inputs
        lines = f.read().splitlines()
    out.write_text("\n".join(lines[: 1 + 2 * N_FRAMES]) + "\n")
    table = _run(videos, predictor, out, resume=True)
    assert table.model_info["stats"]["inputs"] == 1  # only the third video was analysed again
    pd.testing.assert_frame_equal(_read(out), _read(full))
    assert [e["rows"] for e in json.loads(sidecar.read_text())["finished"]] == [N_FRAMES] * 3


_SLOW_CLI = """
import sys, time
from affectlab.analyze import pipeline
real = pipeline.iter_frames
def slow(*args, **kwargs):
    for frame in real(*args, **kwargs):
        time.sleep(0.04)  # time for the test to kill the run mid-way
        yield frame
pipeline.iter_frames = slow
from affectlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_parquet_keeps_the_finished_inputs_through_kill_9(videos, model_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from affectlab.analyze.resume import read_progress

    out = tmp_path / "t.parquet"
    src = Path(affectlab.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    args = [*map(str, videos), "--model", str(model_file), "--detector", "none", "--out", str(out), "--batch-size", "4"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLI, "analyze", *args, "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(read_progress(out)["finished"]) >= 1:
                    break
            except ConfigError:
                pass
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = [e["input"] for e in read_progress(out)["finished"]]
    assert 1 <= len(finished) < len(videos)
    # the finished inputs' rows are on disk and readable
    survived = _read(out)
    assert survived["input"].value_counts().get(str(videos[0]), 0) == N_FRAMES
    table = affectlab.analyze(videos, str(model_file), detector="none", out=out, batch_size=4, progress=False,
                              resume=True)
    assert table.model_info["resume"]["kept_inputs"] == len(finished)
    assert not (tmp_path / "t.parquet.parts").exists()  # assembled into the file
    affectlab.analyze(videos, str(model_file), detector="none", out=tmp_path / "one.parquet", batch_size=4,
                      progress=False)
    pd.testing.assert_frame_equal(_read(out), _read(tmp_path / "one.parquet"))


@pytest.mark.parametrize("damage", ["empty-predictions", "text-in-a-number", "empty-face-id", "cut-last-line"])
def test_resume_redoes_an_input_with_damaged_rows(videos, predictor, tmp_path, damage):
    inputs = videos[:2]
    full = tmp_path / "full.csv"
    _run(inputs, predictor, full)
    out = tmp_path / "t.csv"
    _run(inputs, predictor, out)
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    k = N_FRAMES  # the last row of the first video
    fields = lines[k].split(",")
    if damage == "empty-predictions":
        first = header.index("score") + 1
        fields[first:] = [""] * (len(fields) - first)
    elif damage == "text-in-a-number":
        fields[header.index("valence")] = "n/a"
    elif damage == "empty-face-id":
        fields[header.index("face")] = ""
    if damage == "cut-last-line":
        k = len(lines) - 1  # a finished table whose last line lost its end
        text = "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2]
    else:
        lines[k] = ",".join(fields)
        text = "\n".join(lines) + "\n"
    out.write_text(text)
    damaged = str(videos[0]) if k == N_FRAMES else str(videos[1])
    table = _run(inputs, predictor, out, resume=True)
    assert table.model_info["resume"]["kept_inputs"] == 1 and table.model_info["stats"]["inputs"] == 1
    assert table.model_info["resume"]["dropped_rows"] == (N_FRAMES if damage != "cut-last-line" else N_FRAMES - 1)
    back = _read(out)
    pd.testing.assert_frame_equal(back.sort_values(["input", "frame"]).reset_index(drop=True),
                                  _read(full).sort_values(["input", "frame"]).reset_index(drop=True))
    assert back.loc[back["input"] == damaged, "valence"].notna().all()
