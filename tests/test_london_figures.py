"""The default pipeline on the London face set meets the issue's figures (real faces).

Faces in every photo, AU12 of each person's smiling photo above their neutral one in at least
95 % of pairs, happiness separating smiling from neutral with ROC-AUC >= 0.9. DeBruine &
Jones (2017), Face Research Lab London Set, CC-BY 4.0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
@pytest.mark.slow
def test_london_default_pipeline(assets_home):
    data = SHARED / "data" / "london"
    if not (data / "labels.csv").exists():
        pytest.skip(f"real faces not found at {data}")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from london_pipeline import london_figures
    finally:
        sys.path.pop(0)
    fig = london_figures(data)
    assert fig["photos"] == 204 and fig["with_face"] == 204 and fig["with_landmarks"] == 204, fig
    assert fig["au12_pairs"] == 102 and fig["au12_smile_above_neutral"] >= 0.95, fig
    assert fig["happiness_auc"] >= 0.9, fig
    assert "faceapi" in fig["model"], fig  # the best expression model present is the default
