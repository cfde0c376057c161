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


class Annotator:
    """Draws one video's predictions on its frames; keeps a VA trail per face."""

    def __init__(self, expressions=(), aus=(), va: bool = False, trail: int = 45, top_aus: int = 3):
        self.expressions = list(expressions)
        self.aus = list(aus)
        self.va = va
        self.top_aus = top_aus
        self._trails: dict[int, deque] = {}
        self._trail_len = trail

    def draw(self, image: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
        """Draw the rows of one frame (``face >= 0`` rows carry boxes) on ``image`` in place."""
        import cv2

        h, w = image.shape[:2]
        scale = max(0.35, min(h, w) / 720.0)
        thick = max(1, int(round(2 * scale)))
        faces = rows[rows["face"] >= 0]
        for r in faces.itertuples(index=False):
            face = int(r.face)
            color = _COLORS[face % len(_COLORS)]
            x, y, bw, bh = (int(getattr(r, c)) for c in ("x", "y", "w", "h"))
            cv2.rectangle(image, (x, y), (x + bw, y + bh), color, thick)
            label = f"#{face}"
            if self.expressions and isinstance(r.expression, str):
                p = getattr(r, f"expr_{r.expression}")
                label += f" {r.expression} {p:.2f}"
            _text(image, label, (x, max(12, y - 6)), 0.55 * scale * 1.4, color, thick)
            if self.aus:
                vals = np.array([getattr(r, a) for a in self.aus], dtype=float)
                order = np.argsort(-vals)[: self.top_aus]
                for k, j in enumerate(order):
                    _text(image, f"{self.aus[j]} {vals[j]:.2f}", (x, y + bh + int((16 + 16 * k) * scale * 1.4)),
                          0.45 * scale * 1.4, color, max(1, thick - 1))
            if self.va:
                trail = self._trails.setdefault(face, deque(maxlen=self._trail_len))
                trail.append((float(r.valence), float(r.arousal)))
        if self.va:
            self._draw_circumplex(image, set(faces["face"].astype(int).tolist()))
        return image

    def _draw_circumplex(self, image: np.ndarray, visible: set[int]) -> None:
        import cv2

        h, w = image.shape[:2]
        radius = max(24, int(min(h, w) * 0.11))
        pad = 8
        cx, cy = w - radius - pad, h - radius - pad
        overlay = image.copy()
        cv2.circle(overlay, (cx, cy), radius + 4, (0, 0, 0), -1)
        cv2.addWeighted(overlay, 0.45, image, 0.55, 0, dst=image)
        cv2.circle(image, (cx, cy), radius, (220, 220, 220), 1, lineType=cv2.LINE_AA)
        cv2.line(image, (cx - radius, cy), (cx + radius, cy), (150, 150, 150), 1)
        cv2.line(image, (cx, cy - radius), (cx, cy + radius), (150, 150, 150), 1)
        if radius >= 60:
            for name, (v, a) in CIRCUMPLEX_POSITIONS.items():
                if name != "neutral":
                    _text(image, name[:4], (cx + int(v * radius) - 10, cy - int(a * radius)), 0.3, (190, 190, 190), 1)

        def pt(v, a):
            return (cx + int(round(np.clip(v, -1, 1) * radius)), cy - int(round(np.clip(a, -1, 1) * radius)))

        for face, trail in self._trails.items():
            if face not in visible or not trail:
                continue
            color = _COLORS[face % len(_COLORS)]
            pts = [pt(v, a) for v, a in trail if np.isfinite(v) and np.isfinite(a)]
            if len(pts) > 1:
                cv2.polylines(image, [np.array(pts, dtype=np.int32)], False, color, 1, lineType=cv2.LINE_AA)
            if pts:
                cv2.circle(image, pts[-1], max(3, radius // 12), color, -1, lineType=cv2.LINE_AA)


def _text(image, text, org, scale, color, thick) -> None:
    import cv2

    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
