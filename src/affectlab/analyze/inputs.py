"""Media inputs: expand files, folders and globs; stream the frames of images and videos.

Videos are decoded with PyAV one frame at a time, so memory does not depend on the
video's length. Every frame is yielded as an RGB ``uint8`` array with its index in the
source and its time in seconds, upright: a video's display rotation (phones record
portrait video as landscape frames plus a rotation flag) and a JPEG's EXIF orientation
are applied. Images of any bit depth read as training reads them
(:func:`affectlab.data.images.to_rgb`: a 16-bit PNG keeps its high byte). An animated
GIF, PNG or WebP is a video: every frame is analysed, with its frame number and time. A file that
cannot be read raises :class:`MediaError`, which says which file, what failed and how
many frames were read before the failure.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from affectlab.errors import AffectlabError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS = set("*?[")


class MediaError(AffectlabError):
    """A media file could not be (fully) read.

    Attributes
    ----------
    path : str
        The file.
    frames_read : int
        Frames decoded before the failure.
    """

    def __init__(self, path, message: str, frames_read: int = 0):
        self.path = str(path)
        self.frames_read = int(frames_read)
        self.reason = message
        super().__init__(f"{self.path}: {message} ({self.frames_read} frames read)")


@dataclass
class Frame:
    """One decoded frame (or a still image).

    Attributes
    ----------
    input : str
        The source file.
    index : int
        Frame number in the source (0 for an image).
    time_s : float
        Presentation time in seconds (0 for an image).
    image : ndarray [H, W, 3] uint8
        RGB pixels.
    """

    input: str
    index: int
    time_s: float
    image: np.ndarray


def media_kind(path) -> str:
    """``"image"`` or ``"video"`` from the file extension (unknown extensions: ``"video"``,
    since FFmpeg reads many containers whose names vary); an animated GIF is a video."""
    suffix = Path(path).suffix.lower()
    if suffix in _MAY_ANIMATE:
        return "video" if _animated(str(path)) else "image"
    return "image" if suffix in IMAGE_EXTENSIONS else "video"


#: image formats that may hold an animation (GIF, APNG, animated WebP)
_MAY_ANIMATE = frozenset({".gif", ".png", ".webp"})


@functools.lru_cache(maxsize=4096)
def _animated(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:  # noqa: BLE001 - unreadable: an image, whose reading then says why
        return False


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a list of media files.

    Files named explicitly are kept whatever their extension; folders and globs keep
    the files with an image or video extension. Order: the order of ``inputs``, each
    folder or glob sorted; duplicates are dropped.

    Raises
    ------
    AffectlabError
        If an input does not exist, a glob or folder matches no media file, or nothing
        at all is given.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items = list(inputs)
    if not items:
        raise AffectlabError("no input given: pass image files, folders, glob patterns or videos")
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path):
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise AffectlabError(f"input {item!r} is not a path or pattern (got {type(item).__name__})")
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not found:
                raise AffectlabError(
                    f"folder {text} holds no image or video file (looked for {', '.join(sorted(MEDIA_EXTENSIONS))})"
                )
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS & set(text):
            found = sorted(
                Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in MEDIA_EXTENSIONS
            )
            if not found:
                raise AffectlabError(f"glob pattern {text!r} matches no image or video file")
            for p in found:
                add(p)
        else:
            raise FileNotFoundError(f"input {text} does not exist (expected an image, a video, a folder or a glob)")
    return out


def read_image(path) -> np.ndarray:
    """Read an image file as RGB uint8; raise :class:`MediaError` if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    from PIL import ImageOps

    from affectlab.data.images import to_rgb

    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # a photo taken sideways is analysed upright
            if im.mode.startswith("I;16") or im.mode == "I":
                # high bit depth: as training reads it (cv2 gives uint16; to_rgb keeps the high byte)
                rgb = to_rgb(np.clip(np.asarray(im), 0, 65535).astype(np.uint16))
            else:
                rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise MediaError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(path, f"not a readable image ({exc.__class__.__name__}: {exc})") from None
    if rgb.size == 0:
        raise MediaError(path, "image has no pixels")
    return np.ascontiguousarray(rgb)


@dataclass
class VideoInfo:
    """What the container says about a video stream (before decoding)."""

    fps: float
    frames: int  # 0 when the container does not say
    duration_s: float  # 0 when unknown
    width: int
    height: int


