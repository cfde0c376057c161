"""Model names: packaged models resolve everywhere a model is taken; inference-only methods are not trainable."""

from __future__ import annotations

import os

import pytest

from affectlab.errors import AffectlabError, ConfigError, ModelError
from affectlab.methods.base import available_methods
from affectlab.runtime.hub import available_packaged_models, packaged_model_path
from affectlab.runtime.hub import load_model, resolve_model
from affectlab.train.config import TrainConfig
from affectlab.evaluate.engine import run_evaluation
from affectlab.train.engine import train


def test_onnx_is_a_method_model_files_hold_but_not_a_training_choice():
    assert "onnx" not in available_methods()
    assert "baseline" in available_methods()
    assert "onnx" in available_methods(trainable_only=False)


def test_training_an_inference_only_method_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"'onnx' is inference-only.*trainable methods: .*baseline"):
        train(TrainConfig(method="onnx"), tmp_path / "run", train_data="manifest:unused.csv", progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_packaged_name_resolves_to_its_file_in_load_model():
    assert "affectlab-base" in available_packaged_models()
    path = packaged_model_path("affectlab-base")
    assert resolve_model("affectlab-base") == resolve_model(path)
    method, info = load_model("affectlab-base")
    assert info["label_space"].expressions and not info["label_space"].va
    assert packaged_model_path("no-such-model") is None


def test_unknown_name_error_points_to_the_model_list():
    with pytest.raises(ModelError, match=r"'no-such-model' does not exist.*affectlab models"):
        resolve_model("no-such-model")


def test_smooth_auto_refuses_to_write_into_a_packaged_model():
    before = packaged_model_path("affectlab-base")
    mtime = os.stat(before).st_mtime_ns
    with pytest.raises(AffectlabError, match="packaged model.*copy it first"):
        run_evaluation("affectlab-base", "manifest:unused.csv", smooth="auto", progress=False)
    assert os.stat(before).st_mtime_ns == mtime
