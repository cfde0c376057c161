"""Annotated video: boxes, top expression, a small circumplex with the VA trail, top AUs.

Frames are drawn with OpenCV and encoded with PyAV (H.264 through libx264 when the
FFmpeg build has it, else MPEG-4 part 2), one frame at a time, so memory stays flat.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from affectlab.analyze.table import CIRCUMPLEX_POSITIONS

# distinct colours (RGB) for face ids
_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def pick_codec() -> str:
    """``libx264`` when this FFmpeg build can encode H.264, else ``mpeg4``."""
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different errors per version
            continue
    return "mpeg4"


class VideoWriter:
    """Encode RGB frames to a video file with PyAV.

    Parameters
    ----------
    path : path-like
        Output file (``.mp4``, ``.mkv``, ``.avi`` ...).
    fps : float
        Frame rate.
    width, height : int
        Frame size; odd sizes are cropped by one pixel (4:2:0 chroma needs even sizes).
    codec : str, optional
        Encoder name; default :func:`pick_codec`.
    """

    def __init__(self, path, fps: float, width: int, height: int, codec: str | None = None):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = int(width) // 2 * 2, int(height) // 2 * 2
        self.codec = codec or pick_codec()
        self._container = av.open(str(self.path), "w")
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self._stream = self._container.add_stream(self.codec, rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        if self.codec in ("libx264", "h264"):
            self._stream.options = {"preset": "veryfast", "crf": "23"}
        else:
            self._stream.bit_rate = 2_000_000
        self.frames = 0
        self._closed = False

    def write(self, image: np.ndarray) -> None:
        import av

        img = np.ascontiguousarray(image[: self.height, : self.width])
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()


def check_video_out(path) -> Path:
    """Fail now, before any frame is analysed, if an annotated video cannot be written at ``path``.

    Encodes two tiny frames into a hidden file of the same suffix next to ``path`` and
    removes it: an extension whose container does not take this build's encoder
    (``.webm``, ``.gif``, a typo) or an unwritable folder is found before the run, not
    after the first batch of every video.

    Raises
    ------
    ConfigError
        Naming the file, what failed and the suffixes that work.
    """
    from affectlab.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--video-out {path} is a folder; give a file name such as {path / 'annotated.mp4'}")
    probe = path.with_name(f".{path.stem}.affectlab-check{path.suffix}")
    try:
        writer = VideoWriter(probe, 25.0, 16, 16)
        try:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            writer.write(np.zeros((16, 16, 3), np.uint8))
        finally:
            writer.close()
    except Exception as exc:  # noqa: BLE001 - any failure: the user's file would fail the same way
        raise ConfigError(
            f"--video-out {path}: cannot write a video there ({type(exc).__name__}: {exc}); "
            "use a writable folder and .mp4, .mkv, .mov or .avi"
        ) from None
    finally:
        probe.unlink(missing_ok=True)
    return path


#: label style: light text on a near-black filled box (contrast ratio about 17:1 whatever the video)
LABEL_BG = (18, 18, 18)
LABEL_FG = (245, 245, 245)
#: frames smaller than this (shorter side, pixels) are enlarged before drawing, so labels stay readable
MIN_DRAW_SIDE = 360


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class Annotator:
    """Draws one video's predictions on its frames; keeps a VA trail per face.

    Sizes follow the frame: box lines and text grow with its shorter side, and a frame
    shorter than :data:`MIN_DRAW_SIDE` pixels is enlarged (by a whole factor) before
    drawing, so a 64-pixel video still gets labels one can read. Labels are light text on
    a dark filled box with a stripe of the face's colour. The valence/arousal widget sits
    in a corner that no face covers; when the faces fill the first frame (faces cropped
    beforehand, ``--detector none``), the video gets a side panel for it instead.

    Attributes
    ----------
    regions : dict
        What the last :meth:`draw` placed, as ``(x0, y0, x1, y1)`` in output pixels:
        ``faces``, ``labels`` (text boxes) and ``widget`` (or ``None``).
    """

    def __init__(self, expressions=(), aus=(), va: bool = False, trail: int = 45, top_aus: int = 3):
        self.expressions = list(expressions)
        self.aus = list(aus)
        self.va = va
        self.top_aus = top_aus
        self._trails: dict[int, deque] = {}
        self._trail_len = trail
        self._layout = None
        self.regions: dict = {"faces": [], "labels": [], "widget": None}

    # -- layout ------------------------------------------------------------------------
    def prepare(self, height: int, width: int, rows: pd.DataFrame | None = None) -> tuple[int, int]:
        """Fix the layout of this video from its first frame; returns the output (height, width)."""
        k = max(1, min(8, int(np.ceil(MIN_DRAW_SIDE / max(1, min(height, width))))))
        h, w = height * k, width * k
        side = min(h, w)
        radius = max(28, int(side * 0.12))
        pad = max(6, side // 60)
        panel = 0
        if self.va:
            faces = self._face_rects(rows, k) if rows is not None else []
            size = 2 * radius + 2 * pad
            if size * 2 > min(h, w) or faces and all(any(_overlaps(c, f) for f in faces)
                                                     for c in self._corners(h, w, size)):
                panel = size
        font = max(0.45, side / 720.0 * 0.8)
        self._layout = {"k": k, "h": h, "w": w, "panel": panel, "radius": radius, "pad": pad, "font": font,
                        "text": max(1, int(round(font * 1.6))), "box": max(2, int(round(side / 240.0)))}
        return h, w + panel

    @staticmethod
    def _corners(h: int, w: int, size: int):
        # preference order: bottom-right, bottom-left, top-right, top-left
        return [(w - size, h - size, w, h), (0, h - size, size, h), (w - size, 0, w, size), (0, 0, size, size)]

    @staticmethod
    def _face_rects(rows: pd.DataFrame, k: int) -> list[tuple[int, int, int, int]]:
        boxes = rows.loc[rows["face"] >= 0, ["x", "y", "w", "h"]].to_numpy(dtype=np.int64)
        return [(int(x) * k, int(y) * k, (int(x) + int(w)) * k, (int(y) + int(h)) * k) for x, y, w, h in boxes]

    # -- drawing -----------------------------------------------------------------------
    def draw(self, image: np.ndarray, rows: pd.DataFrame | None) -> np.ndarray:
        """The frame with the rows of that frame drawn on it (``face >= 0`` rows carry boxes),
        enlarged and with a side panel as :meth:`prepare` decided."""
        import cv2

        if self._layout is None:
            self.prepare(*image.shape[:2], rows)
        L = self._layout
        k = L["k"]
        out = cv2.resize(image, (L["w"], L["h"]), interpolation=cv2.INTER_LINEAR) if k > 1 else image.copy()
        if L["panel"]:
            out = np.concatenate([out, np.full((L["h"], L["panel"], 3), 32, np.uint8)], axis=1)
        out = np.ascontiguousarray(out)
        faces = rows[rows["face"] >= 0] if rows is not None else rows
        self.regions = {"faces": self._face_rects(rows, k) if rows is not None else [], "labels": [], "widget": None}
        if faces is not None:
            # records, not itertuples: with the 478 landmark columns a row has too many fields for a namedtuple
            for r, rect in zip(faces.to_dict("records"), self.regions["faces"]):
                self._draw_face(out, r, rect)
        if self.va:
            visible = set(faces["face"].astype(int).tolist()) if faces is not None else set()
            self._draw_circumplex(out, visible)
        return out

    def _draw_face(self, out: np.ndarray, r, rect) -> None:
        import cv2

        L = self._layout
        face = int(r["face"])
        color = _COLORS[face % len(_COLORS)]
        x0, y0, x1, y1 = rect
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 0), L["box"] + 2)  # dark rim: visible on light scenes
        cv2.rectangle(out, (x0, y0), (x1, y1), color, L["box"])
        label = f"#{face}"
        expression = r.get("expression")
        if self.expressions and isinstance(expression, str):
            label += f" {expression} {r[f'expr_{expression}']:.2f}"
        valence = r.get("valence")
        if self.va and valence is not None and np.isfinite(valence):
            trail = self._trails.setdefault(face, deque(maxlen=self._trail_len))
            trail.append((float(valence), float(r["arousal"])))
        lines = [label]
        if self.aus:
            vals = np.array([r.get(a, np.nan) for a in self.aus], dtype=float)
            if np.isfinite(vals).any():
                order = np.argsort(-np.nan_to_num(vals, nan=-1))[: self.top_aus]
                lines.append("  ".join(f"{self.aus[j]} {vals[j]:.2f}" for j in order))
        _, th = self._text_size("Ag")
        step = th + 2 * max(3, th // 3)
        # the expression above the box (inside its top when there is no room), the AUs below it
        # (inside its bottom when there is no room)
        y = y0 - step if y0 - step >= 0 else y0
        self.regions["labels"].append(self._label(out, lines[0], x0, y, color))
        y_au = y1 + 1
        for line in lines[1:]:
            if y_au + step > out.shape[0]:
                y_au = max(y + step, y1 - step * (len(lines) - 1))
            self.regions["labels"].append(self._label(out, line, x0, y_au, color))
            y_au += step

    def _text_size(self, text: str) -> tuple[int, int]:
        import cv2

        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self._layout["font"], self._layout["text"])
        return tw, th

    def _label(self, out: np.ndarray, text: str, x: int, y: int, color) -> tuple[int, int, int, int]:
        """A filled dark box at (x, y) (its top-left) with light text and a colour stripe."""
        import cv2

        tw, th = self._text_size(text)
        m = max(3, th // 3)
        stripe = max(3, th // 3)
        x = int(np.clip(x, 0, max(0, out.shape[1] - (tw + 2 * m + stripe))))
        y = int(np.clip(y, 0, max(0, out.shape[0] - (th + 2 * m))))
        x1, y1 = x + stripe + tw + 2 * m, y + th + 2 * m
        cv2.rectangle(out, (x, y), (x1, y1), LABEL_BG, -1)
        cv2.rectangle(out, (x, y), (x + stripe - 1, y1), color, -1)
        cv2.putText(out, text, (x + stripe + m, y + m + th), cv2.FONT_HERSHEY_SIMPLEX, self._layout["font"], LABEL_FG,
                    self._layout["text"], cv2.LINE_AA)
        return (x, y, x1, y1)

    def _widget_box(self, out: np.ndarray) -> tuple[int, int, int]:
        L = self._layout
        size = 2 * L["radius"] + 2 * L["pad"]
        if L["panel"]:
            x0 = L["w"]
            return x0 + L["pad"] + L["radius"], L["pad"] + L["radius"], L["radius"]
        taken = self.regions["faces"] + self.regions["labels"]
        corners = self._corners(L["h"], L["w"], size)
        best = min(corners, key=lambda c: sum(_overlaps(c, t) for t in taken))  # first free one in order
        return best[0] + L["pad"] + L["radius"], best[1] + L["pad"] + L["radius"], L["radius"]

    def _draw_circumplex(self, image: np.ndarray, visible: set[int]) -> None:
        import cv2

        cx, cy, radius = self._widget_box(image)
        self.regions["widget"] = (cx - radius - 4, cy - radius - 4, cx + radius + 4, cy + radius + 4)
        overlay = image.copy()
        cv2.circle(overlay, (cx, cy), radius + 4, (0, 0, 0), -1)
        cv2.addWeighted(overlay, 0.6, image, 0.4, 0, dst=image)
        line = max(1, radius // 40)
        cv2.circle(image, (cx, cy), radius, (220, 220, 220), line, lineType=cv2.LINE_AA)
        cv2.line(image, (cx - radius, cy), (cx + radius, cy), (150, 150, 150), line)
        cv2.line(image, (cx, cy - radius), (cx, cy + radius), (150, 150, 150), line)
        font = max(0.3, radius / 200.0)
        if radius >= 50:
            for name, (v, a) in CIRCUMPLEX_POSITIONS.items():
                if name != "neutral":
                    cv2.putText(image, name[:4], (cx + int(v * radius * 0.8) - int(12 * font / 0.3),
                                                  cy - int(a * radius * 0.8)),
                                cv2.FONT_HERSHEY_SIMPLEX, font, (200, 200, 200), 1, cv2.LINE_AA)
        cv2.putText(image, "V", (cx + radius - int(14 * font / 0.3), cy - 4), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (230, 230, 230), 1, cv2.LINE_AA)
        cv2.putText(image, "A", (cx + 4, cy - radius + int(14 * font / 0.3)), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (230, 230, 230), 1, cv2.LINE_AA)

        def pt(v, a):
            return (cx + int(round(np.clip(v, -1, 1) * radius)), cy - int(round(np.clip(a, -1, 1) * radius)))

        for face, trail in self._trails.items():
            if face not in visible or not trail:
                continue
            color = _COLORS[face % len(_COLORS)]
            pts = [pt(v, a) for v, a in trail if np.isfinite(v) and np.isfinite(a)]
            if len(pts) > 1:
                cv2.polylines(image, [np.array(pts, dtype=np.int32)], False, color, max(1, line + 1),
                              lineType=cv2.LINE_AA)
            if pts:
                cv2.circle(image, pts[-1], max(3, radius // 12), (0, 0, 0), -1, lineType=cv2.LINE_AA)
                cv2.circle(image, pts[-1], max(2, radius // 12 - 1), color, -1, lineType=cv2.LINE_AA)
