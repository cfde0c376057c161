"""Every reader on a small fixture written in its official layout, plus CK+48 real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from affectlab import load_dataset
from affectlab.data.batch import collate
from affectlab.data.schema import AU_SETS, EMOTIC_CATEGORIES, EXPRESSIONS, LabelSpace
from affectlab.errors import ConfigError, DatasetError, LabelError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def img(path: Path, value: int = 100, size=(10, 8)) -> Path:
    """A tiny image (width, height = size) whose pixels are ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- AffectNet

AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"


def affectnet_row(path, expr, v, a, box=(2, 1, 6, 4)):
    return f"{path},{box[0]},{box[1]},{box[2]},{box[3]},1.0;2.0;3.0;4.0,{expr},{v},{a}"


@pytest.fixture
def affectnet(tmp_path):
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    rows = [
        affectnet_row("1/a.jpg", 1, 0.5, -0.25),
        affectnet_row("1/b.jpg", 8, 0.2, 0.2),  # None -> dropped
        affectnet_row("2/c.jpg", 7, -2, -2),  # contempt, VA missing
        affectnet_row("2/d.jpg", 10, -2, -2),  # No-Face -> dropped
        affectnet_row("2/e.jpg", 0, 0.1, -2),  # arousal missing
        affectnet_row("3/f.jpg", 9, 0.0, 0.0),  # Uncertain -> dropped
    ]
    (lists / "training.csv").write_text("\n".join([AFFECTNET_HEADER, *rows]) + "\n")
    # validation.csv ships without a header in some copies
    (lists / "validation.csv").write_text(affectnet_row("4/g.jpg", 6, -0.5, 0.75) + "\n")
    for i, name in enumerate(["1/a.jpg", "1/b.jpg", "2/c.jpg", "2/d.jpg", "2/e.jpg", "3/f.jpg", "4/g.jpg"]):
        img(tmp_path / "Manually_Annotated_Images" / name, value=20 * i)
    return tmp_path


def test_affectnet_codes_drops_and_missing_va(affectnet):
    ds = load_dataset(f"affectnet:{affectnet}:train")
    lab = ds.labels
    assert [Path(p).name for p in lab["path"]] == ["a.jpg", "c.jpg", "e.jpg"]
    assert list(lab["expression"]) == ["happiness", "contempt", "neutral"]
    np.testing.assert_allclose(lab["valence"], [0.5, np.nan, 0.1])
    np.testing.assert_allclose(lab["arousal"], [-0.25, np.nan, np.nan])
    assert ds.label_space.expressions == EXPRESSIONS and ds.label_space.va
    assert ds.expr_targets.tolist() == [1, 7, 0]
    sample = ds[0]
    assert sample["image"].shape == (3, 4, 6)  # the face box is cropped
    assert torch.allclose(sample["va"], torch.tensor([0.5, -0.25]))

    seven = load_dataset(f"affectnet7:{affectnet}:train")
    assert list(seven.labels["expression"]) == ["happiness", "neutral"]
    assert seven.label_space.expressions == EXPRESSIONS[:7]
    assert len(load_dataset(f"affectnet:{affectnet}:train", variant=7)) == 2
    with pytest.raises(ConfigError, match="contradicts"):
        load_dataset(f"affectnet7:{affectnet}:train", variant=8)
    with pytest.raises(ConfigError, match="variant must be 7 or 8"):
        load_dataset(f"affectnet:{affectnet}:train", variant=6)

    val = load_dataset(f"affectnet:{affectnet}:validation")
    assert list(val.labels["expression"]) == ["anger"]
    both = load_dataset(f"affectnet:{affectnet}")
    assert list(both.labels["split"]) == ["train", "train", "train", "val"]


