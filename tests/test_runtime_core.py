"""The runtime core: one behaviour where there used to be several.

- preprocessing -> tensor: training / evaluation datasets, the Predictor and feature
  extraction give the same tensor for the same image (and it is the upstream recipe's:
  CLIP's bicubic resize and mean/std);
- label spaces combine by one rule (``LabelSpace.union``);
- ``--smooth`` has one grammar in ``analyze`` and ``evaluate``;
- a packaged model name is not shadowed by a folder of the same name;
- ``affectlab.load_dataset`` opens ``features:`` stores too.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms import v2

from affectlab.cli import main
from affectlab.data.schema import EXPRESSIONS, LabelSpace
from affectlab.errors import LabelError
from affectlab.features.backbones import CLIP_MEAN, CLIP_STD, Backbone, Preprocessing

PRE = Preprocessing(input_size=32, mean=CLIP_MEAN, std=CLIP_STD, normalize="clip", interpolation="bicubic")


class _Pixels(Backbone):
    """A 'backbone' whose feature is its input, so a feature store shows what extraction fed it."""

    def __init__(self, pre: Preprocessing):
        super().__init__(name="pixels", out_dim=3 * pre.input_size**2, preprocessing=pre)

    def forward(self, x):
        return {"global": x.flatten(1)}


@pytest.fixture()
def image_set(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (57, 43, 3), dtype=np.uint8)  # odd, non-square: the resize matters
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    pd.DataFrame({"path": ["a.png"], "expression": ["happiness"]}).to_csv(tmp_path / "labels.csv", index=False)
    return img, tmp_path / "labels.csv"


def test_three_preprocessing_routes_give_one_tensor(image_set, tmp_path):
    from affectlab.data.transforms import preprocessing_transform
    from affectlab.features.cache import extract_features
    from affectlab.methods.base import create_method
    from affectlab.runtime.data import load_dataset, set_transform
    from affectlab.runtime.predictor import Predictor

    img, labels = image_set
    # the reference: the upstream recipe, written out with torchvision
    ref = v2.Compose(
        [
            v2.Resize((32, 32), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(CLIP_MEAN), std=list(CLIP_STD)),
        ]
    )(torch.from_numpy(img).permute(2, 0, 1))

    # 1. training and evaluation: the dataset gets the transform of the stored preprocessing
    ds = load_dataset(f"manifest:{labels}")
    set_transform(ds, preprocessing_transform(PRE.to_dict(), "eval", train=False))
    from_dataset = ds[0]["image"]
    # 2. the Predictor (batched stack path)
    method = create_method("baseline", LabelSpace(expressions=EXPRESSIONS), {"backbone": "builtin:cnn-tiny"})
    from_predictor = Predictor.from_method(method, PRE).preprocess([img, img[::-1]])[0]
    # 3. feature extraction
    store = extract_features(load_dataset(f"manifest:{labels}"), _Pixels(PRE), tmp_path / "f.zarr", dtype="float32",
                             progress=False)
    from_extraction = torch.from_numpy(np.asarray(store.global_features()[0])).view(3, 32, 32)

    for got in (from_dataset, from_predictor, from_extraction):
        assert got.shape == (3, 32, 32)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    # bilinear would differ visibly: the interpolation really is honoured
    bilinear = preprocessing_transform({**PRE.to_dict(), "interpolation": "bilinear"})(img)
    assert float((bilinear - ref).abs().max()) > 0.05


def test_training_keeps_the_backbone_resize_filter():
    from affectlab.methods.base import create_method
    from affectlab.train.config import TrainConfig
    from affectlab.train.prepare import model_preprocessing

    method = create_method("baseline", LabelSpace(expressions=EXPRESSIONS), {"backbone": "builtin:cnn-tiny"})
    method.preprocessing = PRE
    pre = model_preprocessing(method, TrainConfig(method="baseline", train="x"))
    assert pre["interpolation"] == "bicubic" and pre["mean"] == list(CLIP_MEAN)


def test_one_union_rule():
    single_a = LabelSpace(expressions=("sadness", "happiness"), aus=("AU12",), va=False)
    single_b = LabelSpace(expressions=("neutral", "happiness"), aus=("AU4", "AU1"), va=True)
    multi = LabelSpace(expressions=("peace", "anger"), multilabel=True)
    assert LabelSpace.union([single_a]) is single_a  # one space is itself
    both = LabelSpace.union([single_a, single_b])
    assert both.expressions == ("neutral", "happiness", "sadness")  # canonical order
    assert both.aus == ("AU1", "AU4", "AU12") and both.va and not both.multilabel
    assert LabelSpace.union([multi, LabelSpace(expressions=("joy",), multilabel=True)]).expressions == (
        "peace", "anger", "joy")  # first-seen order for multi-label classes
    # mixing single- and multi-label expression sets is refused, never silently multi-label
    with pytest.raises(LabelError, match="single-label and multi-label"):
        LabelSpace.union([single_a, multi])
    # a space without expressions mixes with either kind
    assert LabelSpace.union([multi, LabelSpace(va=True)]).multilabel


def test_training_and_reading_use_the_union_rule():
    from affectlab.train.prepare import training_label_space

    class _Data:
        def __init__(self, name, space):
            self.name, self.label_space = name, space

    single = _Data("rafdb:x", LabelSpace(expressions=("happiness",)))
    multi = _Data("emotic:y", LabelSpace(expressions=("peace",), multilabel=True))
    with pytest.raises(LabelError, match=r"emotic:y multi-label; rafdb:x single-label"):
        training_label_space([single, multi], None)
    two = training_label_space([single, _Data("fer:z", LabelSpace(expressions=("neutral", "anger")))], None)
    assert two.expressions == ("neutral", "happiness", "anger")


def test_one_smoothing_grammar():
    from affectlab.analyze.pipeline import smoothing_spec
    from affectlab.temporal import parse_smooth

    assert parse_smooth("expr=9,va=9") == {"expr": 9.0, "va": 9.0}
    assert parse_smooth(3) == {"expr": 3.0, "va": 3.0, "au": 3.0}
    assert parse_smooth(" Auto ") == "auto" and parse_smooth("stored") == "stored"
    # analyze reads the same grammar; auto / stored mean the mu stored with the model
    assert smoothing_spec("expr=9,va=9") == {"expr": 9.0, "va": 9.0}
    info = {"train": {"smoothing": {"mu": {"expr": 2.0, "va": 4.0, "au": 0.0}}}}
    assert smoothing_spec("auto", info) == smoothing_spec("stored", info) == {"expr": 2.0, "va": 4.0, "au": 0.0}
    assert smoothing_spec("auto", {}) is None


def test_smooth_per_task_works_in_analyze_and_evaluate(tmp_path, capsys):
    from affectlab.data import synth
    from affectlab.methods.base import create_method
    from affectlab.modelfile import save_model

    synth.generate(tmp_path / "clips", n=0, sequences=2, frames=5, size=32, seed=1, progress=False)
    labels = pd.read_csv(tmp_path / "clips" / "labels.csv")
    space = LabelSpace(expressions=tuple(sorted(set(labels["expression"]))), va=True)
    torch.manual_seed(0)
    method = create_method("baseline", space, {"backbone": "builtin:cnn-tiny"})
    save_model(tmp_path / "run" / "model.ckpt", method, preprocessing={"input_size": 32, "normalize": "imagenet"})
    spec = f"manifest:{tmp_path / 'clips' / 'labels.csv'}"
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", spec, "--smooth", "expr=9,va=9",
                 "--json", str(tmp_path / "m.json")]) == 0
    import json

    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["smooth_mu_expr"] == 9.0 and metrics["smooth_mu_va"] == 9.0

    from analyze_media import synth_clip, write_video

    frames, _ = synth_clip(n_frames=8, size=32)
    clip = write_video(tmp_path / "clip.mp4", frames)
    for smooth in ("expr=9,va=9", "0"):
        out = tmp_path / f"t{smooth[0]}.csv"
        code = main(["analyze", str(clip), "-m", str(tmp_path / "run"), "--detector", "none", "--smooth", smooth,
                     "--out", str(out), "--quiet"])
        assert code == 0, capsys.readouterr().err
    smoothed, raw = pd.read_csv(tmp_path / "te.csv"), pd.read_csv(tmp_path / "t0.csv")
    assert len(smoothed) == len(raw) == 8
    # valence is smoothed along the clip: the same rows, less frame-to-frame jitter
    jitter = lambda t: float(np.abs(np.diff(t["valence"].to_numpy())).sum())  # noqa: E731
    assert jitter(smoothed) < jitter(raw)


def test_packaged_name_is_not_shadowed_by_a_folder(tmp_path, monkeypatch, capsys):
    from affectlab.runtime.hub import BASE_MODEL_FILE, resolve_model

    if not BASE_MODEL_FILE.is_file():
        pytest.skip("packaged weights not built in this checkout")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()  # a folder named like the packaged model, without model.ckpt
    assert resolve_model("default") == BASE_MODEL_FILE
    with pytest.raises(Exception, match="directory without model.ckpt"):
        resolve_model("./default")  # written as a path: the folder
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 120, np.uint8))
    assert main(["analyze", "photo.jpg", "--out", "t.csv"]) == 0, capsys.readouterr().err
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["input"].map(lambda p: p.endswith("photo.jpg"))) == [True] * len(table)


def test_load_dataset_opens_feature_stores(image_set, tmp_path):
    import affectlab
    from affectlab.features.cache import extract_features

    _, labels = image_set
    extract_features(affectlab.load_dataset(f"manifest:{labels}"), _Pixels(PRE), tmp_path / "f.zarr", progress=False)
    feats = affectlab.load_dataset(f"features:{tmp_path / 'f.zarr'}")
    assert len(feats) == 1 and feats[0]["features"].shape == (3 * 32 * 32,)
    assert feats.label_space.expressions == ("happiness",)


def test_one_loop_one_empty_batch_rule():
    from affectlab.data.batch import Batches

    class _Data:
        """Six samples, the first four unreadable (None): batches of two."""

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return None if i < 4 else {"features": torch.full((3,), float(i)), "index": torch.tensor(i)}

    loop = Batches(_Data(), batch_size=2)
    got = [b["index"].tolist() for b in loop]
    assert got == [[4, 5]]  # the two all-unreadable batches are not yielded
    assert loop.skipped == 4 and loop.samples == 2
    # batches made by the caller (the Predictor's arrays) follow the same rule
    made = Batches([{"features": torch.zeros(0, 3)}, {"features": torch.ones(2, 3)}])
    assert [len(b["features"]) for b in made] == [2] and made.samples == 2
