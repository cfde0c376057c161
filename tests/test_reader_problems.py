"""Bad or unusual annotation files (issue 17, item 7): every problem named with file and
line, nothing lost silently, paths kept inside the dataset root unless allowed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectlab import load_dataset
from affectlab.errors import DatasetError, LabelError


def img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), 90, dtype=np.uint8)).save(path)
    return path


def notices(func):
    """``func()``'s result and the UserWarning messages it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func()
    return out, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# --------------------------------------------------------------------------- ABAW


@pytest.fixture
def abaw(tmp_path):
    for video in ("vid1", "vid2"):
        for k in (1, 2, 3):
            img(tmp_path / "cropped_aligned" / video / f"{k:05d}.jpg")
    va = tmp_path / "VA" / "Train_Set"
    va.mkdir(parents=True)
    (va / "vid2.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.4\n0.5,0.6\n")
    return tmp_path


@pytest.mark.parametrize("text", ["valence,arousal\n", "valence,arousal\n\n", "valence,arousal\n\n\n"])
def test_abaw_header_only_file_is_an_unlabelled_video_with_a_notice(abaw, text):
    (abaw / "VA" / "Train_Set" / "vid1.txt").write_text(text)
    ds, said = notices(lambda: load_dataset(f"abaw:{abaw}:Train", tasks="VA"))
    assert list(ds.labels["video"]) == ["vid2"] * 3
    assert any("vid1.txt: only a header, no frame rows" in m for m in said), said


