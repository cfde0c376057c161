"""Preprocessing presets: shapes, dtypes, value ranges, normalisation, face crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import functional as TF

from affectlab.data.transforms import (
    NORMALIZATIONS,
    build_transform,
    crop_face,
    list_normalizations,
    list_presets,
    to_rgb_uint8,
)
from affectlab.errors import ConfigError


def _image(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", ["eval", "default", "cage"])
@pytest.mark.parametrize("train", [False, True])
def test_shape_dtype_for_every_preset(preset, train):
    torch.manual_seed(0)
    t = build_transform(preset, (32, 24), "imagenet", train=train)
    out = t(_image())
    assert out.shape == (3, 32, 24)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    if not (preset == "cage" and train):  # random erasing fills with N(0, 1) noise
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALIZATIONS["imagenet"])
        assert (out >= (0 - mean) / std - 1e-5).all() and (out <= (1 - mean) / std + 1e-5).all()


def test_no_normalisation_keeps_unit_range_and_values():
    img = _image()
    t = build_transform("eval", (40, 56), "none")  # same size: resize is the identity
    out = t(img)
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), img / 255.0, atol=1e-6)


@pytest.mark.parametrize("norm", ["imagenet", "clip"])
def test_normalisation_matches_torchvision(norm):
    img = _image(32, 32, seed=3)
    mean, std = NORMALIZATIONS[norm]
    expected = TF.normalize(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, mean, std)
    out = build_transform("eval", 32, norm)(img)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_clip_constants_match_open_clip():
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    assert NORMALIZATIONS["clip"] == (tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD))


def test_resize_matches_torchvision_resize():
    img = _image(64, 48, seed=1)
    ref = TF.resize(torch.from_numpy(img).permute(2, 0, 1), [16, 16], antialias=True).float() / 255.0
    out = build_transform("eval", 16, "none")(img)
    # uint8 resampling kernels may round differently by one grey level
    torch.testing.assert_close(out, ref, atol=1 / 255 + 1e-6, rtol=0)


def test_bicubic_interpolation_matches_torchvision():
    from torchvision.transforms import InterpolationMode

    img = _image(64, 48, seed=2)
    ref = TF.resize(
        torch.from_numpy(img).permute(2, 0, 1), [20, 20], interpolation=InterpolationMode.BICUBIC, antialias=True
    ).float() / 255.0
    out = build_transform("eval", 20, "none", interpolation="bicubic")(img)
    # uint8 bicubic kernels round (and clamp overshoot) slightly differently
    torch.testing.assert_close(out, ref, atol=2 / 255 + 1e-6, rtol=0)
    bilinear = build_transform("eval", 20, "none")(img)
    assert not torch.allclose(out, bilinear)
    with pytest.raises(ConfigError, match="bicubic"):
        build_transform("eval", 20, interpolation="lanczos")


def test_eval_is_deterministic_and_train_presets_are_random():
    img = _image()
    ev = build_transform("cage", 32, "imagenet", train=False)
    torch.testing.assert_close(ev(img), ev(img))
    tr = build_transform("cage", 32, "imagenet", train=True)
    torch.manual_seed(0)
    outs = [tr(img) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_grayscale_inputs_become_rgb():
    gray = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    t = build_transform("eval", 48, "none")
    for img in (gray, gray[:, :, None]):
        out = t(img)
        assert out.shape == (3, 48, 48)
        torch.testing.assert_close(out[0], out[1])
        torch.testing.assert_close(out[0], out[2])
        np.testing.assert_allclose(out[0].numpy(), gray / 255.0, atol=1e-6)
    rgba = np.dstack([_image(8, 8), np.full((8, 8), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgba[:, :, :3])


def test_face_crop_with_margin():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 30:50] = 255  # a 20x20 "face" at x=30, y=40
    crop = crop_face(img, (30, 40, 20, 20), margin=0.5)
    assert crop.shape == (40, 40, 3)
    # the face sits in the centre with a 10 px border on each side
    assert crop[10:30, 10:30].min() == 255
    assert crop[:10].max() == 0 and crop[30:].max() == 0
    # a box near the corner is padded, not shifted
    corner = crop_face(img, (0, 0, 10, 10), margin=0.5)
    assert corner.shape == (20, 20, 3)
    t = build_transform("eval", 20, "none", margin=0.5)
    out = t(img, box=(30, 40, 20, 20))
    assert out.shape == (3, 20, 20)
    assert out[:, 8:12, 8:12].min() > 0.99 and out[:, 0, 0].max() < 0.01


def test_unknown_names_list_the_known_ones():
    assert {"eval", "default", "cage", "flip"} <= set(list_presets())
    assert set(list_normalizations()) == {"imagenet", "clip", "none"}
    with pytest.raises(ConfigError, match="eval, default, cage"):
        build_transform("heavy", 224)
    with pytest.raises(ConfigError, match="imagenet"):
        build_transform("eval", 224, "coco")
    with pytest.raises(ConfigError):
        build_transform("eval", 0)


def test_bad_images_are_rejected_with_a_message():
    t = build_transform("eval", 16)
    with pytest.raises(ConfigError, match="uint8"):
        t(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match="shape"):
        t(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ConfigError, match="box"):
        crop_face(np.zeros((8, 8), np.uint8), (0, 0, -1, 4))


def test_cage_preset_lists_the_papers_augmentations():
    from torchvision.transforms import v2

    ops = build_transform("cage", 224, "imagenet", train=True).pipeline.transforms
    kinds = [type(o) for o in ops]
    for cls in (
        v2.RandomHorizontalFlip,
        v2.RandomGrayscale,
        v2.RandomRotation,
        v2.ColorJitter,
        v2.RandomPerspective,
        v2.Normalize,
        v2.RandomErasing,
    ):
        assert cls in kinds
    erasing = ops[kinds.index(v2.RandomErasing)]
    assert erasing.p == 0.5 and tuple(erasing.scale) == (0.02, 0.2) and erasing.value is None  # v2 stores value="random" as None
    # erasing is applied after normalisation, as in the paper's list
    assert kinds.index(v2.RandomErasing) > kinds.index(v2.Normalize)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("normalize", ["imagenet", "clip", "none"])
def test_eval_pipeline_is_torchvisions_to_the_bit(interpolation, normalize):
    # the eval pipeline runs without torchvision (start-up time); it must give torchvision's numbers
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from affectlab.data.transforms import NORMALIZATIONS

    rng = np.random.default_rng(3)
    stats = NORMALIZATIONS[normalize]
    for shape, size in (((37, 53, 3), 32), ((20, 20, 3), 64), ((64, 64, 3), 64), ((90, 70, 3), (40, 48))):
        ours = build_transform("eval", size, normalize, interpolation=interpolation)
        hw = (size, size) if isinstance(size, int) else size
        ops = [v2.Resize(hw, interpolation=v2.InterpolationMode(interpolation), antialias=True),
               v2.ToDtype(torch.float32, scale=True)]
        if stats is not None:
            ops.append(v2.Normalize(mean=list(stats[0]), std=list(stats[1])))
        reference = v2.Compose(ops)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        single = reference(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))).as_subclass(torch.Tensor)
        assert torch.equal(ours(image), single.contiguous()), (shape, size)
        stack = torch.from_numpy(rng.integers(0, 256, (3, *shape), dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
        expected = reference(tv_tensors.Image(stack)).as_subclass(torch.Tensor)
        assert torch.equal(ours.pipeline(stack), expected), (shape, size)


def test_eval_transform_does_not_import_torchvision():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from affectlab.data.transforms import build_transform; "
        "build_transform('eval', 32, 'imagenet')(np.zeros((40, 30, 3), np.uint8)); "
        "print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
