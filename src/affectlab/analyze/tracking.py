"""IoU tracking: give every face a stable id across the frames of one video.

Detections of a frame are matched to the live tracks by maximum total IoU (Hungarian
assignment, scipy); a match needs ``IoU >= iou_threshold``. Unmatched detections start
new tracks with the next free id; a track not seen for ``max_age`` analysed frames ends,
and its id is never reused within the video.
"""

from __future__ import annotations

import numpy as np

from affectlab.perception.detectors import iou_matrix
from affectlab.errors import ConfigError


class IoUTracker:
    """Frame-to-frame face tracker by box overlap.

    Parameters
    ----------
    iou_threshold : float
        Smallest IoU that links a detection to a track.
    max_age : int
        Analysed frames a track survives without a matching detection (bridges a few
        missed detections without handing the face a new id).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 10):
        if not 0 < float(iou_threshold) <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        if int(max_age) < 0:
            raise ConfigError(f"max_age must be >= 0, got {max_age!r}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self._boxes: dict[int, np.ndarray] = {}
        self._missed: dict[int, int] = {}
        self._next = 0
        self.ended: list[int] = []

    def update(self, boxes: np.ndarray) -> np.ndarray:
        """Assign track ids to this frame's boxes ``[N, >=4]`` (x, y, w, h); returns int ids [N].

        Track ids that ended at this update are in :attr:`ended` until the next call.
        """
        boxes = np.asarray(boxes, dtype=np.float64)
        boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.size else 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        track_ids = list(self._boxes)
        if track_ids and len(boxes):
            iou = iou_matrix(boxes, np.stack([self._boxes[t] for t in track_ids]))
            if iou.shape == (1, 1):
                rows, cols = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)  # one face: nothing to solve
            else:
                # imported here: scipy.optimize takes about a second to import, and a single
                # photo, or one face per frame, never needs it
                from scipy.optimize import linear_sum_assignment

                rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_threshold:
                    ids[r] = track_ids[c]
        matched = set(ids[ids >= 0].tolist())
        for i in np.flatnonzero(ids < 0):
            ids[i] = self._next
            self._next += 1
        for i, t in enumerate(ids.tolist()):
            self._boxes[t] = boxes[i, :4].copy()
            self._missed[t] = 0
        self.ended = []
        for t in track_ids:
            if t not in matched:
                self._missed[t] += 1
                if self._missed[t] > self.max_age:
                    del self._boxes[t], self._missed[t]
                    self.ended.append(t)
        return ids

    @property
    def active(self) -> list[int]:
        """Ids of the live tracks."""
        return list(self._boxes)
