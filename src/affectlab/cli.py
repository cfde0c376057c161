"""The ``affectlab`` command line: thin typer commands over the library.

Each command parses options, calls one library function and prints its result. Logic
lives in the library so the Python API and the CLI behave the same. Imports of heavy
modules happen inside the commands so ``affectlab --help`` stays fast.

Errors: an :class:`~affectlab.errors.AffectlabError` (and other expected input errors)
print as one line ``error: ...`` and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from affectlab import __version__

console = Console(stderr=True)


def _flags_without_type(option_cls) -> None:
    """typer's rich help shows a type (``<bool>``) beside on/off flags such as ``--overwrite``,
    which suggests ``--overwrite true`` (refused): show flags without one, as click does."""
    shown = option_cls.display_type_rich
    if getattr(shown, "_affectlab", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich._affectlab = True
    option_cls.display_type_rich = display_type_rich


_flags_without_type(typer.core.TyperOption)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``; ``many`` for irregular plurals."""
    return f"{n} {word if n == 1 else (many or word + 's')}"

app = typer.Typer(
    name="affectlab",
    help=(
        "Facial affect analysis: expressions, valence/arousal and action units.\n\n"
        "Start with `affectlab demo`: it makes synthetic faces, trains and evaluates a small model and "
        "analyzes a video with it, then tells you where its report is. To analyze your own faces: "
        "`affectlab analyze VIDEO.mp4 --out table.csv`. Every command has its own --help."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

_STATE = {"debug": False}


def _version_callback(value: bool):
    if value:
        typer.echo(f"affectlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
):
    """Facial affect analysis: expressions, valence/arousal and action units."""
    _STATE["debug"] = debug


# --------------------------------------------------------------------------- commands
# Later modules register their commands below, one small function each.


@app.command("analyze")
def analyze_cmd(
    inputs: List[str] = typer.Argument(..., help="Images, folders (recursive), glob patterns ('clips/*.mp4') or videos."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Run directory, model.ckpt or packaged model name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Table to write: .csv, .parquet or .json."),
    video_out: Optional[Path] = typer.Option(
        None, "--video-out", help="Annotated video (.mp4, .mkv, .mov, .avi); several videos: OUT_<name>.mp4 each."
    ),
    report: Optional[Path] = typer.Option(
        None, "--report", help="Folder for the HTML report: index.html, a page per video, images.html."
    ),
    detector: str = typer.Option(
        "auto", "--detector", help="Face detector: auto (default: yunet when its asset is present, else haar), "
        "yunet, haar, or none (images are faces)."),
    every: int = typer.Option(1, "--every", min=1, help="Analyse one video frame in N."),
    start: Optional[float] = typer.Option(None, "--start", min=0, help="Start time in seconds (videos)."),
    end: Optional[float] = typer.Option(None, "--end", min=0, help="End time in seconds (videos)."),
    smooth: Optional[str] = typer.Option(None, "--smooth", help="Temporal smoothing per face track: MU >= 0, expr=9,va=9,au=7, or auto (the mu stored with the model)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Face crops per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="PyTorch threads (1 is often fastest on a busy CPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run: keep the inputs finished in --out, analyse the rest."
    ),
    engine: Optional[str] = typer.Option(
        None, "--engine", help="Corpus run, --out DIR gets one Parquet per input + index.csv: local (this process) "
        "or ray (a Ray cluster; pip install 'affectlab[cluster]')."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: join this Ray cluster (e.g. auto)."),
    landmarks: bool = typer.Option(False, "--landmarks", help="Add the 478 landmarks as `lm<i>_x/_y/_z` columns (asset face-landmarker)."),
    blendshapes: bool = typer.Option(False, "--blendshapes", help="Add the 52 blendshapes as `bs_<name>` columns (asset face-landmarker)."),
    mesh: Optional[bool] = typer.Option(
        None, "--mesh/--no-mesh", help="Head pose and landmarker AUs: default when face-landmarker is present; "
        "--mesh requires it, --no-mesh turns them off."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="--engine ray: worker processes."),
):
    """Find faces in images and videos and predict expressions, valence/arousal and AUs.

    Writes one row per frame and face (`input, frame, time_s, face, x, y, w, h, score,
    expr_<name>, expression, valence, arousal, AU<k>`); a frame without a face gives a row
    with face = -1. A model with an AURA head (the default `affectlab-base`; see `affectlab
    models attach-aura --help`) adds `archetype, archetype_label, archetype_purity,
    archetype_size, archetype_distance`. Faces keep their id across a video. Rows are written as they are
    computed, so a failure or Ctrl-C keeps everything done so far; unreadable files are
    reported and the others go on (exit code 1 if any failed).

    To continue an interrupted run, repeat the command with `--resume`: the inputs
    finished in --out (recorded in OUT.progress.json) are kept, an input cut mid-way is
    redone from its start, and the rest are appended, giving the table of one
    uninterrupted run. Other settings (model, --every, --smooth, --detector, --start/--end)
    are refused; inputs that failed are not retried; --report covers the whole table.

    Examples:

    * `affectlab analyze session.mp4 --model runs/base --out session.csv`
    * `affectlab analyze recordings/ "extra/*.mov" -m runs/base --out all.parquet --every 5 --report report/`
    * `affectlab analyze clip.mp4 -m runs/base --out t.csv --video-out annotated.mp4 --smooth 9`
    * already-cropped faces: `affectlab analyze faces/ -m runs/base --detector none --out t.csv`
    * after Ctrl-C at video 40 of 50: `affectlab analyze videos/ -m runs/base --out all.csv --resume`

    Corpora (hundreds of recordings): `--engine local|ray --out DIR` writes one Parquet
    table per input and `DIR/index.csv` (input, rows, frames, status, seconds, error) as
    each input finishes; inputs may include `.txt` files listing one input per line.
    Running the same command again skips finished inputs and redoes failed or cut ones.
    `--engine ray` starts a local Ray cluster of --workers CPUs, or joins `--address`:

    * `affectlab analyze recordings.txt --engine ray --workers 8 --out results/`
    """
    from affectlab.errors import check_device

    check_device(device)
    if engine is not None:
        return _analyze_corpus(inputs, model, out, engine=engine, address=address, workers=workers,
                               unsupported={"--video-out": video_out, "--report": report, "--resume": resume or None},
                               landmarks=landmarks, blendshapes=blendshapes, detector=detector, every=every, start=start, end=end, smooth=smooth,
                               batch_size=batch_size, device=device, threads=threads, progress=not quiet)
    if address is not None or workers is not None:
        from affectlab.errors import ConfigError

        raise ConfigError("--address and --workers need --engine ray")
    from rich.markup import escape

    from affectlab.analyze.api import run_cli

    try:
        table = run_cli(
            inputs, model, out=out, video_out=video_out, report=report, detector=detector, every=every, start=start,
            end=end, smooth=smooth, batch_size=batch_size, device=device, threads=threads, progress=not quiet,
            resume=resume, landmarks=landmarks, blendshapes=blendshapes, mesh=mesh, notify=lambda m: console.print(f"[yellow]note:[/yellow] {escape(m)}", highlight=False,
                                                          soft_wrap=True),
        )
    except KeyboardInterrupt:
        if out is not None:
            console.print(f"[yellow]interrupted: the rows so far are in {out}; add --resume to continue[/yellow]",
                          highlight=False)
        raise
    info = table.model_info
    st = info["stats"]
    resumed = info.get("resume")
    if resumed:
        console.print(f"resumed {out}: kept {plural(resumed['kept_rows'], 'row')} of "
                      f"{plural(resumed['kept_inputs'], 'finished input')}"
                      + (f", dropped {plural(resumed['dropped_rows'], 'row')} of unfinished ones" if resumed["dropped_rows"]
                         else ""), highlight=False)
    if resumed and not resumed["remaining"]:
        console.print(f"nothing to resume: every input is already in {out}"
                      + (f"; report -> {report}" if report is not None else ""), highlight=False)
    else:
        written = [str(p) for p in (out, report) if p is not None] + list(info["video_out"].values())
        console.print(
            f"[green]{plural(st['rows'], 'row')} from {plural(st['frames'], 'frame')} of {plural(st['inputs'], 'input')} "
            f"({st['fps']:.1f} frames/s)"
            f"[/green] -> {', '.join(written)}",
            highlight=False,
        )
    for failure in info["failures"]:
        console.print(f"[bold red]failed:[/bold red] {failure}", highlight=False, soft_wrap=True)
    if info["failures"]:
        raise typer.Exit(code=1)


def _analyze_corpus(inputs, model, out, *, engine, address, workers, unsupported, smooth, threads, **options):
    from affectlab.analyze.corpus import run_corpus
    from affectlab.errors import ConfigError

    given = [flag for flag, value in unsupported.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be combined with --engine: a corpus run writes one table per "
                          "input into --out DIR and continues by itself when run again")
    if out is None:
        raise ConfigError("--engine needs --out DIR: the folder of the per-input tables and index.csv")
    from affectlab.temporal import parse_smooth

    smooth = parse_smooth(smooth)
    result = run_corpus(inputs, out, engine=engine, model=model, address=address, workers=workers, smooth=smooth,
                        threads=threads or 1, **options)
    s = result.summary()
    kept = f", {s['kept']} kept from before" if s["kept"] else ""
    console.print(f"[green]{plural(s['analysed'], 'input')} analysed ({plural(s['frames'], 'frame')}, "
                  f"{plural(s['rows'], 'row')}, "
                  f"{s['seconds']:.1f} s, {s['workers']} worker(s)){kept}[/green] -> {out}/index.csv", highlight=False)
    for entry in result.failed:
        console.print(f"[bold red]failed:[/bold red] {entry['input']}: {entry['error']}", highlight=False,
                      soft_wrap=True)
    if result.failed:
        raise typer.Exit(code=1)


@app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; must be empty unless --overwrite)."),
    n: int = typer.Option(0, "--n", help="Number of still images (may be 0 with --sequences)."),
    size: int = typer.Option(112, "--size", help="Image side in pixels (>= 32)."),
    seed: int = typer.Option(0, "--seed", help="Seed: same seed, byte-identical data; identities s0-0, s0-1, ... for seed 0."),
    subjects: Optional[int] = typer.Option(None, "--subjects", help="Number of identities (default: n/10)."),
    label_noise: float = typer.Option(0.0, "--label-noise", help="Fraction of expression labels flipped (0-1)."),
    drop_labels: float = typer.Option(0.0, "--drop-labels", help="Chance each descriptor of a sample is dropped (0-1)."),
    blend: float = typer.Option(
        0.0, "--blend",
        help="Chance a basic-expression face blends in a second expression (0-1); label: the larger part, VA: the blend.",
    ),
    keep: str = typer.Option("expr,va,au", "--keep", help="Descriptors to write: comma list of expr, va, au."),
    sequences: int = typer.Option(0, "--sequences", help="Number of video clips (onset-apex-offset)."),
    frames: int = typer.Option(0, "--frames", help="Frames per clip."),
    frame_noise: float = typer.Option(
        0.0, "--frame-noise", help="Clips: strength of independent per-frame brightness/pose/blur/noise (labels unchanged)."
    ),
    expressions: Optional[str] = typer.Option(None, "--expressions", help="Comma list of classes (default all 8)."),
    image_format: str = typer.Option("jpg", "--format", help="jpg (quality 95, fast) or png (lossless)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous synthetic set in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Make a synthetic face dataset with complete ground truth (expression, VA, 16 AUs).

    Faces are drawn from action-unit intensities (EMFACS prototypes: happiness 6+12,
    sadness 1+4+15, ...), with varied identities, pose, lighting, backgrounds and
    occlusions. Writes JPEG images and `OUT/labels.csv` (manifest format: `path`, `subject`,
    `expression`, `valence`, `arousal`, AU presence `AU12` (intensity >= 1) and `AU12_intensity` 0-5).

    Examples: `affectlab synth --out demo --n 2000`;
    noisy labels: `affectlab synth --out noisy --n 2000 --label-noise 0.2`;
    an expression-only set: `affectlab synth --out expr_only --n 1000 --keep expr --seed 1`;
    video clips: `affectlab synth --out clips --sequences 20 --frames 60` (add `--frame-noise 1`
    for frame-to-frame jitter that temporal smoothing should remove);
    VA that says more than the class: `affectlab synth --out blends --n 3000 --blend 1`.
    """
    from affectlab.data.synth import generate

    df = generate(
        out, n, size=size, seed=seed, subjects=subjects, label_noise=label_noise, drop_labels=drop_labels,
        keep=keep, sequences=sequences, frames=frames, expressions=expressions, image_format=image_format,
        overwrite=overwrite, progress=not quiet, frame_noise=frame_noise, blend=blend,
    )
    console.print(
        f"[green]{plural(len(df), 'image')} of {plural(df['subject'].nunique(), 'subject')} written to {out}[/green] "
        f"(labels: {out / 'labels.csv'})",
        highlight=False,
    )


@app.command("train")
def train_cmd(
    # no -m: that is --model in every command that takes a model
    method: Optional[str] = typer.Option(None, "--method", help="Method name: baseline, aura, cage, smm, vavae."),
    train: Optional[List[str]] = typer.Option(
        None, "--train", help="Training data spec (FORMAT:PATH[:SPLIT]); repeat for several sets."
    ),
    val: Optional[List[str]] = typer.Option(
        None, "--val", help="Validation data spec. Default: a subject-disjoint 10% of --train."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory to write."),
    preset: Optional[str] = typer.Option(
        None, "--preset",
        help="Preset name or YAML file. Default: the method's recommended preset (baseline, smm-synth, cage-synth, aura, "
        "vavae); none: no preset.",
    ),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Backbone, e.g. builtin:cnn-small."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Descriptors to learn, e.g. expr,va,au."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Number of epochs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Batch size per process."),
    global_batch_size: Optional[int] = typer.Option(
        None, "--global-batch-size", min=1,
        help="Batch over all DDP processes (split evenly; keeps a paper's effective batch on many GPUs).",
    ),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Iteration budget (stops before --epochs)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (same seed, same result on the CPU)."),
    sets: Optional[List[str]] = typer.Option(
        None, "--set", help="Override any config or method key: --set weight_decay=0.05 --set hidden=32."
    ),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices (processes) per node, or 'auto'."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", min=1, help="Number of nodes (DDP)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Lightning strategy: auto, ddp, ..."),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="cpu, gpu or auto."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", min=0, help="DataLoader workers per process."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the interrupted run in this directory."),
    feature_cache: Optional[Path] = typer.Option(
        None, "--feature-cache",
        help="Feature-level methods (aura) on images: where the extracted features are kept "
        "(default $AFFECTLAB_HOME/features; reused when backbone and data are unchanged).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a method and write a run directory (config.yaml, model.ckpt, metrics.json, log.csv).

    Example: `affectlab train --method baseline --preset baseline --train manifest:synth/labels.csv
    --out runs/base --epochs 5`. Multi-GPU: add `--devices 8 --num-nodes 4 --strategy ddp`.
    Continue an interrupted run: `affectlab train --resume runs/base`.
    """
    from affectlab.errors import check_device
    from affectlab.train.engine import run_training

    if accelerator is not None:
        check_device(accelerator, "--accelerator")
    dev = None if devices is None else (int(devices) if devices.isdigit() else devices)
    extra = _default_preset_options(method, preset, resume, train, sets or ())
    note = None
    if extra is not None:
        preset, extra = extra
        note = _default_preset_note(method, preset) if preset else None
    if resume is None and backbone is not None:
        train, val = _features_from_images(method, preset, backbone, train, val, feature_cache, not quiet)
    try:
        result = run_training(
            method=method, train_specs=train, val_specs=val, out=out, preset=preset, resume=resume,
            sets=sets or (), progress=not quiet, backbone=backbone, tasks=tasks, epochs=epochs,
            batch_size=batch_size, global_batch_size=global_batch_size, max_steps=max_steps, lr=lr, seed=seed,
            devices=dev, num_nodes=num_nodes, strategy=strategy, accelerator=accelerator, num_workers=num_workers,
            **(extra or {}),
        )
    except KeyboardInterrupt:
        # one line, also with -q: where the run is and how to go on (last.ckpt holds the last finished epoch)
        run = resume if resume is not None else out
        console.print(f"[yellow]interrupted[/yellow]: continue with: affectlab train --resume {run}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(code=130) from None
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0 and not quiet:  # -q: nothing but errors
        if result.skipped:
            console.print(f"[yellow]{plural(result.skipped, 'unreadable image')} skipped[/yellow] in each epoch "
                          "(they are left out of training and validation)", highlight=False)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
        console.print(
            f"[green]run written to {result.run_dir}[/green]: best epoch {result.best_epoch} "
            f"({result.monitor} {result.monitor_value:.4f}); {shown}",
            highlight=False,
        )
        if note:
            console.print(note, highlight=False)


def _features_from_images(method, preset, backbone, train, val, cache, progress):
    """A feature-level method given images and a backbone: extract (or reuse) the features first."""
    from affectlab.features.auto import features_for_specs, is_feature_spec
    from affectlab.methods.base import get_method_class
    from affectlab.train.config import load_preset

    name = method or (load_preset(preset).get("method") if preset else None) or "baseline"
    try:
        kind = getattr(get_method_class(name), "input_kind", "image")
    except Exception:  # noqa: BLE001 - an unknown method is reported by the training itself
        return train, val
    specs = list(train or []) + list(val or [])
    if kind != "features" or not specs or all(is_feature_spec(s) for s in specs):
        return train, val
    if progress:
        console.print(f"encoding the images with {backbone} for --method {name} (cached, resumable)", highlight=False)
    kw = dict(cache_dir=cache, progress=progress)
    return features_for_specs(train, backbone, **kw), features_for_specs(val, backbone, **kw)


def _default_preset_options(method, preset, resume, train, sets):
    """(preset, extra options) for a new run: the method's recommended preset without
    ``--preset`` (``--preset none``: the bare defaults); ``None`` leaves things as given."""
    from affectlab import presets
    from affectlab.train.config import load_preset, parse_set

    if resume is not None:
        return None
    if preset == presets.NO_PRESET:
        return None, {}
    if preset is not None:
        return None
    name = presets.recommended_preset(method)
    if name is None:
        return None
    given = set(parse_set(sets))
    extra = {k: v for k, v in presets.data_adjustments(load_preset(name), train).items() if k not in given}
    return name, extra


def _default_preset_note(method, name) -> str:
    from affectlab import presets

    paper = presets.PAPER.get(method or "baseline") or ()
    hint = f"; the paper's setting: --preset {' / '.join(paper)}" if paper else ""
    return f"no --preset: trained with {name!r}, the recommended setting of --method {method or 'baseline'}{hint}"


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Option(
        ..., "--model", "-m", help="Run directory, model file or packaged model name (affectlab models)."
    ),
    data: str = typer.Option(..., "--data", help="Dataset spec, e.g. rafdb:/data/RAF-DB:test."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    predictions: Optional[Path] = typer.Option(
        None, "--predictions", help="Write per-sample predictions (.csv or .parquet)."
    ),
    per_class: bool = typer.Option(False, "--per-class", help="Per-class / per-AU rows and a confusion-matrix PNG."),
    plots: Optional[Path] = typer.Option(
        None, "--plots",
        help="Folder for plots: row-normalised confusion matrix and cumulative |error| curves of valence/arousal "
        "(default for --per-class: next to --json, or .).",
    ),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="abaw: add the ABAW multi-task score abaw_mtl."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Evaluation batch size."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="DataLoader workers."),
    smooth: Optional[str] = typer.Option(
        None, "--smooth", help="Temporal smoothing along each video (eq. 9): MU, expr=9,va=9,au=7, auto or stored."
    ),
    smooth_level: str = typer.Option(
        "auto", "--smooth-level", help="auto, features (before the last FC, e.g. SMM) or outputs."
    ),
    detect_faces: bool = typer.Option(
        False, "--detect-faces", help="The images are uncropped photos: find and crop each face as analyze does."
    ),
    detector: str = typer.Option("auto", "--detector", help="Detector for --detect-faces: auto, yunet or haar."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Evaluate a trained model on a dataset with the metrics of the papers it implements.

    Metrics cover the descriptors the model and the data share (classes and AUs matched
    by name). Example: `affectlab evaluate --model runs/base --data manifest:test/labels.csv
    --json test.json --per-class --plots plots/`.

    Video data (a `video` column) can be smoothed over time before scoring:
    `--smooth 5`, or `--smooth auto` to pick mu in 0..10 per task by 3-fold
    cross-validation over the videos (stored in the run for `--smooth stored` and
    `analyze --smooth auto`). Example: `affectlab evaluate --model runs/smm
    --data manifest:val_clips/labels.csv --smooth auto --protocol abaw`.

    Photographs that are not face crops: `--detect-faces` finds each face with the
    detector analyze uses (YuNet when present) and crops it as the model's framing says,
    so the figures are what `affectlab analyze` gives on the same photos.
    """
    from rich.markup import escape
    from rich.table import Table

    from affectlab.evaluate.engine import metrics_rows, run_evaluation

    result = run_evaluation(
        model, data, json_out=json_out, predictions_out=predictions, plots=plots, per_class=per_class,
        protocol=protocol, batch_size=batch_size, num_workers=num_workers, progress=not quiet,
        smooth=smooth, smooth_level=smooth_level, detect_faces=detect_faces, detector=detector,
    )
    if result.framing is not None:
        f = result.framing
        console.print(f"faces found by {f['detector']} in {f['images'] - f['no_face']} of {f['images']} images "
                      f"(framing {f['framing']['kind']}; no face: the whole image)", highlight=False)
    if result.smoothing is not None:
        chosen = ", ".join(f"{t} {mu:g}" for t, mu in result.smoothing["mu"].items())
        console.print(f"smoothing ({result.smoothing['level']}) mu: {chosen}", highlight=False)
    table = Table(title=plural(len(result.predictions), "sample"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics_rows(result.metrics, per_class=per_class):
        table.add_row(escape(name), value)
    Console().print(table)
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}", highlight=False)
    for line in getattr(result, "notes", ()):
        console.print(f"[yellow]note:[/yellow] {line}", highlight=False, soft_wrap=True)
    if result.skipped:
        console.print(f"[yellow]{plural(result.skipped, 'unreadable image')} skipped[/yellow]")


@app.command("datasets")
def datasets_cmd(
    spec: Optional[str] = typer.Argument(
        None, help="Optional dataset spec FORMAT:PATH[:SPLIT] to load and summarise."
    ),
):
    """List the dataset formats affectlab reads: layout, splits and reader options.

    Commands that take data (`train --train`, `evaluate --data`, `data check`) take a spec
    `FORMAT:PATH[:SPLIT]`, e.g. `affectnet:/data/AffectNet:train`, `affectnet7:/data/AffectNet:val`,
    `rafdb:/data/RAF-DB:test`, `abaw:/data/ABAW3:Validation`, `manifest:out/labels.csv` or
    `imagefolder:/data/faces`; a bare .csv/.parquet path or a folder with labels.csv is a
    manifest. Without SPLIT every split is loaded.

    Examples: `affectlab datasets`; `affectlab datasets ckplus:data/ckplus48`
    (loads it and prints classes, AU prevalence and identities).
    """
    from rich.markup import escape
    from rich.table import Table

    from affectlab.data.datasets import format_rows, load_dataset

    if spec is not None:
        Console().print(escape(load_dataset(spec).describe()), highlight=False)
        return
    table = Table(title="dataset formats (spec FORMAT:PATH[:SPLIT])", show_lines=True)
    for col in ("format", "splits", "options", "layout"):
        table.add_column(col, overflow="fold")
    for row in format_rows():
        name = row["format"] + (f"\n({row['aliases']})" if row["aliases"] else "")
        table.add_row(escape(name), escape(row["splits"]), escape(row["options"]), escape(row["layout"]))
    Console().print(table)


data_app = typer.Typer(
    help="Inspect datasets: validate one and summarise its labels (`affectlab data check --help`).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check_cmd(
    spec: str = typer.Argument(..., help="Dataset spec FORMAT:PATH[:SPLIT] (or a manifest path); the training split."),
    spec2: Optional[str] = typer.Argument(None, help="Optional second spec (validation split) to compare with SPEC."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write the analysis figures (PNG) into this folder."),
    decode: bool = typer.Option(False, "--decode", help="Also decode every image and count unreadable ones (slow)."),
    option: Optional[List[str]] = typer.Option(
        None, "--option", "-o", help="Reader option KEY=VALUE (YAML value), repeatable: -o variant=7."
    ),
):
    """Validate a dataset and print its label statistics.

    Loads SPEC with the format's reader (which checks every annotation line), then prints:
    size, images missing on disk (dropped), samples per expression class with class weights,
    missing labels per descriptor, valence/arousal mean/std/median per class, AU prevalence
    with positive weights, labels per sample for multi-label sets, and with SPEC2 a
    train-vs-validation comparison. `--plots DIR` writes class distribution, VA circumplex
    histogram, VA box plots per class, AU prevalence and split comparison figures.

    Example: `affectlab data check ckplus:data/ckplus48 --plots ck_plots`, or
    `affectlab data check affectnet:/data/AffectNet:train affectnet:/data/AffectNet:val`.
    """
    from affectlab.data.check import check_dataset, render_report
    from affectlab.train.config import parse_set

    render_report(check_dataset(spec, spec2, plots=plots, decode=decode, options=parse_set(option or ())))


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for everything the demo writes."),
    n_train: int = typer.Option(1200, "--n-train", help="Synthetic training images."),
    n_test: int = typer.Option(400, "--n-test", help="Held-out synthetic images (other identities)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the baseline preset's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data and the training run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo in --out."),
):
    """Run affectlab end to end on synthetic faces in a few minutes.

    Makes a synthetic training set and a held-out set of other identities (`affectlab
    synth`), trains the multi-task baseline (`affectlab train --method baseline`),
    evaluates it (`affectlab evaluate`) and analyzes a synthetic video with it
    (`affectlab analyze --detector none`: table, HTML report, annotated video).

    Example: `affectlab demo --out demo`, then open `demo/report/index.html`.
    """
    from affectlab.demo import run_demo

    result = run_demo(out, n_train=n_train, n_test=n_test, epochs=epochs, seed=seed, overwrite=overwrite)
    m = result.metrics
    shown = ", ".join(f"{k} {m[k]:.3f}" for k in ("expr_acc", "expr_f1_macro", "va_ccc", "au_f1_mean") if k in m)
    Console().print(f"held-out synthetic identities: {shown}", highlight=False)
    Console().print(
        f"run: {result.run}\nanalysis: {result.table} ({plural(result.rows, 'row')}), video: {result.video}\n"
        f"Open the report in a browser: {result.report / 'index.html'}",
        highlight=False,
        soft_wrap=True,  # paths stay whole, to copy
    )


@app.command("transfer-va")
def transfer_va_cmd(
    target: str = typer.Option(..., "--target", help="Dataset spec of the expression-only dataset to label."),
    out: Path = typer.Option(..., "--out", help="Manifest CSV to write (the ellipse table goes beside it)."),
    anchor: Optional[str] = typer.Option(None, "--anchor", help="Dataset spec with expression + valence/arousal."),
    ellipses: Optional[Path] = typer.Option(
        None, "--ellipses", help="Reuse an ellipse table written by an earlier run instead of --anchor."
    ),
    discrete: bool = typer.Option(False, "--discrete", help="Integer labels in [-10, 10] (stored /10)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same labels."),
):
    """Give an expression-only dataset valence/arousal labels from an anchor dataset.

    Per expression class of the anchor, an ellipse centred at (mean valence, mean arousal)
    with semi-axes (std valence, std arousal); each target sample gets a point drawn
    uniformly inside its class's ellipse (the VA-VAE report, see ARCHITECTURE.md). The output is a
    manifest any method trains on; `--ellipses` reuses a table when the anchor is not at hand.

    Example: `affectlab transfer-va --anchor demo/data --target imagefolder:/data/faces
    --out faces_va.csv`.
    """
    from rich.table import Table

    from affectlab.data.datasets import load_dataset
    from affectlab.data.va_transfer import ellipse_path, read_ellipses, transfer_va

    if (anchor is None) == (ellipses is None):
        raise typer.BadParameter("give exactly one of --anchor or --ellipses")
    target_ds = load_dataset(target)
    kwargs = {"ellipses": read_ellipses(ellipses)} if ellipses else {"anchor": load_dataset(anchor).labels}
    manifest, table = transfer_va(target_ds.labels, out, discrete=discrete, seed=seed, **kwargs)
    view = Table(title="anchor valence/arousal ellipses per class")
    for col in ("expression", "mean_valence", "mean_arousal", "std_valence", "std_arousal", "targets"):
        view.add_column(col)
    counts = manifest["expression"].value_counts()
    for row in table.itertuples(index=False):
        view.add_row(
            row.expression,
            *(f"{getattr(row, c):+.3f}" for c in ("mean_valence", "mean_arousal")),
            *(f"{getattr(row, c):.3f}" for c in ("std_valence", "std_arousal")),
            str(int(counts.get(row.expression, 0))),
        )
    Console().print(view)
    Console().print(f"wrote {plural(len(manifest), 'row')} to {out} and the ellipses to {ellipse_path(out)}", highlight=False)
    if manifest["path"].astype(str).str.startswith("../").any():
        # the images are outside the manifest's folder, which readers refuse unless told
        Console().print(f"its images lie outside {out.parent}: train on it as "
                        f"'manifest:{out}?allow_outside_root=true' (or write --out next to the images)",
                        highlight=False, soft_wrap=True)


@app.command("extract")
def extract_cmd(
    spec: str = typer.Argument(..., help="Dataset spec (FORMAT:PATH[:SPLIT]) whose images to encode."),
    backbone: str = typer.Option(
        ..., "--backbone", help="Frozen encoder: clip:ViT-B-16, run:RUN_DIR, builtin:cnn-small, timm:NAME ..."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Feature store to write or resume (FEAT.zarr)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local weights file for the backbone."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    dtype: str = typer.Option("float16", "--dtype", help="Storage type: float16 or float32."),
    patch: bool = typer.Option(False, "--patch", help="Also store patch tokens (or a CNN's flattened map)."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="DataLoader workers decoding images."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when available)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
    pretrained: bool = typer.Option(
        False, "--pretrained",
        help="torchvision:/timm:/clip: backbones: their standard weights (the library's own cache; "
        "clip:NAME@TAG implies it).",
    ),
    random_init: bool = typer.Option(
        False, "--random-init",
        help="Allow a builtin:/clip:/torchvision:/timm: backbone with random weights (a control).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    chunk_rows: Optional[int] = typer.Option(
        None, "--chunk-rows", min=1, help="Rows per chunk, the unit of resumption and of DDP ranks (default 16 x batch)."),
    devices: int = typer.Option(1, "--devices", min=1, help="Processes (CPU) or GPUs per node: Lightning DDP ranks."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Nodes of a multi-node DDP extraction."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Lightning strategy with several ranks (ddp)."),
    detect_faces: bool = typer.Option(
        False, "--detect-faces", help="The images are uncropped photos: find and crop each face as analyze does."
    ),
    detector: str = typer.Option("auto", "--detector", help="Detector for --detect-faces: auto, yunet or haar."),
):
    """Encode a dataset once with a frozen backbone into a resumable feature store.

    The store keeps the features (float16 by default), the label table and the backbone,
    preprocessing and dataset fingerprint; re-running the same command after an
    interruption resumes where it stopped. Train feature-level methods on it:
    `affectlab train --method aura --train features:FEAT.zarr`.

    Example: `affectlab extract manifest:synth/labels.csv --backbone run:runs/cnn --out synth.zarr`.

    Over several processes or nodes (Lightning DDP; each rank writes its own chunks of the
    same store; the features equal a one-process extraction's):
    `affectlab extract SPEC --backbone NAME --out FEAT.zarr --devices 4 --strategy ddp`.
    """
    import os

    from affectlab.errors import ConfigError
    from affectlab.features.cache import extract_features

    family = backbone.split(":", 1)[0] + ":" if ":" in backbone else ""
    if family == "clip:" and "@" in backbone:
        pretrained = True
    if family in ("clip:", "torchvision:", "timm:") and weights is None and not pretrained and not random_init:
        tagged = f" (or name open_clip's weights: {backbone}@openai)" if family == "clip:" else ""
        raise ConfigError(
            f"{backbone} without weights would encode with random weights: pass --weights FILE, --pretrained "
            f"(the library's standard weights){tagged}, or --random-init for a random-weight control"
        )
    if family == "builtin:" and weights is None and not random_init:
        # built-in encoders have no published weights: without a file they are random (and the
        # features of two extractions differ), which is only ever wanted as a control
        raise ConfigError(
            f"{backbone} has no pretrained weights: pass --weights FILE, use a trained encoder "
            f"(--backbone run:RUN_DIR), or --random-init for a random-weight control"
        )
    data, encoder = spec, backbone
    if detect_faces:
        from affectlab.data.datasets import load_dataset
        from affectlab.features.backbones import create_backbone
        from affectlab.runtime.framing import set_framing

        data = load_dataset(spec)
        encoder = create_backbone(backbone, weights=weights, pretrained=pretrained)
        set_framing(data, encoder.preprocessing, detector=detector, progress=not quiet)
    store = extract_features(
        data, encoder, out, weights=weights, pretrained=pretrained, batch_size=batch_size, dtype=dtype, patch=patch,
        num_workers=num_workers, device=device, overwrite=overwrite, progress=not quiet, devices=devices,
        num_nodes=num_nodes, strategy=strategy, chunk_rows=chunk_rows,
    )
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":  # once, not per rank
        console.print(f"[green]wrote[/green] {store.describe()}", highlight=False)


@app.command("explain")
def explain_cmd(
    model: str = typer.Option(
        ..., "--model", "-m", help="Run directory, model file or packaged model name of the model to explain."
    ),
    data: str = typer.Option(..., "--data", help="Data to explain it on: features:FEAT.zarr or a dataset spec."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the tables, plots and HTML page."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Samples per forward pass."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    compare: Optional[Path] = typer.Option(
        None, "--compare", help="A second run shown side by side (VA-VAE: the vanilla VAE beside the regularized one)."
    ),
    embedding: Optional[str] = typer.Option(None, "--embedding", help="AURA: 2-D embedding of the plots, umap (default) or pca."),
):
    """Explain what a trained model learned, on a dataset (method-specific outputs).

    AURA: archetypes.csv (Table 1: archetypes per class / VA bin / AU bin, usage and
    sample counts), diagnosis.csv (samples whose label disagrees with their archetype,
    most confident first: likely annotation errors), umap.png, va_archetypes.png and
    archetypes.html (label statistics and the closest samples of every archetype).
    The same for a model with an attached AURA head (`--model default`, image data:
    encoded with the model's own encoder).
    VA-VAE: the seven tasks of 003 (reconstructions, latent/VA alignment, expression,
    regression and inverse-regression probes on held-out identities, latents by class,
    circumplex) and vavae.html; `--compare RUN2` puts a second VAE beside the first.
    SMM: t-SNE views of the AU spaces by presence (sign_space_tsne.png) and of the message
    space with expression ellipses and valence/arousal gradient arrows
    (message_space_tsne.png), on image data: `--data manifest:test/labels.csv`.

    Example: `affectlab explain --model runs/aura --data features:test.zarr --out explain/`.
    """
    from affectlab.interpret import explain

    extra = {"compare": compare} if compare is not None else {}
    if embedding is not None:
        extra["embedding"] = embedding
    result = explain(model, data, out, batch_size=batch_size, progress=not quiet, **extra)
    for name, path in result.get("files", {}).items():
        console.print(f"{name}: {path}", highlight=False)
    for line in result.get("summary", []):
        console.print(line, highlight=False)


models_app = typer.Typer(
    help=(
        "Packaged and imported models, and the pretrained assets (YuNet, FaceLandmarker, face-api, ...). "
        "`affectlab models` lists them; `affectlab models fetch all` downloads the assets; "
        "`affectlab models add FILE` registers a local copy offline; "
        "`affectlab models import emotiefflib:enet_b0_8_best_afew` adds a public checkpoint."
    ),
    invoke_without_command=True,
    rich_markup_mode="markdown",
)
app.add_typer(models_app, name="models")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _print_models() -> None:
    from rich.markup import escape
    from rich.table import Table

    from affectlab.runtime.assets import affectlab_home, list_assets
    from affectlab.runtime.hub import list_models, models_home

    out = Console()
    table = Table(title=f"models (imported ones live in {models_home()})")
    for col in ("name", "kind", "description", "path"):
        table.add_column(col, overflow="fold")
    for row in list_models():
        table.add_row(*(escape(str(row[c])) for c in ("name", "kind", "description", "path")))
    out.print(table)
    assets = Table(title=f"pretrained assets (cache: {affectlab_home()})")
    for col in ("name", "status", "size", "license", "description", "path"):
        assets.add_column(col, overflow="fold")
    style = {"present": "green", "missing": "yellow", "damaged": "bold red"}
    for row in list_assets():
        assets.add_row(
            escape(row["name"]),
            f"[{style[row['status']]}]{row['status']}[/]",
            _size(row["size"]),
            escape(row["license"]),
            escape(row["description"]),
            escape(row["path"]),
        )
    out.print(assets)


@models_app.callback()
def models_cmd(ctx: typer.Context):
    """List the models usable as `--model NAME` -- the packaged `affectlab-base` (alias `default`,
    used when `analyze` gets no `--model`) and the models imported with `affectlab models import` --
    and the pretrained assets with their status (present / missing / damaged), size and license.

    Assets are downloaded on first use into $AFFECTLAB_HOME (default: the user cache dir) and
    verified by sha256; `AFFECTLAB_OFFLINE=1` forbids downloads.

    Examples: `affectlab models`, `affectlab models fetch all`, `affectlab models add face_landmarker.task`.
    """
    if ctx.invoked_subcommand is None:
        _print_models()


@models_app.command("list")
def models_list_cmd():
    """List packaged and imported models and the pretrained assets (same as `affectlab models`)."""
    _print_models()


@models_app.command("add")
def models_add_cmd(
    files: List[Path] = typer.Argument(..., help="Local copies of pretrained assets (any file names)."),
):
    """Register local copies of pretrained assets, for machines without internet.

    Each file is recognised by its sha256 and copied into the asset cache ($AFFECTLAB_HOME/assets,
    or torchvision's cache for torchvision weights). An unknown or damaged file is refused by
    name with what was expected, and then nothing is copied. `affectlab models` lists the known assets.

    Examples:

    - `affectlab models add face_detection_yunet_2023mar.onnx face_landmarker.task`
    - `affectlab models add face-api/face_expression_model.bin face-api/face_expression_model-weights_manifest.json`
    """
    from affectlab.runtime.assets import add_files

    for dest, name in add_files(files):
        console.print(f"[green]added[/green] {name} -> {dest}", highlight=False)


@models_app.command("fetch")
def models_fetch_cmd(
    names: List[str] = typer.Argument(..., help="Asset names (see `affectlab models`), or `all`."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Download pretrained assets now (those already present and verified are kept).

    Files come from their official URLs (`AFFECTLAB_ASSET_BASE_URL` points at a mirror), are
    verified by sha256 before they are placed, and an interrupted download leaves nothing behind.

    Examples: `affectlab models fetch all`, `affectlab models fetch yunet face-landmarker`.
    """
    from affectlab.runtime.assets import fetch

    for name, path in fetch(names, progress=not quiet):
        console.print(f"[green]present[/green] {name}: {path}", highlight=False)


@models_app.command("import")
def models_import_cmd(
    source: str = typer.Argument(
        ..., help="SOURCE:NAME: `emotiefflib:<model>` (e.g. `emotiefflib:enet_b0_8_va_mtl`), `faceapi:expression` "
        "or `clip:<arch>`."
    ),
    file: Optional[Path] = typer.Option(None, "--file", help="Local copy of the checkpoint (offline; required for clip:)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier import of the same name."),
):
    """Import a public checkpoint as an affectlab model, stored under $AFFECTLAB_HOME/models
    (default: models/ in the user cache dir, e.g. ~/.cache/affectlab/models).

    `emotiefflib:<name>` wraps an EmotiEffLib ONNX expression model (AffectNet classes,
    `*_mtl` also valence/arousal; Apache-2.0) with its preprocessing and label order, so
    `analyze`, `evaluate` and `explain` take `--model emotiefflib:<name>`. Names:
    enet_b0_8_best_afew, enet_b0_8_best_vgaf, enet_b0_8_va_mtl, enet_b2_8, enet_b2_7.
    Downloads once when online; offline pass `--file enet_b0_8_best_afew.onnx`.
    `faceapi:expression` converts face-api.js's FaceExpressionNet (MIT): 7 expressions,
    **no contempt**, 112 px input; its weights come from the asset hub (downloaded and
    verified on first use, or registered with `affectlab models add`), or from
    `--file face_expression_model.bin` (manifest beside it).
    `clip:<arch>` registers a local open_clip checkpoint for `--backbone clip:<arch>`.

    Examples: `affectlab models import emotiefflib:enet_b0_8_va_mtl --file enet_b0_8_va_mtl.onnx`,
    then `affectlab analyze clip.mp4 --model emotiefflib:enet_b0_8_va_mtl`;
    `affectlab models import faceapi:expression`, then `affectlab evaluate --model faceapi:expression ...`.
    """
    from affectlab.runtime.importers import import_model

    info = import_model(source, file, force=force)
    console.print(f"[green]imported[/green] {info['name']}: {info.get('description', '')} -> {info['path']}", highlight=False)
    if info.get("kind") == "backbone":
        console.print(
            f"use it with --backbone {info['backbone']} --weights {Path(info['path']) / info['weights']}", highlight=False
        )


@models_app.command("attach-aura")
def models_attach_aura_cmd(
    head: Path = typer.Option(..., "--head", help="AURA run trained on features of --model's encoder (--preset aura)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (e.g. with_aura.ckpt)."),
    model: str = typer.Option("default", "--model", "-m", help="Image model: run directory, model file or packaged name."),
    members: Optional[str] = typer.Option(
        None, "--members", help="features:TRAIN.zarr whose labels describe each archetype (default: the head's training store)."
    ),
    predict: str = typer.Option("base", "--predict", help="Predictions to output: base (the image model's, default) or aura."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Combine an image model and an AURA head on its frozen features into one model file.

    With it, `analyze` (and `Predictor` / `affectlab.analyze`) adds per face the nearest
    archetype and what its training members were labelled: `archetype`, `archetype_label`
    (majority expression), `archetype_purity` (share with that label), `archetype_size`
    (members) and `archetype_distance`. Fit the head with affectlab's own commands:

    1. `affectlab extract manifest:train.csv --backbone run:runs/base --out train.zarr`
    2. `affectlab train --preset aura --train features:train.zarr --tasks expr --out runs/aura`
    3. `affectlab models attach-aura --model runs/base --head runs/aura --out with_aura.ckpt`

    then `affectlab analyze photo.jpg --model with_aura.ckpt --out faces.csv`.
    """
    from affectlab.interpret.attach import attach_aura

    res = attach_aura(model, head, out, members=members, predict=predict, progress=not quiet)
    console.print(
        f"[green]wrote[/green] {res['path']}: {res['used_archetypes']} of {res['archetypes']} archetypes have members "
        f"among {res['members']} training samples; predictions from {res['predict']}",
        highlight=False,
    )


@models_app.command("path")
def models_path_cmd(name: str = typer.Argument(..., help="A packaged or imported model name, or an asset name.")):
    """Print the file of a packaged or imported model (for an imported backbone: its weights file),
    or of a pretrained asset (verified; an asset that is not present is an error, nothing is downloaded).

    Examples: `--weights $(affectlab models path clip:ViT-B-16)`, `affectlab models path yunet`,
    `--backbone run:$(affectlab models path faceapi:expression)`.
    """
    from affectlab.runtime.assets import ASSETS, asset_path
    from affectlab.runtime.hub import imported_models, resolve_model
    from affectlab.runtime.importers import imported_weights

    if name in ASSETS:
        typer.echo(str(asset_path(name, download=False)))
        return
    kinds = {i["name"]: i.get("kind") for i in imported_models()}
    path = imported_weights(name) if kinds.get(name) == "backbone" else resolve_model(name)
    typer.echo(str(path))


@contextlib.contextmanager
def _one_line_warnings(debug: bool):
    """affectlab's notices (duplicated rows, missing images ...) as ``warning: ...`` lines.

    Python would print each with the path and line of the library code that raised it
    and the source line, and the ``affectlab.data`` logger (which mirrors them for
    library users) a second time; here each is shown once, as affectlab's own line.
    """
    import logging
    import warnings

    if debug:
        yield
        return
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in shown:
            shown.add(text)
            console.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)

    logger = logging.getLogger("affectlab.data")
    quiet = logging.NullHandler()
    logger.addHandler(quiet)
    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
        logger.removeHandler(quiet)


def main(argv: Optional[List[str]] = None) -> int:
    """Console-script entry point: run the app and turn expected errors into one line."""
    from affectlab.errors import AffectlabError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # standalone mode: typer/click print usage errors themselves and exit
        with _one_line_warnings(debug):
            app(args=args, prog_name="affectlab")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except (AffectlabError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:  # unexpected: still one line, but say how to see more
        if debug:
            raise
        console.print(
            f"[bold red]error:[/bold red] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
