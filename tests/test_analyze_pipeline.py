"""The analysis pipeline end to end on synthetic inputs, with a real (untrained) model."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import affectlab
from affectlab.perception.detectors import register_detector
from affectlab.analyze.inputs import iter_video
from affectlab.analyze.table import AffectTable, table_columns
from affectlab.cli import main
from affectlab.errors import ModelError
from affectlab.temporal import smooth
from analyze_media import decode_count, synth_clip, write_video

N_FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    images, labels = synth_clip(N_FRAMES, size=64)
    folder = tmp_path_factory.mktemp("clip")
    return write_video(folder / "clip.mp4", images, fps=10), images


def _frames(video):
    return [f.image for f in iter_video(video)]


def test_one_row_per_frame_with_the_model_predictions(clip, predictor, tmp_path):
    video, _ = clip
    out = tmp_path / "t.csv"
    table = affectlab.analyze(video, predictor, detector="none", out=out, progress=False)
    space = predictor.label_space
    assert isinstance(table, AffectTable)
    assert list(table.columns) == table_columns(space.expressions, True, space.aus)
    assert len(table) == N_FRAMES and table["frame"].tolist() == list(range(N_FRAMES))
    assert (table["face"] == 0).all() and (table[["x", "y"]] == 0).all().all() and (table["w"] == 64).all()
    np.testing.assert_allclose(table["time_s"], np.arange(N_FRAMES) / 10, atol=1e-6)
    # the numbers are the model's on the decoded frames (whole frame = face for 'none')
    direct = predictor.predict(_frames(video))
    np.testing.assert_allclose(table.expressions.to_numpy(), direct["expr_prob"], atol=1e-5)
    np.testing.assert_allclose(table.va.to_numpy(), direct["va"], atol=1e-5)
    np.testing.assert_allclose(table.aus.to_numpy(), direct["au_prob"], atol=1e-5)
    assert (table["expression"] == np.array(space.expressions)[direct["expr_prob"].argmax(1)]).all()
    written = AffectTable.read(out)
    pd.testing.assert_frame_equal(pd.DataFrame(written), pd.DataFrame(table), check_dtype=False, atol=1e-7)
    assert table.model_info["stats"]["frames"] == N_FRAMES and table.model_info["failures"] == []


def test_mixed_images_and_videos_and_sampling(clip, predictor, tmp_path):
    video, images = clip
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for k in range(3):
        Image.fromarray(images[k]).save(folder / f"f{k}.png")
    table = affectlab.analyze([tmp_path / "imgs", video], predictor, detector="none", every=4,
                              report=tmp_path / "rep", progress=False)
    assert table.inputs == [str(folder / f"f{k}.png") for k in range(3)] + [str(video)]
    page = (tmp_path / "rep" / "images.html").read_text()
    assert all(f"f{k}.png" in page for k in range(3)) and "A face was found in 3 of 3 images" in page
    index = (tmp_path / "rep" / "index.html").read_text()
    assert index.count("images.html") == 3 and "clip.html" in index
    assert table.loc[table["input"] == str(video), "frame"].tolist() == [0, 4, 8]
    assert (table.loc[table["input"] != str(video), "frame"] == 0).all()
    window = affectlab.analyze(video, predictor, detector="none", start=0.5, end=0.9, progress=False)
    assert window["frame"].tolist() == [5, 6, 7, 8]


@register_detector("test-even-frames")
def _even_frames():
    """A face on even calls only: checks the face = -1 rows."""
    calls = {"n": 0}

    def detect(image):
        calls["n"] += 1
        h, w = image.shape[:2]
        return np.array([[4, 4, w - 8, h - 8, 0.8]]) if calls["n"] % 2 == 1 else np.zeros((0, 5))

    return detect


def test_frames_without_a_face_keep_a_row(clip, predictor):
    video, _ = clip
    t = affectlab.analyze(video, predictor, detector="test-even-frames", progress=False)
    assert len(t) == N_FRAMES
    odd = t[t["frame"] % 2 == 1]
    assert (odd["face"] == -1).all() and odd["x"].isna().all() and odd["expression"].isna().all()
    assert odd[["valence", "expr_neutral", "AU12"]].isna().all().all()
    assert t.faces["frame"].tolist() == list(range(0, N_FRAMES, 2)) and (t.faces["face"] == 0).all()


@register_detector("test-two-faces")
def _two_faces():
    """Two faces drifting towards each other, listed in a changing order."""
    calls = {"n": 0}

    def detect(image):
        k = calls["n"]
        calls["n"] += 1
        left = [2 + k, 10, 20, 20, 0.9]
        right = [40 - k, 12, 20, 20, 0.7]
        return np.array([left, right] if k % 2 else [right, left], dtype=float)

    return detect


def test_faces_keep_their_id_across_the_video(clip, predictor):
    video, _ = clip
    t = affectlab.analyze(video, predictor, detector="test-two-faces", progress=False)
    assert len(t) == 2 * N_FRAMES
    for face, g in t.groupby("face"):
        xs = g["x"].astype(int).to_numpy()
        # face 0 is the left one (moving right), face 1 the right one (moving left)
        assert np.all(np.diff(xs) == (1 if face == 0 else -1))
    assert sorted(t["face"].unique()) == [0, 1]


def test_smoothing_per_track_is_equation_9(clip, predictor):
    video, _ = clip
    raw = affectlab.analyze(video, predictor, detector="test-two-faces", progress=False)
    sm = affectlab.analyze(video, predictor, detector="test-two-faces", smooth=3, progress=False)
    for face in (0, 1):
        r, s = raw[raw["face"] == face], sm[sm["face"] == face]
        np.testing.assert_allclose(s.va.to_numpy(), smooth(r.va.to_numpy(), 3), atol=1e-6)
        np.testing.assert_allclose(s.aus.to_numpy(), smooth(r.aus.to_numpy(), 3), atol=1e-6)
        e = smooth(r.expressions.to_numpy(), 3)
        np.testing.assert_allclose(s.expressions.to_numpy(), e, atol=1e-6)
        assert (s["expression"].to_numpy() == np.array(s.expression_names)[e.argmax(1)]).all()
    per_task = affectlab.analyze(video, predictor, detector="test-two-faces", smooth={"va": 2}, progress=False)
    pd.testing.assert_frame_equal(per_task.aus, raw.aus)
    assert not np.allclose(per_task.va.to_numpy(), raw.va.to_numpy())
    with pytest.warns(UserWarning, match="stores no smoothing"):
        auto = affectlab.analyze(video, predictor, detector="test-two-faces", smooth="auto", progress=False)
    pd.testing.assert_frame_equal(pd.DataFrame(auto), pd.DataFrame(raw))
    # a model that stores its mu (as evaluate --smooth would): 'auto' applies it
    from affectlab.runtime.predictor import Predictor

    stored = Predictor.from_method(predictor.method, predictor.preprocessing, info={"smoothing": {"va": 2.0}})
    auto = affectlab.analyze(video, stored, detector="test-two-faces", smooth="auto", progress=False)
    pd.testing.assert_frame_equal(auto.va, per_task.va)
    assert auto.model_info["smoothing"] == {"va": 2.0}


def test_annotated_video_and_report(clip, predictor, tmp_path):
    video, _ = clip
    t = affectlab.analyze(video, predictor, detector="none", video_out=tmp_path / "ann.mp4",
                          report=tmp_path / "rep", progress=False)
    assert decode_count(tmp_path / "ann.mp4") == N_FRAMES
    page = (tmp_path / "rep" / "clip.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # timeline, circumplex, AU heatmap
    assert "Summary per face" in page and "clip.html" in (tmp_path / "rep" / "index.html").read_text()
    assert t.model_info["video_out"] == {str(video): str(tmp_path / "ann.mp4")}


def test_no_model_uses_the_packaged_default_or_says_how_to_give_one(clip):
    # the packaged default model may or may not be installed: either it analyses, or the
    # error tells the user what to do
    try:
        table = affectlab.analyze(clip[0], None, detector="none", progress=False)
    except ModelError as exc:
        assert "pass --model RUN" in str(exc)
    else:
        assert len(table) == N_FRAMES and table["expression"].notna().all()


@register_detector("test-interrupt")
def _interrupt(at=7, exc=KeyboardInterrupt):
    """Whole-frame faces; raises ``exc`` on call ``at + 1``."""
    calls = {"n": 0}

    def detect(image):
        calls["n"] += 1
        if calls["n"] == at + 1:
            raise exc("stop")
        h, w = image.shape[:2]
        return np.array([[0, 0, w, h, 1.0]])

    return detect


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_ctrl_c_leaves_a_valid_partial_table(clip, predictor, tmp_path, suffix):
    video, _ = clip
    out = tmp_path / f"partial{suffix}"
    with pytest.raises(KeyboardInterrupt):
        affectlab.analyze(video, predictor, detector="test-interrupt", detector_options={"at": 7},
                          out=out, video_out=tmp_path / "ann.mp4", batch_size=4, progress=False)
    back = AffectTable.read(out)
    assert back["frame"].tolist() == list(range(7))  # every frame analysed before the interrupt
    assert back["valence"].notna().all()
    assert decode_count(tmp_path / "ann.mp4") == 7


def test_a_failing_input_keeps_its_rows_and_the_next_goes_on(clip, predictor, tmp_path):
    video, _ = clip
    other = tmp_path / "copy.mp4"
    other.write_bytes(video.read_bytes())
    with pytest.warns(UserWarning, match="1 of 2 inputs failed"):
        t = affectlab.analyze([video, other], predictor, detector="test-interrupt",
                              detector_options={"at": 5, "exc": RuntimeError}, out=tmp_path / "t.csv",
                              batch_size=2, progress=False)
    # the detector fails on its 6th call, frame 5 of the first video (decoded: 6 frames read)
    assert t.model_info["failures"] == [f"{video}: RuntimeError: stop (6 frames read)"]
    assert t.loc[t["input"] == str(video), "frame"].tolist() == list(range(5))
    assert t.loc[t["input"] == str(other), "frame"].tolist() == list(range(N_FRAMES))
    assert len(AffectTable.read(tmp_path / "t.csv")) == len(t)


def test_cli_bad_inputs_are_reported_and_nothing_is_lost(clip, model_file, tmp_path, capsys):
    video, images = clip
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("I am a text file")
    (bad / "empty.mp4").write_bytes(b"")
    rng = np.random.default_rng(0)
    noisy = write_video(tmp_path / "noisy.mkv", [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(30)])
    data = noisy.read_bytes()
    (bad / "half.mkv").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(bad / "blank.png")  # no face in it
    out = tmp_path / "all.csv"
    code = main(["analyze", str(bad), str(video), "--model", str(model_file), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    for name in ("notes.jpg", "empty.mp4", "half.mkv"):
        assert f"failed: {bad / name}" in err.replace("\n", "")
    assert "blank.png" not in err  # no face is a result, not a failure
    t = AffectTable.read(out)
    # the good video: one row per frame, face or not (Haar on synthetic faces may miss some)
    assert t.loc[t["input"] == str(video), "frame"].tolist() == list(range(N_FRAMES))
    assert t.loc[t["input"] == str(bad / "blank.png"), "face"].tolist() == [-1]
    half_rows = t[t["input"] == str(bad / "half.mkv")]
    assert 0 < len(half_rows) < 30 and f"({len(half_rows)} frames read)" in err.replace("\n", "")
    # success exit code when nothing fails
    assert main(["analyze", str(video), "--model", str(model_file), "--out", str(tmp_path / "ok.json"),
                 "--detector", "none", "-q"]) == 0
