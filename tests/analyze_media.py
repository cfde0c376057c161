"""Helpers of the analyze tests: write small videos with PyAV, build an untrained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FACES = SHARED_DATA / "facial_expressions" / "images"


def write_video(path, frames, fps: int = 10, codec: str = "libx264", options=None) -> Path:
    """Encode RGB uint8 frames [H, W, 3] (even sizes) to ``path``."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for im in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(im), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def decode_count(path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def untrained_predictor(seed: int = 0):
    """A real (untrained) baseline on the built-in small CNN: true shapes and columns."""
    import torch

    from affectlab.data.schema import AU_SETS, EXPRESSIONS, LabelSpace
    from affectlab.methods.base import create_method
    from affectlab.runtime.predictor import Predictor

    torch.manual_seed(seed)
    space = LabelSpace(EXPRESSIONS, AU_SETS["synth"], va=True)
    return Predictor.from_method(create_method("baseline", space, {"backbone": "builtin:cnn-small"}))


def synth_clip(n_frames: int = 12, size: int = 64, seed: int = 0):
    """Frames of one synthetic clip (onset-apex-offset) and their labels."""
    from affectlab.data.synth import sample_batch

    images, labels = sample_batch(0, seed=seed, size=size, sequences=1, frames=n_frames)
    return images, labels
