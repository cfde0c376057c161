"""``affectlab demo``: the whole toolkit end to end on synthetic faces, in a few minutes.

It runs what a newcomer would run by hand, with the same library functions the commands
use: make a synthetic training set and a held-out set of other identities, train the
multi-task baseline on the first, evaluate it on the second, and analyze a synthetic
video-like sequence with it (table, report, annotated video).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from affectlab.errors import ConfigError


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and the held-out metrics it measured."""

    out: Path
    run: Path
    metrics: dict = field(default_factory=dict)
    table: Path | None = None
    report: Path | None = None
    video: Path | None = None
    rows: int = 0


def run_demo(
    out: str | os.PathLike,
    *,
    n_train: int = 1200,
    n_test: int = 400,
    epochs: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Synthesize data, train the baseline, evaluate it and analyze a sequence.

    Parameters
    ----------
    out : path
        Folder for everything the demo writes (``data/``, ``test/``, ``clip/``, ``run/``,
        ``analysis.csv``, ``report/``, ``analysis.mp4``).
    n_train, n_test : int
        Synthetic training images and held-out images (other identities).
    epochs : int, optional
        Training epochs (default: the ``baseline`` preset's).
    seed : int
        Seed of the training set; the held-out set and the clip use ``seed + 1`` and
        ``seed + 2`` so their identities are never seen in training.
    overwrite : bool
        Replace an earlier demo in ``out``.
    progress : bool
        Show progress bars.
    """
    from affectlab.analyze.api import analyze
    from affectlab.data.synth import generate
    from affectlab.evaluate.engine import run_evaluation
    from affectlab.train.engine import run_training

    if n_train < 50 or n_test < 20:
        raise ConfigError(f"the demo needs at least 50 training and 20 test images (got {n_train} and {n_test})")
    out = Path(out)
    run = out / "run"
    if run.exists() and any(run.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already holds a demo run; pass --overwrite to replace it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    size = 64
    generate(out / "data", n_train, size=size, seed=seed, overwrite=True, progress=progress)
    generate(out / "test", n_test, size=size, seed=seed + 1, overwrite=True, progress=progress)
    generate(out / "clip", 0, size=size, seed=seed + 2, sequences=1, frames=60, overwrite=True, progress=progress)

    if run.exists():
        import shutil

        shutil.rmtree(run)
    options = {"seed": seed}
    if epochs is not None:
        options["epochs"] = epochs
    run_training(
        method="baseline",
        preset="baseline",
        train_specs=[f"manifest:{out / 'data' / 'labels.csv'}"],
        out=run,
        progress=progress,
        **options,
    )
    evaluation = run_evaluation(
        run,
        f"manifest:{out / 'test' / 'labels.csv'}",
        json_out=out / "test_metrics.json",
        progress=progress,
    )
    clip = _clip_video(out / "clip", out / "clip.mp4", fps=15)
    table = analyze(
        clip,
        model=run,
        detector="none",
        out=out / "analysis.csv",
        report=out / "report",
        video_out=out / "analysis.mp4",
        progress=progress,
    )
    metrics = evaluation.metrics
    return DemoResult(
        out=out,
        run=run,
        metrics=metrics,
        table=out / "analysis.csv",
        report=out / "report",
        video=out / "analysis.mp4",
        rows=len(table),
    )


def _clip_video(frames_dir: Path, path: Path, fps: float) -> Path:
    """Encode a synthetic sequence's frames as a video, as a user's recording would be."""
    import cv2

    from affectlab.analyze.overlay import VideoWriter

    frames = sorted(p for p in frames_dir.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    first = cv2.imread(str(frames[0]))
    # upscaled x2 so the annotated video is large enough to read
    writer = VideoWriter(path, fps, first.shape[1] * 2, first.shape[0] * 2)
    try:
        for f in frames:
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            writer.write(cv2.resize(rgb, (writer.width, writer.height), interpolation=cv2.INTER_LINEAR))
    finally:
        writer.close()
    return path