def test_abaw_blank_line_between_rows_and_every_bad_line_of_every_file(abaw):
    (abaw / "VA" / "Train_Set" / "vid1.txt").write_text("valence,arousal\n\n0.1,0.2\n")
    with pytest.raises(DatasetError, match=r"vid1\.txt:2: blank line between frame rows"):
        load_dataset(f"abaw:{abaw}:Train", tasks="VA")
    (abaw / "VA" / "Train_Set" / "vid2.txt").write_text("valence,arousal\n0.1\n0.2,0.1,3\n0.3,0.4\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"abaw:{abaw}:Train", tasks="VA")
    assert len(info.value.problems) == 3
    message = str(info.value)
    assert message.startswith("3 problems: ")
    for where in (r"vid1.txt:2: blank line", r"vid2.txt:2: expected 2 comma-separated", r"vid2.txt:3: more than 2 field"):
        assert where in message, message


def test_abaw_trailing_comma_on_every_line_is_read(abaw):
    (abaw / "VA" / "Train_Set" / "vid1.txt").write_text("valence,arousal,\n0.1,0.2,\n-5,-5,\n0.3,0.4,\n")
    ds = load_dataset(f"abaw:{abaw}:Train", tasks="VA")
    vid1 = ds.labels[ds.labels["video"] == "vid1"]
    assert list(vid1["frame"]) == [1, 3]
    np.testing.assert_allclose(vid1["arousal"], [0.2, 0.4])


# --------------------------------------------------------------------------- manifest


@pytest.fixture
def folder(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        img(tmp_path / "m" / name)
    img(tmp_path / "elsewhere.png")
    return tmp_path / "m"


def test_manifest_row_with_too_few_fields_is_an_error_naming_its_line(folder):
    (folder / "labels.csv").write_text("path,expression,valence\na.png,happy,0.1\nb.png\n\nc.png,sad\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    assert info.value.problems == [
        f"{folder / 'labels.csv'}:3: 1 field, expected 3 (path,expression,valence); a row with too few fields would lose its labels",
        f"{folder / 'labels.csv'}:5: 2 fields, expected 3 (path,expression,valence); a row with too few fields would lose its labels",
    ]


@pytest.mark.parametrize("header", ["path,expression,valence", "path,expression,valence,"])
def test_manifest_trailing_comma_on_every_line_keeps_the_columns(folder, header):
    (folder / "labels.csv").write_text(f"{header}\na.png,happy,0.1,\nb.png,sad,-0.2,\n")
    ds = load_dataset(folder)
    assert [Path(p).name for p in ds.labels["path"]] == ["a.png", "b.png"]
    assert list(ds.labels["expression"]) == ["happiness", "sadness"]
    np.testing.assert_allclose(ds.labels["valence"], [0.1, -0.2])


def test_manifest_lists_every_bad_line_in_line_order(folder):
    (folder / "labels.csv").write_text("path,expression,valence\na.png,hapy,3\nb.png,sad,x\n,happy,0\nc.png,sad,0\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    lines = [int(p.split(":")[1]) for p in info.value.problems]
    assert lines == [2, 2, 3, 4]
    text = " ".join(info.value.problems)
    assert "unknown expression 'hapy'" in text and "valence 3 is outside [-1, 1]" in text
    assert "valence 'x' is not a number" in text and "empty `path`" in text
    # one problem keeps its own kind and message
    (folder / "labels.csv").write_text("path,expression\na.png,hapy\n")
    with pytest.raises(LabelError, match=r"labels\.csv:2: unknown expression 'hapy'"):
        load_dataset(folder)


def test_manifest_duplicated_rows_are_reported(folder):
    (folder / "labels.csv").write_text("path,expression\na.png,happy\nb.png,sad\na.png,happy\na.png,sad\n")
    ds, said = notices(lambda: load_dataset(folder))
    assert len(ds) == 4
    assert [m for m in said if "duplicated" in m] == [
        f"{folder / 'labels.csv'}: 1 duplicated row kept (the same path and labels as an earlier row): line 4 (as line 2)"
    ]


def test_paths_leaving_the_root_are_refused_unless_allowed(folder, monkeypatch):
    monkeypatch.delenv("AFFECTLAB_ALLOW_OUTSIDE_ROOT", raising=False)
    outside = folder.parent / "elsewhere.png"
    (folder / "labels.csv").write_text(f"path,expression\na.png,happy\n../elsewhere.png,sad\n{outside},sad\n{folder / 'b.png'},sad\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    assert [p.split(": path ")[0] for p in info.value.problems] == [f"{folder / 'labels.csv'}:3", f"{folder / 'labels.csv'}:4"]
    assert "leaves the dataset root" in str(info.value) and "allow_outside_root=True" in str(info.value)
    ds = load_dataset(folder, allow_outside_root=True)
    assert [Path(p).name for p in ds.labels["path"]] == ["a.png", "elsewhere.png", "elsewhere.png", "b.png"]
    monkeypatch.setenv("AFFECTLAB_ALLOW_OUTSIDE_ROOT", "1")
    assert len(load_dataset(folder)) == 4
    with pytest.raises(DatasetError, match="leaves the dataset root"):
        load_dataset(folder, allow_outside_root=False)


def test_rafdb_name_leaving_the_root_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("AFFECTLAB_ALLOW_OUTSIDE_ROOT", raising=False)
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 5\ntrain_x/../../../../x.jpg 1\n")
    img(tmp_path / "Image" / "aligned" / "train_00001_aligned.jpg")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:2: path 'train_x/\.\./\.\./\.\./\.\./x\.jpg' leaves the dataset root"):
        load_dataset(f"rafdb:{tmp_path}:train")


# --------------------------------------------------------------------------- FER2013


def test_fer2013_rows_with_empty_usage_are_reported(tmp_path):
    pixels = " ".join(["7"] * 2304)
    other = " ".join(["9"] * 2304)
    (tmp_path / "fer2013.csv").write_text(
        f"emotion,pixels,Usage\n3,{pixels},Training\n0,{pixels},\n4,{other},PublicTest\n5,{other}, \n"
    )
    ds, said = notices(lambda: load_dataset(f"fer2013:{tmp_path}"))
    assert list(ds.labels["split"]) == ["train", "val"]
    assert any("2 rows with an empty Usage belong to no split and were skipped (lines 3, 5)" in m for m in said), said
    (tmp_path / "fer2013.csv").write_text(f"emotion,pixels,Usage\n3,{pixels},Training\n9,{pixels},Training\n3,1 2,Training\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"fer2013:{tmp_path}:train")
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in info.value.problems] == ["3", "4"]