@pytest.mark.parametrize(
    "bad_row, pattern",
    [
        (affectnet_row("1/a.jpg", 12, 0.1, 0.1), r"training\.csv:3: expression code 12 is out of range for dataset 'affectnet8'"),
        (affectnet_row("1/a.jpg", "happy", 0.1, 0.1), r"training\.csv:3: expression 'happy' is not an integer code"),
        (affectnet_row("1/a.jpg", 1, 1.5, 0.1), r"training\.csv:3: valence value 1\.5 is out of range.*-1\.\.1 or the missing code -2"),
        (affectnet_row("1/a.jpg", 1, 0.1, 0.1) + ",extra", r"training\.csv:3: expected 9 comma-separated fields.*saw 10"),
    ],
)
def test_affectnet_malformed_lines_name_file_and_line(tmp_path, bad_row, pattern):
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    (lists / "training.csv").write_text("\n".join([AFFECTNET_HEADER, affectnet_row("1/a.jpg", 1, 0, 0), bad_row]) + "\n")
    with pytest.raises((DatasetError, LabelError), match=pattern):
        load_dataset(f"affectnet:{tmp_path}:train")


# --------------------------------------------------------------------------- RAF-DB


@pytest.fixture
def rafdb(tmp_path):
    base = tmp_path / "basic"
    (base / "EmoLabel").mkdir(parents=True)
    (base / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 5\ntrain_00002.jpg 1\ntest_0001.jpg 7\n")
    for n in ("train_00001", "train_00002", "test_0001"):
        img(base / "Image" / "aligned" / f"{n}_aligned.jpg")
        img(base / "Image" / "original" / f"{n}.jpg", size=(20, 16))
    return tmp_path


def test_rafdb_one_based_codes_and_layout(rafdb):
    train = load_dataset(f"rafdb:{rafdb}:train")
    assert list(train.labels["expression"]) == ["sadness", "surprise"]  # 5 sadness, 1 surprise
    assert [Path(p).name for p in train.labels["path"]] == ["train_00001_aligned.jpg", "train_00002_aligned.jpg"]
    assert train.label_space.expressions == EXPRESSIONS[:7]
    assert list(load_dataset(f"rafdb:{rafdb}:test").labels["expression"]) == ["neutral"]
    original = load_dataset(f"rafdb:{rafdb / 'basic'}:train", aligned=False)
    assert original[0]["image"].shape == (3, 16, 20)

    label_file = rafdb / "basic" / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text("train_00001.jpg 5\ntrain_00002.jpg 0\n")
    with pytest.raises(LabelError, match=r"list_patition_label\.txt:2: expression code 0 is out of range for dataset 'rafdb'"):
        load_dataset(f"rafdb:{rafdb}:train")
    label_file.write_text("train_00001.jpg 5\ntrain_00002.jpg\n")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:2: expected '<name>\.jpg <code 1-7>'"):
        load_dataset(f"rafdb:{rafdb}:train")


# --------------------------------------------------------------------------- FER2013


def fer_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(48, 48), dtype=np.uint8)


def test_fer2013_pixels_decoded_in_memory(tmp_path):
    pix = [fer_pixels(i) for i in range(3)]
    rows = [(3, pix[0], "Training"), (0, pix[1], "PublicTest"), (6, pix[2], "PrivateTest")]
    lines = ["emotion,pixels,Usage"] + [f"{e},{' '.join(map(str, p.ravel()))},{u}" for e, p, u in rows]
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    train = load_dataset(f"fer2013:{tmp_path}:train")
    assert list(train.labels["expression"]) == ["happiness"]
    image = train[0]["image"]
    assert image.shape == (3, 48, 48)
    expected = torch.from_numpy(pix[0]).float() / 255
    for c in range(3):
        assert torch.allclose(image[c], expected)
    assert list(load_dataset(f"fer2013:{tmp_path}:val").labels["expression"]) == ["anger"]
    assert list(load_dataset(f"fer2013:{tmp_path / 'fer2013.csv'}:test").labels["expression"]) == ["neutral"]
    everything = load_dataset(f"fer2013:{tmp_path}")
    assert list(everything.labels["split"]) == ["train", "val", "test"]
    assert everything[2]["image"][0, 0, 0].item() == pytest.approx(pix[2][0, 0] / 255)
    swapped = load_dataset(f"fer2013:{tmp_path}:val", usage={"val": "PrivateTest"})
    assert list(swapped.labels["expression"]) == ["neutral"]

    lines[2] = "0," + " ".join(["1"] * 2303) + ",PublicTest"
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"fer2013\.csv:3: 2303 pixel values, expected 2304"):
        load_dataset(f"fer2013:{tmp_path}:val")
    lines[2] = f"7,{' '.join(['1'] * 2304)},PublicTest"
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=r"fer2013\.csv:3: expression code 7 is out of range for dataset 'fer2013'"):
        load_dataset(f"fer2013:{tmp_path}:val")


