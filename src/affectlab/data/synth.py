"""Synthetic faces with complete ground truth: ``affectlab synth``.

A procedural generator of face images whose expression, valence/arousal and action-unit
labels are known exactly, because the AU intensities *drive* the drawing
(:mod:`affectlab.data.synth_render`). It is how tests, CI, demos and benchmarks get data
without a download, and how interpretability claims are checked against known truth.

Ground truth
------------
* **Expressions** are EMFACS prototypes (:data:`PROTOTYPES`): happiness 6+12, sadness
  1+4+15, surprise 1+2+5+26, fear 1+2+4+5+7+20+26, anger 4+5+7+23, disgust 9+15+16,
  contempt 12+14 drawn on one side of the face only, and neutral. Each sample draws an
  expression intensity ``I ~ U(0.35, 1)``; each prototype AU gets
  ``clip(5 I u, 1, 5)`` with ``u ~ U(0.8, 1.15)``. Other AUs are mixed in below the
  presence threshold (each with probability 0.35, intensity ``U(0, 0.8)``), and with
  probability 0.15 one plausible extra AU (:data:`EXTRA_AUS`, e.g. lips part in
  happiness) is added at ``U(1, 2)``. Neutral faces carry only sub-threshold AUs.
* **AU presence** (``AU<k>`` columns) is ``intensity >= 1`` (:data:`PRESENCE_THRESHOLD`;
  FACS "A" level). Intensities are in ``AU<k>_intensity`` (0-5).
* **Valence/arousal** sit on the circumplex at the class centre (:data:`VA_CENTRES`)
  scaled by the mean intensity of the prototype AUs divided by 5, plus Gaussian noise
  (sd 0.05), clipped to [-1, 1]. Being a function of the drawn AUs, VA can be regressed
  from the pixels. Neutral is (0, 0) plus noise.
* **Identity** (face shape and width, skin tone, hair, eye size and spacing, brows, nose,
  mouth width, lips) is drawn from ``(seed, subject index)`` only; subjects are named
  ``s<seed>-<k>``, so different seeds give disjoint identities.
* **Nuisances** per image: in-plane rotation (±10°), scale (1.06-1.24), shift (±4 % of
  the side), lighting gradient, white balance, background (gradient, blobs or stripes),
  an occluding patch (10 % of images, column ``occluded``), blur and pixel noise.
* **Sequences** (``sequences=K, frames=F``): K clips of one identity and one expression
  whose AU intensities follow onset (0 -> apex), apex plateau and offset (apex -> 0) with
  the apex around the middle, per-frame jitter of the AUs (sd 0.08) and of the head pose,
  and VA following the AUs (sub-threshold mixing AUs stay below the threshold). A frame
  is labelled with the clip's expression when at least half of its prototype AUs are
  present, else ``neutral``. ``frame_noise=S`` (``--frame-noise``) adds independent
  per-frame nuisances that leave every label unchanged: brightness (sd ``0.08 S``,
  relative), in-plane rotation (sd ``2.5 S`` degrees), shift (sd ``0.012 S`` of the side),
  scale (sd ``0.03 S``, relative), extra blur (``|N(0, 0.5 S)|`` px at 112 px) and pixel
  noise (sd ``+ U(0, 6 S)``). It is the frame-to-frame noise that temporal smoothing
  (equation 9 of the SMM paper) is meant to remove; 0 (the default) draws nothing extra,
  so clips stay byte-identical to those made without it.
* **Blends** (``blend=P``, ``--blend``): with probability P a still face of one of the six
  basic expressions is drawn as a blend of it (weight ``w ~ U(0.5, 1)``) and a second basic
  expression ``b`` (weight ``1 - w``, uniform among the other five): each prototype AU gets
  ``w I_a + (1 - w) I_b`` (``I`` the unblended intensities, 0 outside a prototype), and
  valence/arousal are the same blend of the two classes' VA. The label stays the class of
  larger weight, so near ``w = 0.5`` the class is barely visible while VA still locates
  the face between the two: VA then carries information beyond the class (how far, and
  towards which class), which it does not without blends. ``blend_with`` (``b``, empty
  otherwise) and ``blend_weight`` (``w``, 1 otherwise) record the truth. Drawn from their
  own stream, so ``blend=0`` (the default) leaves every image and label as before.
* **Label noise** (``label_noise=P``): each stored expression is replaced, with
  probability P, by a different class of the set; ``expression_true`` and
  ``label_flipped`` record the truth. **Missing labels** (``drop_labels=P``): each kept
  descriptor of a sample is dropped with probability P (expression empty, VA NaN, every
  AU presence and intensity -1), keeping at least one per sample. ``keep`` writes only
  some descriptors (uni-task sets).

Everything is drawn from ``numpy.random.default_rng`` seeded with ``(seed, role, index)``,
so the same arguments give byte-identical images and labels, in any order.

Files: JPEG images, quality 95 (encoding a noisy 112 px face as PNG costs about as much
as drawing it, JPEG a tenth of that; ``image_format="png"`` writes lossless PNG) under
``DIR/img/<i:06d>.jpg`` or ``DIR/<video>/<frame:05d>.jpg``, ``DIR/labels.csv`` in the
manifest format (``path`` relative to the CSV) and ``DIR/synth.json`` with the generator
settings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from affectlab.data.schema import AU_SETS, EXPRESSIONS, canonical_expression
from affectlab.data.synth_render import RENDERED_AUS, FaceParams, render_face
from affectlab.errors import ConfigError, check_nonnegative

__all__ = [
    "PROTOTYPES",
    "VA_CENTRES",
    "PRESENCE_THRESHOLD",
    "BLEND_CLASSES",
    "SYNTH_AUS",
    "FaceParams",
    "render_face",
    "sample_identity",
    "sample_params",
    "sample_batch",
    "sample_labels",
    "generate",
    "label_columns",
]

#: AU numbers the generator labels (the schema's ``AU_SETS["synth"]``).
SYNTH_AUS: tuple[int, ...] = tuple(int(a[2:]) for a in AU_SETS["synth"])
assert set(SYNTH_AUS) <= set(RENDERED_AUS)

#: EMFACS prototypes: the AUs that make each expression.
PROTOTYPES: dict[str, tuple[int, ...]] = {
    "neutral": (),
    "happiness": (6, 12),
    "sadness": (1, 4, 15),
    "surprise": (1, 2, 5, 26),
    "fear": (1, 2, 4, 5, 7, 20, 26),
    "disgust": (9, 15, 16),
    "anger": (4, 5, 7, 23),
    "contempt": (12, 14),
}
#: AUs drawn on one side of the face only.
UNILATERAL: dict[str, tuple[int, ...]] = {"contempt": (12, 14)}

#: Plausible AUs that may join a prototype above threshold (never for neutral).
EXTRA_AUS: dict[str, tuple[int, ...]] = {
    "neutral": (),
    "happiness": (25, 26, 7),
    "sadness": (17, 25),
    "surprise": (25,),
    "fear": (25,),
    "disgust": (4, 17, 25),
    "anger": (17, 25),
    "contempt": (),
}

#: Circumplex class centres (valence, arousal) at full intensity.
VA_CENTRES: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.5),
    "sadness": (-0.6, -0.4),
    "surprise": (0.3, 0.8),
    "fear": (-0.6, 0.7),
    "disgust": (-0.6, 0.3),
    "anger": (-0.6, 0.6),
    "contempt": (-0.4, 0.2),
}

#: An AU is present (``AU<k>`` = 1) when its intensity is at least this.
PRESENCE_THRESHOLD = 1.0
VA_NOISE = 0.05
OCCLUSION_RATE = 0.10
_TASKS = ("expr", "va", "au")

# seed roles, so identity, sample and label-noise streams never overlap
_ROLE_IDENTITY, _ROLE_SAMPLE, _ROLE_PLAN, _ROLE_SEQUENCE, _ROLE_FRAME = 1, 2, 3, 4, 5
_ROLE_FRAME_NOISE = 6
_ROLE_BLEND = 7
#: expressions a blend pairs (neutral has no prototype, contempt's AUs are one-sided)
BLEND_CLASSES = ("happiness", "sadness", "surprise", "fear", "disgust", "anger")

_SKIN_LIGHT = np.array([242.0, 208.0, 182.0])
_SKIN_DARK = np.array([92.0, 60.0, 42.0])
_HAIR = np.array(
    [[25, 20, 18], [60, 40, 28], [110, 75, 45], [190, 150, 90], [140, 60, 30], [150, 150, 150], [40, 35, 35]],
    dtype=np.float64,
)
_IRIS = np.array([[70, 45, 30], [40, 90, 140], [60, 110, 70], [100, 80, 50], [35, 25, 20]], dtype=np.float64)


# --------------------------------------------------------------------------- sampling


def subject_id(seed: int, k: int) -> str:
    """Name of subject ``k`` of a seed: ``s<seed>-<k>``."""
    return f"s{int(seed)}-{int(k)}"


@lru_cache(maxsize=4096)
def sample_identity(seed: int, k: int) -> dict:
    """The face of subject ``k`` of ``seed`` (shape, colours, feature layout).

    Lengths are fractions of the image side in the face frame (origin at the face
    centre, y down); colours are RGB. The result is cached and shared: do not modify it.
    """
    rng = np.random.default_rng([int(seed), _ROLE_IDENTITY, int(k)])
    u = rng.uniform
    W = u(0.25, 0.30)
    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * u(0, 1) + rng.normal(0, 6, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 8, 3)
    eye_w = W * u(0.17, 0.22)
    iris_r = eye_w * u(0.48, 0.58)
    face_h_up = W * u(1.12, 1.25)
    return {
        "face_w": W,
        "face_h_up": face_h_up,
        "face_h_low": W * u(1.2, 1.38),
        "jaw_taper": u(0.05, 0.3),
        "neck_w": u(0.42, 0.55),
        "skin": np.clip(skin, 30, 255),
        "hair": np.clip(hair, 0, 255),
        "hair_style": int(rng.choice(3, p=[0.15, 0.55, 0.3])),  # 0 bald, 1 short, 2 long
        "hairline": face_h_up * u(0.6, 0.78),
        "hair_dip": u(0.0, 0.04),
        "shirt": rng.uniform(20, 230, 3),
        "iris": _IRIS[rng.integers(len(_IRIS))] + rng.normal(0, 6, 3),
        "eye_dx": W * u(0.36, 0.44),
        "eye_y": u(-0.045, -0.015),
        "eye_w": eye_w,
        "iris_r": iris_r,
        "lid_up": iris_r * u(0.8, 0.95),
        "lid_low": iris_r * u(0.85, 1.0),
        "gaze": u(-0.08, 0.08),
        "brow_gap": u(0.065, 0.085),
        "brow_thick": u(0.014, 0.026),
        "brow_arch": u(0.004, 0.014),
        "nose_y": u(0.085, 0.11),
        "nose_w": W * u(0.17, 0.24),
        "mouth_y": u(0.175, 0.2),
        "mouth_w": W * u(0.3, 0.4),
        "lip_up": u(0.008, 0.014),
        "lip_low": u(0.011, 0.018),
        "lip": np.clip((0.62 * skin + 0.38 * np.array([175.0, 70.0, 78.0])) * u(0.85, 1.0), 0, 255),
    }


def _sample_aus(rng: np.random.Generator, expression: str) -> tuple[dict, dict, float]:
    """AU intensities, per-side multipliers and the expression intensity of one face."""
    proto = PROTOTYPES[expression]
    # one draw per role (vectors): scalar draws cost more than the drawing of a face
    n_aus = len(SYNTH_AUS)
    mixed = (rng.random(n_aus) < 0.35) * rng.uniform(0.0, 0.8, n_aus)  # sub-threshold mixing
    gains = rng.uniform(0.85, 1.0, (n_aus, 2))
    u = rng.random(8)
    au = dict(zip(SYNTH_AUS, mixed.tolist()))
    level = 0.0
    if proto:
        level = 0.35 + 0.65 * float(u[0])
        for k, g in zip(proto, rng.uniform(0.8, 1.15, len(proto)).tolist()):
            au[k] = min(5.0, max(PRESENCE_THRESHOLD, 5.0 * level * g))
        extras = [k for k in EXTRA_AUS[expression] if k not in proto]
        if extras and u[1] < 0.15:
            au[extras[int(u[2] * len(extras))]] = 1.0 + float(u[3])
    side = {k: (float(g[0]), float(g[1])) for k, g in zip(SYNTH_AUS, gains)}
    if expression in UNILATERAL:
        right = bool(u[4] < 0.5)
        for k in UNILATERAL[expression]:
            side[k] = (0.0, 1.0) if right else (1.0, 0.0)
    return au, side, level


def _va(expression: str, au: dict, rng: np.random.Generator) -> tuple[float, float]:
    proto = PROTOTYPES[expression]
    scale = float(np.mean([au[k] for k in proto])) / 5.0 if proto else 0.0
    cv, ca = VA_CENTRES[expression]
    nv, na = rng.normal(0, VA_NOISE, 2).tolist()
    return min(1.0, max(-1.0, cv * scale + nv)), min(1.0, max(-1.0, ca * scale + na))


_BG_KINDS = ("none", "blobs", "stripes")
_BG_CUMP = np.cumsum([0.4, 0.4, 0.2])


def _sample_nuisance(rng: np.random.Generator, size: int) -> dict:
    r = rng.random(32)

    def u(i: int, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(r[i])

    occlusion = None
    if r[0] < OCCLUSION_RATE:
        occlusion = {
            "kind": "rect" if r[1] < 0.5 else "ellipse",
            "center": (u(2, -0.25, 0.25), u(3, -0.2, 0.3)),
            "axes": (u(4, 0.05, 0.14), u(5, 0.04, 0.1)),
            "angle": u(6, -40, 40),
            "color": tuple((255 * r[7:10]).tolist()),
        }
    seeds = rng.integers(2**31, size=2)
    return {
        "size": int(size),
        "angle": u(10, -10, 10),
        "scale": u(11, 1.06, 1.24),
        "dx": u(12, -0.04, 0.04),
        "dy": u(13, -0.04, 0.04),
        "light_angle": u(14, 0, 2 * np.pi),
        "light_amp": u(15, 0.0, 0.5),
        "brightness": u(16, 0.8, 1.12),
        "tint": tuple((0.9 + 0.2 * r[17:20]).tolist()),
        "background": {
            "colors": (tuple((255 * r[20:23]).tolist()), tuple((255 * r[23:26]).tolist())),
            "angle": u(26, 0, 2 * np.pi),
            "texture": _BG_KINDS[int(np.searchsorted(_BG_CUMP, r[27], side="right"))],
            "texture_amp": u(28, 5, 30),
            "period": 3 + int(r[29] * 11),
            "seed": int(seeds[0]),
        },
        "occlusion": occlusion,
        "blur": u(30, 0.0, 0.9) * size / 112,
        "noise": u(31, 0.0, 6.0),
        "seed": int(seeds[1]),
    }


def _blend(seed: int, index: int, expression: str, au: dict, level: float, va: tuple[float, float],
           rate: float) -> tuple[dict, tuple[float, float], str, float]:
    """Blend a face with a second basic expression (``blend=P``; module docstring).

    Returns the AU intensities, valence/arousal, the partner class ('' when not blended)
    and the weight of ``expression``.
    """
    if rate <= 0 or expression not in BLEND_CLASSES:
        return au, va, "", 1.0
    rng = np.random.default_rng([int(seed), _ROLE_BLEND, int(index)])
    u = rng.random(3)
    if u[0] >= rate:
        return au, va, "", 1.0
    others = [c for c in BLEND_CLASSES if c != expression]
    partner = others[int(u[1] * len(others))]
    w = 0.5 + 0.5 * float(u[2])
    own, theirs = PROTOTYPES[expression], PROTOTYPES[partner]
    gains = rng.uniform(0.8, 1.15, len(theirs))
    # the partner at the same expression level as the face, unblended
    other = {k: min(5.0, max(PRESENCE_THRESHOLD, 5.0 * level * g)) for k, g in zip(theirs, gains.tolist())}
    out = dict(au)
    for k in set(own) | set(other):
        mine = au[k] if k in own else 0.0
        mixed = w * mine + (1.0 - w) * other.get(k, 0.0)
        # an AU of the partner only never falls below the sub-threshold level it had
        out[k] = mixed if k in own else max(au[k], mixed)
    cv, ca = VA_CENTRES[partner]
    scale = float(np.mean(list(other.values()))) / 5.0
    v = w * va[0] + (1.0 - w) * cv * scale
    a = w * va[1] + (1.0 - w) * ca * scale
    return out, (min(1.0, max(-1.0, v)), min(1.0, max(-1.0, a))), partner, w


def sample_params(seed: int, index: int, expression: str, subject: int, size: int = 112,
                  blend: float = 0.0) -> tuple[FaceParams, dict]:
    """Parameters and labels of static sample ``index`` of ``seed``.

    ``blend`` is the probability that a basic-expression face is a blend (module docstring).

    Returns
    -------
    params : FaceParams
    labels : dict
        ``expression``, ``valence``, ``arousal``, ``au`` (dict AU number -> intensity),
        ``intensity`` (expression level 0-1), ``occluded``, ``blend_with``, ``blend_weight``.
    """
    expression = _check_expressions([expression])[0]
    rng = np.random.default_rng([int(seed), _ROLE_SAMPLE, int(index)])
    au, side, level = _sample_aus(rng, expression)
    v, a = _va(expression, au, rng)
    nuis = _sample_nuisance(rng, size)
    au, (v, a), partner, weight = _blend(seed, index, expression, au, level, (v, a), blend)
    params = FaceParams(identity=sample_identity(seed, subject), au=au, au_side=side, **nuis)
    labels = {
        "expression": expression,
        "valence": v,
        "arousal": a,
        "au": au,
        "intensity": level,
        "occluded": int(nuis["occlusion"] is not None),
        "blend_with": partner,
        "blend_weight": weight,
    }
    return params, labels


def _profile(frames: int, rng: np.random.Generator) -> np.ndarray:
    """Onset-apex-offset envelope in [0, 1] with its apex plateau around the middle."""
    if frames == 1:
        return np.ones(1)
    x = np.linspace(0.0, 1.0, frames)
    on, off = rng.uniform(0.3, 0.42), rng.uniform(0.58, 0.7)

    def smooth(z):
        z = np.clip(z, 0, 1)
        return z * z * (3 - 2 * z)

    return np.where(x < on, smooth(x / on), np.where(x > off, smooth((1 - x) / (1 - off)), 1.0))


def _frame_nuisance(nuis: dict, seed: int, k: int, f: int, strength: float) -> dict:
    """Independent per-frame nuisances of ``--frame-noise`` (labels untouched).

    Drawn from their own stream so that ``strength = 0`` leaves every other draw as it was.
    """
    z = np.random.default_rng([int(seed), _ROLE_FRAME_NOISE, int(k), int(f)]).normal(0.0, 1.0, 7)
    side = nuis["size"] / 112
    out = dict(nuis)
    out["brightness"] = float(np.clip(nuis["brightness"] * (1 + 0.08 * strength * z[0]), 0.4, 1.6))
    out["angle"] = nuis["angle"] + 2.5 * strength * float(z[1])
    out["dx"] = nuis["dx"] + 0.012 * strength * float(z[2])
    out["dy"] = nuis["dy"] + 0.012 * strength * float(z[3])
    out["scale"] = float(nuis["scale"] * np.clip(1 + 0.03 * strength * z[4], 0.8, 1.2))
    out["blur"] = nuis["blur"] + abs(0.5 * strength * float(z[5])) * side
    # U(0, 6 S) from the seventh normal, through its CDF
    out["noise"] = nuis["noise"] + 6.0 * strength * 0.5 * (1 + math.erf(float(z[6]) / math.sqrt(2)))
    return out


def _sequence_plan(seed: int, k: int, expression: str, subject: int, frames: int, size: int,
                   frame_noise: float = 0.0):
    """Per-frame (params, labels) of clip ``k``."""
    rng = np.random.default_rng([int(seed), _ROLE_SEQUENCE, int(k)])
    apex, side, level = _sample_aus(rng, expression)
    base = _sample_nuisance(rng, size)
    identity = sample_identity(seed, subject)
    env = _profile(frames, rng)
    proto = PROTOTYPES[expression]
    walk = np.cumsum(rng.normal(0, 1, (frames, 3)), axis=0) * np.array([0.4, 0.002, 0.002])
    out = []
    for f in range(frames):
        fr = np.random.default_rng([int(seed), _ROLE_FRAME, int(k), f])
        au = {}
        jitter = fr.normal(0, 0.08, len(SYNTH_AUS)).tolist()
        for k_au, jit in zip(SYNTH_AUS, jitter):
            # the expression's AUs (prototype and extra ones above threshold) follow the
            # envelope; sub-threshold mixing stays at its low level, jittered
            moving = k_au in proto or apex[k_au] >= PRESENCE_THRESHOLD
            target = apex[k_au] * env[f] if moving else apex[k_au]
            top = 5.0 if moving else PRESENCE_THRESHOLD - 0.01
            au[k_au] = min(top, max(0.0, target + jit))
        present = sum(au[k_au] >= PRESENCE_THRESHOLD for k_au in proto)
        label = expression if proto and present * 2 >= len(proto) else "neutral"
        v, a_ = _va(expression, au, fr)
        nuis = dict(base)
        nuis["angle"] = base["angle"] + walk[f, 0]
        nuis["dx"] = base["dx"] + walk[f, 1]
        nuis["dy"] = base["dy"] + walk[f, 2]
        nuis["seed"] = int(fr.integers(2**31))
        if frame_noise > 0:
            nuis = _frame_nuisance(nuis, seed, k, f, frame_noise)
        params = FaceParams(identity=identity, au=au, au_side=side, **nuis)
        out.append(
            (
                params,
                {
                    "expression": label,
                    "valence": v,
                    "arousal": a_,
                    "au": au,
                    "intensity": level * env[f],
                    "occluded": int(nuis["occlusion"] is not None),
                },
            )
        )
    return out


# --------------------------------------------------------------------------- validation


def _check_expressions(expressions) -> list[str]:
    if expressions is None:
        return list(EXPRESSIONS)
    if isinstance(expressions, str):
        expressions = [e for e in expressions.split(",") if e.strip()]
    out = []
    for e in expressions:
        name = canonical_expression(e)
        if name not in PROTOTYPES:
            raise ConfigError(
                f"expression {e!r} cannot be synthesized; choose among {', '.join(EXPRESSIONS)}"
            )
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no expressions given; choose among {', '.join(EXPRESSIONS)}")
    return out


def _check_fraction(name: str, value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= f <= 1.0) or math.isnan(f):
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
    return f


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_keep(keep) -> tuple[str, ...]:
    if isinstance(keep, str):
        keep = [k for k in keep.split(",") if k.strip()]
    out = []
    for k in keep:
        key = str(k).strip().lower()
        if key not in _TASKS:
            raise ConfigError(f"unknown descriptor {k!r} in keep; expected a subset of expr, va, au")
        if key not in out:
            out.append(key)
    if not out:
        raise ConfigError("keep must name at least one of expr, va, au")
    return tuple(t for t in _TASKS if t in out)


# --------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    """Parameters and labels of every image, in output order."""

    params: list
    rows: list


def _plan(
    n: int,
    *,
    size: int,
    seed: int,
    subjects,
    label_noise: float,
    drop_labels: float,
    keep,
    sequences: int,
    frames: int,
    expressions,
    image_format: str = "jpg",
    frame_noise: float = 0.0,
    blend: float = 0.0,
) -> tuple[_Plan, dict]:
    n = _check_int("n", n, 0)
    sequences = _check_int("sequences", sequences, 0)
    frames = _check_int("frames", frames, 0)
    if n == 0 and sequences == 0:
        raise ConfigError("n must be a positive number of images (or ask for sequences with frames > 0)")
    if sequences > 0 and frames == 0:
        raise ConfigError(f"sequences={sequences} needs frames >= 1 per sequence")
    if frames > 0 and sequences == 0:
        raise ConfigError(f"frames={frames} given without sequences; set sequences >= 1")
    frame_noise = check_nonnegative(frame_noise, "frame_noise (--frame-noise)")
    if frame_noise > 0 and sequences == 0:
        raise ConfigError(f"frame_noise={frame_noise} applies to clips only; ask for sequences (--sequences K --frames F)")
    size = _check_int("size", size, 32)
    seed = _check_int("seed", seed, 0)
    label_noise = _check_fraction("label_noise (--label-noise)", label_noise)
    drop_labels = _check_fraction("drop_labels (--drop-labels)", drop_labels)
    blend = _check_fraction("blend (--blend)", blend)
    if blend > 0 and n == 0:
        raise ConfigError(f"blend={blend} applies to still images only; ask for n > 0 images")
    keep = _check_keep(keep)
    classes = _check_expressions(expressions)
    if label_noise > 0 and "expr" not in keep:
        raise ConfigError("label_noise flips expression labels, but keep does not include expr")
    if label_noise > 0 and len(classes) < 2:
        raise ConfigError("label_noise needs at least two expressions to flip between")
    if image_format.lower() not in ("png", "jpg", "jpeg"):
        raise ConfigError(f"image_format must be png or jpg, got {image_format!r}")
    ext = "png" if image_format.lower() == "png" else "jpg"
    units = n + sequences
    if subjects is None:
        # about ten images per identity for static sets, one identity per clip
        subjects = sequences if n == 0 else max(1, math.ceil(n / 10))
    subjects = _check_int("subjects", subjects, 1)

    rng = np.random.default_rng([seed, _ROLE_PLAN])
    static_expr = np.resize(np.arange(len(classes)), n)
    rng.shuffle(static_expr)
    seq_expr = np.resize(np.arange(len(classes)), sequences)
    rng.shuffle(seq_expr)
    subj = np.resize(np.arange(subjects), units)
    rng.shuffle(subj)

    params, rows = [], []
    for i in range(n):
        p, lab = sample_params(seed, i, classes[static_expr[i]], int(subj[i]), size, blend)
        lab.update(path=f"img/{i:06d}.{ext}", subject=subject_id(seed, subj[i]))
        params.append(p)
        rows.append(lab)
    for k in range(sequences):
        video = f"v{seed}-{k:04d}"
        s = int(subj[n + k])
        for f, (p, lab) in enumerate(_sequence_plan(seed, k, classes[seq_expr[k]], s, frames, size, frame_noise)):
            lab.update(path=f"{video}/{f:05d}.{ext}", subject=subject_id(seed, s), video=video, frame=f)
            params.append(p)
            rows.append(lab)

    # label noise, then incomplete annotations, from their own stream
    total = len(rows)
    flip = rng.random(total) < label_noise
    offsets = rng.integers(1, max(2, len(classes)), total)
    drop = rng.random((total, len(keep))) < drop_labels
    restore = rng.integers(0, len(keep), total)
    for i, lab in enumerate(rows):
        lab["expression_true"] = lab["expression"]
        lab["label_flipped"] = int(flip[i])
        if flip[i]:
            # a different class: shift the index by 1..C-1 (the true label may be neutral
            # from a sequence onset even when neutral is not among the classes)
            j = classes.index(lab["expression"]) if lab["expression"] in classes else 0
            new = classes[(j + int(offsets[i])) % len(classes)]
            if new == lab["expression"]:
                new = classes[(j + 1) % len(classes)]
            lab["expression"] = new
        if drop[i].all():
            drop[i, restore[i]] = False
        lab["kept"] = tuple(t for t, d in zip(keep, drop[i]) if not d)
    settings = {
        "generator": "affectlab.data.synth",
        "version": 1,
        "n": n,
        "size": size,
        "seed": seed,
        "subjects": subjects,
        "label_noise": label_noise,
        "drop_labels": drop_labels,
        "keep": list(keep),
        "sequences": sequences,
        "frames": frames,
        "expressions": classes,
        "image_format": ext,
        "presence_threshold": PRESENCE_THRESHOLD,
        "aus": [f"AU{k}" for k in SYNTH_AUS],
        "prototypes": {k: [f"AU{a}" for a in v] for k, v in PROTOTYPES.items()},
        "va_centres": VA_CENTRES,
        "va_noise": VA_NOISE,
    }
    if frame_noise > 0:
        # recorded only when used, so synth.json of earlier settings stays byte-identical
        settings["frame_noise"] = frame_noise
    if blend > 0:
        settings["blend"] = blend
        settings["blend_classes"] = list(BLEND_CLASSES)
    return _Plan(params, rows), settings


def label_columns(keep=_TASKS, *, label_noise: bool = False, sequences: bool = False,
                  blend: bool = False) -> list[str]:
    """Manifest columns written for a set of kept descriptors, in file order."""
    keep = _check_keep(keep)
    cols = ["path", "subject"]
    if sequences:
        cols += ["video", "frame"]
    if "expr" in keep:
        cols.append("expression")
        if label_noise:
            cols += ["expression_true", "label_flipped"]
    if "va" in keep:
        cols += ["valence", "arousal"]
    if "au" in keep:
        cols += [f"AU{k}" for k in SYNTH_AUS] + [f"AU{k}_intensity" for k in SYNTH_AUS]
    cols.append("occluded")
    if blend:
        cols += ["blend_with", "blend_weight"]
    return cols


def _frame(plan: _Plan, settings: dict) -> pd.DataFrame:
    keep = settings["keep"]
    noisy = settings["label_noise"] > 0
    seq = settings["sequences"] > 0
    blended = settings.get("blend", 0) > 0
    records = []
    for lab in plan.rows:
        r = {"path": lab["path"], "subject": lab["subject"]}
        if seq:
            r["video"] = lab.get("video", "")
            r["frame"] = lab.get("frame", -1)
        kept = lab["kept"]
        if "expr" in keep:
            r["expression"] = lab["expression"] if "expr" in kept else None
            if noisy:
                r["expression_true"] = lab["expression_true"]
                r["label_flipped"] = lab["label_flipped"]
        if "va" in keep:
            r["valence"] = round(lab["valence"], 4) if "va" in kept else np.nan
            r["arousal"] = round(lab["arousal"], 4) if "va" in kept else np.nan
        if "au" in keep:
            has = "au" in kept
            for k in SYNTH_AUS:
                r[f"AU{k}"] = int(lab["au"][k] >= PRESENCE_THRESHOLD) if has else -1
            for k in SYNTH_AUS:
                r[f"AU{k}_intensity"] = round(lab["au"][k], 3) if has else -1.0
        r["occluded"] = lab["occluded"]
        if blended:
            r["blend_with"] = lab.get("blend_with", "")
            r["blend_weight"] = round(lab.get("blend_weight", 1.0), 4)
        records.append(r)
    cols = label_columns(keep, label_noise=noisy, sequences=seq, blend=blended)
    df = pd.DataFrame.from_records(records, columns=cols)
    if seq:
        df["frame"] = df["frame"].astype("int64")
    return df


# --------------------------------------------------------------------------- public API


def sample_batch(
    n: int,
    seed: int = 0,
    size: int = 112,
    *,
    subjects=None,
    expressions=None,
    label_noise: float = 0.0,
    drop_labels: float = 0.0,
    keep=_TASKS,
    sequences: int = 0,
    frames: int = 0,
    frame_noise: float = 0.0,
    blend: float = 0.0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Render a synthetic set in memory (nothing touches disk).

    Takes the arguments of :func:`generate` and returns the same images and labels it
    would write.

    Returns
    -------
    images : numpy.ndarray
        ``(N, size, size, 3)`` uint8 RGB.
    labels : pandas.DataFrame
        The manifest rows (``path`` names where :func:`generate` would write each image).
    """
    plan, settings = _plan(
        n, size=size, seed=seed, subjects=subjects, label_noise=label_noise, drop_labels=drop_labels,
        keep=keep, sequences=sequences, frames=frames, expressions=expressions, frame_noise=frame_noise,
        blend=blend,
    )
    images = np.empty((len(plan.params), settings["size"], settings["size"], 3), dtype=np.uint8)
    for i, p in enumerate(plan.params):
        images[i] = render_face(p)
    return images, _frame(plan, settings)


