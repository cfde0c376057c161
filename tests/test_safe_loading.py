"""A model file is data: a crafted pickle cannot run code through any entry point that loads one.

The malicious file is a ``torch.save`` of an affectlab-looking payload whose
``extra_state`` carries an object with ``__reduce__`` -> ``exec(...)`` writing a marker
file. Every way of loading a model (Python API and CLI) must refuse it with affectlab's
own error naming the file, and the marker must never appear.
"""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from affectlab.cli import main
from affectlab.data.schema import EXPRESSIONS, LabelSpace
from affectlab.errors import ModelError, UnsafeModelError

SPACE = LabelSpace(expressions=EXPRESSIONS)


class _Payload:
    """Unpickling this calls exec(code): what a crafted checkpoint does."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _evil_file(path: Path, marker: Path) -> Path:
    from affectlab.methods.base import create_method
    from affectlab.modelfile import model_payload

    method = create_method("baseline", SPACE, {"backbone": "builtin:cnn-tiny"})
    payload = model_payload(method, preprocessing={"input_size": 32, "normalize": "imagenet"})
    payload["extra_state"] = {"trap": _Payload(f"open({str(marker)!r}, 'w').write('pwned')")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    run = tmp_path / "evil_run"
    _evil_file(run / "model.ckpt", marker)
    # the trap really fires when unpickled: the test would be empty otherwise
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(f"open({str(probe)!r}, 'w').write('x')")))
    assert probe.is_file()
    import cv2

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    img = img_dir / "face.png"
    cv2.imwrite(str(img), np.full((32, 32, 3), 128, np.uint8))
    (img_dir / "labels.csv").write_text(f"path,expression\n{img},happiness\n")
    return {"file": run / "model.ckpt", "run": run, "marker": marker, "tmp": tmp_path, "img": img, "img_dir": img_dir}


def _refused(exc_info, evil) -> None:
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, UnsafeModelError)
    assert "model.ckpt" in msg and "refused" in msg and "\n" not in msg
    assert not evil["marker"].exists()


@pytest.mark.parametrize("which", ["file", "run"])
def test_python_loaders_refuse(evil, which):
    from affectlab.modelfile import read_payload
    from affectlab.runtime.hub import load_model
    from affectlab.runtime.predictor import Predictor

    target = evil[which]
    for load in (load_model, Predictor.load, read_payload):
        with pytest.raises(UnsafeModelError) as info:
            load(target)
        _refused(info, evil)


def test_evaluate_explain_attach_and_api_refuse(evil, tmp_path):
    import affectlab
    from affectlab.evaluate.engine import evaluate
    from affectlab.interpret import explain
    from affectlab.interpret.attach import attach_aura

    spec = str(evil["img_dir"])
    with pytest.raises(UnsafeModelError) as info:
        evaluate(evil["file"], spec, progress=False)
    _refused(info, evil)
    with pytest.raises(UnsafeModelError) as info:
        evaluate(evil["file"], spec, progress=False, smooth="stored")
    _refused(info, evil)
    with pytest.raises(UnsafeModelError) as info:
        explain(evil["run"], spec, tmp_path / "explain")
    _refused(info, evil)
    with pytest.raises(UnsafeModelError) as info:
        attach_aura(evil["file"], evil["run"], tmp_path / "out.ckpt")
    _refused(info, evil)
    with pytest.raises(UnsafeModelError) as info:
        affectlab.analyze(str(evil["img"]), model=evil["file"], detector="none")
    _refused(info, evil)


def test_init_from_run_backbone_and_backbone_weights_refuse(evil):
    from affectlab.features.backbones import create_backbone
    from affectlab.methods.base import create_method

    with pytest.raises(UnsafeModelError) as info:
        create_method("cage", SPACE, {"variant": "discrete", "backbone": "builtin:cnn-tiny", "init_from": str(evil["run"])})
    _refused(info, evil)
    with pytest.raises(UnsafeModelError) as info:
        create_backbone(f"run:{evil['run']}")
    _refused(info, evil)
    with pytest.raises(UnsafeModelError) as info:
        create_backbone("builtin:cnn-tiny", weights=str(evil["file"]))
    _refused(info, evil)


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "{img}", "-m", "{file}", "--detector", "none", "--out", "{tmp}/a.csv"],
        ["evaluate", "--model", "{run}", "--data", "{img_dir}"],
        ["explain", "--model", "{file}", "--data", "{img_dir}", "--out", "{tmp}/e"],
        ["extract", "{img_dir}", "--backbone", "run:{run}", "--out", "{tmp}/f.zarr"],
        ["models", "attach-aura", "--model", "{file}", "--head", "{run}", "--out", "{tmp}/o.ckpt"],
    ],
    ids=["analyze", "evaluate", "explain", "extract", "attach-aura"],
)
def test_cli_refuses_with_one_line(evil, argv, capsys):
    code = main([a.format(**evil) for a in argv])
    out = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 2, out
    assert "refused" in out and "model.ckpt" in out and "Traceback" not in out
    assert not evil["marker"].exists()


def test_resume_refuses_a_crafted_last_checkpoint(evil, capsys):
    from affectlab.train import run as rundir
    from affectlab.train.config import TrainConfig

    run = evil["tmp"] / "resumable"
    run.mkdir()
    rundir.write_config(run, TrainConfig(method="baseline", train=str(evil["img_dir"])))
    _evil_file(run / rundir.LAST_FILE, evil["marker"])
    code = main(["train", "--resume", str(run), "--quiet"])
    out = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "refused" in out and "last.ckpt" in out, out
    assert not evil["marker"].exists()


def test_no_unsafe_load_in_the_source():
    root = Path(__file__).resolve().parents[1]
    found = subprocess.run(
        ["git", "grep", "-n", "weights_only=" + "False"],  # split: this file must not match itself
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert found.stdout == "", found.stdout


def test_a_clean_model_file_still_loads(tmp_path):
    from affectlab.methods.base import create_method
    from affectlab.modelfile import save_model
    from affectlab.runtime.hub import load_model

    method = create_method("baseline", SPACE, {"backbone": "builtin:cnn-tiny"})
    save_model(tmp_path / "m.ckpt", method, preprocessing={"input_size": 32, "normalize": "imagenet"})
    loaded, info = load_model(tmp_path / "m.ckpt")
    assert info["label_space"] == SPACE
    with pytest.raises(ModelError, match="not an affectlab model file"):
        torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
        load_model(tmp_path / "other.ckpt")


def test_int8_packed_weights_load_back_within_their_quantisation_step(tmp_path):
    """pack_int8 (how the packaged model is stored) round-trips through read_payload."""
    import torch

    from affectlab.modelfile import Q8, Q8_SCALE, pack_int8, read_payload, save_model
    from analyze_media import untrained_predictor

    method = untrained_predictor().method
    path = save_model(tmp_path / "model.ckpt", method)
    payload = torch.load(path, weights_only=True)
    original = dict(payload["state_dict"])
    payload["state_dict"] = pack_int8(original, min_numel=256)
    packed = [k for k in payload["state_dict"] if k.endswith(Q8)]
    assert packed and all(payload["state_dict"][k].dtype == torch.int8 for k in packed)
    torch.save(payload, tmp_path / "packed.ckpt")
    back = read_payload(tmp_path / "packed.ckpt")["state_dict"]
    assert set(back) == set(original) and not any(k.endswith((Q8, Q8_SCALE)) for k in back)
    for key in packed:
        w = original[key[: -len(Q8)]].float()
        step = w.abs().flatten(1).amax(1) / 127.0
        err = (back[key[: -len(Q8)]] - w).abs().flatten(1).amax(1)
        # half a step of rounding, plus the float16 rounding of the scale times |q| <= 127
        assert torch.all(err <= step * (0.5 + 127 * 2.0**-11) * 1.01)
        assert err.max() > 0  # really quantised, not copied
    # a packed weight without its scale is an error naming the weight, not a silent zero
    del payload["state_dict"][packed[0][: -len(Q8)] + Q8_SCALE]
    torch.save(payload, tmp_path / "broken.ckpt")
    import pytest

    from affectlab.errors import ModelError

    with pytest.raises(ModelError, match="without their scale"):
        read_payload(tmp_path / "broken.ckpt")
