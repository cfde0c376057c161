"""FACS action units from MediaPipe's blendshapes and landmark geometry.

Each AU is a fixed *score* — a blendshape whose ARKit definition describes the AU's
appearance change, or a landmark distance where no blendshape does — turned into a
probability by a logistic calibration fitted on **neutral faces of another data set**
(``facial_expressions``, the faces labelled neutral; ``scripts/calibrate_au.py``): the
probability is 0.5 at the score's 95th percentile over neutral faces (so at most 5 % of
neutral faces are called active) and ``sigmoid(-4)`` = 0.018 at their median. The
threshold for "present" is therefore ``AU_THRESHOLD`` = 0.5. Nothing here is fitted on
CK+, which serves only to measure it (``benchmarks/au_ckplus.py``, table in
``docs/perception.md``).

The mapping, and why
--------------------
=====  ==========================================  ==============================================
AU     score                                       why
=====  ==========================================  ==============================================
AU1    browInnerUp                                 inner brow raiser: the inner brows go up
AU2    mean browOuterUpLeft/Right                  outer brow raiser
AU4    mean browDownLeft/Right                     brow lowerer
AU5    mean eyeWideLeft/Right                      upper lid raiser: the eye opens wide
AU6    mean of cheekSquint and eyeSquint (L/R)     cheek raiser: cheeks up, the eye narrows from below
AU7    mean eyeSquintLeft/Right                    lid tightener: the lids narrow the eye
AU9    geometry: alae and upper lip raised          nose wrinkler pulls the nasal alae and the
       towards the inner eye corners               upper lip up; ``noseSneer`` comes out
                                                   *inverted* on CK+ (AUC 0.20) and is not used
AU12   mean mouthSmileLeft/Right                   lip corner puller
AU15   mean mouthFrownLeft/Right                   lip corner depressor
AU16   mean mouthLowerDownLeft/Right               lower lip depressor
AU17   mouthShrugLower                             chin raiser pushes the lower lip up
AU20   mean mouthStretchLeft/Right                 lip stretcher: corners pulled sideways
AU23   mean mouthRollLower/Upper                   lip tightener: the red of the lips narrows
AU25   geometry: inner-lip gap / inter-ocular      lips part
AU27   jawOpen                                     mouth stretch: jaw pulled wide open
=====  ==========================================  ==============================================

Not reported because their scores did not reach ROC-AUC 0.7 on CK+ (see the docs table):
AU10 (mouthUpperUp), AU14 (mouthDimple), AU24 (mouthPress), AU26 (jawOpen cannot tell a
jaw drop from AU27's stretch).
"""

from __future__ import annotations

import numpy as np

from affectlab.perception.landmarks import BLENDSHAPE_NAMES

#: Probability at and above which an AU counts as present.
AU_THRESHOLD = 0.5

#: AU -> blendshapes averaged into its score (AU9 and AU25 are geometric, see ``_geometry``).
BLENDSHAPE_AUS: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),
    "AU4": ("browDownLeft", "browDownRight"),
    "AU5": ("eyeWideLeft", "eyeWideRight"),
    "AU6": ("cheekSquintLeft", "cheekSquintRight", "eyeSquintLeft", "eyeSquintRight"),
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),
    "AU16": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "AU17": ("mouthShrugLower",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),
    "AU23": ("mouthRollLower", "mouthRollUpper"),
    "AU27": ("jawOpen",),
}
GEOMETRIC_AUS = ("AU9", "AU25")

#: The AUs this module reports, in numeric order.
AUS: tuple[str, ...] = tuple(sorted((*BLENDSHAPE_AUS, *GEOMETRIC_AUS), key=lambda a: int(a[2:])))

#: Per AU: (median, 95th percentile) of the score over neutral faces of facial_expressions
#: (written by ``scripts/calibrate_au.py``; not CK+).
#: 1966 faces of a 2000-face sample (seed 0).
CALIBRATION: dict[str, tuple[float, float]] = {
    "AU1": (0.0063467, 0.53101),
    "AU2": (0.021183, 0.41782),
    "AU4": (0.11847, 0.68031),
    "AU5": (0.0071546, 0.048364),
    "AU6": (0.18569, 0.34304),
    "AU7": (0.37139, 0.68608),
    "AU9": (-0.58415, -0.48297),
    "AU12": (0.0011762, 0.28439),
    "AU15": (0.00094809, 0.058442),
    "AU16": (0.0031333, 0.21389),
    "AU17": (0.0059679, 0.31017),
    "AU20": (0.0038742, 0.099551),
    "AU23": (0.031381, 0.2823),
    "AU25": (0.046562, 0.17002),
    "AU27": (0.025219, 0.24145),
}


def _aligned(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmark ``x, y`` rotated so the eye line is horizontal, in inter-ocular units."""
    lm = landmarks[..., :2]
    e0, e1 = lm[:, 33], lm[:, 263]
    iod = np.linalg.norm(e1 - e0, axis=1)
    ang = np.arctan2(e1[:, 1] - e0[:, 1], e1[:, 0] - e0[:, 0])
    c, s = np.cos(-ang)[:, None], np.sin(-ang)[:, None]
    p = lm - lm[:, 168:169]  # nose root as origin
    x = (c * p[..., 0] - s * p[..., 1]) / iod[:, None]
    y = (s * p[..., 0] + c * p[..., 1]) / iod[:, None]
    return x, y


def _geometry(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    x, y = _aligned(landmarks)
    inner_eyes = (y[:, 133] + y[:, 362]) / 2
    # AU9: nasal alae (64, 294) and upper-lip midpoint (0) below the inner eye corners;
    # the wrinkler shortens both distances, so the score is their negated mean
    au9 = -(((y[:, 64] + y[:, 294]) / 2 - inner_eyes) + (y[:, 0] - inner_eyes)) / 2
    # AU25: gap between the inner lip midpoints (13 upper, 14 lower)
    au25 = np.hypot(x[:, 14] - x[:, 13], y[:, 14] - y[:, 13])
    return {"AU9": au9, "AU25": au25}


def au_scores(blendshapes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Uncalibrated scores ``[N, len(AUS)]`` (NaN for faces without landmarks)."""
    bs = np.asarray(blendshapes, dtype=np.float64).reshape(-1, len(BLENDSHAPE_NAMES))
    lm = np.asarray(landmarks, dtype=np.float64).reshape(len(bs), -1, 3)
    geo = _geometry(lm) if len(bs) else {a: np.zeros(0) for a in GEOMETRIC_AUS}
    cols = []
    for au in AUS:
        if au in BLENDSHAPE_AUS:
            idx = [BLENDSHAPE_NAMES.index(n) for n in BLENDSHAPE_AUS[au]]
            cols.append(bs[:, idx].mean(axis=1))
        else:
            cols.append(geo[au])
    return np.stack(cols, axis=1) if cols else np.zeros((len(bs), 0))


def au_probabilities(blendshapes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """AU probabilities ``[N, len(AUS)]`` in :data:`AUS` order; present if >= :data:`AU_THRESHOLD`."""
    scores = au_scores(blendshapes, landmarks)
    med = np.array([CALIBRATION[a][0] for a in AUS])
    q95 = np.array([CALIBRATION[a][1] for a in AUS])
    z = 4.0 * (scores - q95) / np.maximum(q95 - med, 1e-6)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