# --------------------------------------------------------------------------- ABAW

ABAW_AU_HEADER = ",".join(AU_SETS["abaw12"])


@pytest.fixture
def abaw(tmp_path):
    for k in (1, 2, 3, 5):  # frame 4 of vid1 has no image
        img(tmp_path / "cropped_aligned" / "vid1" / f"{k:05d}.jpg", value=10 * k)
    for k in (1, 2):
        img(tmp_path / "cropped_aligned" / "vid2" / f"{k:05d}.jpg")
    ann = tmp_path / "Third ABAW Annotations"
    va = ann / "VA_Estimation_Challenge" / "Train_Set"
    ex = ann / "EXPR_Classification_Challenge" / "Train_Set"
    au = ann / "AU_Detection_Challenge" / "Train_Set"
    for d in (va, ex, au):
        d.mkdir(parents=True)
    (va / "vid1.txt").write_text("valence,arousal\n0.5,0.2\n-5,-5\n0.1,-0.3\n0.2,0.2\n0.3,-5\n")
    (ex / "vid1.txt").write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n4\n-1\n7\n0\n1\n")
    au_on = [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]  # AU1, AU12, AU25
    (au / "vid2.txt").write_text(f"{ABAW_AU_HEADER}\n{','.join(map(str, au_on))}\n{','.join(['-1'] * 12)}\n")
    return tmp_path


def test_abaw_single_tasks_missing_codes_and_frames(abaw):
    va = load_dataset(f"abaw:{abaw}:Train", tasks="VA")
    # frame 2: -5 -> no label; frame 4: no image
    assert list(va.labels["frame"]) == [1, 3, 5]
    assert [Path(p).name for p in va.labels["path"]] == ["00001.jpg", "00003.jpg", "00005.jpg"]
    np.testing.assert_allclose(va.labels["arousal"], [0.2, -0.3, np.nan])
    assert va.label_space.tasks == ("va",)
    ex = load_dataset(f"abaw:{abaw}:train", tasks="EXPR")
    assert list(ex.labels["frame"]) == [1, 3, 5]  # frame 2 is -1 (missing), 4 has no image
    assert list(ex.labels["expression"]) == ["happiness", "other", "anger"]
    assert ex.label_space.expressions == ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "other")
    assert ex[0]["image"][0, 0, 0].item() == pytest.approx(10 / 255)


def test_abaw_mtl_merges_by_video_and_frame(abaw):
    mtl = load_dataset(f"abaw:{abaw}:Validation".replace("Validation", "Train"), tasks="MTL")
    lab = mtl.labels
    assert list(zip(lab["video"], lab["frame"])) == [("vid1", 1), ("vid1", 3), ("vid1", 5), ("vid2", 1)]
    assert list(lab["expression"][:3]) == ["happiness", "other", "anger"] and pd.isna(lab["expression"][3])
    assert np.isnan(lab["valence"][3]) and lab["valence"][0] == pytest.approx(0.5)
    assert lab["AU1"].tolist() == [-1, -1, -1, 1] and lab["AU12"].tolist() == [-1, -1, -1, 1]
    assert mtl.label_space.tasks == ("expr", "va", "au") and mtl.label_space.aus == AU_SETS["abaw12"]
    batch = collate([mtl[i] for i in range(len(mtl))])
    assert batch["expr"].tolist() == [1, 7, 6, -1]
    assert batch["au"][3].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert (batch["au"][:3] == -1).all()
    assert torch.isnan(batch["va"][3]).all()
    assert len(load_dataset(f"abaw:{abaw}:Train", tasks=["VA", "AU"])) == 4
    with pytest.raises(ConfigError, match=r"unknown ABAW task 'FACE'; valid tasks: VA, EXPR, AU, MTL"):
        load_dataset(f"abaw:{abaw}:Train", tasks="FACE")
    with pytest.raises(DatasetError, match="no VA annotations for split Validation"):
        load_dataset(f"abaw:{abaw}:val", tasks="VA")


