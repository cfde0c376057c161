"""DISFA options from the spec, the EmotioNet and AFEW-VA readers on fixtures in their official layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectlab import load_dataset
from affectlab.data.schema import AU_SETS
from affectlab.errors import ConfigError


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
