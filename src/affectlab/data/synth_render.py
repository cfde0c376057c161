"""Drawing of one synthetic face from its parameters (no randomness of its own).

:func:`render_face` turns a :class:`FaceParams` -- identity, action-unit intensities,
pose, lighting, background, occlusion, noise -- into an ``(H, W, 3)`` uint8 RGB image
with OpenCV primitives (anti-aliased polygons with 4 bits of sub-pixel precision), so a
112 px face takes about a millisecond. The sampling of those parameters, the labels and
the files live in :mod:`affectlab.data.synth`.

Geometry is computed in a canonical face frame -- origin at the face centre, y down, one
unit = the image side -- and mapped to pixels by the pose (a similarity transform), so
circles stay circles and ellipses only gain the pose angle. Each action unit moves the
features a fixed amount per intensity step and darkens its wrinkles in proportion, so
every label is a continuous, visible function of the pixels:

======  ==========================================================================
AU      what it draws
======  ==========================================================================
AU1     inner brow up, central forehead wrinkles
AU2     outer brow up and arched, lateral forehead wrinkles
AU4     brows down and together, vertical furrows between the brows
AU5     upper lid up (white above the iris)
AU6     cheeks up, lower lid pushed up, crow's feet, rosier cheeks
AU7     lids tightened (lower lid straight and raised, upper lid a little down)
AU9     wrinkles across the nose bridge, nostrils up and wider, upper lip up
AU12    lip corners up and out, deeper nasolabial folds (per side: contempt)
AU14    lip corners pulled in, dimples (per side: contempt)
AU15    lip corners down, marionette lines
AU16    lower lip down and everted, lower teeth visible
AU17    lower lip pushed up, chin boss line
AU20    lips stretched sideways and flattened, neck cords
AU23    lips thinned and narrowed
AU25    lips part
AU26    jaw drops: mouth opens, chin and face lengthen
======  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from affectlab.errors import ConfigError

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

#: Action units the renderer draws.
RENDERED_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17, 20, 23, 25, 26)


@dataclass
class FaceParams:
    """Everything :func:`render_face` needs; identical params give identical pixels.

    Attributes
    ----------
    identity : dict
        Face shape and colours (see :func:`affectlab.data.synth.sample_identity`).
        Lengths are fractions of the image side; colours are RGB 0-255.
    au : dict of int -> float
        AU intensities 0-5 by AU number; absent AUs are 0.
    au_side : dict of int -> (float, float)
        Optional per-side multipliers (image-left, image-right) of an AU's intensity;
        used for unilateral actions (contempt) and natural asymmetry. Default (1, 1).
    size : int
        Output side in pixels.
    angle, scale, dx, dy : float
        In-plane rotation (degrees), scale, and shift (fractions of the side).
    light_angle, light_amp, brightness : float
        Direction (radians) and strength of a linear lighting gradient, overall gain.
    tint : tuple of 3 float
        Per-channel colour gain (white balance).
    background : dict
        ``colors`` (two RGB), ``angle`` of their gradient, ``texture`` ("none", "blobs",
        "stripes"), ``texture_amp``, ``period``, ``seed`` (of the blobs; default ``seed``).
    occlusion : dict or None
        ``kind`` ("rect" or "ellipse"), ``center`` (x, y) and ``axes`` (half sizes) in the
        face frame, ``angle`` (degrees), ``color`` RGB.
    blur : float
        Gaussian blur sigma in pixels (0 = none).
    noise : float
        Standard deviation of additive Gaussian pixel noise (0-255 scale).
    seed : int
        Seed of the background texture and pixel noise.
    """

    identity: dict
    au: dict = field(default_factory=dict)
    au_side: dict = field(default_factory=dict)
    size: int = 112
    angle: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    light_angle: float = 0.0
    light_amp: float = 0.0
    brightness: float = 1.0
    tint: tuple = (1.0, 1.0, 1.0)
    background: dict = field(default_factory=lambda: {"colors": ((200, 200, 200), (150, 150, 150))})
    occlusion: dict | None = None
    blur: float = 0.0
    noise: float = 0.0
    seed: int = 0


class _Canvas:
    """An image, the pose transform from the face frame to pixels, and a draw queue.

    Primitives are queued and drawn by :meth:`flush`, which maps the points of all of
    them to pixels in one matrix product: per-primitive transforms cost more than the
    drawing itself at these sizes.
    """

    def __init__(self, img: np.ndarray, size: int, angle: float, scale: float, dx: float, dy: float):
        self.img = img
        self.size = size
        self.angle = angle
        theta = np.deg2rad(angle)
        self.k = size * scale
        c, s = np.cos(theta), np.sin(theta)
        # rows are images of the x and y unit vectors; fixed-point pixels * 2**shift, and
        # +0.5 so that the int cast rounds
        self.A = self.k * _ONE * np.array([[c, s], [-s, c]])
        self.b = np.array([size * (0.5 + dx), size * (0.5 + dy)]) * _ONE + 0.5
        self.thin = max(1, int(round(size / 110)))
        self._pts: list[np.ndarray] = []
        self._ops: list[tuple] = []

    def _add(self, pts) -> int:
        self._pts.append(pts)
        return len(pts)

    def fill(self, pts, color) -> None:
        self._ops.append(("fill", self._add(pts), _col(color), None))

    def line(self, pts, color, thickness: int | None = None) -> None:
        self._ops.append(("line", self._add(pts), _col(color), thickness or self.thin))

    def ellipse(self, center, axes, color, angle: float = 0.0) -> None:
        ax = (max(1, int(axes[0] * self.k * _ONE + 0.5)), max(1, int(axes[1] * self.k * _ONE + 0.5)))
        # the pose rotates counter-clockwise on screen; cv2 angles run clockwise
        self._ops.append(("ellipse", self._add(np.reshape(center, (1, 2))), _col(color), (ax, angle - self.angle)))

    def flush(self) -> None:
        """Draw the queued primitives in order."""
        if not self._ops:
            return
        allp = (np.concatenate(self._pts) @ self.A + self.b).astype(np.int32)
        img, i = self.img, 0
        for kind, n, color, extra in self._ops:
            q = allp[i : i + n]
            i += n
            if kind == "fill":
                cv2.fillPoly(img, [q], color, _AA, _SHIFT)
            elif kind == "line":
                cv2.polylines(img, [q], False, color, extra, _AA, _SHIFT)
            else:
                cv2.ellipse(img, (int(q[0, 0]), int(q[0, 1])), extra[0], extra[1], 0, 360, color, -1, _AA, _SHIFT)
        self._pts, self._ops = [], []


def _col(c) -> tuple:
    # OpenCV saturates colour scalars to the image depth, so no clipping is needed
    return tuple(c.tolist()) if isinstance(c, np.ndarray) else tuple(c)


def _xy(x, y) -> np.ndarray:
    """Points (N, 2) from x and y coordinates (a scalar broadcasts)."""
    n = np.size(x) if np.ndim(x) else np.size(y)
    out = np.empty((n, 2))
    out[:, 0] = x
    out[:, 1] = y
    return out


@lru_cache(maxsize=64)
def _unit(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def _lin(a: float, b: float, n: int) -> np.ndarray:
    """``np.linspace(a, b, n)`` from a cached grid (linspace itself is slow per call)."""
    return a + (b - a) * _unit(n)


def _cat(*parts) -> np.ndarray:
    """Points of several polylines joined into one polygon."""
    return np.concatenate([np.asarray(q, dtype=np.float64).reshape(-1, 2) for q in parts])


def _mix(a, b, t: float) -> np.ndarray:
    """Colour a blended toward b by t in [0, 1]."""
    t = min(1.0, max(0.0, float(t)))
    return np.asarray(a, dtype=np.float64) * (1 - t) + np.asarray(b, dtype=np.float64) * t


def _shade(skin, depth: float) -> np.ndarray:
    """A wrinkle/fold colour: skin darkened by ``depth`` in [0, 1]."""
    return np.asarray(skin, dtype=np.float64) * (1.0 - 0.6 * min(1.0, max(0.0, depth)))


@lru_cache(maxsize=16)
def _lagrange_basis(t1: float, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack([(t - t1) * (t - 1) / t1, t * (t - 1) / (t1 * (t1 - 1)), t * (t - t1) / (1 - t1)], axis=1)


def _lagrange3(p0, p1, p2, t1: float, n: int) -> np.ndarray:
    """n points of the quadratic through p0 (t=0), p1 (t=t1) and p2 (t=1)."""
    return _lagrange_basis(t1, n) @ np.array([p0, p1, p2], dtype=np.float64)


@lru_cache(maxsize=32)
def _arc(a0: float, a1: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of n angles from a0 to a1 (cached: the shapes reuse a few grids)."""
    th = np.linspace(a0, a1, n)
    return np.cos(th), np.sin(th)


