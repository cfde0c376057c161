"""``affectlab analyze`` on a video assembled from real face photographs.

The video is written by the test into ``tmp_path`` (never committed) from
``../shared/data/facial_expressions``; the test skips when that folder is absent.
"""

import numpy as np
import pytest

import affectlab
from analyze_media import FACES, decode_count, untrained_predictor, write_video

pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data is absent")]

N_PHOTOS, FRAMES_PER_PHOTO = 40, 2


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    from PIL import Image

    files = sorted(p for p in FACES.iterdir() if p.suffix.lower() == ".jpg")
    chosen = np.random.default_rng(0).choice(len(files), N_PHOTOS, replace=False)
    frames = []
    for k, i in enumerate(chosen):
        photo = np.asarray(Image.open(files[i]).convert("RGB").resize((160, 160)))
        for j in range(FRAMES_PER_PHOTO):
            canvas = np.full((240, 320, 3), (40 + 3 * k) % 200, dtype=np.uint8)
            dx = 60 + 4 * j  # the face drifts a little between frames
            canvas[40:200, dx : dx + 160] = photo
            frames.append(canvas)
    return write_video(tmp_path_factory.mktemp("real") / "faces.mp4", frames, fps=10)


def test_real_faces_are_found_tabulated_drawn_and_reported(face_video, tmp_path):
    n = N_PHOTOS * FRAMES_PER_PHOTO
    table = affectlab.analyze(face_video, untrained_predictor(), video_out=tmp_path / "annotated.mp4",
                              report=tmp_path / "report", progress=False)
    frames_with_face = table.loc[table["face"] >= 0, "frame"].nunique()
    assert frames_with_face / n >= 0.95, f"a face in {frames_with_face} of {n} frames"
    # one row per frame and face: every frame present, no (frame, face) twice
    assert sorted(table["frame"].unique()) == list(range(n))
    assert not table.duplicated(["frame", "face"]).any()
    per_frame = table.groupby("frame")["face"].agg(lambda f: (f >= 0).sum())
    assert len(table) == int(np.maximum(per_frame, 1).sum())
    # boxes lie on the pasted photo
    faces = table.faces
    cx = faces["x"].astype(float) + faces["w"].astype(float) / 2
    assert ((cx > 60) & (cx < 230)).mean() >= 0.95
    assert decode_count(tmp_path / "annotated.mp4") == n
    page = tmp_path / "report" / "faces.html"
    assert page.is_file() and "data:image/png;base64," in page.read_text()
    assert (tmp_path / "report" / "index.html").is_file()