def probe_video(path) -> VideoInfo:
    """Open a video and read its stream header; raise :class:`MediaError` if it cannot."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            return _info(container, container.streams.video[0])
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, f"cannot open video ({exc})") from None


def _info(container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1e6
    frames = int(stream.frames or 0)
    if frames == 0 and duration and fps:
        frames = int(round(duration * fps))
    return VideoInfo(fps=fps, frames=frames, duration_s=duration, width=stream.width, height=stream.height)


def iter_video(path, *, every: int = 1, start: float | None = None, end: float | None = None) -> Iterator[Frame]:
    """Decode a video frame by frame.

    Parameters
    ----------
    path : path-like
        The video.
    every : int
        Keep one frame in ``every`` (frame numbers divisible by ``every``).
    start, end : float, optional
        Keep frames with ``start <= time_s < end`` (seconds). ``start`` seeks to the
        nearest keyframe before it, so a late start does not decode the whole video.

    Raises
    ------
    MediaError
        When the file cannot be opened, decoding fails, or the stream ends well before
        the frame count its header announces (a truncated file). Frames decoded before
        the failure have already been yielded.
    """
    import av

    every = int(every)
    read = 0
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, f"cannot open video ({exc})") from None
    with container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        if (stream.width or 0) * (stream.height or 0) > 1280 * 720:
            stream.thread_type = "AUTO"  # large frames: decoder threads pay off
        else:
            # small frames decode in about a millisecond; threads only add hand-over cost
            stream.codec_context.thread_count = 1
        info = _info(container, stream)
        fps = info.fps or 25.0
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        seeked = False
        if start and start > 0:
            try:
                container.seek(int((start + t0) / stream.time_base), stream=stream, backward=True, any_frame=False)
                seeked = True
            except av.error.FFmpegError:
                seeked = False
        counter = 0
        last_time = None
        try:
            for frame in container.decode(stream):
                read += 1
                t = float(frame.time) - t0 if frame.time is not None else counter / fps
                # after a seek, number frames from their time (constant-rate assumption)
                index = int(round(t * fps)) if seeked else counter
                counter += 1
                last_time = t
                if start is not None and t < start - 1e-6:
                    continue
                if end is not None and t >= end:
                    break
                if index % every:
                    continue
                image = frame.to_ndarray(format="rgb24")
                turns = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
                if turns:
                    # the display matrix's counter-clockwise rotation: the frame as players show it
                    image = np.ascontiguousarray(np.rot90(image, k=turns))
                yield Frame(str(path), index, t, image)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(path, f"decoding failed ({exc})", read) from None
        if read == 0:
            raise MediaError(path, "no frame could be decoded", 0)
        stopped_early = end is not None and last_time is not None and last_time >= end
        if info.frames and not stopped_early and not seeked and read < 0.98 * info.frames - 1:
            raise MediaError(path, f"stream ended after {read} of the {info.frames} frames its header announces (truncated file?)", read)


def iter_animation(path, *, every: int = 1, start: float | None = None, end: float | None = None) -> Iterator[Frame]:
    """The frames of an animated PNG or WebP (Pillow composes them), timed by their durations."""
    from PIL import Image, ImageSequence

    t, read = 0.0, 0
    try:
        with Image.open(path) as im:
            for index, frame in enumerate(ImageSequence.Iterator(im)):
                read += 1
                duration = float(frame.info.get("duration") or 100) / 1000.0
                here, t = t, t + duration
                if start is not None and here < start - 1e-6:
                    continue
                if end is not None and here >= end:
                    break
                if index % every:
                    continue
                yield Frame(str(path), index, here, np.ascontiguousarray(np.asarray(frame.convert("RGB"))))
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(path, f"decoding the animation failed ({exc})", read) from None


def iter_frames(path, *, every: int = 1, start: float | None = None, end: float | None = None) -> Iterator[Frame]:
    """Frames of one input: the single frame of an image, or the decoded frames of a video
    (an animated GIF through FFmpeg, an animated PNG or WebP through Pillow)."""
    if media_kind(path) == "image":
        yield Frame(str(path), 0, 0.0, read_image(path))
    elif Path(path).suffix.lower() in (".png", ".webp"):
        yield from iter_animation(path, every=every, start=start, end=end)
    else:
        yield from iter_video(path, every=every, start=start, end=end)


def count_frames(path, *, every: int = 1, start: float | None = None, end: float | None = None) -> int | None:
    """Expected number of yielded frames (for a progress bar); ``None`` when unknown."""
    if media_kind(path) == "image":
        return 1
    if Path(path).suffix.lower() in (".png", ".webp"):
        return None  # an animation: counted while it is read
    try:
        info = probe_video(path)
    except MediaError:
        return None
    if not info.frames or not info.fps:
        return None
    first = int(np.ceil((start or 0.0) * info.fps))
    last = info.frames if end is None else min(info.frames, int(np.ceil(end * info.fps)))
    return max(0, len(range(first + (-first % every), last, every)))


def check_sampling(every: int = 1, start: float | None = None, end: float | None = None) -> tuple[int, float | None, float | None]:
    """Validate ``every``, ``start`` and ``end``."""
    from affectlab.errors import ConfigError

    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ConfigError(f"every must be an integer >= 1, got {every!r}")
    for name, v in (("start", start), ("end", end)):
        if v is not None and (not np.isfinite(float(v)) or float(v) < 0):
            raise ConfigError(f"{name} must be a time in seconds >= 0, got {v!r}")
    if start is not None and end is not None and float(end) <= float(start):
        raise ConfigError(f"end ({end}) must be after start ({start})")
    return int(every), None if start is None else float(start), None if end is None else float(end)


def split_kinds(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(images, videos) of a list of media paths."""
    images = [p for p in paths if media_kind(p) == "image"]
    videos = [p for p in paths if media_kind(p) == "video"]
    return images, videos
