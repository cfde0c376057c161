"""Decode and detect a few frames ahead of the main loop, in two worker threads.

The video decoder (PyAV / FFmpeg), OpenCV's detectors, LiteRT and PyTorch release the GIL
while they work, so the work of one frame is spread over three threads: one decodes frame
``k + 2``, one finds the faces of frame ``k + 1`` and the main thread runs the landmarker
and the expression model on frame ``k``. On two cores that keeps both busy (the detector
alone is the longest stage). Frames come out in order;
a decoding error is re-raised in the main thread at the frame where it happened, a
detector exception is handed over with its frame, and :meth:`DetectAhead.close` stops the worker (also mid-video, e.g. on
Ctrl-C) and closes the frame iterator in the thread that ran it.
"""

from __future__ import annotations

import abc
import queue
import threading
import time
from typing import Any, Callable, Iterator

_END = object()


class _Ahead(abc.ABC):
    """A bounded queue filled by a worker thread; subclasses say what one item is."""

    def __init__(self, depth: int, name: str):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    @abc.abstractmethod
    def _work(self) -> None:
        """Fill the queue (runs in the worker thread)."""

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # later calls stop too
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(_END)
            raise item
        return item

    def close(self) -> None:
        """Stop the worker and wait for it (it closes what it reads from)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


class ReadAhead(_Ahead):
    """Iterate ``(frame, decode_seconds)`` of ``frames``, decoded in a worker thread."""

    def __init__(self, frames: Iterator, depth: int = 4):
        super().__init__(depth, "affectlab-read-ahead")
        self._frames = frames
        self._thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(self._frames)
                except StopIteration:
                    break
                if not self._put((frame, time.perf_counter() - t0)):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            self._put(exc)
        finally:
            close = getattr(self._frames, "close", None)
            if callable(close):
                close()


class DetectAhead(_Ahead):
    """Iterate ``(frame, detections, decode_seconds, detect_seconds)`` computed in a worker thread.

    When the detector raises on a frame, that frame comes with the exception as its
    ``detections`` (the frame was read: the caller counts it, then raises) and the worker stops.

    Parameters
    ----------
    frames : iterator of Frame
        The decoded frames (it is consumed and closed by the worker).
    detect : callable
        ``detect(image)``; its raw result is passed through.
    depth : int
        Frames detected ahead at most (bounds the memory held: ``depth`` frames, plus as
        many decoded ahead of them).
    read_ahead : bool
        Decode in a third thread (:class:`ReadAhead`) rather than in the detecting one.
    """

    def __init__(self, frames: Iterator, detect: Callable[[Any], Any], depth: int = 4, read_ahead: bool = True):
        super().__init__(depth, "affectlab-detect-ahead")
        self._read_ahead = read_ahead
        self._frames = frames
        self._detect = detect
        self._thread.start()

    def _work(self) -> None:
        if self._read_ahead:
            # started here, so that it is closed by this thread, after its last read
            self._frames = ReadAhead(self._frames)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(self._frames)
                except StopIteration:
                    break
                if self._read_ahead:
                    frame, decoded = item
                else:
                    frame, decoded = item, time.perf_counter() - t0
                t1 = time.perf_counter()
                t0 = t1 - decoded
                try:
                    found = self._detect(frame.image)
                except Exception as exc:  # noqa: BLE001 - this frame was read; the caller raises it
                    self._put((frame, exc, t1 - t0, time.perf_counter() - t1))
                    break
                if not self._put((frame, found, t1 - t0, time.perf_counter() - t1)):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            self._put(exc)
        finally:
            close = getattr(self._frames, "close", None)
            if callable(close):
                close()

