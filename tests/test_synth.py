"""Synthetic faces: reproducibility, label consistency, label noise / missing labels,
sequences, argument errors, and that expressions are learnable from the pixels."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest

from affectlab.data.schema import AU_SETS, EXPRESSIONS
from affectlab.data.synth import (
    BLEND_CLASSES,
    PRESENCE_THRESHOLD,
    PROTOTYPES,
    SYNTH_AUS,
    VA_CENTRES,
    generate,
    render_face,
    sample_batch,
    sample_identity,
    sample_labels,
    sample_params,
)
from affectlab.data.synth_render import FaceParams
from affectlab.errors import AffectlabError, ConfigError

AU_COLS = [f"AU{k}" for k in SYNTH_AUS]


@pytest.fixture(scope="module")
def labels_only():
    """A larger labelled set, without drawing the images."""
    return sample_labels(480, seed=5)


def _clean(params: FaceParams) -> FaceParams:
    """The same face without nuisances, for pixel comparisons."""
    bg = dict(params.background, texture="none", colors=((128, 128, 128), (128, 128, 128)))
    return replace(params, angle=0.0, dx=0.0, dy=0.0, scale=1.15, noise=0.0, blur=0.0, occlusion=None,
                   light_amp=0.0, brightness=1.0, tint=(1.0, 1.0, 1.0), background=bg)


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_images_and_labels():
    a_img, a_df = sample_batch(24, seed=3, size=48)
    b_img, b_df = sample_batch(24, seed=3, size=48)
    assert a_img.dtype == np.uint8 and a_img.shape == (24, 48, 48, 3)
    assert np.array_equal(a_img, b_img)
    pd.testing.assert_frame_equal(a_df, b_df)


def test_generate_is_byte_identical_and_matches_sample_batch(tmp_path):
    df1 = generate(tmp_path / "a", 12, size=40, seed=9, image_format="png", progress=False)
    df2 = generate(tmp_path / "b", 12, size=40, seed=9, image_format="png", progress=False)
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (tmp_path / "b" / "labels.csv").read_bytes()
    for rel in df1["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    pd.testing.assert_frame_equal(df1, df2)
    # PNG is lossless: the files hold exactly the in-memory images
    images, labels = sample_batch(12, seed=9, size=40)
    for i, rel in enumerate(df1["path"]):
        disk = cv2.imread(str(tmp_path / "a" / rel), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert np.array_equal(disk, images[i])
    read = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert list(read.columns) == list(labels.columns)
    assert read["path"].str.endswith(".png").all()


def test_different_seeds_give_disjoint_identities():
    img0, df0 = sample_batch(20, seed=0, size=32, subjects=4)
    img1, df1 = sample_batch(20, seed=1, size=32, subjects=4)
    assert set(df0["subject"]) == {f"s0-{k}" for k in range(4)}
    assert set(df1["subject"]) == {f"s1-{k}" for k in range(4)}
    assert not set(df0["subject"]) & set(df1["subject"])
    assert not np.array_equal(img0, img1)
    # the faces themselves differ, not only the names
    for k in range(4):
        a, b = sample_identity(0, k), sample_identity(1, k)
        assert not np.isclose(a["face_w"], b["face_w"]) and not np.allclose(a["skin"], b["skin"])
    # and within a seed, the identity of a subject is the same in every image
    assert sample_identity(0, 2) is sample_identity(0, 2)


def test_identity_is_visible_in_pixels():
    """Same AUs and nuisances, two identities: the images differ a lot more than noise."""
    p, _ = sample_params(4, 0, "neutral", 0, size=64)
    p = _clean(p)
    q = replace(p, identity=sample_identity(4, 1))
    diff = np.abs(render_face(p).astype(int) - render_face(q).astype(int))
    assert diff.mean() > 5


# --------------------------------------------------------------------------- labels


def test_au_labels_follow_the_prototypes(labels_only):
    df = labels_only
    assert list(AU_SETS["synth"]) == AU_COLS
    for k in SYNTH_AUS:
        inten = df[f"AU{k}_intensity"]
        assert inten.between(0, 5).all()
        assert (df[f"AU{k}"] == (inten >= PRESENCE_THRESHOLD).astype(int)).all()
    assert set(df["expression"]) == set(EXPRESSIONS)
    for expr, proto in PROTOTYPES.items():
        rows = df[df["expression"] == expr]
        assert len(rows) == 60  # classes are balanced
        for k in proto:
            assert (rows[f"AU{k}"] == 1).all(), (expr, k)
        if not proto:  # neutral carries only sub-threshold AUs
            assert (rows[AU_COLS] == 0).all().all()
    happy = df[df["expression"] == "happiness"]
    assert (happy["AU6"] == 1).all() and (happy["AU12"] == 1).all()


def test_valence_arousal_follow_the_circumplex(labels_only):
    df = labels_only
    assert df[["valence", "arousal"]].abs().le(1).all().all()
    means = df.groupby("expression")[["valence", "arousal"]].mean()
    for expr, (v, a) in VA_CENTRES.items():
        for col, centre in (("valence", v), ("arousal", a)):
            if centre == 0:
                assert abs(means.loc[expr, col]) < 0.05, (expr, col)
            else:
                assert np.sign(means.loc[expr, col]) == np.sign(centre), (expr, col)
                assert abs(means.loc[expr, col]) < abs(centre)  # scaled by intensity < 1
    # VA is a function of the drawn intensities: valence rises with the smile
    happy = df[df["expression"] == "happiness"]
    proto = happy[["AU6_intensity", "AU12_intensity"]].mean(axis=1)
    assert np.corrcoef(proto, happy["valence"])[0, 1] > 0.8


def test_every_labelled_au_changes_the_pixels():
    base, _ = sample_params(2, 0, "neutral", 0, size=96)
    base = _clean(replace(base, au={}, au_side={}))
    neutral = render_face(base).astype(int)
    for k in SYNTH_AUS:
        moved = render_face(replace(base, au={k: 5.0})).astype(int)
        changed = (np.abs(moved - neutral).max(axis=2) > 20).sum()
        assert changed >= 10, f"AU{k} barely changes the face ({changed} pixels)"
        weak = render_face(replace(base, au={k: 1.5})).astype(int)
        # intensity is graded: a weak action changes less than a strong one
        assert np.abs(weak - neutral).sum() < np.abs(moved - neutral).sum(), f"AU{k}"


def test_contempt_is_drawn_on_one_side_only():
    p, lab = sample_params(6, 3, "contempt", 0, size=96)
    assert lab["au"][12] >= 1 and lab["au"][14] >= 1
    p = _clean(p)
    for side in ((0.0, 1.0), (1.0, 0.0)):
        au = {12: 4.0, 14: 4.0}
        one = render_face(replace(p, au=au, au_side={12: side, 14: side})).astype(int)
        none = render_face(replace(p, au={}, au_side={})).astype(int)
        diff = np.abs(one - none).sum(axis=2)
        left, right = diff[:, :48].sum(), diff[:, 48:].sum()
        moved, still = (right, left) if side[1] else (left, right)
        assert moved > 3 * still


def test_label_noise_flips_exactly_the_recorded_rows():
    df = sample_labels(800, seed=7, label_noise=0.25)
    flipped = df["label_flipped"] == 1
    assert (flipped == (df["expression"] != df["expression_true"])).all()
    assert 0.20 < flipped.mean() < 0.30
    # AU and VA keep following the true expression
    for expr, proto in PROTOTYPES.items():
        rows = df[df["expression_true"] == expr]
        for k in proto:
            assert (rows[f"AU{k}"] == 1).all()
    # without label noise the extra columns are absent
    clean = sample_labels(10, seed=7)
    assert "label_flipped" not in clean and "expression_true" not in clean
    # and the labels-only path gives what the rendering paths give
    pd.testing.assert_frame_equal(sample_batch(40, seed=7, size=32, label_noise=0.25)[1],
                                  sample_labels(40, seed=7, label_noise=0.25))


def test_drop_labels_writes_the_missing_codes(tmp_path):
    df = sample_labels(600, seed=8, drop_labels=0.4)
    no_expr = df["expression"].isna()
    no_va = df["valence"].isna()
    no_au = df["AU1"] == -1
    assert (no_va == df["arousal"].isna()).all()
    for k in SYNTH_AUS:  # all AU columns go missing together, presence and intensity
        assert ((df[f"AU{k}"] == -1) == no_au).all()
        assert ((df[f"AU{k}_intensity"] == -1) == no_au).all()
    assert not (no_expr & no_va & no_au).any()  # every sample keeps a descriptor
    for missing in (no_expr, no_va, no_au):
        assert 0.25 < missing.mean() < 0.5
    # the CSV round-trips: empty expression, NaN VA, -1 AUs
    written = generate(tmp_path / "d", 60, size=32, seed=8, drop_labels=0.4, progress=False)
    read = pd.read_csv(tmp_path / "d" / "labels.csv")
    assert (read["expression"].isna() == written["expression"].isna()).all()
    assert (read["valence"].isna() == written["valence"].isna()).all()
    missing_au = written["AU1"] == -1
    assert 0 < missing_au.sum() < 60
    assert (read.loc[missing_au, AU_COLS] == -1).all().all()
    assert (read.loc[~missing_au, AU_COLS] >= 0).all().all()


def test_blend_mixes_two_expressions_and_va_follows_the_mix():
    plain = sample_labels(400, seed=3)
    df = sample_labels(400, seed=3, blend=1.0)
    basic = df["expression"].isin(BLEND_CLASSES)
    blended = df["blend_with"] != ""
    # every basic face is a blend, never neutral or contempt, with a different partner
    assert (blended == basic).all() and basic.sum() > 250
    assert (df.loc[blended, "blend_with"] != df.loc[blended, "expression"]).all()
    assert df.loc[blended, "blend_with"].isin(BLEND_CLASSES).all()
    w = df.loc[blended, "blend_weight"]
    assert (w >= 0.5).all() and (w <= 1).all() and w.std() > 0.1
    assert (df.loc[~blended, "blend_weight"] == 1).all()
    # the others are the faces made without blends, label for label
    cols = list(plain.columns)
    pd.testing.assert_frame_equal(df.loc[~blended, cols], plain.loc[~blended, cols])
    # AU intensities: w * own + (1 - w) * partner's on the prototype AUs (presence follows)
    for i in np.flatnonzero(blended.to_numpy())[:40]:
        row, before = df.iloc[i], plain.iloc[i]
        w_ = row["blend_weight"]
        for k in PROTOTYPES[row["expression"]]:
            if k not in PROTOTYPES[row["blend_with"]]:
                assert row[f"AU{k}_intensity"] == pytest.approx(w_ * before[f"AU{k}_intensity"], abs=2e-3)
        for k in PROTOTYPES[row["blend_with"]]:
            assert row[f"AU{k}_intensity"] >= (1 - w_) * 1.0 - 2e-3  # the partner shows
        for k in SYNTH_AUS:
            if abs(row[f"AU{k}_intensity"] - 1.0) > 1e-3:  # intensities are written rounded
                assert row[f"AU{k}"] == int(row[f"AU{k}_intensity"] >= 1.0)
    # VA moves from the own class's point towards the partner's centre by 1 - w
    for i in np.flatnonzero(blended.to_numpy())[:40]:
        row, before = df.iloc[i], plain.iloc[i]
        w_ = row["blend_weight"]
        cv, ca = VA_CENTRES[row["blend_with"]]
        # the partner's VA is its centre scaled by its (unknown here) intensity in [0.2, 1]
        for got, mine, centre in ((row["valence"], before["valence"], cv), (row["arousal"], before["arousal"], ca)):
            lo, hi = sorted((0.2 * centre, 1.0 * centre))
            assert w_ * mine + (1 - w_) * lo - 2e-3 <= got <= w_ * mine + (1 - w_) * hi + 2e-3
    # the labels-only path gives what rendering gives; the CSV keeps the columns
    pd.testing.assert_frame_equal(sample_batch(30, seed=3, size=32, blend=1.0)[1], sample_labels(30, seed=3, blend=1.0))
    assert "blend_with" not in plain and "blend_weight" not in plain


def test_cli_blend_writes_the_truth_columns(tmp_path):
    from affectlab.cli import main

    assert main(["synth", "--out", str(tmp_path / "b"), "--n", "24", "--size", "32", "--blend", "1", "-q"]) == 0
    read = pd.read_csv(tmp_path / "b" / "labels.csv", keep_default_na=False)
    assert {"blend_with", "blend_weight"} <= set(read.columns)
    assert (read["blend_with"] != "").sum() == read["expression"].isin(BLEND_CLASSES).sum() > 0
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["blend"] == 1.0


@pytest.mark.parametrize(
    "keep, present, absent",
    [
        ("expr", ["expression"], ["valence", "AU1"]),
        ("va", ["valence", "arousal"], ["expression", "AU12_intensity"]),
        (("au",), AU_COLS, ["expression", "valence"]),
        ("expr,au", ["expression", "AU26"], ["valence"]),
    ],
)
def test_keep_writes_only_the_chosen_descriptors(keep, present, absent):
    df = sample_labels(16, seed=1, keep=keep)
    for col in present:
        assert col in df and df[col].notna().all()
    for col in absent:
        assert col not in df


def test_sequences_rise_and_fall(tmp_path):
    exprs = ["happiness", "surprise", "sadness"]
    df = generate(tmp_path / "v", 0, size=32, seed=4, sequences=3, frames=30, expressions=exprs, progress=False)
    assert len(df) == 90 and df["video"].nunique() == 3
    for video, clip in df.groupby("video"):
        clip = clip.sort_values("frame")
        assert clip["subject"].nunique() == 1
        assert list(clip["frame"]) == list(range(30))
        assert all((tmp_path / "v" / p).is_file() for p in clip["path"])
        assert clip["path"].iloc[7] == f"{video}/00007.jpg"
        expr = [e for e in clip["expression"].unique() if e != "neutral"]
        assert len(expr) == 1
        proto = [f"AU{k}_intensity" for k in PROTOTYPES[expr[0]]]
        level = clip[proto].mean(axis=1).to_numpy()
        apex = int(np.argmax(level))
        assert 9 <= apex <= 20, apex  # the apex is in the middle
        assert level[0] < 0.3 * level.max() and level[-1] < 0.3 * level.max()
        assert level[:apex].mean() < level[apex] and level[apex + 1 :].mean() < level[apex]
        # labels follow the dynamics: neutral at the ends, the expression at the apex
        assert clip["expression"].iloc[0] == "neutral" and clip["expression"].iloc[-1] == "neutral"
        assert (clip.iloc[[0, -1]][AU_COLS] == 0).all().all()  # no action at onset and offset
        assert clip["expression"].iloc[apex] == expr[0]
        va = np.hypot(clip["valence"], clip["arousal"]).to_numpy()
        assert va[apex - 2 : apex + 3].mean() > va[:3].mean() + 0.1
        assert va[apex - 2 : apex + 3].mean() > va[-3:].mean() + 0.1


def test_frame_noise_jitters_frames_but_not_labels():
    kw = dict(seed=6, size=48, sequences=2, frames=16)
    img0, df0 = sample_batch(0, **kw)
    img_zero, df_zero = sample_batch(0, frame_noise=0.0, **kw)
    img1, df1 = sample_batch(0, frame_noise=1.0, **kw)
    # 0 is the default; any strength leaves every label as it was
    assert np.array_equal(img0, img_zero)
    pd.testing.assert_frame_equal(df0, df_zero)
    pd.testing.assert_frame_equal(df0, df1)
    assert not np.array_equal(img0, img1)

    def step(images):
        # mean absolute change between consecutive frames of each clip
        x = images.astype(np.float64).reshape(2, 16, -1)
        return np.abs(np.diff(x, axis=1)).mean()

    # the added nuisances are independent per frame: frame-to-frame change grows a lot
    assert step(img1) > 2 * step(img0), (step(img1), step(img0))
    assert step(sample_batch(0, frame_noise=2.0, **kw)[0]) > step(img1)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a positive number"),
        ({"n": -3}, "n must be >= 0"),
        ({"n": 5, "label_noise": 1.5}, "label_noise"),
        ({"n": 5, "drop_labels": -0.1}, "drop_labels"),
        ({"n": 5, "keep": "expr,pose"}, "unknown descriptor 'pose'"),
        ({"n": 5, "expressions": ["happiness", "other"]}, "cannot be synthesized"),
        ({"n": 5, "expressions": ["smug"]}, "unknown expression 'smug'"),
        ({"n": 5, "size": 16}, "size must be >= 32"),
        ({"n": 5, "sequences": 2}, "needs frames"),
        ({"n": 5, "frame_noise": 1.0}, "applies to clips only"),
        ({"n": 5, "blend": 1.5}, r"blend \(--blend\) must be in \[0, 1\]"),
        ({"n": 0, "sequences": 1, "frames": 3, "blend": 0.5}, "still images only"),
        ({"n": 0, "sequences": 1, "frames": 3, "frame_noise": -1}, "frame_noise .* >= 0"),
        ({"n": 5, "label_noise": 0.2, "keep": "va"}, "keep does not include expr"),
        ({"n": 5, "label_noise": 0.2, "expressions": ["anger"]}, "at least two expressions"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(AffectlabError, match=message):
        sample_batch(**kwargs)


def test_output_directory_rules(tmp_path):
    out = tmp_path / "set"
    generate(out, 10, size=32, progress=False)
    with pytest.raises(ConfigError, match="not empty.*--overwrite"):
        generate(out, 10, size=32, progress=False)
    (out / "notes.txt").write_text("mine")
    df = generate(out, 4, size=32, seed=2, overwrite=True, progress=False)
    assert sorted(p.name for p in (out / "img").iterdir()) == [p.split("/")[1] for p in df["path"]]
    assert (out / "notes.txt").read_text() == "mine"  # overwrite only removes its own files
    with pytest.raises(ConfigError, match="not a directory"):
        generate(out / "notes.txt", 4, size=32, progress=False)


def test_cli_synth(tmp_path, capsys):
    from affectlab.cli import main

    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--n", "12", "--size", "32", "--seed", "3", "--keep", "expr,va",
                 "--label-noise", "0.5", "-q"])
    assert code == 0
    df = pd.read_csv(out / "labels.csv")
    assert len(df) == 12 and "AU1" not in df and "label_flipped" in df
    assert main(["synth", "--out", str(out), "--n", "12"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "5", "--drop-labels", "2"]) == 2
    assert "drop_labels" in capsys.readouterr().err


# --------------------------------------------------------------------------- learnability


@pytest.mark.slow
def test_a_small_cnn_learns_expressions_and_va_on_held_out_identities():
    """~1500 faces of 150 identities (seed 11), tested on 400 faces of 40 new identities
    (seed 12): a 3-layer CNN trained 12 epochs on the CPU (about 16 s of CPU time) reaches
    about 0.8 expression accuracy (chance 0.125), and its valence/arousal head tracks the
    labels, since VA is drawn through the AU geometry."""
    import torch
    from torch import nn

    xtr, dtr = sample_batch(1500, seed=11, size=64)
    xte, dte = sample_batch(400, seed=12, size=64)
    assert not set(dtr["subject"]) & set(dte["subject"])
    classes = {e: i for i, e in enumerate(EXPRESSIONS)}

    def tensor(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)

    class PerImageNorm(nn.Module):
        # removes the global lighting and colour cast, which carry no label
        def forward(self, x):
            return (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-3)

    def block(cin, cout, **kw):
        return [nn.Conv2d(cin, cout, padding=kw.pop("padding", 1), **kw), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only contend on a shared CPU
    try:
        x, y = tensor(xtr), torch.tensor(dtr["expression"].map(classes).to_numpy())
        xt, yt = tensor(xte), torch.tensor(dte["expression"].map(classes).to_numpy())
        va = torch.tensor(dtr[["valence", "arousal"]].to_numpy(), dtype=torch.float32)
        va_t = dte[["valence", "arousal"]].to_numpy()
        net = nn.Sequential(
            PerImageNorm(),
            *block(3, 16, kernel_size=5, stride=2, padding=2),
            *block(16, 32, kernel_size=3),
            *block(32, 64, kernel_size=3),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, len(classes) + 2),
        )
        epochs, bs = 12, 64
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * -(-len(x) // bs))
        start = time.process_time()
        for _ in range(epochs):
            net.train()
            for idx in torch.randperm(len(x)).split(bs):
                xb = x[idx]
                flip = torch.rand(len(idx)) < 0.5  # mirror faces: contempt may be on either side
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                out = net(xb)
                loss = nn.functional.cross_entropy(out[:, :-2], y[idx]) + nn.functional.mse_loss(
                    torch.tanh(out[:, -2:]), va[idx]
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        cpu = time.process_time() - start
        net.eval()
        with torch.no_grad():
            out = net(xt)
        acc = (out[:, :-2].argmax(1) == yt).float().mean().item()
        va_hat = torch.tanh(out[:, -2:]).numpy()
    finally:
        torch.set_num_threads(threads)
    r_v = np.corrcoef(va_hat[:, 0], va_t[:, 0])[0, 1]
    r_a = np.corrcoef(va_hat[:, 1], va_t[:, 1])[0, 1]
    print(f"held-out identities: expression accuracy {acc:.3f}, valence r {r_v:.2f}, arousal r {r_a:.2f} "
          f"after {cpu:.1f} s CPU training")
    assert acc >= 0.6
    assert r_v >= 0.5 and r_a >= 0.5
