"""analyze with the landmark stage: pose, landmarker AUs, blendshapes and landmark columns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import affectlab
from affectlab.analyze.api import AnalyzeNotice
from affectlab.analyze.mesh import BLENDSHAPE_COLUMNS, LANDMARK_COLUMNS, POSE_COLUMNS, MeshStage
from affectlab.perception.au import AUS

from conftest import SHARED

LONDON = SHARED / "data" / "london" / "images"


def _pair():
    paths = [LONDON / "001_neutral.jpg", LONDON / "001_smiling.jpg"]
    if not all(p.exists() for p in paths):
        pytest.skip(f"real faces not found at {LONDON}")
    return [str(p) for p in paths]


def test_asking_for_landmarks_without_the_asset_names_it(tmp_path):
    from affectlab.runtime.assets import AssetMissingError

    img = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(img), np.full((64, 64, 3), 128, np.uint8))
    for kwargs in ({"landmarks": True}, {"blendshapes": True}, {"mesh": True}):
        with pytest.raises(AssetMissingError, match="face-landmarker"):
            affectlab.analyze([str(img)], progress=False, **kwargs)
    # auto: analyze goes on without pose/AU columns and says why once
    with pytest.warns(AnalyzeNotice, match="face-landmarker"):
        table = affectlab.analyze([str(img)], progress=False)
    assert not set(POSE_COLUMNS) & set(table.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalyzeNotice)
        affectlab.analyze([str(img)], progress=False, mesh=False)


def test_model_aus_keep_their_names_and_landmarker_aus_are_prefixed(assets_home):
    stage = MeshStage(model_aus=["AU12", "AU4"])
    assert "lm_AU12" in stage.columns and "lm_AU4" in stage.columns and "AU1" in stage.columns
    assert "AU12" not in stage.columns
    assert stage.columns[:4] == ["lm_presence", *POSE_COLUMNS]


@pytest.mark.realdata
def test_default_pipeline_gives_pose_aus_blendshapes_and_landmarks(assets_home, tmp_path):
    out = tmp_path / "t.parquet"
    table = affectlab.analyze(_pair(), progress=False, blendshapes=True, landmarks=True, out=out,
                              report=tmp_path / "report")
    assert len(table) == 2 and (table.face == 0).all()
    for cols in (POSE_COLUMNS, AUS, BLENDSHAPE_COLUMNS, LANDMARK_COLUMNS):
        assert set(cols) <= set(table.columns)
        assert np.isfinite(table[list(cols)].to_numpy(dtype=float)).all()
    neutral, smiling = table.iloc[0], table.iloc[1]
    assert smiling.AU12 > 0.5 > neutral.AU12
    assert smiling.bs_mouthSmileLeft > neutral.bs_mouthSmileLeft
    # landmarks are image pixels inside the face box
    assert table.x[0] < neutral.lm1_x < table.x[0] + table.w[0]
    assert table.model_info["sources"]["pose_*"] == "face-landmarker"
    assert "AU12" in table.au_names
    index = (tmp_path / "report" / "index.html").read_text()
    assert "columns from" in index and "pose_*" in index and "face-landmarker" in index
    import pandas as pd

    written = pd.read_parquet(out)
    np.testing.assert_allclose(written.pose_yaw.to_numpy(), table.pose_yaw.to_numpy())


@pytest.mark.realdata
def test_faces_without_landmarks_keep_their_row_with_nan_and_one_note(assets_home):
    import cv2

    paths = _pair()
    image = cv2.imread(paths[0])[:, :, ::-1]
    finder = cv2.FaceDetectorYN.create(str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"), "", (512, 512))
    _, f = finder.detect(np.ascontiguousarray(image[:, :, ::-1]))
    face = np.array([[*f[0, :4], 0.9]])
    fake = np.array([[2.0, 2.0, 60.0, 60.0, 0.8]])  # the plain background in the corner
    tiny = np.array([[300.0, 450.0, 12.0, 12.0, 0.7]])

    def detector(img):
        return np.vstack([fake, face, tiny])

    with pytest.warns(AnalyzeNotice, match="2 of 3 faces got no landmarks"):
        table = affectlab.analyze([paths[0]], progress=False, detector=detector)
    assert len(table) == 3
    ok = np.isfinite(table.pose_yaw.to_numpy())
    assert ok.tolist() == [False, True, False]  # left to right: background, face, tiny
    assert np.isfinite(table.expr_neutral).all()  # the expression model still ran on every face


def test_a_damaged_landmarker_asset_is_refused_not_used(tmp_path, monkeypatch):
    import cv2

    from affectlab.runtime.assets import ASSETS_DIR, AssetMissingError, affectlab_home

    folder = affectlab_home() / ASSETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "face_landmarker.task").write_bytes(b"PK\x03\x04" + b"\0" * 1000)  # wrong bytes
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(AssetMissingError, match="face-landmarker.*damaged"):
        affectlab.analyze([str(img)], progress=False, landmarks=True)
