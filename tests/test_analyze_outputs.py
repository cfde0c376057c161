"""Analyze outputs: distinct names per input, requests that cannot be honoured are said,
outputs checked before the first frame, an output failure is not an input failure."""

import errno
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import affectlab
from affectlab.analyze import writers
from affectlab.perception.detectors import register_detector
from affectlab.analyze.naming import unique_output_names
from affectlab.analyze.pipeline import OutputError
from affectlab.analyze.resume import progress_path
from affectlab.analyze.table import AffectTable
from affectlab.cli import main
from affectlab.errors import ConfigError
from analyze_media import decode_count, synth_clip, write_video

N_FRAMES = 8


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two different videos, both named clip.mp4, in two folders."""
    root = tmp_path_factory.mktemp("twins")
    out = []
    for k, folder in enumerate(("day1", "day2")):
        (root / folder).mkdir()
        out.append(write_video(root / folder / "clip.mp4", synth_clip(N_FRAMES, size=64, seed=10 + k)[0], fps=10))
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "face.png"
    Image.fromarray(synth_clip(2, size=64, seed=3)[0][0]).save(path)
    return path


def test_unique_output_names_differ_and_do_not_depend_on_order_of_calls():
    names = unique_output_names(["/d/day1/clip.mp4", "/d/day2/clip.mp4", "/d/clip.mkv", "/d/x.mp4", "/e/Index.mp4"],
                                reserved=["index"])
    assert names["/d/x.mp4"] == "x"  # no clash: the plain stem
    assert len({n.lower() for n in names.values()}) == len(names)
    assert names["/d/day1/clip.mp4"] != names["/d/day2/clip.mp4"]
    assert names["/e/Index.mp4"].lower() != "index"
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for n in names.values())
    assert unique_output_names(list(names)) == unique_output_names(list(names))
    # the corpus engine's names depend on the input alone
    from affectlab.analyze.corpus import table_name
    from affectlab.analyze.naming import stable_output_name

    a, b = stable_output_name("/d/day1/clip.mp4"), stable_output_name("/d/day2/clip.mp4")
    assert a != b and a.startswith("clip-") and a == stable_output_name("/d/day1/../day1/clip.mp4")
    assert table_name("/d/day1/clip.mp4") == a + ".parquet"


def test_same_file_name_in_two_folders_gets_two_videos_and_two_pages(twins, model_file, tmp_path, capsys):
    ann, rep = tmp_path / "ann.mp4", tmp_path / "rep"
    code = main(["analyze", *map(str, twins), "--model", str(model_file), "--detector", "none", "--video-out", str(ann),
                 "--report", str(rep), "-q"])
    err = capsys.readouterr().err.replace("\n", "")
    assert code == 0
    videos = sorted(tmp_path.glob("ann_*.mp4"))
    assert len(videos) == 2 and all(str(v) in err for v in videos)
    assert [decode_count(v) for v in videos] == [N_FRAMES, N_FRAMES]
    first, second = (np.asarray([f.to_ndarray(format="rgb24") for f in __import__("av").open(str(v)).decode(video=0)])
                     for v in videos)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 1  # not one video written twice
    pages = sorted(p.name for p in rep.iterdir() if p.is_file())
    assert all(p.endswith(".html") for p in pages), pages
    video_pages = [p for p in pages if p not in ("index.html", "images.html")]
    assert len(video_pages) == 2
    index = (rep / "index.html").read_text()
    assert all(f"href='{p}'" in index or f'href="{p}"' in index for p in video_pages)


def test_smooth_auto_without_a_stored_mu_is_said(twins, model_file, tmp_path, capsys):
    code = main(["analyze", str(twins[0]), "--model", str(model_file), "--detector", "none", "--out",
                 str(tmp_path / "t.csv"), "--smooth", "auto", "-q"])
    err = capsys.readouterr().err.replace("\n", "")
    assert code == 0
    assert "note:" in err and "stores no smoothing mu" in err and "NOT smoothed" in err


def test_video_out_with_only_images_is_said_or_refused(photo, model_file, tmp_path, capsys):
    code = main(["analyze", str(photo), "--model", str(model_file), "--detector", "none", "--out",
                 str(tmp_path / "t.csv"), "--video-out", str(tmp_path / "ann.mp4"), "-q"])
    err = capsys.readouterr().err.replace("\n", "")
    assert code == 0 and "note:" in err and "no annotated video" in err
    assert not (tmp_path / "ann.mp4").exists()
    # nothing else to write: an error, not a run that writes nothing
    code = main(["analyze", str(photo), "--model", str(model_file), "--video-out", str(tmp_path / "ann.mp4"), "-q"])
    err = capsys.readouterr().err.replace("\n", "")
    assert code == 2 and "no video among the inputs" in err


CALLS = {"n": 0}


@register_detector("test-counting")
def _counting():
    def detect(image):
        CALLS["n"] += 1
        h, w = image.shape[:2]
        return np.array([[0, 0, w, h, 1.0]])

    return detect


@pytest.mark.parametrize("kind", ["webm", "gif-video", "out-under-a-file", "report-is-a-file"])
def test_outputs_are_checked_before_the_first_frame(twins, predictor, tmp_path, kind):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    kw = {"out": tmp_path / "t.csv"}
    if kind == "webm":
        kw["video_out"], named = tmp_path / "ann.webm", "ann.webm"
    elif kind == "gif-video":
        kw["video_out"], named = tmp_path / "ann.gif", "ann.gif"
    elif kind == "out-under-a-file":
        kw["out"], named = blocker / "t.csv", "t.csv"
    else:
        kw["report"], named = blocker, "plain.txt"
    CALLS["n"] = 0
    with pytest.raises(ConfigError, match=named):
        affectlab.analyze(twins, predictor, detector="test-counting", progress=False, **kw)
    assert CALLS["n"] == 0  # no frame was analysed
    assert not list(tmp_path.glob(".*affectlab-check*"))  # the probes are removed


def test_full_disk_is_an_output_failure_and_resume_redoes_the_input(twins, predictor, tmp_path, monkeypatch):
    out = tmp_path / "t.csv"
    real = writers.TableWriter.write
    calls = {"n": 0}

    def full(self, chunk):
        calls["n"] += 1
        if calls["n"] == 4:  # the second chunk of the second video (batches of 4 frames)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, chunk)

    monkeypatch.setattr(writers.TableWriter, "write", full)
    with pytest.raises(OutputError, match="No space left on device") as info:
        affectlab.analyze(twins, predictor, detector="none", out=out, batch_size=4, progress=False)
    message = str(info.value)
    assert "--resume" in message and "input 2 of 2" in message and str(out) in message
    monkeypatch.undo()
    finished = json.loads(progress_path(out).read_text())["finished"]
    assert [e["input"] for e in finished] == [str(twins[0])]  # the second video is not "failed": not recorded
    assert all(e["failure"] is None for e in finished)
    resumed = affectlab.analyze(twins, predictor, detector="none", out=out, batch_size=4, progress=False, resume=True)
    assert resumed.model_info["failures"] == []
    one = affectlab.analyze(twins, predictor, detector="none", out=tmp_path / "one.csv", batch_size=4, progress=False)
    pd.testing.assert_frame_equal(pd.DataFrame(AffectTable.read(out)), pd.DataFrame(AffectTable.read(tmp_path / "one.csv")))
    assert len(one) == 2 * N_FRAMES


def test_cli_full_disk_is_one_line_and_exit_2(twins, model_file, tmp_path, monkeypatch, capsys):
    def full(self, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.TableWriter, "write", full)
    code = main(["analyze", str(twins[0]), "--model", str(model_file), "--detector", "none", "--out",
                 str(tmp_path / "t.csv"), "-q"])
    err = capsys.readouterr().err.replace("\n", "")
    assert code == 2 and "No space left on device" in err and "--resume" in err and f"failed: {twins[0]}" not in err


def test_python_api_notices_point_at_the_callers_line(photo, model_file, tmp_path):
    """A notice from ``affectlab.analyze(...)`` names the user's file and line, not affectlab's."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        affectlab.analyze(str(photo), model=str(model_file), detector="none", video_out=str(tmp_path / "a.mp4"))
    notice = [w for w in caught if "no annotated video" in str(w.message)]
    assert len(notice) == 1 and notice[0].filename == __file__, (notice[0].filename if notice else caught)
