"""The discrete-label metrics of the VA-VAE tasks 2, 4 and 5 against scikit-learn, and the
explainer's discrete tables on hand-made latents and on a discrete-label model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss
from sklearn.tree import DecisionTreeClassifier

from affectlab.errors import LabelError
from affectlab.interpret.vavae_explain import alignment_table, bin_classification_table, encode_dataset
from affectlab.metrics import MissingLabelsWarning, binned_cross_entropy, va_bins
from affectlab.methods.vavae import va_to_bins


def test_va_bins_match_the_model_and_afewva_integers():
    v = np.array([-1.0, -0.96, -0.05, 0.0, 0.04, 0.25, 0.35, 1.0, 1.7, np.nan])
    assert va_bins(v).tolist() == [0, 0, 10, 10, 10, 12, 14, 20, 20, -1]
    finite = v[np.isfinite(v)]
    assert va_bins(finite).tolist() == va_to_bins(torch.tensor(finite)).tolist()
    # AFEW-VA integer k on -10..10 (canonical k / 10) falls in bin k + 10
    k = np.arange(-10, 11)
    assert va_bins(k / 10).tolist() == (k + 10).tolist()
    assert va_bins([-1, 0, 1], num_bins=5).tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="odd integer"):
        va_bins([0.0], num_bins=20)


def test_binned_cross_entropy_equals_sklearn_log_loss():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3, size=(50, 21))
    y = rng.integers(0, 21, size=50)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert binned_cross_entropy(y, logits) == pytest.approx(log_loss(y, probs, labels=range(21)), rel=1e-9)
    y_missing = y.copy()
    y_missing[::3] = -1
    keep = y_missing >= 0
    assert binned_cross_entropy(y_missing, logits) == pytest.approx(
        log_loss(y[keep], probs[keep], labels=range(21)), rel=1e-9)
    # large logits stay finite (log-sum-exp)
    assert np.isfinite(binned_cross_entropy([0, 1], np.array([[1000.0, 0.0], [0.0, 1000.0]])))
    with pytest.warns(MissingLabelsWarning):
        assert np.isnan(binned_cross_entropy([-1, -1], logits[:2]))
    with pytest.raises(ValueError, match="outside 0..20"):
        binned_cross_entropy([21], logits[:1])
    with pytest.raises(LabelError, match="-2"):
        binned_cross_entropy([-2], logits[:1])
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        binned_cross_entropy([0], logits[0])


def test_alignment_reports_combined_ce_of_bin_logits():
    rng = np.random.default_rng(0)
    n = 30
    va = rng.uniform(-1, 1, (n, 2))
    va[0, 1] = np.nan
    logits = rng.normal(size=(n, 2, 21))
    enc = {"z_v": va[:, :1], "z_a": va[:, 1:], "va": va, "proj": np.zeros((n, 2)), "logits": logits}
    row = alignment_table(enc).set_index("readout").loc["projection"]
    softmax = lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # noqa: E731
    yv, ya = va_bins(va[:, 0]), va_bins(va[:, 1])
    assert row["V_ce"] == pytest.approx(log_loss(yv, softmax(logits[:, 0]), labels=range(21)))
    assert row["A_ce"] == pytest.approx(log_loss(ya[1:], softmax(logits[1:, 1]), labels=range(21)))
    assert row["combined_ce"] == pytest.approx(row["V_ce"] + row["A_ce"])
    # a continuous-label model has no CE columns
    assert "combined_ce" not in alignment_table({**enc, "logits": None}).columns


def test_bin_classification_on_known_latents():
    rng = np.random.default_rng(1)
    n = 600
    kv, ka = rng.integers(-10, 11, n), rng.integers(-10, 11, n)
    enc = {"z_v": (kv + 0.05 * rng.normal(size=n))[:, None], "z_a": (ka + 0.05 * rng.normal(size=n))[:, None],
           "va": np.stack([kv / 10, ka / 10], 1)}
    fit = np.arange(n) < n // 2
    direct = bin_classification_table(enc, fit, [("z_v", "V"), ("z_a", "A")]).set_index("task")
    # 21 bins, chance ~ 0.05: a latent that is its bin is read far above chance by every probe
    assert direct[["DT_acc", "SVM_acc", "MLP_acc"]].to_numpy().min() > 0.3
    assert direct["DT_acc"].min() > 0.85
    inverse = bin_classification_table(enc, fit, [("z_v", "A"), ("z_a", "V")])
    assert inverse[["DT_acc", "SVM_acc", "MLP_acc"]].to_numpy().max() < 0.2  # 21 bins: chance ~ 0.05
    # the DT column is scikit-learn's accuracy of the same tree
    tree = DecisionTreeClassifier(max_depth=8, random_state=0).fit(enc["z_v"][fit], kv[fit] + 10)
    assert direct.loc["z_v -> V bin", "DT_acc"] == pytest.approx(
        accuracy_score(kv[~fit] + 10, tree.predict(enc["z_v"][~fit])))
    assert direct.loc["z_v -> V bin", "chance"] == pytest.approx(
        np.mean(kv[~fit] + 10 == np.bincount(kv[fit] + 10).argmax()))


def test_discrete_model_gets_the_discrete_tables(tmp_path):
    from affectlab.data.schema import LabelSpace
    from affectlab.data.synth import generate
    from affectlab.features.backbones import Preprocessing
    from affectlab.interpret.vavae_explain import explain_vavae
    from affectlab.methods.base import create_method
    from affectlab.modelfile import save_model
    from affectlab.runtime.hub import load_model

    generate(tmp_path / "data", 32, size=32, seed=2, subjects=8)
    torch.manual_seed(0)
    model = create_method("vavae", LabelSpace(va=True), {"image_size": 32, "channels": [4, 8, 8, 8], "va_loss": "ce"})
    save_model(tmp_path / "m" / "model.ckpt", model, preprocessing=Preprocessing.named("none", 32).to_dict())
    method, info = load_model(tmp_path / "m")
    spec = f"manifest:{tmp_path / 'data' / 'labels.csv'}"
    res = explain_vavae(method, info, spec, tmp_path / "out")
    for stem in ("regression_discrete", "inverse_regression_discrete"):
        assert (tmp_path / "out" / f"{stem}.csv").is_file()
    disc = pd.read_csv(tmp_path / "out" / "regression_discrete.csv")
    assert set(disc["task"]) == {"z_v -> V bin", "z_a -> A bin"}
    assert set(pd.read_csv(tmp_path / "out" / "inverse_regression_discrete.csv")["task"]) == {"z_v -> A bin", "z_a -> V bin"}
    # combined CE recomputed from the model's own logits
    from affectlab.data.datasets import load_dataset

    enc = encode_dataset(method, load_dataset(spec, image_size=32))
    ce = sum(binned_cross_entropy(va_bins(enc["va"][:, d]), enc["logits"][:, d]) for d in range(2))
    assert res["metrics"][next(iter(res["metrics"]))]["combined_ce"] == pytest.approx(ce, rel=1e-5)