def sample_labels(
    n: int,
    seed: int = 0,
    *,
    subjects=None,
    expressions=None,
    label_noise: float = 0.0,
    drop_labels: float = 0.0,
    keep=_TASKS,
    sequences: int = 0,
    frames: int = 0,
    frame_noise: float = 0.0,
    blend: float = 0.0,
) -> pd.DataFrame:
    """The labels :func:`sample_batch` / :func:`generate` would produce, without drawing.

    Labels do not depend on the image size, so this is the fast way to get label
    statistics of a synthetic set (about 2000 rows per second).
    """
    plan, settings = _plan(
        n, size=32, seed=seed, subjects=subjects, label_noise=label_noise, drop_labels=drop_labels,
        keep=keep, sequences=sequences, frames=frames, expressions=expressions, frame_noise=frame_noise,
        blend=blend,
    )
    return _frame(plan, settings)


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"output directory {out} is not empty; choose a new directory or pass --overwrite "
                "(overwrite=True) to replace a previous synthetic set there"
            )
        # remove only what a previous synth run wrote, never other files
        old = out / "labels.csv"
        if old.is_file():
            try:
                paths = pd.read_csv(old, usecols=["path"])["path"].astype(str)
            except (ValueError, pd.errors.ParserError):
                paths = []
            for rel in paths:
                f = (out / rel).resolve()
                if out.resolve() in f.parents and f.is_file():
                    f.unlink()
            old.unlink()
        for name in ("synth.json",):
            if (out / name).is_file():
                (out / name).unlink()
        for d in sorted(out.iterdir()):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out_dir,
    n: int,
    *,
    size: int = 112,
    seed: int = 0,
    subjects: int | None = None,
    label_noise: float = 0.0,
    drop_labels: float = 0.0,
    keep: Sequence[str] | str = _TASKS,
    sequences: int = 0,
    frames: int = 0,
    expressions: Iterable[str] | str | None = None,
    image_format: str = "jpg",
    overwrite: bool = False,
    frame_noise: float = 0.0,
    blend: float = 0.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Write a synthetic face dataset: images plus ``labels.csv`` (manifest format).

    Parameters
    ----------
    out_dir : str or Path
        Output directory; created if needed. Must be empty unless ``overwrite``.
    n : int
        Number of still images (may be 0 when ``sequences`` > 0).
    size : int
        Image side in pixels (>= 32).
    seed : int
        Seed of everything; the same arguments give byte-identical files.
    subjects : int, optional
        Number of identities (``s<seed>-<k>``). Default: one per ten still images, or
        one per sequence for a sequences-only set.
    label_noise : float
        Fraction of expression labels replaced by a different random class; the truth is
        kept in ``expression_true`` and ``label_flipped`` marks the flipped rows.
    drop_labels : float
        Probability that each kept descriptor (expr, va, au) of a sample is dropped
        (expression empty, VA NaN, AU presence and intensity -1); every sample keeps at
        least one descriptor.
    keep : sequence of str or str
        Descriptors to write, a subset of ``("expr", "va", "au")`` (or ``"expr,va"``).
    sequences, frames : int
        Number of video-like clips and frames per clip (images ``<video>/<frame:05d>``,
        columns ``video`` and ``frame``; still images in the same set have an empty
        ``video`` and frame -1).
    expressions : iterable of str, optional
        Classes to draw (canonical names or aliases); default all eight.
    image_format : {"jpg", "png"}
        JPEG quality 95 (default, fast) or lossless PNG.
    overwrite : bool
        Replace a previous synthetic set in ``out_dir`` (only files listed in its
        ``labels.csv`` are removed).
    frame_noise : float
        Strength ``S >= 0`` of independent per-frame nuisances in clips (brightness,
        rotation, shift, scale, blur, pixel noise; see the module docstring). Labels do not
        change; 0 (default) gives the clips made without it, byte for byte.
    blend : float
        Probability that a still face of a basic expression is a blend with a second one
        (label: the class of larger weight; VA: the same blend; columns ``blend_with``,
        ``blend_weight``). 0 (default) draws nothing extra.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        The manifest as written to ``out_dir/labels.csv``.

    Raises
    ------
    ConfigError
        For out-of-range arguments or a non-empty output directory.
    """
    plan, settings = _plan(
        n, size=size, seed=seed, subjects=subjects, label_noise=label_noise, drop_labels=drop_labels,
        keep=keep, sequences=sequences, frames=frames, expressions=expressions, image_format=image_format,
        frame_noise=frame_noise, blend=blend,
    )
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    if settings["image_format"] == "png":
        flags = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    else:
        flags = [cv2.IMWRITE_JPEG_QUALITY, 95]
    made = set()
    items = track(zip(plan.params, plan.rows), description=f"synth -> {out}", total=len(plan.params),
                  disable=not progress)
    for p, lab in items:
        path = out / lab["path"]
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        ok, buf = cv2.imencode("." + settings["image_format"], render_face(p)[:, :, ::-1], flags)
        if not ok:  # pragma: no cover - only on a broken OpenCV build
            raise ConfigError(f"OpenCV could not encode {path}")
        buf.tofile(str(path))
    df = _frame(plan, settings)
    df.to_csv(out / "labels.csv", index=False)
    (out / "synth.json").write_text(json.dumps(settings, indent=2) + "\n")
    return df
