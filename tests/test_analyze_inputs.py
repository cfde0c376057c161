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


# --- unusual but valid inputs are read upright and in full (synthetic faces only) ---------------------------


def _synth_faces(n=8, size=128, seed=1):
    from affectlab.data.synth import sample_batch

    images, _ = sample_batch(n, seed=seed, size=size)
    return np.asarray(images)


def _detected(image) -> int:
    from affectlab.perception.detectors import create_detector

    return len(create_detector("haar")(np.ascontiguousarray(image)))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    import affectlab

    face = _synth_faces()[0]
    assert _detected(face) == 1 and _detected(np.rot90(face)) == 0  # Haar needs it upright
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the pixels are stored turned left
    Image.fromarray(np.ascontiguousarray(np.rot90(face, k=1))).save(path, quality=95, exif=exif)
    upright = read_image(path)
    assert upright.shape == face.shape
    assert np.abs(upright.astype(int) - face.astype(int)).mean() < 4
    table = affectlab.analyze(path, _untrained(), detector="haar", progress=False)
    assert (table["face"] >= 0).sum() == 1


def _untrained():
    from analyze_media import untrained_predictor

    return untrained_predictor()


def test_16_bit_grayscale_png_is_read_as_training_reads_it(tmp_path):
    from affectlab.data.images import read_image as training_read

    gray = _synth_faces(1)[0].mean(axis=2).astype(np.uint16) * 257  # full 16-bit range
    path = tmp_path / "deep.png"
    Image.fromarray(gray).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    image = read_image(path)
    np.testing.assert_array_equal(image, training_read(path))
    np.testing.assert_array_equal(image[..., 0], (gray >> 8).astype(np.uint8))
    assert image.std() > 10  # not all white


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_animated_image_is_analysed_frame_by_frame(tmp_path, suffix):
    import affectlab
    from affectlab.analyze.inputs import media_kind

    if suffix == ".webp":
        from PIL import features

        if not features.check("webp"):
            pytest.skip("this Pillow has no WebP support")
    faces = _synth_faces(4)
    path = tmp_path / f"anim{suffix}"
    frames = [Image.fromarray(f) for f in faces]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **(
        {"lossless": True} if suffix == ".webp" else {}))
    assert media_kind(path) == "video"
    got = list(iter_frames(path))
    assert [f.index for f in got] == [0, 1, 2, 3]
    np.testing.assert_allclose([f.time_s for f in got], [0.0, 0.1, 0.2, 0.3], atol=1e-6)
    for f, face in zip(got, faces):  # each frame is its own picture (palette quantisation aside)
        assert np.abs(f.image.astype(int) - face.astype(int)).mean() < 8
    table = affectlab.analyze(path, _untrained(), detector="none", progress=False)
    assert table["frame"].tolist() == [0, 1, 2, 3] and table["valence"].nunique() == 4
    still = tmp_path / f"still{suffix}"
    frames[0].save(still)
    assert media_kind(still) == "image"


def test_portrait_video_with_a_rotation_flag_is_decoded_upright(tmp_path):
    import av

    import affectlab

    faces = _synth_faces(4)
    faces = [np.ascontiguousarray(np.pad(f, ((16, 16), (0, 0), (0, 0)), mode="edge")) for f in faces]  # 160x128 portrait
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = faces[0].shape[0], faces[0].shape[1], "yuv420p"
        s.set_display_rotation(-90)  # as phones write it: landscape pixels, shown turned clockwise
        for f in faces:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(f, k=1)), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got = list(iter_video(path))
    assert len(got) == 4 and all(g.image.shape == faces[0].shape for g in got)
    for g, f in zip(got, faces):
        assert np.abs(g.image.astype(int) - f.astype(int)).mean() < 6
    table = affectlab.analyze(path, _untrained(), detector="haar", progress=False)
    assert (table["face"] >= 0).sum() >= 3  # Haar finds the upright faces (it misses sideways ones)
