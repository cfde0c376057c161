"""benchmarks/claims_retest.py compares SMM with a baseline of equal capacity and the same loss:
the capacity matching and the loss it relies on, checked without training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def claims():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import claims_retest
    finally:
        sys.path.pop(0)
    return claims_retest


@pytest.mark.parametrize("setting", ["scratch", "pretrained"])
def test_baseline_width_matches_smms_parameter_count(claims, setting):
    preset, backbone_sets = claims.SMM_SETTINGS[setting]
    smm = claims._used_parameters("smm", preset, [])
    width, base = claims._matching_embed_dim(smm, backbone_sets)
    assert abs(base - smm) / smm < 0.01
    # one unit narrower or wider is further from SMM's count: the width is the closest one
    for other in (width - 1, width + 1):
        n = claims._used_parameters("baseline", "baseline", [*backbone_sets, f"embed_dim={other}"])
        assert abs(n - smm) >= abs(base - smm)


def test_baseline_with_va_mse_off_has_smms_loss():
    """va_mse_weight=0 makes the baseline's loss SMM's equation 7 on the same outputs."""
    from affectlab import losses
    from affectlab.data.schema import LabelSpace
    from affectlab.methods.base import Outputs, create_method

    space = LabelSpace(expressions=("neutral", "happiness", "sadness"), va=True, aus=("AU1", "AU12"))
    m = create_method("baseline", space, {"backbone": "builtin:cnn-tiny", "va_mse_weight": 0.0})
    m.set_training_stats({"class_counts": [5, 3, 2], "au_positive": [2, 4], "au_negative": [8, 6]})
    g = torch.Generator().manual_seed(0)
    out = Outputs(expr_logits=torch.randn(6, 3, generator=g), va=torch.rand(6, 2, generator=g) - 0.5,
                  au_logits=torch.randn(6, 2, generator=g))
    batch = {"expr": torch.tensor([0, 1, 2, -1, 1, 0]), "va": torch.rand(6, 2, generator=g) - 0.5,
             "au": torch.tensor([[1, 0], [0, 1], [-1, -1], [1, 1], [0, 0], [1, 0]])}
    batch["va"][2] = float("nan")
    want = losses.smm_loss(expr_logits=out.expr_logits, expr_target=batch["expr"], expr_weight=m.expr_weight,
                           va_pred=out.va, va_target=batch["va"], au_logits=out.au_logits,
                           au_target=batch["au"], au_pos_weight=m.au_pos_weight)
    torch.testing.assert_close(m.loss(out, batch)["loss"], want)
