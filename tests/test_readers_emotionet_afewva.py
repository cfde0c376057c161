"""DISFA options from the spec, the EmotioNet and AFEW-VA readers on fixtures in their official layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectlab import load_dataset
from affectlab.data.schema import AU_SETS
from affectlab.errors import ConfigError, DatasetError


def img(path: Path, value: int = 100, size=(10, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- DISFA from the spec


@pytest.fixture
def disfa(tmp_path):
    folder = tmp_path / "ActionUnit_Labels" / "SN001"
    folder.mkdir(parents=True)
    au1 = [0, 1, 2, 3, 5]
    for name in AU_SETS["disfa12"]:
        values = au1 if name == "AU1" else [0] * len(au1)
        (folder / f"SN001_au{name[2:]}.txt").write_text("".join(f"{k + 1},{v}\n" for k, v in enumerate(values)))
    for k in range(1, len(au1) + 1):
        img(tmp_path / "frames" / "SN001" / f"{k:05d}.jpg")
    return tmp_path


def test_disfa_aura_protocol_from_the_spec(disfa):
    aura = load_dataset(f"disfa:{disfa}:part1?above=2&aus=8")
    assert aura.label_space.aus == AU_SETS["disfa8"]
    assert aura.labels["AU1"].tolist() == [0, 0, 0, 1, 1]  # intensity > 2
    default = load_dataset(f"disfa:{disfa}:part1?aus=12")
    assert default.label_space.aus == AU_SETS["disfa12"]
    assert default.labels["AU1"].tolist() == [0, 0, 1, 1, 1]  # intensity >= 2
    assert load_dataset(f"disfa:{disfa}:part1?threshold=3").labels["AU1"].tolist() == [0, 0, 0, 1, 1]
    named = load_dataset(f"disfa:{disfa}:part1?aus=AU1,AU12")
    assert named.label_space.aus == ("AU1", "AU12")


def test_disfa_bad_options_name_the_value(disfa):
    with pytest.raises(ConfigError, match=r"threshold .* or above .*not both"):
        load_dataset(f"disfa:{disfa}:part1?above=2&threshold=3")
    with pytest.raises(ConfigError, match=r"aus=9: no DISFA AU set"):
        load_dataset(f"disfa:{disfa}:part1?aus=9")
    with pytest.raises(ConfigError, match=r"above must be in 0\.\.4"):
        load_dataset(f"disfa:{disfa}:part1?above=5")


# --------------------------------------------------------------------------- EmotioNet

EMOTIONET_AUS = AU_SETS["emotionet11"]


def emotionet_table(rows, header=None, sep=","):
    header = header or ["URL"] + [f"AU{a[2:]}" for a in EMOTIONET_AUS] + ["AU43"]
    return "\n".join([sep.join(header)] + [sep.join(map(str, r)) for r in rows]) + "\n"


@pytest.fixture
def emotionet(tmp_path):
    rows = [
        ["http://example.org/a/0001.jpg"] + [1, 0, 0, 0, 1, 0, 1, 0, 0, 999, 0] + [0],
        ["http://example.org/b/0002.jpg"] + [0] * 10 + [1] + [999],
        ["local/0003.jpg"] + [999] * 11 + [1],
    ]
    (tmp_path / "EmotioNet_AUs.csv").write_text(emotionet_table(rows))
    img(tmp_path / "images" / "0001.jpg")
    img(tmp_path / "images" / "0002.jpg")
    img(tmp_path / "local" / "0003.jpg")
    return tmp_path


def test_emotionet_official_table(emotionet):
    ds = load_dataset(f"emotionet:{emotionet}")
    assert ds.label_space.aus == EMOTIONET_AUS and ds.label_space.tasks == ("au",)
    assert len(ds) == 3
    assert ds.labels["path"].tolist() == [str(emotionet / "images" / "0001.jpg"), str(emotionet / "images" / "0002.jpg"),
                                          str(emotionet / "local" / "0003.jpg")]
    assert ds.labels["AU1"].tolist() == [1, 0, -1]  # 999 = not annotated -> missing
    assert ds.labels["AU25"].tolist() == [-1, 0, -1]
    assert ds.labels["AU26"].tolist() == [0, 1, -1]
    assert "AU43" not in ds.labels  # outside the 11 AUs asked for
    assert ds.targets(0)["au"].tolist() == [1, 0, 0, 0, 1, 0, 1, 0, 0, -1, 0]
    other = load_dataset(f"emotionet:{emotionet}?aus=AU1,AU43")
    assert other.label_space.aus == ("AU1", "AU43") and other.labels["AU43"].tolist() == [0, -1, 1]


def test_emotionet_tab_separated(tmp_path):
    header = ["url"] + [f"AU {a[2:]}" for a in EMOTIONET_AUS]
    (tmp_path / "train.tsv").write_text(emotionet_table([["x/1.png"] + [1] * 11], header=header, sep="\t"))
    img(tmp_path / "x" / "1.png")
    assert load_dataset(f"emotionet:{tmp_path}").labels["AU12"].tolist() == [1]


def test_emotionet_malformed_lines_are_all_named(emotionet):
    table = emotionet / "EmotioNet_AUs.csv"
    lines = table.read_text().splitlines()
    lines[1] = lines[1].replace(",1,0,0,0,1,", ",2,0,0,0,1,", 1)
    lines[2] = ",".join(lines[2].split(",")[:5])
    lines.append(",".join(["../../outside.jpg"] + ["0"] * 12))
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"emotionet:{emotionet}")
    message = str(info.value)
    assert "3 problems" in message
    assert "EmotioNet_AUs.csv:2: AU1 value '2' is not 1, 0 or 999" in message
    assert "EmotioNet_AUs.csv:3: 5 fields, expected 13" in message
    assert "EmotioNet_AUs.csv:5: path '../../outside.jpg' leaves the dataset root" in message
    table.write_text(emotionet_table([["a.jpg", 1, 0]], header=["URL", "AU1", "AU2"]))
    with pytest.raises(DatasetError, match=r"EmotioNet_AUs\.csv:1: no column for AU4, AU5"):
        load_dataset(f"emotionet:{emotionet}")


def test_emotionet_several_tables_need_a_choice(emotionet):
    (emotionet / "other.csv").write_text(emotionet_table([]))
    with pytest.raises(ConfigError, match="file=NAME"):
        load_dataset(f"emotionet:{emotionet}")
    assert len(load_dataset(f"emotionet:{emotionet}?file=EmotioNet_AUs.csv")) == 3


# --------------------------------------------------------------------------- AFEW-VA


def afewva_clip(root: Path, clip: str, frames: dict, *, images=True) -> Path:
    folder = root / clip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{clip}.json").write_text(json.dumps({"actor": "someone", "frames": frames, "video_id": clip}, indent=4))
    if images:
        for key in frames:
            img(folder / f"{key}.png", size=(40, 30))
    return folder


def marks(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [(x0 + x1) / 2, (y0 + y1) / 2]]


@pytest.fixture
def afewva(tmp_path):
    afewva_clip(tmp_path, "001", {
        "00000": {"valence": 5, "arousal": -10, "landmarks": marks(10, 5, 30, 25)},
        "00001": {"valence": 0, "arousal": 3, "landmarks": marks(12, 6, 32, 26)},
    })
    afewva_clip(tmp_path, "002", {"00000": {"valence": -7, "arousal": 10}})
    return tmp_path


def test_afewva_official_layout(afewva):
    ds = load_dataset(f"afewva:{afewva}")
    assert ds.label_space.va and ds.label_space.tasks == ("va",)
    assert np.allclose(ds.labels["valence"], [0.5, 0.0, -0.7])  # x / 10
    assert np.allclose(ds.labels["arousal"], [-1.0, 0.3, 1.0])
    assert ds.labels["video"].tolist() == ["001", "001", "002"] and ds.labels["frame"].tolist() == [0, 1, 0]
    assert ds.labels["path"].tolist()[0] == str(afewva / "001" / "00000.png")
    # the landmarks' box widened by 10% each side; no landmarks -> no box (not cropped)
    assert np.allclose(ds.labels.loc[0, ["x", "y", "w", "h"]].to_numpy(dtype=float), [8, 3, 24, 24])
    assert ds.labels.loc[2, ["x", "y", "w", "h"]].isna().all()
    assert load_dataset(f"afew-va:{afewva}?margin=0").labels.loc[0, "w"] == 20
    sample = ds[0]
    assert tuple(sample["image"].shape[1:]) == (24, 24)  # cropped to the face box


def test_afewva_malformed_json_names_file_and_line(afewva):
    clip = afewva / "001" / "001.json"
    clip.write_text('{"frames": {\n  "00000": {"valence": 5, "arousal": 1},\n  "00001": {"valence": 12, "arousal": 1},\n'
                    '  "00002": {"valence": 1}\n}}\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(f"afewva:{afewva}")
    message = str(info.value)
    assert "2 problems" in message
    assert "001.json:3: frame '00001' valence 12 is out of range for AFEW-VA; expected -10..10" in message
    assert "001.json:4: frame '00002' needs \"valence\" and \"arousal\"" in message
    clip.write_text('{"frames": {\n  "00000": {"valence": 5,, "arousal": 1}\n}}\n')
    with pytest.raises(DatasetError, match=r"001\.json:2: not valid JSON"):
        load_dataset(f"afewva:{afewva}")