def test_abaw_reader_options_in_the_spec_and_frame_subsampling(abaw):
    """abaw:ROOT:Train?tasks=AU (the documented ABAW3 spec) and ?every=N keep every N-th frame."""
    au = load_dataset(f"abaw:{abaw}:Train?tasks=AU")
    assert au.label_space.tasks == ("au",) and list(au.labels["video"]) == ["vid2"]
    va = load_dataset(f"abaw:{abaw}:Train?tasks=VA&every=2")
    assert list(va.labels["frame"]) == [1, 3, 5]  # frames 1, 3, 5 (2 has no label, 4 no image anyway)
    both = load_dataset(f"abaw:{abaw}:Train?tasks=VA+EXPR&every=4")
    assert list(both.labels["frame"]) == [1, 5]
    # a keyword option wins over the spec; a bad option or value is one clear line
    assert load_dataset(f"abaw:{abaw}:Train?tasks=AU", tasks="VA").label_space.tasks == ("va",)
    with pytest.raises(ConfigError, match="every must be a positive integer"):
        load_dataset(f"abaw:{abaw}:Train?every=0")
    with pytest.raises(ConfigError, match="unknown option"):
        load_dataset(f"abaw:{abaw}:Train?task=AU")
    with pytest.raises(DatasetError, match="not key=value"):
        load_dataset(f"abaw:{abaw}:Train?AU")


def test_abaw_malformed_rows_and_codes(abaw):
    ex = abaw / "Third ABAW Annotations" / "EXPR_Classification_Challenge" / "Train_Set" / "vid1.txt"
    ex.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n4\n9\n")
    with pytest.raises(LabelError, match=r"vid1\.txt:3: expression code 9 is out of range for dataset 'abaw'"):
        load_dataset(f"abaw:{abaw}:Train", tasks="EXPR")
    va = abaw / "Third ABAW Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "vid1.txt"
    va.write_text("valence,arousal\n0.5,0.2\n0.4,high\n")
    with pytest.raises(DatasetError, match=r"vid1\.txt:3: expected 2 comma-separated number\(s\) for VA"):
        load_dataset(f"abaw:{abaw}:Train", tasks="VA")
    va.write_text("valence,arousal\n0.5,0.2\n1.4,0.1\n")
    with pytest.raises(LabelError, match=r"vid1\.txt:3: valence value 1\.4 is out of range"):
        load_dataset(f"abaw:{abaw}:Train", tasks="VA")
    au = abaw / "Third ABAW Annotations" / "AU_Detection_Challenge" / "Train_Set" / "vid2.txt"
    au.write_text(f"{ABAW_AU_HEADER}\n{','.join(['0'] * 11 + ['2'])}\n")
    with pytest.raises(LabelError, match=r"vid2\.txt:2: AU26 value 2 is not 0, 1 or -1"):
        load_dataset(f"abaw:{abaw}:Train", tasks="AU")


# --------------------------------------------------------------------------- DISFA


def write_disfa_labels(root: Path, subject: str, n_frames: int, au1=None):
    folder = root / "ActionUnit_Labels" / subject
    folder.mkdir(parents=True, exist_ok=True)
    for name in AU_SETS["disfa12"]:
        values = au1 if (name == "AU1" and au1 is not None) else [0] * n_frames
        (folder / f"{subject}_au{name[2:]}.txt").write_text("".join(f"{k + 1},{v}\n" for k, v in enumerate(values)))


@pytest.fixture
def disfa(tmp_path):
    write_disfa_labels(tmp_path, "SN001", 4, au1=[0, 1, 2, 5])  # SN001 is in part1
    write_disfa_labels(tmp_path, "SN003", 2, au1=[3, 0])  # SN003 is in part3
    for subject, n in (("SN001", 4), ("SN003", 2)):
        for k in range(1, n + 1):
            img(tmp_path / "frames" / subject / f"{k}.jpg")  # unpadded names are fine
    return tmp_path


