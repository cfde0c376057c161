"""AffectDataset, the spec parser, load_dataset options, manifest and image-folder readers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from affectlab import load_dataset
from affectlab.data.batch import collate
from affectlab.data.datasets import parse_spec
from affectlab.data.labeled import AffectDataset, LabeledDataset
from affectlab.data.schema import LabelSpace
from affectlab.errors import AffectlabError, ConfigError, DatasetError, LabelError


def write_image(path: Path, value: int = 128, size=(8, 6), mode="RGB") -> Path:
    """A tiny solid image whose first pixel encodes ``value`` (to check which file was read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    arr[0, 0] = (value, 255 - value, 7)
    img = Image.fromarray(arr)
    if mode == "L":
        img = img.convert("L")
    img.save(path)
    return path


@pytest.fixture
def manifest(tmp_path):
    rows = [
        ("img/a.png", "happy", 0.5, 0.1, 1, 0, "s1"),
        ("img/b.png", "Neutral", -0.2, "", 0, -1, "s1"),
        ("img/c.png", "", "", "", "", 1, "s2"),
        ("img/d.png", "angry", 0.0, 0.9, 1, 1, "s3"),
    ]
    for i, r in enumerate(rows):
        write_image(tmp_path / r[0], value=10 * (i + 1))
    df = pd.DataFrame(rows, columns=["path", "expression", "valence", "arousal", "AU12", "au04", "subject"])
    df.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


def test_manifest_canonical_labels_and_samples(manifest):
    ds = load_dataset(f"manifest:{manifest / 'labels.csv'}")
    lab = ds.labels
    assert list(lab.columns[:4]) == ["path", "expression", "valence", "arousal"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in lab["path"])
    assert list(lab["expression"].iloc[[0, 1, 3]]) == ["happiness", "neutral", "anger"]
    assert pd.isna(lab["expression"].iloc[2])
    assert np.isnan(lab["arousal"].iloc[1]) and lab["valence"].iloc[1] == pytest.approx(-0.2)
    assert list(lab["AU4"]) == [0, -1, 1, 1]
    assert list(lab["AU12"]) == [1, 0, -1, 1]
    # canonical order restricted to the classes present; AUs sorted by number
    assert ds.label_space.expressions == ("neutral", "happiness", "anger")
    assert ds.label_space.aus == ("AU4", "AU12")
    assert ds.label_space.va

    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 6, 8)
    assert s["image"][0, 0, 0].item() == pytest.approx(10 / 255)
    assert s["expr"].item() == 1 and s["index"].item() == 0
    assert torch.allclose(s["va"], torch.tensor([0.5, 0.1]))
    assert s["au"].tolist() == [0.0, 1.0]
    s2 = ds[2]
    assert s2["expr"].item() == -1 and torch.isnan(s2["va"]).all() and s2["au"].tolist() == [1.0, -1.0]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (4, 3, 6, 8) and batch["skipped"].item() == 0
    assert batch["expr"].tolist() == [1, 0, -1, 2]


