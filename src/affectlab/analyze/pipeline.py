"""The analysis loop: frames -> faces -> tracks -> crops -> model -> table rows -> sinks.

Frames stream from :mod:`affectlab.analyze.inputs`; face crops are batched through the
model; rows go to *sinks* (the table file, the annotated video, the report, the
in-memory table) one chunk at a time, so memory stays flat in the video's length and
everything computed before a failure or a Ctrl-C is kept. A file that cannot be read
is recorded as a :class:`Failure` and the next input goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.analyze.ahead import DetectAhead
from affectlab.perception.align import Framing, frame_faces
from affectlab.perception.detectors import as_faces
from affectlab.analyze.inputs import Frame, MediaError, count_frames, iter_frames, media_kind
from affectlab.analyze.table import register_column_dtypes, table_columns
from affectlab.analyze.tracking import IoUTracker
from affectlab.errors import AffectlabError, ConfigError
from affectlab.temporal import OnlineSmoother, parse_smooth

STAGES = ("decode", "detect", "landmarks", "crop", "model", "table", "write")


class OutputError(AffectlabError, OSError):
    """Writing an output (table, annotated video, report, progress file) failed.

    Not a failure of the input being analysed: the run stops, the input is not recorded
    as finished, and ``--resume`` analyses it again once the output can be written.
    """


@dataclass
class Failure:
    """An input that could not be (fully) analysed."""

    input: str
    reason: str
    frames_read: int = 0

    def __str__(self) -> str:
        return f"{self.input}: {self.reason} ({self.frames_read} frames read)"


@dataclass
class RunStats:
    """What a run did: frames, rows, failures and seconds spent in each stage."""

    frames: int = 0
    rows: int = 0
    faces: int = 0
    inputs: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    interrupted: bool = False
    #: wall-clock seconds spent on the inputs, from opening each to its last row (the
    #: stages leave gaps); the progress bar's final rate of an input uses the same clock
    wall_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    @property
    def fps(self) -> float:
        """Frames per wall-clock second, as the progress bar shows them at the end of an input."""
        t = self.wall_seconds if self.wall_seconds > 0 else self.total_seconds
        return self.frames / t if t > 0 else float("nan")

    def to_dict(self) -> dict:
        return {
            "frames": self.frames, "rows": self.rows, "faces": self.faces, "inputs": self.inputs,
            "failures": [vars(f) for f in self.failures], "seconds": dict(self.seconds),
            "fps": self.fps, "interrupted": self.interrupted, "wall_seconds": self.wall_seconds,
        }


class Sink:
    """Receives the table chunk by chunk. Override what you need."""

    def start_input(self, path: str, kind: str, fps: float | None) -> None:
        """A new input begins (``kind`` is ``image`` or ``video``; ``fps`` after ``every``)."""

    def write(self, chunk: pd.DataFrame, frames: Sequence[Frame]) -> None:
        """Rows of ``frames`` (in frame order; the frames' pixels are given for drawing)."""

    def end_input(self, path: str, failure: str | None) -> None:
        """The input is done; ``failure`` says what went wrong, if anything (its rows were written)."""

    def close(self) -> None:
        """The run is over (also after an interruption): flush and close files."""


def smoothing_spec(mu, info: Mapping | None = None) -> dict[str, float] | None:
    """A smoothing request as ``{task: mu}``, in the grammar of :func:`affectlab.temporal.parse_smooth`.

    ``mu`` is ``None`` (no smoothing), a number (every task), ``"expr=9,va=9"`` or a mapping
    task -> mu, or ``"auto"`` / ``"stored"``: the mapping stored with the model
    (``info["smoothing"]``, or the ``smoothing`` entry of the run's ``train`` section, as
    written by ``evaluate --smooth auto``); ``None`` when the model has none.
    """
    spec = parse_smooth(mu)
    if isinstance(spec, str):
        info = dict(info or {})
        stored = info.get("smoothing") or dict(info.get("train") or {}).get("smoothing")
        if not stored:
            return None
        spec = parse_smooth(stored.get("mu", stored) if isinstance(stored, Mapping) else stored)
        if isinstance(spec, str):
            return None
    return spec


class Analyzer:
    """Runs detection, tracking, batching, prediction and smoothing over inputs.

    Parameters
    ----------
    predictor : affectlab.runtime.predictor.Predictor or None
        The model; ``None`` tabulates faces only (no prediction columns).
    detector : callable
        ``detector(image) -> Faces | [N, 5] | [N, 15]`` (see :mod:`affectlab.perception.detectors`).
    every, start, end : sampling of video frames (see :func:`~affectlab.analyze.inputs.iter_video`).
    batch_size : int
        Face crops per forward pass.
    smooth : dict task -> mu, optional
        Equation 9 per face track and task (see :func:`smoothing_spec`).
    margin : float
        Crop margin around each face box (fraction of the box on each side), for a
        model that declares no framing.
    framing : Framing or mapping, optional
        How faces are cropped (:mod:`affectlab.perception.align`); default: the
        model's ``preprocessing.framing``, else box + ``margin``.
    track_iou, track_max_age : tracker settings (:class:`~affectlab.analyze.tracking.IoUTracker`).
    mesh : affectlab.analyze.mesh.MeshStage, optional
        Landmarks, head pose, blendshapes and landmarker AUs per face (their columns
        follow the model's).
    detect_ahead : bool
        Decode and detect video frames in a worker thread, a few frames ahead (see
        :mod:`affectlab.analyze.ahead`); ``False`` runs everything in this thread.
    threads : int, optional
        PyTorch intra-op threads and OpenCV threads during the run (restored afterwards). A small model on
        a few crops per batch gains little from threads, and on a busy machine extra
        threads cost more than they give; ``None`` keeps PyTorch's setting.
    """

    def __init__(
        self,
        predictor,
        detector: Callable[[np.ndarray], np.ndarray],
        *,
        every: int = 1,
        start: float | None = None,
        end: float | None = None,
        batch_size: int = 32,
        smooth: Mapping[str, float] | None = None,
        margin: float = 0.2,
        track_iou: float = 0.3,
        track_max_age: int = 10,
        threads: int | None = None,
        mesh=None,
        framing: Framing | Mapping | None = None,
        detect_ahead: bool = True,
    ):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.predictor = predictor
        self.detector = detector
        self.every, self.start, self.end = every, start, end
        self.batch_size = int(batch_size)
        self.smooth = dict(smooth) if smooth else None
        # a detector may know its boxes' framing better (``none``: the image is the crop)
        self.margin = float(getattr(detector, "crop_margin", margin))
        if hasattr(detector, "crop_margin"):
            framing = Framing("box", margin=self.margin)  # ``none``: the image already is the crop
        elif framing is None:
            framing = getattr(getattr(predictor, "preprocessing", None), "framing", None)
        self.framing = Framing.from_dict(framing, margin=self.margin)
        level = getattr(detector, "level_keypoints", None)
        if self.framing.kind == "aligned" and callable(level):
            level()  # aligned crops need keypoints measured on the face turned upright (YuNet)
        self.track_iou, self.track_max_age = track_iou, track_max_age
        space = getattr(predictor, "label_space", None)
        self.expressions = list(space.expressions) if space is not None else []
        self.aus = list(space.aus) if space is not None else []
        self.has_va = bool(space.va) if space is not None else False
        self.columns = table_columns(self.expressions, self.has_va, self.aus)
        # per-face method extras the model declares (e.g. its nearest archetype)
        self.extra_columns = {
            k: v for k, v in dict(getattr(predictor, "extra_columns", None) or {}).items() if k not in self.columns
        }
        register_column_dtypes(self.extra_columns)
        self.columns += list(self.extra_columns)
        # landmarks, pose, blendshapes and landmarker AUs per face (analyze/mesh.py)
        self.mesh = mesh
        self.detect_ahead = bool(detect_ahead)
        self.mesh_columns = [c for c in mesh.columns if c not in self.columns] if mesh is not None else []
        self.columns += self.mesh_columns
        self.input_size = getattr(predictor, "input_size", None) if predictor is not None else 64

    # -- the loop -----------------------------------------------------------------------
    def run(self, paths: Sequence[Path], sinks: Sequence[Sink], progress: bool = True) -> RunStats:
        """Analyse ``paths`` (videos one by one, images together), feeding ``sinks``.

        On ``KeyboardInterrupt`` the rows computed so far are flushed, every sink is
        closed (files stay valid) and the interrupt propagates.
        """
        stats = RunStats()
        bar = _Progress(progress)
        self._pending: list[tuple[Frame, np.ndarray, np.ndarray, list, np.ndarray | None]] = []
        images = [p for p in paths if media_kind(p) == "image"]
        videos = [p for p in paths if media_kind(p) == "video"]
        previous_threads = None
        if self.threads is not None and self.predictor is not None:
            import torch

            previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        previous_cv2 = None
        if self.threads is not None:
            import cv2

            # the detector runs in its own thread already (DetectAhead): OpenCV's own pool on
            # top of it only fights the other stages for the cores
            previous_cv2 = cv2.getNumThreads()
            cv2.setNumThreads(self.threads)
        close_errors: list[str] = []
        try:
            with bar:
                if images:
                    self._run_images(images, sinks, stats, bar)
                for path in videos:
                    self._run_video(path, sinks, stats, bar)
        except KeyboardInterrupt:
            stats.interrupted = True
            self._flush_quietly(sinks, stats, output_errors=False)
            raise
        except OutputError as exc:
            self._pending = []
            raise OutputError(
                f"{exc}; stopped at input {stats.inputs} of {len(paths)} ({stats.rows} rows written before); "
                "the inputs being analysed are not recorded as finished"
            ) from exc
        finally:
            for s in sinks:
                try:
                    s.close()
                except Exception as exc:  # noqa: BLE001 - one sink failing must not lose the others
                    close_errors.append(f"closing {_sink_label(s)} failed: {type(exc).__name__}: {exc}")
            if previous_threads is not None:
                import torch

                torch.set_num_threads(previous_threads)
            if previous_cv2 is not None:
                import cv2

                cv2.setNumThreads(previous_cv2)
        if close_errors:
            raise OutputError("; ".join(close_errors))
        return stats

    def _run_video(self, path: Path, sinks, stats: RunStats, bar) -> None:
        src = str(path)
        stats.inputs += 1
        total = count_frames(path, every=self.every, start=self.start, end=self.end)
        fps = None
        try:
            from affectlab.analyze.inputs import probe_video

            fps = probe_video(path).fps / self.every
        except MediaError:
            pass
        _call(sinks, "start_input", src, "video", fps)
        began, frames_before = time.perf_counter(), stats.frames
        task = bar.add(Path(src).name, total)
        self._reset_detector()
        tracker = IoUTracker(self.track_iou, self.track_max_age)
        smoother = {k: OnlineSmoother(v) for k, v in self.smooth.items()} if self.smooth else None
        failure = None
        frames = iter_frames(path, every=self.every, start=self.start, end=self.end)
        if self.detect_ahead:
            # decode + detect on the second core while this thread runs landmarks and model
            frames = DetectAhead(frames, self.detector)
        n_read = 0
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(frames)
                except StopIteration:
                    break
                finally:
                    if not self.detect_ahead:
                        stats.seconds["decode"] += time.perf_counter() - t0
                n_read += 1
                if self.detect_ahead:
                    frame, found, decode_s, detect_s = item
                    stats.seconds["decode"] += decode_s
                    stats.seconds["detect"] += detect_s
                    if isinstance(found, BaseException):
                        raise found  # the detector failed on this frame, in the worker
                    self._add_frame(frame, tracker, sinks, stats, smoother, found=found)
                else:
                    self._add_frame(item, tracker, sinks, stats, smoother)
                bar.advance(task)
            self._flush(sinks, stats, smoother)
        except MediaError as exc:
            self._flush_quietly(sinks, stats, smoother)
            failure = Failure(src, exc.reason, exc.frames_read)
        except OutputError:
            raise  # not this input's fault: it is redone on --resume
        except Exception as exc:  # noqa: BLE001 - any failure of one input: report it, go on
            self._flush_quietly(sinks, stats, smoother)
            failure = Failure(src, f"{type(exc).__name__}: {exc}", n_read)
        finally:
            frames.close()  # DetectAhead: stops its worker, which closes the decoder
        if failure is not None:
            stats.failures.append(failure)
        spent = time.perf_counter() - began
        stats.wall_seconds += spent
        bar.done(task, failure is not None, rate=(stats.frames - frames_before) / spent if spent > 0 else None)
        _call(sinks, "end_input", src, None if failure is None else str(failure))

    def _run_images(self, images: Sequence[Path], sinks, stats: RunStats, bar) -> None:
        began, frames_before = time.perf_counter(), stats.frames
        task = bar.add(f"{len(images)} image{'s' if len(images) != 1 else ''}", len(images))
        smoother = None  # single images have no temporal context
        for path in images:
            src = str(path)
            stats.inputs += 1
            _call(sinks, "start_input", src, "image", None)
            t0 = time.perf_counter()
            failure = None
            try:
                self._reset_detector()
                frame = next(iter_frames(path))
                stats.seconds["decode"] += time.perf_counter() - t0
                self._add_frame(frame, IoUTracker(self.track_iou, self.track_max_age), sinks, stats, smoother)
            except MediaError as exc:
                stats.seconds["decode"] += time.perf_counter() - t0
                failure = Failure(src, exc.reason, 0)
            except OutputError:
                raise
            except Exception as exc:  # noqa: BLE001 - report this image, go on with the others
                failure = Failure(src, f"{type(exc).__name__}: {exc}", 0)
            if failure is not None:
                stats.failures.append(failure)
            bar.advance(task)
            _call(sinks, "end_input", src, None if failure is None else str(failure))
        try:
            self._flush(sinks, stats, smoother)
        except OutputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model failed on the last batch
            stats.failures.append(Failure(f"{len(self._pending)} images", f"{type(exc).__name__}: {exc}", 0))
            self._pending = []
        spent = time.perf_counter() - began
        stats.wall_seconds += spent
        bar.done(task, False, rate=(stats.frames - frames_before) / spent if spent > 0 else None)

    def _reset_detector(self) -> None:
        # stateful detectors (search near the last faces) must not carry faces across inputs
        reset = getattr(self.detector, "reset", None)
        if callable(reset):
            reset()

    def _add_frame(self, frame: Frame, tracker: IoUTracker, sinks, stats: RunStats, smoother, found=None) -> None:
        t0 = time.perf_counter()
        detected_here = found is None
        if detected_here:
            found = self.detector(frame.image)
        faces = as_faces(found)
        if len(faces):
            faces = faces[np.argsort(faces.boxes[:, 0], kind="stable")]  # new ids left to right
        boxes = faces.boxes
        ids = tracker.update(boxes)
        t1 = time.perf_counter()
        crops = frame_faces(frame.image, faces, self.input_size, self.framing) if self.predictor is not None else []
        t2 = time.perf_counter()
        if detected_here:  # otherwise the worker of DetectAhead timed it
            stats.seconds["detect"] += t1 - t0
        stats.seconds["crop"] += t2 - t1
        stats.frames += 1
        stats.faces += len(boxes)
        mesh_values = None
        if self.mesh is not None:
            t3 = time.perf_counter()
            mesh_values = self.mesh(frame.image, boxes, faces.keypoints)
            stats.seconds["landmarks"] += time.perf_counter() - t3
        self._pending.append((frame, boxes, ids, crops, mesh_values))
        if smoother and tracker.ended:
            for s in smoother.values():
                s.forget(tracker.ended)
        n_crops = sum(len(p[3]) for p in self._pending)
        if n_crops >= self.batch_size or len(self._pending) >= self.batch_size:
            self._flush(sinks, stats, smoother)

    def _flush_quietly(self, sinks, stats, smoother=None, output_errors: bool = True) -> None:
        try:
            self._flush(sinks, stats, smoother)
        except OutputError:
            self._pending = []
            if output_errors:
                raise  # the rows of this input did not reach the outputs: not an input failure
        except Exception:  # noqa: BLE001 - the failure is being reported already
            self._pending = []

    def _flush(self, sinks, stats: RunStats, smoother) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        t0 = time.perf_counter()
        crops = [c for p in pending for c in p[3]]
        pred: dict[str, Any] = {}
        if self.predictor is not None and crops:
            pred = self.predictor.predict(crops, batch_size=max(len(crops), 1))
        t1 = time.perf_counter()
        chunk = self._rows(pending, pred, smoother)
        t2 = time.perf_counter()
        frames = [p[0] for p in pending]
        _call(sinks, "write", chunk, frames)
        t3 = time.perf_counter()
        stats.seconds["model"] += t1 - t0
        stats.seconds["table"] += t2 - t1
        stats.seconds["write"] += t3 - t2
        stats.rows += len(chunk)

    def _rows(self, pending, pred: Mapping[str, Any], smoother) -> pd.DataFrame:
        counts = np.array([max(1, len(p[1])) for p in pending])
        n = int(counts.sum())
        has_face = np.concatenate([np.full(c, len(p[1]) > 0) for c, p in zip(counts, pending)])
        cols: dict[str, Any] = {
            "input": np.repeat(np.array([p[0].input for p in pending], dtype=object), counts),
            "frame": np.repeat([p[0].index for p in pending], counts).astype(np.int64),
            "time_s": np.repeat([p[0].time_s for p in pending], counts).astype(np.float64),
        }
        face = np.full(n, -1, dtype=np.int64)
        box = np.full((n, 5), np.nan)
        face[has_face] = np.concatenate([p[2] for p in pending if len(p[1])]) if has_face.any() else []
        if has_face.any():
            box[has_face] = np.concatenate([p[1] for p in pending if len(p[1])])
        cols["face"] = face
        for j, c in enumerate(("x", "y", "w", "h")):
            cols[c] = pd.array(np.where(np.isfinite(box[:, j]), np.round(box[:, j]), 0).astype(np.int64), dtype="Int64")
            cols[c][~has_face] = pd.NA
        cols["score"] = box[:, 4]

        def spread(values: np.ndarray | None, width: int) -> np.ndarray:
            out = np.full((n, width), np.nan)
            if values is not None and has_face.any():
                out[has_face] = values
            return out

        parts = {}
        if self.expressions:
            parts["expr"] = spread(pred.get("expr_prob"), len(self.expressions))
        if self.has_va:
            parts["va"] = spread(pred.get("va"), 2)
        if self.aus:
            parts["au"] = spread(pred.get("au_prob"), len(self.aus))
        if smoother:
            keys = list(zip(cols["input"], face))
            for task, arr in parts.items():
                if task in smoother:
                    for i in np.flatnonzero(has_face):
                        arr[i] = smoother[task].update(keys[i], arr[i])
        if self.expressions:
            e = parts["expr"]
            for j, name in enumerate(self.expressions):
                cols[f"expr_{name}"] = e[:, j]
            names = np.array(self.expressions, dtype=object)
            best = np.where(np.isfinite(e).all(axis=1), np.nan_to_num(e, nan=-1).argmax(axis=1), -1)
            cols["expression"] = np.where(best >= 0, names[np.clip(best, 0, None)], None)
        if self.has_va:
            cols["valence"], cols["arousal"] = parts["va"][:, 0], parts["va"][:, 1]
        if self.aus:
            for j, name in enumerate(self.aus):
                cols[name] = parts["au"][:, j]
        extras = pred.get("extras") or {}
        for name, dtype in self.extra_columns.items():
            col = np.full(n, None, dtype=object)
            values = extras.get(name)
            if values is not None and has_face.any():
                col[has_face] = np.asarray(values, dtype=object)
            cols[name] = pd.Series(col, dtype=object).astype(dtype).array
        if self.mesh_columns:
            mesh = np.full((n, len(self.mesh.columns)), np.nan)
            if has_face.any():
                mesh[has_face] = np.concatenate([p[4] for p in pending if len(p[1])])
            for j, name in enumerate(self.mesh.columns):
                if name in self.mesh_columns:
                    cols[name] = mesh[:, j]
        return pd.DataFrame(cols, columns=self.columns)


def _sink_label(sink) -> str:
    return str(getattr(sink, "label", None) or type(sink).__name__)


def _call(sinks, method: str, *args) -> None:
    """Call ``method`` on every sink; any exception of a sink becomes an :class:`OutputError`
    (a full disk is a failure of the output, not of the input being analysed)."""
    for s in sinks:
        try:
            getattr(s, method)(*args)
        except OutputError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a sink raises, the output failed
            raise OutputError(f"writing {_sink_label(s)} failed: {type(exc).__name__}: {exc}") from exc


class _Progress:
    """A rich progress bar per input with frames/s and time left (no-op when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]{task.description}", justify="left"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                speed_estimate_period=10.0,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def add(self, name: str, total: int | None):
        if self._progress is None:
            return None
        return self._progress.add_task(name[:40], total=total, rate="")

    def advance(self, task) -> None:
        if self._progress is None or task is None:
            return
        self._progress.advance(task)
        speed = self._progress.tasks[[t.id for t in self._progress.tasks].index(task)].speed
        if speed:
            self._progress.update(task, rate=f"{speed:5.1f} frames/s")

    def done(self, task, failed: bool, rate: float | None = None) -> None:
        if self._progress is None or task is None:
            return
        t = next(t for t in self._progress.tasks if t.id == task)
        # the live rate is a moving estimate over bursts of decoded frames; the last one
        # shown is the input's average (frames / wall seconds), as in the summary line
        if rate is not None:
            self._progress.update(task, rate=f"{rate:5.1f} frames/s")
        if failed:
            self._progress.update(task, description=f"[red]{t.description} (failed)")
        if t.total is not None and t.completed < t.total:
            self._progress.update(task, total=t.completed)