def test_disfa_threshold_and_parts(disfa):
    ds = load_dataset(f"disfa:{disfa}:part1")
    assert ds.labels["AU1"].tolist() == [0, 0, 1, 1]  # intensity >= 2
    assert ds.labels["AU1_intensity"].tolist() == [0, 1, 2, 5]
    assert list(ds.labels["subject"]) == ["SN001"] * 4 and ds.labels["frame"].tolist() == [1, 2, 3, 4]
    assert ds.label_space.aus == AU_SETS["disfa12"] and ds.label_space.tasks == ("au",)
    assert load_dataset(f"disfa:{disfa}:part1", threshold=3).labels["AU1"].tolist() == [0, 0, 0, 1]
    assert load_dataset(f"disfa:{disfa}:part1", aus="disfa8").label_space.aus == AU_SETS["disfa8"]
    everything = load_dataset(f"disfa:{disfa}")
    assert list(everything.labels["split"]) == ["part1"] * 4 + ["part3"] * 2
    assert everything.labels["AU1"].tolist()[-2:] == [1, 0]
    with pytest.raises(DatasetError, match="none of the part2 subjects"):
        load_dataset(f"disfa:{disfa}:part2")
    with pytest.raises(ConfigError, match=r"AU7"):
        load_dataset(f"disfa:{disfa}:part1", aus=["AU1", "AU7"])


def test_disfa_malformed_lines_and_missing_frames(disfa):
    au1 = disfa / "ActionUnit_Labels" / "SN001" / "SN001_au1.txt"
    au1.write_text("1,0\n2;1\n")
    with pytest.raises(DatasetError, match=r"SN001_au1\.txt:2: expected 'frame,intensity'"):
        load_dataset(f"disfa:{disfa}:part1")
    au1.write_text("1,0\n2,7\n")
    with pytest.raises(LabelError, match=r"SN001_au1\.txt:2: intensity 7 is out of range for DISFA"):
        load_dataset(f"disfa:{disfa}:part1")


def test_disfa_frames_extracted_from_video(tmp_path):
    av = pytest.importorskip("av")
    write_disfa_labels(tmp_path, "SN002", 3, au1=[4, 0, 2])
    video = tmp_path / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi"
    video.parent.mkdir()
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuvj420p"
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 60 * k, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(DatasetError, match=r"no frames for SN002.*extract=True"):
        load_dataset(f"disfa:{tmp_path}:part1")
    ds = load_dataset(f"disfa:{tmp_path}:part1", extract=True)
    assert sorted(p.name for p in (tmp_path / "frames" / "SN002").iterdir()) == ["00001.jpg", "00002.jpg", "00003.jpg"]
    assert ds.labels["AU1"].tolist() == [1, 0, 1]
    means = [ds[i]["image"].mean().item() * 255 for i in range(3)]
    assert means == pytest.approx([0, 60, 120], abs=6)


# --------------------------------------------------------------------------- EMOTIC


@pytest.fixture
def emotic(tmp_path):
    for name, value in (("a.jpg", 50), ("b.jpg", 150)):
        img(tmp_path / "emotic" / "mscoco" / "images" / name, value=value, size=(12, 10))
    table = pd.DataFrame(
        {
            "Filename": ["a.jpg", "b.jpg"],
            "Folder": ["mscoco/images", "mscoco/images"],
            "Image Size": ["[12, 10]", "[12, 10]"],
            "BBox": ["[1, 2, 7, 6]", "[0, 0, 12, 10]"],
            "Categorical_Labels": ["['Engagement', 'Happiness']", "['Doubt/Confusion']"],
            "Continuous_Labels": ["[10, 1, 5.5]", "[5, 6, 7]"],
            "Gender": ["Male", "Female"],
            "Age": ["Adult", "Kid"],
        }
    )
    pre = tmp_path / "emotic_pre"
    pre.mkdir()
    table.to_csv(pre / "train.csv")  # with the pandas index column, as the export writes it
    return tmp_path