def test_bare_paths_and_column_mapping(tmp_path):
    write_image(tmp_path / "x" / "1.jpg")
    write_image(tmp_path / "x" / "2.jpg")
    pd.DataFrame({"img": ["x/1.jpg", "x/2.jpg"], "emotion": ["sad", "surprised"], "who": ["p", "q"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    opts = dict(columns={"img": "path", "emotion": "expression", "who": "subject"})
    by_folder = load_dataset(str(tmp_path), **opts)
    by_file = load_dataset(tmp_path / "labels.csv", **opts)
    assert list(by_folder.labels["expression"]) == ["sadness", "surprise"]
    assert list(by_file.labels["subject"]) == ["p", "q"]
    with pytest.raises(DatasetError, match=r"no `path` column.*img"):
        load_dataset(str(tmp_path))
    with pytest.raises(DatasetError, match="nope"):
        load_dataset(str(tmp_path), columns={"nope": "path"})


def test_manifest_parquet_and_split_column(tmp_path):
    for n in "abc":
        write_image(tmp_path / f"{n}.png")
    pd.DataFrame(
        {"path": ["a.png", "b.png", "c.png"], "expression": ["fear", "disgust", "fear"], "split": ["train", "val", "Training"]}
    ).to_parquet(tmp_path / "m.parquet")
    train = load_dataset(f"manifest:{tmp_path / 'm.parquet'}:train")
    assert [Path(p).name for p in train.labels["path"]] == ["a.png", "c.png"]
    with pytest.raises(DatasetError, match=r"valid splits: Training, train, val"):
        load_dataset(f"manifest:{tmp_path / 'm.parquet'}:test")


def test_manifest_errors_name_file_line_and_value(tmp_path):
    write_image(tmp_path / "a.png")
    f = tmp_path / "m.csv"
    f.write_text("path,expression,valence\na.png,happy,0.1\na.png,bored,0.2\n")
    with pytest.raises(LabelError, match=r"m\.csv:3: unknown expression 'bored'"):
        load_dataset(f)
    f.write_text("path,expression,valence\na.png,happy,0.1\na.png,sad,high\n")
    with pytest.raises(DatasetError, match=r"m\.csv:3: valence 'high' is not a number"):
        load_dataset(f)
    f.write_text("path,expression,valence\na.png,happy,0.1\na.png,sad,3\n")
    with pytest.raises(LabelError, match=r"m\.csv:3: valence 3 is outside \[-1, 1\]"):
        load_dataset(f)
    f.write_text("path,AU12\na.png,0\na.png,3\n")
    with pytest.raises(LabelError, match=r"m\.csv:3: AU12 value 3 .*au_threshold"):
        load_dataset(f)
    f.write_text("path,AU12\na.png,0\na.png,3\na.png,1\na.png,\n")
    assert list(load_dataset(f, au_threshold=2).labels["AU12"]) == [0, 1, 0, -1]
    f.write_text("path,expression\na.png,1\na.png,7\n")
    with pytest.raises(LabelError, match="expression_codes"):
        load_dataset(f)
    assert list(load_dataset(f, expression_codes="rafdb").labels["expression"]) == ["surprise", "neutral"]
    with pytest.raises(LabelError, match=r"m\.csv:3: expression code 9 .*rafdb"):
        f.write_text("path,expression\na.png,1\na.png,9\n")
        load_dataset(f, expression_codes="rafdb")


def test_spec_parsing_and_validation(tmp_path, manifest):
    spec = parse_spec("affectnet7:/data/AffectNet:val")
    assert (spec.format, spec.path, spec.split, dict(spec.fixed_options)) == (
        "affectnet",
        Path("/data/AffectNet"),
        "val",
        {"variant": 7},
    )
    assert parse_spec("imagefolder:/data/faces").split is None
    with pytest.raises(DatasetError, match=r"unknown dataset format 'affectnett'.*valid formats:.*affectnet"):
        parse_spec("affectnett:/data/x")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'colums'.*valid options:.*columns"):
        load_dataset(manifest, colums={})
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"manifest:{tmp_path / 'absent.csv'}")
    with pytest.raises(DatasetError, match=r"unknown split 'bogus' for format 'affectnet'; valid splits: train, val"):
        load_dataset(f"affectnet:{tmp_path}:bogus")
    with pytest.raises(DatasetError, match=r"format 'ckplus' has no splits"):
        load_dataset(f"ckplus:{tmp_path}:train")


def test_missing_images_are_dropped_with_a_warning(manifest):
    (manifest / "img" / "b.png").unlink()
    (manifest / "img" / "c.png").unlink()
    with pytest.warns(UserWarning, match=r"2 of 4 images are missing and were dropped; first: .*b\.png, .*c\.png"):
        ds = load_dataset(manifest)
    assert len(ds) == 2 and list(ds.labels["expression"]) == ["happiness", "anger"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(manifest, check_files=False)) == 4
    for n in "ad":
        (manifest / "img" / f"{n}.png").unlink()
    with pytest.raises(DatasetError, match="none of the 4 images exist"):
        load_dataset(manifest)


def test_corrupt_image_is_skipped_not_fatal(manifest):
    (manifest / "img" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (manifest / "img" / "c.png").write_bytes(b"")
    ds = load_dataset(manifest)
    assert ds[1] is None and ds[2] is None
    assert ds.skipped == 2
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    (batch,) = list(loader)
    assert batch["skipped"].item() == 2
    assert batch["index"].tolist() == [0, 3]
    assert batch["image"].shape[0] == 2


def test_with_label_space_remaps_by_name(manifest):
    ds = load_dataset(manifest)
    space = LabelSpace(expressions=("anger", "happiness", "sadness"), aus=("AU12", "AU1", "AU4"), va=True)
    rm = ds.with_label_space(space)
    assert rm.label_space is space
    assert rm.expr_targets.tolist() == [1, -1, -1, 0]  # neutral is outside the space -> missing
    assert rm.au_targets.tolist() == [[1, -1, 0], [0, -1, -1], [-1, -1, 1], [1, -1, 1]]
    assert rm[3]["au"].tolist() == [1.0, -1.0, 1.0]
    assert ds.expr_targets.tolist() == [1, 0, -1, 2]  # the original is untouched
    with pytest.raises(LabelError):
        ds.with_label_space(LabelSpace(expressions=("Pain",), multilabel=True))


def test_subset_split_by_and_transform(manifest):
    ds = load_dataset(manifest)
    sub = ds.subset([3, 0])
    assert list(sub.labels["expression"]) == ["anger", "happiness"]
    assert sub[0]["index"].item() == 0 and sub[0]["image"][0, 0, 0].item() == pytest.approx(40 / 255)
    assert len(ds.subset(np.array([True, False, True, False]))) == 2
    with pytest.raises(DatasetError):
        ds.subset([7])

    a, b = ds.split_by("subject", (0.5, 0.5), seed=3)
    assert len(a) + len(b) == 4
    assert not set(a.labels["subject"]) & set(b.labels["subject"])
    a2, _ = ds.split_by("subject", (0.5, 0.5), seed=3)
    assert list(a2.labels["path"]) == list(a.labels["path"])
    with pytest.raises(DatasetError, match="no column 'person'"):
        ds.split_by("person")
    with pytest.raises(DatasetError, match="summing to 1"):
        ds.split_by("subject", (0.5, 0.2))

    seen = []

    def transform(img):
        seen.append((img.dtype, img.shape))
        return torch.zeros(3, 4, 4)

    ds.set_transform(transform)
    assert ds[0]["image"].shape == (3, 4, 4)
    assert seen == [(np.uint8, (6, 8, 3))]
    resized = load_dataset(manifest, image_size=5)
    assert resized[0]["image"].shape == (3, 5, 5)
    text = ds.describe()
    assert "4 samples" in text and "happiness 1" in text and "3 subjects" in text


def test_split_by_fractions_on_many_groups(tmp_path):
    labels = pd.DataFrame(
        {
            "path": [str(tmp_path / f"{i}.png") for i in range(1000)],
            "expression": ["neutral"] * 1000,
            "valence": np.nan,
            "arousal": np.nan,
            "subject": [f"s{i % 100}" for i in range(1000)],
        }
    )
    ds = AffectDataset(labels)
    parts = ds.split_by("subject", (0.6, 0.2, 0.2), seed=0)
    assert [len(p) for p in parts] == pytest.approx([600, 200, 200], abs=20)
    subjects = [set(p.labels["subject"]) for p in parts]
    assert not (subjects[0] & subjects[1]) and not (subjects[1] & subjects[2]) and not (subjects[0] & subjects[2])

    # rows without a subject are each their own group: all rows are kept, none twice
    labels.loc[::7, "subject"] = None
    parts = AffectDataset(labels).split_by("subject", (0.5, 0.5), seed=1)
    paths = [set(p.labels["path"]) for p in parts]
    assert len(paths[0] | paths[1]) == 1000 and not paths[0] & paths[1]
    named = [set(p.labels["subject"].dropna()) for p in parts]
    assert not named[0] & named[1]


def test_labeled_dataset_base_supports_feature_subclass(tmp_path):
    class FeatureDataset(LabeledDataset):
        def __init__(self, labels, features, **kw):
            super().__init__(labels, **kw)
            self._row_arrays["features"] = np.asarray(features, dtype=np.float32)

        def _load_inputs(self, i):
            return {"features": torch.from_numpy(self._row_arrays["features"][i])}

    labels = pd.DataFrame(
        {"path": ["a", "b", "c"], "expression": ["fear", None, "happiness"], "valence": [0.1, np.nan, 0.3], "arousal": 0.0}
    )
    fd = FeatureDataset(labels, np.arange(6).reshape(3, 2))
    sub = fd.subset([2, 0])
    assert sub[0]["features"].tolist() == [4.0, 5.0] and sub[0]["expr"].item() == 0
    assert fd[1]["expr"].item() == -1
    assert collate([fd[0], fd[2]])["features"].shape == (2, 2)


def test_imagefolder_aliases_and_unknown_folders(tmp_path):
    write_image(tmp_path / "faces" / "Happy" / "1.jpg")
    write_image(tmp_path / "faces" / "happy" / "2.png", mode="L")
    write_image(tmp_path / "faces" / "angry" / "3.jpg")
    (tmp_path / "faces" / "angry" / "notes.txt").write_text("ignored")
    ds = load_dataset(f"imagefolder:{tmp_path / 'faces'}")
    assert sorted(ds.labels["expression"]) == ["anger", "happiness", "happiness"]
    assert ds.label_space.expressions == ("happiness", "anger")
    gray = ds.labels.index[ds.labels["path"].str.endswith("2.png")][0]
    assert ds[gray]["image"].shape == (3, 6, 8)  # gray file -> RGB
    write_image(tmp_path / "faces" / "bored" / "4.jpg")
    write_image(tmp_path / "faces" / "sleepy" / "5.jpg")
    with pytest.raises(DatasetError, match=r"\['bored', 'sleepy'\] are not expressions"):
        load_dataset(f"imagefolder:{tmp_path / 'faces'}")
    write_image(tmp_path / "split" / "train" / "fear" / "1.jpg")
    assert list(load_dataset(f"imagefolder:{tmp_path / 'split'}:train").labels["expression"]) == ["fear"]
    with pytest.raises(DatasetError, match="valid splits: train"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}:val")


def test_errors_are_affectlab_errors(tmp_path):
    with pytest.raises(AffectlabError):
        load_dataset("")
    with pytest.raises(AffectlabError):
        load_dataset(f"imagefolder:{tmp_path}")  # no images


def test_read_image_formats_and_failures(tmp_path):
    from affectlab.data.images import crop_box, read_image

    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red: catches a BGR/RGB swap
    Image.fromarray(rgb).save(tmp_path / "red.png")
    Image.fromarray(np.dstack([rgb, np.full((4, 5), 9, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "gray.jpg", quality=100)
    Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rgb).save(tmp_path / "anim.gif")
    for name in ("red.png", "rgba.png"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (4, 5, 3) and out[0, 0].tolist() == [200, 0, 0]
    gray = read_image(tmp_path / "gray.jpg")
    assert gray.shape == (4, 5, 3) and abs(int(gray[0, 0, 0]) - 77) <= 1 and gray[0, 0, 0] == gray[0, 0, 2]
    assert read_image(tmp_path / "deep.png")[0, 0].tolist() == [40000 >> 8] * 3
    gif = read_image(tmp_path / "anim.gif")
    assert gif.shape == (4, 5, 3) and gif[0, 0, 0] > 150 and gif[0, 0, 1] < 50
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert read_image(tmp_path / "bad.jpg") is None
    assert read_image(tmp_path / "absent.jpg") is None
    assert read_image(tmp_path) is None  # a folder
    big = np.arange(100, dtype=np.uint8).reshape(10, 10, 1).repeat(3, axis=2)
    assert crop_box(big, -3, 2, 6, 20).shape == (8, 3, 3)  # clamped to the image
    assert crop_box(big, 12, 0, 5, 5) is None


def test_datasets_command_lists_formats_and_describes_a_spec(manifest, capsys):
    from affectlab.cli import main

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("affectnet", "rafdb", "fer2013", "abaw", "disfa", "emotic", "manifest", "imagefolder", "ckplus",
                 "emotionet", "afewva"):
        assert name in out
    assert "threshold=None" in out and "above=None" in out and "variant=8" in out
    assert main(["datasets", str(manifest / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert "4 samples" in out and "3 expressions" in out
    assert main(["datasets", "nosuchformat:/x"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset format 'nosuchformat'" in err and "valid formats" in err


def test_collate_fills_keys_only_some_samples_carry():
    a = {"va": torch.tensor([0.1, 0.2]), "index": torch.tensor(0), "dominance": torch.tensor(0.5)}
    b = {"va": torch.tensor([0.3, 0.4]), "index": torch.tensor(1)}
    c = {"va": torch.tensor([0.0, 0.0]), "index": torch.tensor(2), "tag": torch.tensor(7)}
    batch = collate([a, None, b, c])
    assert batch["skipped"].item() == 1
    assert batch["dominance"][0].item() == 0.5 and torch.isnan(batch["dominance"][1:]).all()
    assert batch["tag"].tolist() == [-1, -1, 7]
    assert batch["va"].shape == (3, 2)


@pytest.mark.parametrize("code", range(1, 9))
def test_training_reader_applies_exif_orientation(tmp_path, code):
    """A photo stored sideways with an EXIF orientation is read upright, as analyze reads it."""
    from PIL import Image, ImageOps

    from affectlab.data.images import read_image

    rng = np.random.default_rng(code)
    stored = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)  # not square: a turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = code
    path = tmp_path / f"o{code}.png"  # lossless, so the pixels compare exactly
    Image.fromarray(stored).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(path)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    if code in (5, 6, 7, 8):
        assert got.shape[:2] == (5, 7)
