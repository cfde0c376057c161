"""DetectAhead: decode + detect in a worker thread, in order, errors handed over, closable."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from affectlab.analyze.ahead import DetectAhead


def _frames(n, closed, fail_at=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise OSError(f"broken at {i}")
            yield SimpleNamespace(image=i, index=i)
    finally:
        closed.append(threading.current_thread().name)


def test_frames_come_in_order_with_their_detections():
    closed = []
    ahead = DetectAhead(_frames(50, closed), lambda image: image * 10, depth=3)
    got = [(f.index, found) for f, found, _d, _t in ahead]
    assert got == [(i, i * 10) for i in range(50)]
    ahead.close()
    assert closed == ["affectlab-read-ahead"]  # closed by the worker that ran it


def test_a_decode_error_is_raised_at_its_frame_and_a_detector_error_comes_with_its_frame():
    closed = []
    ahead = DetectAhead(_frames(10, closed, fail_at=4), lambda image: image)
    seen = []
    with pytest.raises(OSError, match="broken at 4"):
        for f, _found, _d, _t in ahead:
            seen.append(f.index)
    assert seen == [0, 1, 2, 3]
    ahead.close()

    def detect(image):
        if image == 2:
            raise RuntimeError("detector broke")
        return image

    items = list(DetectAhead(_frames(10, []), detect))
    assert [f.index for f, *_ in items] == [0, 1, 2]
    assert isinstance(items[-1][1], RuntimeError)


def test_close_mid_way_stops_the_worker_and_closes_the_decoder():
    closed = []
    ahead = DetectAhead(_frames(10_000, closed), lambda image: image, depth=2)
    next(ahead)
    ahead.close()
    assert not ahead._thread.is_alive() and closed == ["affectlab-read-ahead"]
    closed = []
    ahead = DetectAhead(_frames(10_000, closed), lambda image: image, depth=2, read_ahead=False)
    next(ahead)
    ahead.close()
    assert closed == ["affectlab-detect-ahead"]