def _clamp(a, lo, hi):
    """``np.clip`` without its dispatch overhead (it dominates on 20-element arrays)."""
    return np.minimum(np.maximum(a, lo), hi)


def _mirror(pts: np.ndarray, side: int) -> np.ndarray:
    """Features are built for the image-right side (x > 0); side -1 mirrors them."""
    if side > 0:
        return pts
    out = np.array(pts, dtype=np.float64, copy=True)
    out[..., 0] *= -1
    return out


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5] as a row and a column (float32)."""
    lin = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    return lin[None, :], lin[:, None]


def _background(p: FaceParams) -> np.ndarray:
    size = p.size
    bg = p.background
    c0 = np.asarray(bg["colors"][0], dtype=np.float32)
    c1 = np.asarray(bg["colors"][1], dtype=np.float32)
    a = float(bg.get("angle", 0.0))
    kind = bg.get("texture", "none")
    amp = np.float32(bg.get("texture_amp", 0.0))
    # the gradient is linear, so it is drawn on a coarse grid and resized: far cheaper
    # than evaluating it per pixel; the blob texture shares that coarse grid
    cells = max(2, int(bg.get("period", 6))) if kind == "blobs" else 4
    gx, gy = _grid(cells)
    t = np.clip(0.5 + np.float32(np.cos(a)) * gx + np.float32(np.sin(a)) * gy, 0, 1)
    low = c0 + t[..., None] * (c1 - c0)
    if kind == "blobs" and amp > 0:
        seed = int(bg.get("seed", p.seed))  # its own seed: clips keep one background
        o = (seed >> 8) % (_NOISE_SIDE - cells)
        low += amp * _noise_bank()[o : o + cells, (seed >> 3) % (_NOISE_SIDE - cells) :][:, :cells]
    interp = cv2.INTER_CUBIC if kind == "blobs" else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(low), (size, size), interpolation=interp)
    if kind == "stripes" and amp > 0:
        period = max(3.0, float(bg.get("period", 10)))
        gx, gy = _grid(size)
        freq = np.float32(2 * np.pi * size / period)
        stripe = np.sin(freq * (np.float32(np.cos(a + 1.0)) * gx + np.float32(np.sin(a + 1.0)) * gy))
        img += amp * stripe[..., None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def render_face(params: FaceParams) -> np.ndarray:
    """Draw one face.

    Parameters
    ----------
    params : FaceParams
        Identity, AU intensities, pose, lighting, background, occlusion and noise.

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 RGB image.

    Raises
    ------
    ConfigError
        If the size is below 32 px or an AU intensity is outside 0-5.
    """
    p = params
    if not isinstance(p, FaceParams):
        raise ConfigError(f"render_face expects FaceParams, got {type(p).__name__}")
    if int(p.size) < 32:
        raise ConfigError(f"image size must be at least 32 px, got {p.size}")
    for k, v in p.au.items():
        if not (0.0 <= float(v) <= 5.0):
            raise ConfigError(f"AU{k} intensity {v!r} is outside 0-5")
    cv = _Canvas(_background(p), int(p.size), p.angle, p.scale, p.dx, p.dy)
    _draw_face(cv, p)
    if p.occlusion:
        _draw_occlusion(cv, p.occlusion)
    cv.flush()
    return _finish(cv.img, p)


def _draw_face(cv: _Canvas, p: FaceParams) -> None:
    idn = p.identity
    au = {int(k): float(v) / 5.0 for k, v in p.au.items()}

    def n(k: int, side: int = 0) -> float:
        """Normalised intensity 0-1 of AU k, on one side (-1 image-left, +1 image-right)."""
        v = au.get(k, 0.0)
        if side == 0 or k not in p.au_side:
            return v
        mult = p.au_side[k][0 if side < 0 else 1]
        return v * float(mult)

    skin = np.asarray(idn["skin"], dtype=np.float64)
    hair = np.asarray(idn["hair"], dtype=np.float64)
    W, Hu, Hl = idn["face_w"], idn["face_h_up"], idn["face_h_low"]
    Hl = Hl + 0.055 * n(26) - 0.012 * n(17)  # jaw drop lengthens the face

    # hair behind the head, neck, ears
    if idn["hair_style"] == 2:
        c, sn = _arc(np.pi * 0.9, np.pi * 2.1, 40)
        back = _xy(1.18 * W * c, 1.12 * Hu * sn)
        back = _cat(back, [[1.2 * W, Hl * 0.9], [-1.2 * W, Hl * 0.9]])
        cv.fill(back, hair * 0.85)
    neck_w = W * idn["neck_w"]
    cv.fill(np.array([[-neck_w, 0.1], [neck_w, 0.1], [neck_w * 1.1, 0.7], [-neck_w * 1.1, 0.7]]), skin * 0.82)
    shirt = idn["shirt"]
    cv.fill(np.array([[-0.6, Hl + 0.08], [0.6, Hl + 0.08], [0.7, 0.7], [-0.7, 0.7]]), shirt)
    n20 = n(20)
    if n20 > 0.02:  # AU20 tenses the platysma: cords on the neck
        for side in (-1, 1):
            cv.line(_mirror(np.array([[neck_w * 0.35, Hl - 0.02], [neck_w * 0.8, Hl + 0.1]]), side),
                    _shade(skin * 0.82, 0.9 * n20), cv.thin + 1)
    for side in (-1, 1):
        cv.ellipse((side * W * 0.97, 0.0), (0.035, 0.06), skin * 0.9)

    # face outline: ellipse halves with a tapered jaw
    ct, st = _arc(0.0, 2 * np.pi * 71 / 72, 72)
    x = W * ct * (1 - idn["jaw_taper"] * np.maximum(st, 0) ** 2)
    y = np.where(st > 0, Hl, Hu) * st
    cv.fill(_xy(x, y), skin)

    ex, ey, ew = idn["eye_dx"], idn["eye_y"], idn["eye_w"]
    mouth_y, mw = idn["mouth_y"], idn["mouth_w"]
    nose_y, nose_w = idn["nose_y"], idn["nose_w"]

    # cheeks (AU6 raises and reddens them)
    for side in (-1, 1):
        n6 = n(6, side)
        c = _mirror(np.array([ex + 0.015, ey + 0.095 - 0.03 * n6]), side)
        cv.ellipse(c, (0.05, 0.03 + 0.006 * n6), _mix(skin, (215, 95, 95), 0.06 + 0.25 * n6))

    # forehead wrinkles: centre from AU1, sides from AU2
    brow_base = ey - idn["brow_gap"]
    for j in range(3):
        yj = brow_base - 0.045 - 0.016 * j
        n1 = n(1)
        if n1 > 0.02:
            xs = _lin(-0.06, 0.06, 9)
            cv.line(_xy(xs, yj - 0.02 * n1 + 0.008 * (xs / 0.06) ** 2), _shade(skin, 0.8 * n1))
        for side in (-1, 1):
            n2 = n(2, side)
            if n2 > 0.02:
                xs = _lin(ex - 0.02, ex + 0.07, 9)
                pts = _xy(xs, yj - 0.02 * n2 + 0.01 * ((xs - ex - 0.02) / 0.05) ** 2)
                cv.line(_mirror(pts, side), _shade(skin, 0.8 * n2))
    # glabellar furrows (AU4)
    n4 = n(4)
    if n4 > 0.02:
        for side in (-1, 1):
            cv.line(np.array([[side * 0.011, brow_base - 0.005], [side * 0.014, brow_base + 0.035]]),
                    _shade(skin, 0.9 * n4))

    for side in (-1, 1):
        _draw_eye(cv, p, idn, side, n, skin)
        _draw_brow(cv, idn, side, n, skin, hair)

    # nose: bridge, wings, nostrils; AU9 wrinkles it and lifts the nostrils
    n9 = n(9)
    ny = nose_y - 0.014 * n9
    nw = nose_w * (1 + 0.2 * n9)
    for side in (-1, 1):
        cv.line(_mirror(np.array([[0.018, ey + 0.02], [0.022, ny - 0.04], [nw * 0.55, ny - 0.01]]), side),
                _shade(skin, 0.25))
        cv.ellipse(_mirror(np.array([nw * 0.62, ny]), side), (nw * 0.42, 0.018), _shade(skin, 0.15))
    for side in (-1, 1):
        cv.ellipse(_mirror(np.array([nw * 0.33, ny + 0.01]), side), (0.011, 0.006), _shade(skin, 0.85), 10 * side)
    if n9 > 0.02:
        for j in range(3):
            yj = ey + 0.015 + 0.012 * j
            xs = _lin(-0.03, 0.03, 7)
            cv.line(_xy(xs, yj + 0.006 * (xs / 0.03) ** 2), _shade(skin, 0.9 * n9))

    _draw_mouth(cv, idn, n, skin, mouth_y, mw, nw, ny)

    # hair cap with its hairline
    if idn["hair_style"] in (1, 2):
        c, sn = _arc(np.pi + 0.12, 2 * np.pi - 0.12, 40)
        outer = _xy(1.06 * W * c, 1.08 * Hu * sn)
        hl = idn["hairline"]
        xs = _lin(outer[-1, 0], outer[0, 0], 24)
        temple = 0.3 * Hu * _clamp((np.abs(xs) / W - 0.7) / 0.35, 0, 1) ** 2
        line = -hl + idn["hair_dip"] * (1 - (xs / W) ** 2) + temple
        # keep the hairline inside the cap's outline so the polygon never folds over
        arc = -1.08 * Hu * np.sqrt(_clamp(1 - (xs / (1.06 * W)) ** 2, 0, 1))
        inner = _xy(xs, np.maximum(line, arc + 0.004))
        cv.fill(_cat(outer, inner), hair)


def _draw_eye(cv: _Canvas, p: FaceParams, idn: dict, side: int, n, skin) -> None:
    ex, ey, ew = idn["eye_dx"], idn["eye_y"], idn["eye_w"]
    r = idn["iris_r"]
    n5, n6, n7, n4 = n(5, side), n(6, side), n(7, side), n(4, side)
    hu = idn["lid_up"] * (1 + 1.0 * n5 - 0.3 * n7 - 0.15 * n6 - 0.15 * n4)
    hl = idn["lid_low"] * (1 - 0.55 * n7 - 0.45 * n6 + 0.15 * n5)
    hu, hl = max(hu, 0.15 * r), max(hl, 0.1 * r)
    xs = _lin(-ew, ew, 21)
    u = _clamp(1 - (xs / ew) ** 2, 0, 1)
    upper = -hu * u ** 0.75
    lower = hl * u ** (0.9 - 0.5 * n7)  # AU7 straightens the lower lid
    centre = np.array([ex, ey])

    def put(pts):
        return _mirror(pts + centre, side)

    sclera = _cat(_xy(xs, upper), _xy(xs[::-1], lower[::-1]))
    cv.fill(put(sclera), (238, 236, 230))

    # iris and pupil clipped to the lids: clamp the disc's y between the lid curves
    gaze = idn["gaze"] * ew
    c, sn = _arc(0.0, 2 * np.pi * 23 / 24, 24)
    for rad, col in ((r, idn["iris"]), (r * 0.45, (20, 15, 15))):
        cx = _clamp(gaze + rad * c, -ew, ew)
        cy = rad * sn + 0.1 * r
        uu = _clamp(1 - (cx / ew) ** 2, 0, 1)
        lo_y, hi_y = -hu * uu ** 0.75, hl * uu ** (0.9 - 0.5 * n7)
        cv.fill(put(_xy(cx, _clamp(cy, lo_y, hi_y))), col)

    lash = _shade(skin, 1.0) * 0.5
    cv.line(put(_xy(xs, upper)), lash, cv.thin + (1 if cv.size >= 96 else 0))
    cv.line(put(_xy(xs, lower)), _shade(skin, 0.45 + 0.4 * n7))
    # lid crease above the upper lid; AU5 pulls the lid up into the orbit
    crease = upper - 0.016 * (1 - 0.6 * n5) - 0.004
    cv.line(put(_xy(xs[3:-2], crease[3:-2])), _shade(skin, 0.3))
    # lower-lid bulge and crow's feet (AU6, AU7)
    bag = max(n6, 0.6 * n7)
    if bag > 0.02:
        cv.line(put(_xy(xs[4:-2] * 0.9, lower[4:-2] + 0.013)), _shade(skin, 0.7 * bag))
    if n6 > 0.02:
        o = np.array([ew + 0.01, 0.0])
        for a in (-0.45, 0.0, 0.45):
            d = np.array([np.cos(a), np.sin(a)]) * (0.012 + 0.018 * n6)
            cv.line(put(np.array([o, o + d])), _shade(skin, 0.85 * n6))


def _draw_brow(cv: _Canvas, idn: dict, side: int, n, skin, hair) -> None:
    ex, ey, ew = idn["eye_dx"], idn["eye_y"], idn["eye_w"]
    n1, n2, n4, n9 = n(1, side), n(2, side), n(4, side), n(9, side)
    base = ey - idn["brow_gap"]
    inner = (ex - ew * 1.15 - 0.016 * n4, base - 0.048 * n1 + 0.028 * n4 + 0.012 * n9)
    peak = (ex + 0.15 * ew, base - idn["brow_arch"] - 0.022 * n1 - 0.04 * n2 + 0.016 * n4 + 0.008 * n9)
    outer = (ex + ew * 1.3, base + 0.012 - 0.042 * n2 + 0.006 * n4)
    mid = _lagrange3(inner, peak, outer, 0.5, 12)
    t = _lin(0, 1, 12)
    half = idn["brow_thick"] * (1.0 - 0.55 * t) * (1 + 0.2 * n4) / 2
    poly = _cat(_xy(mid[:, 0], mid[:, 1] - half), _xy(mid[::-1, 0], mid[::-1, 1] + half[::-1]))
    cv.fill(_mirror(poly, side), _mix(hair * 0.8, skin, 0.15))


def _draw_mouth(cv: _Canvas, idn: dict, n, skin, mouth_y: float, mw: float, nw: float, ny: float) -> None:
    n9, n15, n16, n17, n20, n23, n25, n26 = (n(k) for k in (9, 15, 16, 17, 20, 23, 25, 26))
    corners = {}
    for side in (-1, 1):
        n12, n14 = n(12, side), n(14, side)
        cx = mw * (1 + 0.3 * n20 + 0.14 * n12 - 0.2 * n23 - 0.12 * n14)
        cy = mouth_y - 0.05 * n12 + 0.038 * n15 + 0.016 * n20 - 0.006 * n14 + 0.008 * n17 + 0.012 * n26
        corners[side] = (cx, cy)
    gap = 0.016 * n25 + 0.06 * n26
    lip_mid = mouth_y + 0.01 * n26
    iu = lip_mid - 0.25 * gap - 0.012 * n9
    il = lip_mid + 0.75 * gap + 0.022 * n16 - 0.014 * n17
    il = max(il, iu)
    thin = 1 - 0.6 * n23 - 0.15 * n20
    tu = idn["lip_up"] * thin
    tl = idn["lip_low"] * thin * (1 + 0.25 * n16 + 0.1 * n17)

    t = _lin(-1, 1, 25)
    (cxl, cyl), (cxr, cyr) = corners[-1], corners[1]
    x = np.where(t < 0, t * cxl, t * cxr)
    cy = cyl * (1 - t) / 2 + cyr * (1 + t) / 2
    c0 = (cyl + cyr) / 2
    bump = 1 - t ** 2
    e = max(0.25, 0.7 - 0.4 * n20)  # AU20 flattens the opening into a rectangle
    in_up = cy + (iu - c0) * bump ** e
    in_lo = cy + (il - c0) * bump ** e
    cupid = 1 - 0.3 * np.exp(-((t / 0.18) ** 2))
    out_up = in_up - tu * bump ** 0.5 * cupid
    out_lo = in_lo + tl * bump ** 0.5

    # nasolabial folds (AU12, AU6, AU9 deepen them), dimples (AU14), marionette lines (AU15)
    for side in (-1, 1):
        cx, cyc = corners[side]
        depth = 0.12 + 0.7 * max(n(12, side), 0.5 * n(6, side), 0.7 * n9)
        fold = _lagrange3((nw * 1.05, ny - 0.01), (cx * 0.95 + 0.012, (ny + cyc) / 2), (cx + 0.012, cyc + 0.015),
                          0.5, 8)
        cv.line(_mirror(fold, side), _shade(skin, depth))
        n14 = n(14, side)
        if n14 > 0.02:
            arc = np.array([[cx + 0.008, cyc - 0.012], [cx + 0.014, cyc], [cx + 0.008, cyc + 0.012]])
            cv.line(_mirror(arc, side), _shade(skin, 0.95 * n14), cv.thin + 1)
        if n15 > 0.02:
            cv.line(_mirror(np.array([[cx + 0.004, cyc + 0.006], [cx + 0.012, cyc + 0.045]]), side),
                    _shade(skin, 0.8 * n15))
    # chin boss (AU17) and the mentolabial sulcus
    chin_y = il + tl + 0.03 - 0.01 * n17
    xs = _lin(-mw * 0.55, mw * 0.55, 9)
    cv.line(_xy(xs, chin_y - 0.01 * (1 - (xs / (mw * 0.55)) ** 2)), _shade(skin, 0.2 + 0.6 * n17))

    if il - iu > 0.002:
        cv.fill(_cat(_xy(x, in_up), _xy(x[::-1], in_lo[::-1])), (70, 20, 25))
        # upper teeth, and lower teeth when AU16 pulls the lower lip down
        span = np.abs(t) < 0.7
        teeth_h = min(0.45 * (il - iu), 0.02)
        top = _xy(x[span], in_up[span])
        bottom = _xy(x[span][::-1], np.minimum(in_up[span] + teeth_h * bump[span] ** 0.3, in_lo[span])[::-1])
        cv.fill(_cat(top, bottom), (236, 232, 218))
        low_h = min(0.6 * (il - iu), 0.02) * min(1.0, 3 * n16)
        if low_h > 0.001:
            bottom = _xy(x[span][::-1], in_lo[span][::-1])
            top = _xy(x[span], np.maximum(in_lo[span] - low_h * bump[span] ** 0.3, in_up[span]))
            cv.fill(_cat(top, bottom), (225, 220, 205))
    lip = np.asarray(idn["lip"], dtype=np.float64)
    cv.fill(_cat(_xy(x, out_up), _xy(x[::-1], in_up[::-1])), lip)
    cv.fill(_cat(_xy(x, in_lo), _xy(x[::-1], out_lo[::-1])), lip * 1.06)
    cv.line(_xy(x, in_up), lip * 0.55)


def _draw_occlusion(cv: _Canvas, occ: dict) -> None:
    color = occ["color"]
    cx, cy = occ["center"]
    ax, ay = occ["axes"]
    if occ.get("kind") == "ellipse":
        cv.ellipse((cx, cy), (ax, ay), color, occ.get("angle", 0.0))
    else:
        a = np.deg2rad(occ.get("angle", 0.0))
        r = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        box = np.array([[-ax, -ay], [ax, -ay], [ax, ay], [-ax, ay]]) @ r + (cx, cy)
        cv.fill(box, color)


_NOISE_SIDE = 512


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed field of unit Gaussian noise; each image reads a random window of it.

    Drawing fresh Gaussian noise for every pixel costs more than the whole face, and a
    window at a random offset (with random flips) is as good for augmentation.
    """
    rng = np.random.default_rng(20240611)
    return rng.standard_normal((_NOISE_SIDE, _NOISE_SIDE, 3), dtype=np.float32)


def _finish(img: np.ndarray, p: FaceParams) -> np.ndarray:
    """Blur, lighting gradient, white balance and pixel noise, in one float pass."""
    if p.blur > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), float(p.blur))
    size = img.shape[0]
    gx, gy = _grid(size)
    la = float(p.light_angle)
    light = np.float32(p.brightness) * (
        1 + np.float32(p.light_amp) * (np.float32(np.cos(la)) * gx + np.float32(np.sin(la)) * gy)
    )
    gain = light[..., None] * np.asarray(p.tint, dtype=np.float32)
    out = img.astype(np.float32)
    out *= gain
    if p.noise > 0:
        bank = _noise_bank()
        reps = -(-size // _NOISE_SIDE)
        if reps > 1:  # larger than the bank: tile it
            bank = np.tile(bank, (reps, reps, 1))
        side = bank.shape[0]
        oy, ox = (p.seed >> 4) % (side - size + 1), (p.seed >> 14) % (side - size + 1)
        win = bank[oy : oy + size, ox : ox + size]
        if p.seed & 1:
            win = win[::-1]
        if p.seed & 2:
            win = win[:, ::-1]
        out += win * np.float32(p.noise)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
