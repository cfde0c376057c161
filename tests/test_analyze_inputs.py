"""Input expansion and frame streaming (images and PyAV-decoded videos)."""

import numpy as np
import pytest
from PIL import Image

from affectlab.analyze.inputs import (
    MediaError,
    check_sampling,
    count_frames,
    expand_inputs,
    iter_frames,
    iter_video,
    read_image,
)
from affectlab.errors import AffectlabError, ConfigError
from analyze_media import write_video


def _ramp_frames(n, h=48, w=64):
    # frame k is a flat grey of level 4k: decoded frames can be identified by brightness
    return [np.full((h, w, 3), 4 * k, dtype=np.uint8) for k in range(n)]


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "ramp.mp4", _ramp_frames(40), fps=10)


def test_expand_folders_globs_and_files(tmp_path, ramp_video):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/b/1.jpg", "a/2.png", "c.JPG"):
        Image.new("RGB", (8, 8)).save(tmp_path / rel, format="PNG")
    (tmp_path / "a" / "notes.txt").write_text("not media")
    explicit = tmp_path / "clip.unknownext"
    explicit.write_bytes(b"")
    got = expand_inputs([tmp_path / "a", str(tmp_path / "*.JPG"), ramp_video, explicit, tmp_path / "a" / "2.png"])
    names = [p.name for p in got]
    # folder sorted and recursive, text file skipped, duplicates dropped, explicit files kept
    assert names == ["2.png", "1.jpg", "c.JPG", "ramp.mp4", "clip.unknownext"]
    assert [p.name for p in expand_inputs(str(tmp_path / "**" / "*.jpg"))] == ["1.jpg"]


def test_expand_reports_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        expand_inputs([tmp_path / "nothere.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AffectlabError, match="no image or video"):
        expand_inputs(tmp_path / "empty")
    with pytest.raises(AffectlabError, match="matches no"):
        expand_inputs(str(tmp_path / "*.mov"))
    with pytest.raises(AffectlabError, match="no input"):
        expand_inputs([])


def test_video_frames_indices_times_and_pixels(ramp_video):
    frames = list(iter_video(ramp_video))
    assert [f.index for f in frames] == list(range(40))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(40) / 10, atol=1e-6)
    levels = np.array([f.image.mean() for f in frames])
    np.testing.assert_allclose(levels, 4 * np.arange(40), atol=3)
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert count_frames(ramp_video) == 40


def test_every_start_end(ramp_video):
    every = list(iter_video(ramp_video, every=3))
    assert [f.index for f in every] == list(range(0, 40, 3))
    assert count_frames(ramp_video, every=3) == len(every)
    window = list(iter_video(ramp_video, start=1.0, end=2.5))
    assert [f.index for f in window] == list(range(10, 25))
    # the pixels are those of frames 10..24, so the seek landed where it says
    np.testing.assert_allclose([f.image.mean() for f in window], 4 * np.arange(10, 25), atol=3)
    assert count_frames(ramp_video, start=1.0, end=2.5) == 15
    both = list(iter_video(ramp_video, every=4, start=1.0))
    assert [f.index for f in both] == [12, 16, 20, 24, 28, 32, 36]


def test_images_are_one_rgb_frame(tmp_path):
    Image.new("L", (10, 6), color=200).save(tmp_path / "g.png")
    (f,) = list(iter_frames(tmp_path / "g.png"))
    assert f.index == 0 and f.time_s == 0.0 and f.image.shape == (6, 10, 3)


def test_unreadable_files_say_what_failed(tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_text("this is text")
    with pytest.raises(MediaError, match="fake.jpg: not a readable image"):
        read_image(bad)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty.mp4: cannot open video.*\(0 frames read\)"):
        list(iter_video(empty))


@pytest.mark.parametrize("suffix,options", [(".mkv", None), (".mp4", {"movflags": "faststart"})])
def test_truncated_video_yields_what_it_can_then_fails(tmp_path, suffix, options):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)]  # noise: no tiny frames
    full = write_video(tmp_path / f"full{suffix}", frames, fps=10, options=options)
    data = full.read_bytes()
    half = tmp_path / f"half{suffix}"
    half.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(MediaError) as info:
        for f in iter_video(half):
            got.append(f.index)
    err = info.value
    assert err.frames_read == len(got) and 5 <= len(got) < 40
    assert str(half) in str(err) and f"{len(got)} frames read" in str(err)


@pytest.mark.parametrize("args,match", [((0,), "every"), ((1.5,), "every"), ((1, -1.0), "start"), ((1, 3.0, 2.0), "after")])
def test_check_sampling(args, match):
    with pytest.raises(ConfigError, match=match):
        check_sampling(*args)
