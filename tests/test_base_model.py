"""The packaged ``affectlab-base`` model: the file, the offline path, and its figures on real faces.

The file tests need nothing outside the repository. The others borrow real faces from
``../shared/data`` (skipped without it; nothing derived from them is written outside
``tmp_path``) and, for YuNet framing, the detector file from ``../shared/models`` through
the ``assets_home`` fixture. They are inference only and check the headline figures of
``docs/models/affectlab-base.md`` with scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from affectlab.cli import main
from affectlab.data.schema import EXPRESSIONS
from affectlab.runtime.hub import BASE_MODEL_FILE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FACES = DATA / "facial_expressions"
CKPLUS = DATA / "ckplus48"
LONDON = DATA / "london"

needs_model = pytest.mark.skipif(not BASE_MODEL_FILE.is_file(), reason="packaged weights not built in this checkout")
pytestmark = [needs_model]


def test_shipped_file_is_small_half_precision_and_loads_safely():
    from affectlab.perception.au import AUS
    from affectlab.runtime.hub import load_model

    assert BASE_MODEL_FILE.stat().st_size <= 5 * 1024 * 1024
    payload = torch.load(BASE_MODEL_FILE, map_location="cpu", weights_only=True)  # no unpickling
    floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert payload["train"]["model_version"] == 3
    method, info = load_model(BASE_MODEL_FILE)
    assert all(p.dtype == torch.float32 for p in method.parameters())  # cast back on load
    space = info["label_space"]
    assert list(space.expressions) == list(EXPRESSIONS)
    assert list(space.aus) == list(AUS)  # the landmarker's AUs, same names
    assert not space.va
    pre = info["preprocessing"]
    assert pre["input_size"] == 112
    assert info["method_config"]["base_config"]["backbone"] == "torchvision:mobilenet_v2"
    # the AURA head's archetype columns stay
    from affectlab.runtime.predictor import Predictor

    predictor = Predictor.load("default")
    assert "archetype" in predictor.extra_columns
    out = predictor.predict([np.full((112, 112, 3), 128, np.uint8)])
    assert out["expr_prob"].shape == (1, 8) and out["au_prob"].shape == (1, len(AUS))


def _photo(face_file: Path, tmp_path: Path, name: str) -> Path:
    """A 480 x 360 photograph composed at test time: the face enlarged on a smooth background."""
    import cv2

    face = cv2.imread(str(face_file), cv2.IMREAD_COLOR)
    face = cv2.resize(face, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(0)
    canvas = cv2.resize(rng.integers(40, 200, (9, 12, 3), dtype=np.uint8), (480, 360), interpolation=cv2.INTER_CUBIC)
    h, w = face.shape[:2]
    y0, x0 = (360 - h) // 2, 40
    canvas[y0 : y0 + h, x0 : x0 + w] = face
    path = tmp_path / name
    cv2.imwrite(str(path), canvas)
    return path


@pytest.mark.realdata
@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/facial_expressions is absent")
def test_offline_analyze_gives_expressions_and_aus_and_says_once_what_would_help(tmp_path, capsys):
    # the autouse fixture gives every test an empty AFFECTLAB_HOME with AFFECTLAB_OFFLINE=1
    from affectlab.runtime.assets import affectlab_home, offline
    from affectlab.runtime.detection import reset_notices

    reset_notices()  # the Haar fallback is said once per process; this test is a fresh user's first run
    assert offline() and not any(affectlab_home().rglob("*.*"))
    labels = pd.read_csv(FACES / "labels.csv")
    names = labels[labels["expression"].str.lower() == "happiness"]["image"].iloc[:2]
    photos = [_photo(FACES / "images" / n, tmp_path, f"p{i}.jpg") for i, n in enumerate(names)]
    out = tmp_path / "t.csv"
    assert main(["analyze", *map(str, photos), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    table = pd.read_csv(out)
    faces = table[table["face"] >= 0]
    assert len(faces) == 2
    probs = faces[[f"expr_{e}" for e in EXPRESSIONS]].to_numpy(float)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    from affectlab.perception.au import AUS

    aus = faces[list(AUS)].to_numpy(float)
    assert np.isfinite(aus).all() and ((aus >= 0) & (aus <= 1)).all()
    # one notice names what would improve the run and how to get it, once for both images
    lines = [ln for ln in err.splitlines() if "affectlab models fetch" in ln]
    assert len(lines) == 1, err
    assert "yunet" in lines[0] and "face-landmarker" in lines[0] and "affectlab models add" in lines[0]


def _london():
    labels = pd.read_csv(LONDON / "labels.csv")
    return labels, [str(LONDON / p) for p in labels["path"]]


def _pairs(labels: pd.DataFrame, score: np.ndarray) -> float:
    df = pd.DataFrame({"subject": labels["subject"], "expr": labels["expression"], "s": score})
    piv = df.pivot_table(index="subject", columns="expr", values="s")
    return float((piv["happiness"] > piv["neutral"]).mean())


@pytest.fixture(scope="module")
def london_yunet(assets_home_session):
    """The London photographs through ``affectlab.analyze`` with YuNet and the default model."""
    import affectlab

    labels, paths = _london()
    table = pd.DataFrame(affectlab.analyze(paths, model="default", detector="yunet", progress=False, mesh=False))
    return labels, table


@pytest.mark.realdata
@pytest.mark.skipif(not LONDON.is_dir(), reason="../shared/data/london is absent")
def test_london_smiling_above_neutral(london_yunet):
    from sklearn.metrics import roc_auc_score

    labels, table = london_yunet
    faces = table[table["face"] == 0].set_index("input").reindex([str(LONDON / p) for p in labels["path"]])
    assert faces["expr_happiness"].notna().all()
    smile = (labels["expression"] == "happiness").to_numpy()
    # issue #14: AUC >= 0.95 (v3 measures 0.955 here, 0.955 in the evaluate step)
    assert roc_auc_score(smile, faces["expr_happiness"].to_numpy()) >= 0.95
    assert _pairs(labels, faces["AU12"].to_numpy()) >= 0.95


@pytest.mark.realdata
@pytest.mark.skipif(not LONDON.is_dir(), reason="../shared/data/london is absent")
def test_london_tight_crops_with_detector_none(tmp_path, assets_home):
    """Eyebrows to chin (no forehead, no background), cut with the landmarker, analysed with --detector none."""
    import cv2
    from sklearn.metrics import roc_auc_score

    import affectlab
    from affectlab.perception.landmarks import FaceLandmarker
    from affectlab.runtime.detection import resolve_detector

    labels, paths = _london()
    det, lm = resolve_detector("yunet")[0], FaceLandmarker()
    crops = []
    for i, p in enumerate(paths):
        rgb = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)
        faces = det(rgb)
        res = lm(rgb, faces.boxes[:1], None if faces.keypoints is None else faces.keypoints[:1])
        pts = res.landmarks[0]
        top = pts[[70, 63, 105, 66, 107, 336, 296, 334, 293, 300], 1].min()
        crop = rgb[int(top) : int(pts[152, 1]), int(pts[234, 0]) : int(pts[454, 0])]
        out = tmp_path / f"{i:03d}.png"
        cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        crops.append(str(out))
    table = pd.DataFrame(affectlab.analyze(crops, model="default", detector="none", progress=False, mesh=False))
    table = table.set_index("input").reindex(crops)
    smile = (labels["expression"] == "happiness").to_numpy()
    assert roc_auc_score(smile, table["expr_happiness"].to_numpy()) >= 0.9


@pytest.mark.realdata
@pytest.mark.skipif(not CKPLUS.is_dir(), reason="../shared/data/ckplus48 is absent")
def test_ckplus_cross_dataset(assets_home):
    """CK+ (never trained on): macro F1 over its 7 classes (argmax over them), per-AU ROC-AUC."""
    from sklearn.metrics import f1_score, roc_auc_score

    import affectlab
    from affectlab.data.schema import canonical_expression

    rows = pd.read_csv(CKPLUS / "labels_emotion_aus.csv")
    paths = [str(CKPLUS / f) for f in rows["file"]]
    table = pd.DataFrame(affectlab.analyze(paths, model="default", detector="yunet", progress=False, mesh=False))
    table = table[table["face"] <= 0].drop_duplicates("input").set_index("input").reindex(paths)
    found = table["expr_happiness"].notna().to_numpy()
    assert found.mean() > 0.95
    labels = np.array([canonical_expression(e, "ckplus") for e in rows["emotion"]])
    shared = sorted(set(labels))
    prob = table[[f"expr_{c}" for c in shared]].to_numpy(float)
    pred = np.asarray(shared)[np.nan_to_num(prob, nan=0).argmax(1)]
    # issue #14: >= 0.55 (v3 measures 0.590 here, 0.582 in the evaluate step; v2 0.44)
    assert f1_score(labels[found], pred[found], labels=shared, average="macro") >= 0.55
    coded = rows["aus"].fillna("").str.split()
    for au, floor in (("AU12", 0.9), ("AU1", 0.85), ("AU2", 0.85), ("AU27", 0.9)):
        present = np.array([au in c for c in coded])[found]
        assert roc_auc_score(present, table[au].to_numpy(float)[found]) >= floor, au


def test_reproduction_command_is_documented():
    card = (ROOT / "docs" / "models" / "affectlab-base.md").read_text()
    script = (ROOT / "scripts" / "train_base_model.py").read_text()
    assert "python scripts/train_base_model.py all" in card and "python scripts/train_base_model.py all" in script
    for step in ("teachers", "train", "evaluate", "aura", "ship"):
        assert f"def {step}(" in script


def _recipe(monkeypatch):
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    sys.modules.pop("train_base_model", None)
    import train_base_model

    return train_base_model


def test_recipe_refuses_a_teacher_cache_of_unknown_class_order(tmp_path, monkeypatch):
    """The face-api logits carry their class order; a cache without it (written by an earlier
    port in face-api's own order, anger and surprise swapped) is refused, naming the file."""
    train_base_model = _recipe(monkeypatch)
    import distill_teachers

    np.save(tmp_path / "x_canvas.npy", np.zeros((2, 8, 8, 3), np.uint8))
    pd.DataFrame({"image": ["a_0001.jpg", "b_0001.jpg"]}).to_csv(tmp_path / "x_labels.csv", index=False)
    logits = np.zeros((2, 7), np.float32)
    np.savez(tmp_path / "x_teachers.npz", faceapi_logits=logits)
    with pytest.raises(SystemExit, match="x_teachers.npz.*order unknown.*teachers step"):
        train_base_model.load_set(tmp_path, "x")
    swapped = ["neutral", "happiness", "sadness", "anger", "fear", "disgust", "surprise"]
    np.savez(tmp_path / "x_teachers.npz", faceapi_logits=logits, faceapi_classes=np.array(swapped))
    with pytest.raises(SystemExit, match="anger"):
        train_base_model.load_set(tmp_path, "x")
    np.savez(tmp_path / "x_teachers.npz", faceapi_logits=logits, faceapi_classes=np.array(distill_teachers.FACEAPI_CLASSES))
    _, t, labels = train_base_model.load_set(tmp_path, "x")
    assert t["faceapi_logits"].shape == (2, 7) and len(labels) == 2


def test_recipe_teacher_sees_the_students_view_in_its_own_framing(monkeypatch):
    """Each augmented view is shown to face-api too: same centre, rotation, flip and pixel
    noise as the student's, framed as face-api is (the box, no margin); a tight crop, already
    inside the box, is the same for both. ``render`` stays the student's half of the pair."""
    T = _recipe(monkeypatch)
    import distill_teachers

    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 255, (144, 144, 3), dtype=np.uint8)
    box = 144 / distill_teachers.CANVAS_SCALE
    centre = np.array([T.INPUT / 2, T.INPUT / 2])
    tight = loose = 0
    for seed in range(200):
        m, mt, crop = T.window(144, np.random.default_rng(seed), train=bool(seed))
        point = np.linalg.solve(m[:, :2], centre - m[:, 2])  # the canvas point at the student's centre
        np.testing.assert_allclose(mt[:, :2] @ point + mt[:, 2], centre, atol=1e-9)
        scale = np.hypot(*mt[0, :2])
        if crop is not None:
            tight += 1
            np.testing.assert_allclose(mt, m)
        else:
            loose += 1
            np.testing.assert_allclose(scale, T.INPUT / box)
        a = T.render(canvas, np.random.default_rng([1, seed]), train=bool(seed))
        b, t = T.render_pair(canvas, np.random.default_rng([1, seed]), train=bool(seed))
        np.testing.assert_array_equal(a, b)
        assert t.shape == b.shape == (T.INPUT, T.INPUT, 3)
    assert tight > 20 and loose > 100
    # the standard view's teacher half is face-api's framing of the photograph (the box, square)
    _, t = T.render_pair(canvas, np.random.default_rng(0), train=False)
    c = 144 / 2
    np.testing.assert_array_equal(t, distill_teachers._square(canvas, c, c, box, T.INPUT))


