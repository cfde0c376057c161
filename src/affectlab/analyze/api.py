"""``affectlab.analyze``: images, folders and videos to a per-frame, per-face affect table."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from affectlab.analyze.pipeline import Analyzer, OutputError, RunStats, smoothing_spec
from affectlab.temporal import parse_smooth
from affectlab.analyze.table import AffectTable
from affectlab.errors import ConfigError, ModelError, user_stacklevel
from affectlab.perception.landmarks import MIN_ROI

class AnalyzeNotice(UserWarning):
    """A request that is not honoured as asked (``smooth="auto"`` without a stored mu, an
    annotated video without a video input ...). ``affectlab analyze`` prints each as one
    ``note:`` line; the Python API issues it as a warning."""


NO_DEFAULT_MODEL = "no model given and no packaged default model installed; pass --model RUN"


def load_predictor(model, *, device: str = "cpu", batch_size: int = 32):
    """A :class:`~affectlab.runtime.predictor.Predictor` from a run directory, model file, packaged
    name, or an existing predictor; ``None`` means the packaged ``default`` model."""
    from affectlab.runtime.hub import available_packaged_models
    from affectlab.runtime.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    if model is None:
        from affectlab.analyze.defaults import resolve_default_model

        model = resolve_default_model()
        if model == "default" and "default" not in available_packaged_models():
            raise ModelError(NO_DEFAULT_MODEL)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"model must be a run directory, a model file, a packaged model name or a Predictor; got {type(model).__name__}")
    return Predictor.load(model, device=device, batch_size=batch_size)


def analyze(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    model: Any = None,
    *,
    detector: Any = "auto",
    detector_options: Mapping[str, Any] | None = None,
    every: int = 1,
    start: float | None = None,
    end: float | None = None,
    smooth: float | str | Mapping[str, float] | None = None,
    batch_size: int = 32,
    out: str | os.PathLike | None = None,
    video_out: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    progress: bool = True,
    device: str = "cpu",
    threads: int | None = None,
    keep: bool = True,
    raise_on_failure: bool = False,
    resume: bool = False,
    landmarks: bool = False,
    blendshapes: bool = False,
    mesh: bool | None = None,
    detect_ahead: bool = True,
) -> AffectTable:
    """Analyse faces in images, folders, glob patterns and videos.

    Every frame (every ``every``-th of a video) gives one row per detected face with its
    box, expression probabilities, valence, arousal and AU probabilities (whatever the
    model predicts); a frame without a face gives one row with ``face = -1``. Faces keep
    a stable id within each video (IoU tracking).

    Parameters
    ----------
    inputs : path, glob pattern, or a list of them
        Image files, folders (searched recursively), glob patterns (``"clips/*.mp4"``)
        and video files (mp4, avi, mov, mkv, webm), in any mix.
    model : str, path or Predictor, optional
        A run directory, a ``model.ckpt``, a packaged model name, or a
        :class:`~affectlab.runtime.predictor.Predictor`. ``None``: the packaged default model.
    detector : str or callable
        ``"auto"`` (default: YuNet when its asset is present, else Haar with a one-line
        notice), ``"yunet"`` (an error naming the asset when it is missing offline),
        ``"haar"`` (OpenCV cascades), ``"none"`` (the whole image is the face), any name
        added with :func:`~affectlab.perception.detectors.register_detector`, or a
        callable ``image -> Faces | [N, 5] | [N, 15]``
        (see :mod:`affectlab.runtime.detection`).
    detector_options : dict, optional
        Keyword options of the detector factory (e.g. ``{"min_face": 0.05}`` for Haar,
        ``{"score_threshold": 0.8}`` for YuNet).
    every : int
        Analyse one video frame in ``every``.
    start, end : float, optional
        Time window of the videos, in seconds.
    smooth : float, "auto" or dict, optional
        Temporal smoothing (equation 9 of the SMM-EmotionNet paper) per face track;
        ``"auto"`` uses the mu stored with the model (none stored: no smoothing, with an
        :class:`AnalyzeNotice`); a dict gives one mu per task (``expr``, ``va``, ``au``).
    batch_size : int
        Face crops per forward pass.
    out : path, optional
        Also write the table to ``.csv``, ``.parquet`` or ``.json``, row chunk by row
        chunk (a failure or Ctrl-C leaves a valid file with every row computed so far).
    video_out : path, optional
        Annotated copy of each video (boxes, top expression, circumplex, top AUs); with
        several videos, ``<stem>_<name><suffix>`` beside it, ``<name>`` distinct per video
        (:func:`~affectlab.analyze.naming.unique_output_names`). Checked before the first
        frame (an extension whose container this FFmpeg cannot write is refused).
    report : path, optional
        Folder for the HTML report (:mod:`affectlab.analyze.report`): an index with a line
        per input, a page per video, one for the images, thumbnails.
    progress : bool
        Show a progress bar per input.
    device : str
        Where the model runs.
    threads : int, optional
        PyTorch threads while analysing (restored afterwards); ``None`` keeps the
        current setting. ``1`` is often fastest for small models on a busy CPU.
    keep : bool
        Keep the rows in memory and return them (``False`` for very long runs that only
        write ``out``: the returned table is then empty).
    raise_on_failure : bool
        Raise :class:`~affectlab.errors.AffectlabError` after the run if any input
        failed, instead of only warning.
    resume : bool
        Continue an interrupted run that wrote ``out``: keep the rows of the inputs it
        finished (recorded in ``<out>.progress.json``, which every run with ``out``
        keeps), drop the rows of an input cut mid-way, and analyse only the others,
        appending to ``out``; the table then equals that of one uninterrupted run.
        Refused (:class:`~affectlab.errors.ConfigError`) when a setting that decides the
        rows differs (model, columns, detector, ``every``, ``start``/``end``,
        ``smooth``). Without ``out`` on disk the run starts normally. Inputs that failed
        are not retried; finished inputs not given this time keep their rows. The
        report covers the whole table; ``video_out`` the videos analysed now. See
        :mod:`affectlab.analyze.resume`.
    landmarks : bool
        Add the 478 MediaPipe landmarks as columns ``lm<i>_x, lm<i>_y, lm<i>_z`` (image
        pixels; see :mod:`affectlab.analyze.mesh`). Needs the ``face-landmarker`` asset.
    blendshapes : bool
        Add the 52 blendshape coefficients as ``bs_<name>``. Needs ``face-landmarker``.
    mesh : bool, optional
        Head pose (``pose_yaw, pose_pitch, pose_roll``) and the landmarker's FACS AUs
        (``AU<k>``). ``None`` (default): when the ``face-landmarker`` asset is present
        (a note says how to get it otherwise); ``True``: required (missing asset: an
        error naming it); ``False``: off. Faces the landmarker cannot fit (profiles,
        tiny faces) keep their row with NaN in these columns, counted in one note.
    detect_ahead : bool
        Decode and detect video frames in their own threads, ahead of the models (uses a
        second core); ``False`` runs every stage in the calling thread (one core: what a
        corpus worker holding one CPU does).

    Returns
    -------
    AffectTable
        The rows (a pandas DataFrame subclass); ``table.model_info["failures"]`` lists
        inputs that could not be fully read and ``table.model_info["stats"]`` the timing.

    Examples
    --------
    >>> import affectlab
    >>> table = affectlab.analyze("session.mp4", model="runs/baseline", every=2)  # doctest: +SKIP
    >>> table.va.mean()  # doctest: +SKIP
    """
    from affectlab.analyze.inputs import check_sampling, expand_inputs, media_kind
    from affectlab.analyze.sinks import CollectSink, OverlaySink, ReportSink, TableSink
    from affectlab.analyze.writers import check_writable, table_format

    every, start, end = check_sampling(every, start, end)
    paths = expand_inputs(inputs)
    if resume and out is None:
        raise ConfigError("resume needs out: the table file of the run to continue")
    # every output is checked before the first frame: a bad one found later loses work
    if out is not None:
        table_format(out)
        check_writable(out, "out")
    if video_out is not None:
        from affectlab.analyze.overlay import check_video_out

        check_video_out(video_out)
    if report is not None:
        check_writable(report, "report", folder=True)
    from affectlab.runtime.detection import resolve_detector

    det, detector_name, note = resolve_detector(detector, detector_options)
    predictor = load_predictor(model, device=device, batch_size=batch_size)
    info = dict(getattr(predictor, "info", {}) or {})
    mu = smoothing_spec(smooth, info)
    if parse_smooth(smooth) in ("auto", "stored") and mu is None:
        warnings.warn(
            f"smooth 'auto': the model {info.get('path') or info.get('name') or 'given'} stores no smoothing mu "
            "(`affectlab evaluate --smooth auto` stores one); predictions are NOT smoothed -- pass a number to smooth",
            AnalyzeNotice, stacklevel=user_stacklevel())
    stage, no_landmarker = _mesh_stage(mesh, landmarks, blendshapes, predictor.label_space.aus)
    # what is missing is said in one line (both the detector and the landmarker are absent
    # on a first offline run: one notice, not two)
    missing = note is not None, no_landmarker
    if all(missing):
        from affectlab.analyze.defaults import missing_assets_notice

        warnings.warn(missing_assets_notice(predictor.label_space), AnalyzeNotice, stacklevel=user_stacklevel())
    elif note:
        warnings.warn(note, AnalyzeNotice, stacklevel=user_stacklevel())
    elif no_landmarker:
        warnings.warn(LANDMARKER_NOTICE, AnalyzeNotice, stacklevel=user_stacklevel())
    analyzer = Analyzer(predictor, det, every=every, start=start, end=end, batch_size=batch_size, smooth=mu,
                        threads=threads, mesh=stage, detect_ahead=detect_ahead)
    space = predictor.label_space
    aus = list(space.aus) + (list(stage.au_columns) if stage is not None else [])
    plan = None
    todo = paths
    sinks = []
    collect = CollectSink(analyzer.columns)
    if keep:
        sinks.append(collect)
    if out is not None:
        from affectlab.analyze.resume import ProgressSink, ResumeTableSink, plan_resume, run_settings

        settings = run_settings(predictor, info, analyzer.columns, detector_name, detector_options, every, start, end, mu)
        plan = plan_resume(out, settings, paths) if resume else None
        if plan is None:
            sinks += [TableSink(out, analyzer.columns), ProgressSink(out, settings)]
        else:
            todo = plan.remaining
            if keep:
                collect.chunks.append(plan.kept)
            if todo or plan.rewrite:  # otherwise the table and its sidecar stay untouched
                sinks += [ResumeTableSink(plan, analyzer.columns), ProgressSink(out, settings, plan.finished)]
    overlay = None
    if video_out is not None:
        videos = [str(p) for p in paths if media_kind(p) == "video"]
        if not videos:
            warnings.warn(f"no annotated video is written to {video_out}: the {len(paths)} inputs are still images "
                          "(annotated videos are made of video inputs only)", AnalyzeNotice, stacklevel=user_stacklevel())
        elif not any(media_kind(p) == "video" for p in todo):
            warnings.warn(f"no annotated video is written to {video_out}: every video was analysed before (resume)",
                          AnalyzeNotice, stacklevel=user_stacklevel())
        else:
            # named after all the videos, so a resumed run names its files as the first run
            overlay = OverlaySink(video_out, videos, space.expressions, aus, space.va)
            sinks.append(overlay)
    reporter = None
    if report is not None:
        named = [str(p) for p in paths] + ([e["input"] for e in plan.finished] if plan is not None else [])
        annotated = None
        if overlay is not None:
            def annotated(path, overlay=overlay):
                # this run's videos, or the file a first run wrote for a video kept by --resume
                if path in overlay.outputs:
                    return overlay.outputs[path]
                if path in overlay.videos and overlay.target(path).exists():
                    return overlay.target(path)
                return None
        window = None if start is None and end is None else f"{start or 0:g} s to {'end' if end is None else f'{end:g} s'}"
        run_info = {
            "model": str(info.get("path") or info.get("name") or repr(predictor)),
            "detector": detector if isinstance(detector, str) else getattr(detector, "__name__", repr(detector)),
            "every": "every frame" if every == 1 else f"one in {every}",
            "window": window,
            "smoothing": (", ".join(f"{k} mu={v:g}" for k, v in mu.items()) if mu else "none"),
            "table": str(out) if out is not None else None,
            "annotated": (str(video_out) if overlay is not None and len(overlay.videos) <= 1 else
                          f"{Path(video_out).stem}_<name>{Path(video_out).suffix} beside {video_out}"
                          if overlay is not None else None),
            "created": time.strftime("%Y-%m-%d %H:%M"),
            "sources": _sources_line(column_sources(predictor, info, stage)),
        }
        reporter = ReportSink(report, space.expressions, aus, analyzer.columns, inputs=named, run=run_info,
                              annotated=annotated)
        if plan is not None:
            from affectlab.analyze.resume import replay

            replay(plan, [reporter])  # the pages cover the rows kept from the first run too
        sinks.append(reporter)
    try:
        stats: RunStats = analyzer.run(todo, sinks, progress=progress)
    except OutputError as exc:
        if out is None:
            raise
        raise OutputError(f"{exc}; the inputs finished so far are kept in {out}: fix the output and repeat the "
                          "command with --resume to continue") from exc
    table = AffectTable.from_frame(
        collect.frame(),
        space.expressions,
        aus,
        {
            "model": str(info.get("path") or repr(predictor)),
            "detector": detector_name,
            "smoothing": mu,
            "failures": (plan.failures if plan is not None else []) + [str(f) for f in stats.failures],
            "stats": stats.to_dict(),
            "sources": column_sources(predictor, info, stage),
            "video_out": {k: str(v) for k, v in overlay.outputs.items()} if overlay else {},
            "report": {k: str(v) for k, v in reporter.pages.items()} if reporter else {},
            **({"resume": plan.summary()} if plan is not None else {}),
        },
    )
    if stage is not None and stage.failed:
        warnings.warn(f"{stage.failed} of {stage.faces} faces got no landmarks (a profile, a face under "
                      f"{MIN_ROI:.0f} px or not a face): their rows are kept with NaN pose/AU/landmark columns",
                      AnalyzeNotice, stacklevel=user_stacklevel())
    failures = table.model_info["failures"]
    if failures:
        n_inputs = stats.inputs + (len(plan.finished) if plan is not None else 0)
        message = f"{len(failures)} of {n_inputs} inputs failed: " + "; ".join(failures[:5])
        if raise_on_failure:
            from affectlab.errors import AffectlabError

            raise AffectlabError(message)
        warnings.warn(message, stacklevel=user_stacklevel())
    return table


LANDMARKER_NOTICE = ("no head pose and no landmarker AUs: the face-landmarker asset is not present "
                     "(`affectlab models fetch face-landmarker`, or `affectlab models add face_landmarker.task`)")


def _mesh_stage(mesh, landmarks: bool, blendshapes: bool, model_aus):
    """(the landmark stage analyze runs or ``None``, whether it is skipped for lack of the asset).

    Asking for landmarks without the asset is an error naming it.
    """
    from affectlab.analyze.defaults import landmarker_present
    from affectlab.analyze.mesh import MeshStage

    if mesh is not None and not isinstance(mesh, bool):
        raise ConfigError(f"mesh must be True, False or None (auto), got {mesh!r}")
    wanted = [name for name, on in (("landmarks", landmarks), ("blendshapes", blendshapes)) if on]
    if mesh is False and not wanted:
        return None, False
    if mesh is None and not wanted and not landmarker_present():
        return None, True  # analyze says so (LANDMARKER_NOTICE)
    # asked for (or present): a missing or damaged asset raises AssetMissingError naming it
    return MeshStage(pose=mesh is not False, aus=mesh is not False, landmarks=landmarks, blendshapes=blendshapes,
                     model_aus=model_aus), False


def _sources_line(sources: Mapping[str, str]) -> str:
    """``columns: source; ...`` grouped by source, for the report."""
    by: dict[str, list[str]] = {}
    for cols, src in sources.items():
        by.setdefault(src, []).append(cols)
    return "; ".join(f"{', '.join(cols)}: {src}" for src, cols in by.items())


def column_sources(predictor, info, stage) -> dict[str, str]:
    """Which model or asset produced which column group of the table."""
    model = str(info.get("name") or info.get("path") or repr(predictor))
    space = predictor.label_space
    out = {}
    if space.expressions:
        out["expr_*, expression"] = model
    if space.va:
        out["valence, arousal"] = model
    if space.aus:
        out["AU<k> (model)"] = model
    extras = list(getattr(predictor, "extra_columns", None) or {})
    if extras:
        out[", ".join(extras)] = model
    if stage is not None:
        out.update(stage.sources)
    return out


def run_cli(inputs, model, *, out, video_out, report, detector, every, start, end, smooth, batch_size, device,
            threads=None, progress=True, resume=False, landmarks=False, blendshapes=False, mesh=None, notify=None):
    """What ``affectlab analyze`` runs: :func:`analyze` that does not keep rows in memory.

    ``notify(message)`` receives each :class:`AnalyzeNotice` as it is issued (the CLI
    prints it as one line); other warnings are left to the CLI, which prints failures
    itself.
    """
    if out is None and video_out is None and report is None:
        raise ConfigError("nothing to write: pass --out FILE.csv|.parquet|.json, --video-out FILE.mp4 and/or --report DIR")
    if out is None and report is None:
        from affectlab.analyze.inputs import expand_inputs, media_kind

        if not any(media_kind(p) == "video" for p in expand_inputs(inputs)):
            raise ConfigError(f"--video-out {video_out}: no video among the inputs, so nothing would be written "
                              "(annotated videos are made of videos); add --out FILE.csv or --report DIR for images")
    smooth_value = parse_smooth(smooth)  # refused before any file is opened
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI prints failures itself
        warnings.simplefilter("always", AnalyzeNotice)

        def show(message, category, *args, **kwargs):
            if issubclass(category, AnalyzeNotice) and notify is not None:
                notify(str(message))

        warnings.showwarning = show  # restored by catch_warnings
        table = analyze(inputs, model, detector=detector, every=every, start=start, end=end, smooth=smooth_value,
                        batch_size=batch_size, out=out, video_out=video_out, report=report, progress=progress,
                        device=device, threads=threads, keep=False, resume=resume, landmarks=landmarks,
                        blendshapes=blendshapes, mesh=mesh)
    return table