def test_emotic_multilabel_vad_and_body_crop(emotic):
    ds = load_dataset(f"emotic:{emotic}:train")
    space = ds.label_space
    assert space.multilabel and space.expressions == EMOTIC_CATEGORIES and space.va
    lab = ds.labels
    np.testing.assert_allclose(lab["valence"], [1.0, (5 - 5.5) / 4.5])
    np.testing.assert_allclose(lab["arousal"], [-1.0, (6 - 5.5) / 4.5])
    np.testing.assert_allclose(lab["dominance"], [0.0, (7 - 5.5) / 4.5])
    assert lab["Engagement"].tolist() == [1, 0] and lab["Doubt/Confusion"].tolist() == [0, 1]
    assert list(lab["gender"]) == ["Male", "Female"]
    s = ds[0]
    assert s["image"].shape == (3, 4, 6)  # [1, 2, 7, 6] -> 6 wide, 4 high
    target = torch.zeros(26)
    target[EMOTIC_CATEGORIES.index("Engagement")] = 1
    target[EMOTIC_CATEGORIES.index("Happiness")] = 1
    assert torch.equal(s["expr"], target)
    resized = load_dataset(f"emotic:{emotic}:train", image_size=8)
    batch = collate([resized[0], resized[1]])
    assert batch["image"].shape == (2, 3, 8, 8)
    assert batch["expr"].shape == (2, 26) and batch["expr"].sum().item() == 3
    assert "Engagement 1" in ds.describe()
    assert load_dataset(f"emotic:{emotic}:train", crop_body=False)[0]["image"].shape == (3, 10, 12)
    sub = ds.with_label_space(LabelSpace(expressions=("Happiness", "Pain"), va=True, multilabel=True))
    assert sub.expr_targets.tolist() == [[1, 0], [0, 0]]


def test_emotic_unknown_category_names_line_and_value(emotic):
    f = emotic / "emotic_pre" / "train.csv"
    f.write_text(f.read_text().replace("'Doubt/Confusion'", "'Joyful'"))
    with pytest.raises(LabelError, match=r"train\.csv:3: unknown EMOTIC category 'Joyful'"):
        load_dataset(f"emotic:{emotic}:train")
    f.write_text(f.read_text().replace("[5, 6, 7]", "[5, 6, 11]").replace("'Joyful'", "'Pain'"))
    with pytest.raises(LabelError, match=r"train\.csv:3: valence/arousal/dominance value 11 is out of range"):
        load_dataset(f"emotic:{emotic}:train")


# --------------------------------------------------------------------------- CK+