def test_recipe_refuses_view_teachers_of_other_views(tmp_path, monkeypatch):
    T = _recipe(monkeypatch)
    key = f"fe_train_view_teacher_i{T.INPUT}_v{T.VIEWS_COMMON}-{T.VIEWS_RARE}_s{T.SEED}.npz"
    np.savez(tmp_path / key, logits=np.zeros((5, 7), np.float32), features=np.zeros((5, 256), np.float16),
             faceapi_classes=np.array(T.teachers_mod.FACEAPI_CLASSES))
    with pytest.raises(SystemExit, match="other views"):
        T.view_teachers(None, np.arange(2), np.array([3, 3]), tmp_path, "fe_train")
    logits, feats = T.view_teachers(None, np.arange(2), np.array([3, 2]), tmp_path, "fe_train")
    assert logits.shape == (5, 7) and feats.shape == (5, 256)


def test_recipe_draws_photographs_as_the_teacher_reads_them(monkeypatch):
    """Tempered sampling counts face-api's class of each photograph (its labels call many
    angry or sad faces neutral); contempt, which face-api lacks, keeps its hard label."""
    T = _recipe(monkeypatch)
    order = T.teachers_mod.FACEAPI_CLASSES
    logits = np.full((4, 7), -5.0, np.float32)
    for i, name in enumerate(["anger", "neutral", "sadness", "happiness"]):
        logits[i, order.index(name)] = 5.0
    hard = np.array([T.EXPRESSIONS.index(e) for e in ["neutral", "neutral", "contempt", "happiness"]])
    got = [T.EXPRESSIONS[k] for k in T.draw_classes(hard, logits)]
    assert got == ["anger", "neutral", "contempt", "happiness"]