def test_ckplus_layout_and_unknown_au(tmp_path):
    img(tmp_path / "CK+48" / "happy" / "S001_001_00000003.png")
    img(tmp_path / "CK+48" / "fear" / "S002_001_00000009.png")
    header = "file,subject,sequence,frame,is_last_frame,emotion,netfacs_emotion,aus\n"
    rows = "CK+48/happy/S001_001_00000003.png,S001,S001_001,3,1,happy,happy,AU6 AU12 AU25\n" + (
        "CK+48/fear/S002_001_00000009.png,S002,S002_001,9,1,fear,fear,AU1 AU2 AU4 AU5 AU20\n"
    )
    (tmp_path / "labels_emotion_aus.csv").write_text(header + rows)
    ds = load_dataset(f"ckplus:{tmp_path}")
    assert list(ds.labels["expression"]) == ["happiness", "fear"]
    assert ds.label_space.aus == AU_SETS["ckplus23"] and ds.label_space.expressions == ("happiness", "fear")
    assert ds.labels.loc[0, ["AU6", "AU12", "AU25", "AU1"]].tolist() == [1, 1, 1, 0]
    assert list(ds.labels["video"]) == ["S001_001", "S002_001"]
    (tmp_path / "labels_emotion_aus.csv").write_text(header + rows.replace("AU20", "AU43"))
    with pytest.raises(LabelError, match=r"labels_emotion_aus\.csv:3: AU43 is not in the CK\+ AU set"):
        load_dataset(f"ckplus:{tmp_path}")


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "ckplus48").is_dir(), reason="../shared/data/ckplus48 is absent")
def test_ckplus48_real_data():
    ds = load_dataset(f"ckplus:{SHARED_DATA / 'ckplus48'}")
    lab = ds.labels
    assert len(ds) == 981
    assert ds.label_space.expressions == ("happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
    assert lab["expression"].value_counts().to_dict() == {
        "surprise": 249,
        "happiness": 207,
        "disgust": 177,
        "anger": 135,
        "sadness": 84,
        "fear": 75,
        "contempt": 54,
    }
    assert lab["subject"].nunique() == 118 and lab["video"].nunique() == 327
    happy = lab["expression"] == "happiness"
    # the lip-corner puller makes a smile; cheek raiser goes with it, brow lowerer does not
    assert lab.loc[happy, "AU12"].mean() > 0.9
    assert lab.loc[happy, "AU12"].mean() > 5 * lab.loc[~happy, "AU12"].mean()
    assert lab.loc[lab["expression"] == "surprise", "AU1"].mean() > 0.8
    assert lab.loc[happy, "AU4"].mean() < 0.1
    sample = ds[0]
    assert sample["image"].shape == (3, 48, 48) and sample["au"].shape == (23,)
    train, test = ds.split_by("subject", (0.8, 0.2), seed=0)
    assert not set(train.labels["subject"]) & set(test.labels["subject"])
    assert len(test) == pytest.approx(0.2 * 981, abs=40)


def test_abaw_all_splits_merge_label_spaces(abaw):
    val = abaw / "Third ABAW Annotations" / "EXPR_Classification_Challenge" / "Validation_Set"
    val.mkdir()
    (val / "vid2.txt").write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n3\n")
    ds = load_dataset(f"abaw:{abaw}")
    assert list(ds.labels["split"]) == ["Train"] * 4 + ["Validation"]
    assert ds.labels["expression"].iloc[-1] == "fear"
    # the Validation split has only EXPR, Train has all three: the union is kept
    assert ds.label_space.tasks == ("expr", "va", "au") and len(ds.label_space.expressions) == 8
    assert ds.labels["AU1"].iloc[-1] == -1 and np.isnan(ds.labels["valence"].iloc[-1])


def test_abaw_mtl_static_set(tmp_path):
    """The ABAW3 multi-task static set: one annotation file per split, all descriptors per frame."""
    for k in (1, 2, 3):
        img(tmp_path / "cropped_aligned" / "v1" / f"{k:05d}.jpg")
    header = "image,valence,arousal,expression," + ",".join(AU_SETS["abaw12"])
    au = ",".join(["1", "0"] * 6)
    rows = [f"v1/00001.jpg,0.5,-0.25,4,{au}", f"v1/00002.jpg,-5,-5,-1,{','.join(['-1'] * 12)}",
            f"v1/00003.jpg,0.1,0.2,7,{au}"]
    (tmp_path / "training_set_annotations.txt").write_text("\n".join([header, *rows]) + "\n")
    ds = load_dataset(f"abaw-mtl:{tmp_path}:Train")
    lab = ds.labels
    assert list(lab["frame"]) == [1, 2, 3] and list(lab["video"]) == ["v1"] * 3
    assert lab["expression"][0] == "happiness" and pd.isna(lab["expression"][1]) and lab["expression"][2] == "other"
    assert np.isnan(lab["valence"][1]) and lab["arousal"][0] == pytest.approx(-0.25)
    assert lab["AU1"].tolist() == [1, -1, 1] and lab["AU2"].tolist() == [0, -1, 0]
    assert ds.label_space.tasks == ("expr", "va", "au")
    (tmp_path / "validation_set_annotations.txt").write_text(header + "\nv1/00001.jpg,0.5,0.5,9," + au + "\n")
    with pytest.raises(LabelError, match="validation_set_annotations.txt:2"):
        load_dataset(f"abaw-mtl:{tmp_path}:Validation")
