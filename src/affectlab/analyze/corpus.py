"""Corpus runs: many recordings to one Parquet table per input plus an index, resumable.

``affectlab analyze INPUTS... --out DIR --engine local|ray`` writes::

    DIR/
        settings.json          what decides the rows (model weights, detector, every, ...)
        index.csv              input, table, rows, frames, status, seconds, error, attempt,
                               worker (process id), peak_rss_mb (of that worker so far)
        <stem>-<hash>.parquet  the rows of one input (one name per input path)

An input's table is written to a temporary file and renamed into place once complete, and
its line is appended to ``index.csv`` (flushed and synced) right after, so a killed driver
or worker loses at most the inputs in flight. Running the same command again skips every
input whose last index line says ``ok`` and whose table is there, and redoes the others
(failed, cut, or new). Different settings are refused, as with ``--resume`` of a single
table.

The work of one input is :func:`analyze_input` in both engines, so a table is the same
whichever engine made it (and the same rows a single-table run gives that input). The
``ray`` engine (:mod:`affectlab.analyze.ray_engine`) spreads inputs over a Ray cluster.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from affectlab.errors import ConfigError

INDEX_FILE = "index.csv"
SETTINGS_FILE = "settings.json"
INDEX_COLUMNS = ("input", "table", "rows", "frames", "status", "seconds", "error", "attempt", "worker", "peak_rss_mb")
LIST_SUFFIXES = (".txt", ".lst")
ENGINES = ("local", "ray")


def read_input_lists(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Inputs with every ``.txt`` / ``.lst`` file replaced by the paths it lists.

    A list file holds one input per line (file, folder or glob); blank lines and lines
    starting with ``#`` are skipped, and relative paths are relative to the list file's
    folder.
    """
    out: list[str] = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        p = Path(item)
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"cannot read the input list {str(p)!r}: {e}") from None
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line).expanduser()
                    out.append(str(q if q.is_absolute() else p.parent / q))
        else:
            out.append(str(item))
    if not out:
        raise ConfigError("no inputs: the input lists are empty")
    return out


def table_name(path: str | os.PathLike) -> str:
    """The stable file name of an input's table: ``<stem>-<8 hex of its absolute path>.parquet``.

    Two inputs of the same file name in different folders get different names, and the
    same input gets the same name in every run.
    """
    from affectlab.analyze.naming import stable_output_name

    return f"{stable_output_name(path)}.parquet"


def check_out_dir(out: str | os.PathLike) -> Path:
    """``out`` as a corpus folder (created); a file, or a table suffix, is refused."""
    out = Path(out).expanduser()
    if out.suffix.lower() in (".csv", ".parquet", ".json"):
        raise ConfigError(f"--out {str(out)!r} is a table file; a corpus run writes a folder (one table per input): "
                          "pass --out DIR")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write into --out {str(out)!r}: {e.strerror or e}") from None
    return out


# ----------------------------------------------------------------------------- index
def read_index(out: Path) -> dict[str, dict[str, str]]:
    """The last index line of every input (a line cut by a kill is ignored)."""
    path = out / INDEX_FILE
    last: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return last
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("input") and row.get("status") in ("ok", "failed") and None not in row.values():
                last[row["input"]] = row
    return last


class IndexWriter:
    """Append one line per finished input to ``index.csv``, durable before the next one."""

    def __init__(self, out: Path):
        self.path = out / INDEX_FILE
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if not new:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
        self._f = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(INDEX_COLUMNS)
        elif cut:  # a line cut by a kill: end it so the next line parses (the cut one is dropped)
            self._f.write("\n")
        self._sync()

    def add(self, entry: Mapping[str, Any]) -> None:
        self._w.writerow(["" if entry.get(k) is None else entry.get(k) for k in INDEX_COLUMNS])
        self._sync()

    def _sync(self):
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


# ----------------------------------------------------------------------------- one input
@dataclass
class InputJob:
    """One input of a corpus run and where its table goes."""

    input: str
    table: str
    attempt: int = 1


@dataclass
class AnalyzeSettings:
    """What every worker needs to analyse an input (picklable: Ray ships it to workers)."""

    model: Any = None
    detector: Any = "auto"
    detector_options: dict = field(default_factory=dict)
    every: int = 1
    start: float | None = None
    end: float | None = None
    smooth: Any = None
    batch_size: int = 32
    device: str = "cpu"
    threads: int | None = 1
    landmarks: bool = False
    blendshapes: bool = False
    mesh: bool | None = None
    detect_ahead: bool = True

    def analyze_kwargs(self) -> dict[str, Any]:
        return dict(detector=self.detector, detector_options=self.detector_options, every=self.every,
                    start=self.start, end=self.end, smooth=self.smooth, batch_size=self.batch_size,
                    device=self.device, threads=self.threads, landmarks=self.landmarks,
                    blendshapes=self.blendshapes, mesh=self.mesh, detect_ahead=self.detect_ahead)


def analyze_input(job: InputJob, out: Path, predictor, settings: AnalyzeSettings) -> dict[str, Any]:
    """Analyse one input into ``out / job.table`` (atomically) and return its index entry.

    Rows of an input that fails part-way (a truncated video) are kept in its table; the
    entry says ``failed`` with the error, so a later run redoes it.
    """
    import warnings

    from affectlab.analyze.api import analyze

    t0 = time.perf_counter()
    entry = {"input": job.input, "table": job.table, "rows": 0, "frames": 0, "status": "failed", "seconds": 0.0,
             "error": "", "attempt": job.attempt}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the failure is recorded in the index instead
            table = analyze([job.input], predictor, progress=False, **settings.analyze_kwargs())
        stats = table.model_info["stats"]
        failures = table.model_info["failures"]
        final = out / job.table
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            table.to_parquet(tmp, index=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        entry.update(rows=int(stats["rows"]), frames=int(stats["frames"]),
                     status="failed" if failures else "ok", error="; ".join(failures))
    except OSError as e:
        if getattr(e, "filename", None) and str(out) in str(e.filename):
            raise  # an output failure stops the run: it is not the input's fault
        entry["error"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - any failure of one input is recorded and the rest go on
        entry["error"] = f"{type(e).__name__}: {e}"
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    entry["worker"] = os.getpid()
    entry["peak_rss_mb"] = _peak_rss_mb()
    return entry


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(kb / (1024 * 1024 if os.uname().sysname == "Darwin" else 1024), 1)


# ----------------------------------------------------------------------------- planning
@dataclass
class CorpusPlan:
    """Which inputs a corpus run analyses and which it keeps from an earlier run."""

    out: Path
    jobs: list[InputJob]
    kept: list[dict[str, str]]


def plan_corpus(inputs: Sequence[str | os.PathLike], out: Path, settings: Mapping[str, Any]) -> CorpusPlan:
    """Expand ``inputs``, check ``settings`` against an earlier run in ``out`` and list the work.

    Raises
    ------
    ConfigError
        ``out`` holds a run made with other settings.
    """
    from affectlab.analyze.inputs import expand_inputs

    paths = [str(p) for p in expand_inputs(read_input_lists(inputs))]
    names: dict[str, str] = {}
    for p in paths:
        name = table_name(p)
        if name in names and names[name] != p:  # 32-bit prefix collision: vanishingly rare, never silent
            raise ConfigError(f"inputs {names[name]!r} and {p!r} would share the table name {name}")
        names[name] = p
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        from affectlab.analyze.resume import check_settings

        try:
            recorded = json.loads(settings_path.read_text())
        except ValueError:
            raise ConfigError(f"{str(settings_path)!r} is damaged; use another --out") from None
        check_settings(out, recorded, settings)
    else:
        tmp = settings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings, indent=1, default=str))
        os.replace(tmp, settings_path)
    last = read_index(out)
    jobs, kept = [], []
    for p in dict.fromkeys(paths):
        name = table_name(p)
        row = last.get(p)
        if row is not None and row["status"] == "ok" and (out / name).is_file():
            kept.append(row)
        else:
            jobs.append(InputJob(p, name))
    return CorpusPlan(out, jobs, kept)


@dataclass
class CorpusResult:
    """What a corpus run did: index entries of the inputs analysed now and of those kept."""

    out: Path
    done: list[dict[str, Any]]
    kept: list[dict[str, str]]
    seconds: float
    workers: int
    engine: str

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [e for e in self.done if e["status"] != "ok"]

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "workers": self.workers,
            "analysed": len(self.done),
            "kept": len(self.kept),
            "failed": len(self.failed),
            "rows": sum(int(e["rows"]) for e in self.done),
            "frames": sum(int(e["frames"]) for e in self.done),
            "seconds": round(self.seconds, 3),
        }


def corpus_settings(predictor, settings: AnalyzeSettings) -> dict[str, Any]:
    """The settings stored in ``settings.json``: the same keys a single-table run records.

    Fixes ``settings.mesh`` (the landmark stage on or off) for every worker.
    """
    from affectlab.analyze.pipeline import Analyzer, smoothing_spec
    from affectlab.analyze.resume import run_settings

    import warnings

    from affectlab.analyze.api import LANDMARKER_NOTICE, AnalyzeNotice, _mesh_stage
    from affectlab.errors import user_stacklevel

    info = dict(getattr(predictor, "info", {}) or {})
    mu = smoothing_spec(settings.smooth, info)
    stage, no_landmarker = _mesh_stage(settings.mesh, settings.landmarks, settings.blendshapes,
                                       predictor.label_space.aus)
    if no_landmarker:
        warnings.warn(LANDMARKER_NOTICE, AnalyzeNotice, stacklevel=user_stacklevel())
    settings.mesh = stage is not None  # decided once here, so every worker runs the same stage
    columns = Analyzer(predictor, lambda image: None, every=settings.every, mesh=stage).columns
    return run_settings(predictor, info, columns, settings.detector, settings.detector_options, settings.every,
                        settings.start, settings.end, mu)


def run_corpus(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    engine: str = "local",
    model: Any = None,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    on_entry: Callable[[dict], None] | None = None,
    **options: Any,
) -> CorpusResult:
    """Analyse a corpus into one Parquet table per input plus ``index.csv`` (see the module).

    Parameters
    ----------
    inputs : list of paths
        Files, folders, globs, and ``.txt`` / ``.lst`` files listing them one per line.
    out : path
        The output folder (created). Re-running with the same folder continues the run.
    engine : {"local", "ray"}
        ``local``: this process, one input after the other. ``ray``: inputs spread over a
        Ray cluster (``pip install affectlab[cluster]``).
    model : str, path or Predictor, optional
        As in :func:`affectlab.analyze`; ``None`` is the default model.
    address : str, optional
        Ray only: the address of an existing cluster (``ray://host:10001`` or ``auto``);
        without it a local cluster of ``workers`` CPUs is started on this machine.
    workers : int, optional
        Ray only: model-holding worker processes (default: the cluster's CPUs).
    progress : bool
        Show a progress bar of inputs and frames.
    on_entry : callable, optional
        Called with each index entry as it is written (tests, custom monitoring).
    **options
        ``detector``, ``detector_options``, ``every``, ``start``, ``end``, ``smooth``,
        ``batch_size``, ``device``, ``threads`` (default 1 per worker), as in
        :func:`affectlab.analyze`.

    Returns
    -------
    CorpusResult
    """
    from affectlab.analyze.api import load_predictor
    from affectlab.analyze.inputs import check_sampling

    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local" and (address is not None or workers not in (None, 1)):
        raise ConfigError("--address and --workers are options of --engine ray; the local engine runs in this process")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    unknown = set(options) - set(AnalyzeSettings.__dataclass_fields__) - {"model"}
    if unknown:
        raise ConfigError(f"unknown option(s) of a corpus run: {', '.join(sorted(unknown))}")
    settings = AnalyzeSettings(model=model, **options)
    settings.every, settings.start, settings.end = check_sampling(settings.every, settings.start, settings.end)
    if isinstance(settings.detector, str) and settings.detector.strip().lower() == "auto":
        # decided once here, so every worker runs (and settings.json records) the same detector
        import warnings

        from affectlab.analyze.api import AnalyzeNotice
        from affectlab.errors import user_stacklevel
        from affectlab.runtime.detection import resolve_detector

        _, settings.detector, note = resolve_detector("auto", settings.detector_options)
        if note:
            warnings.warn(note, AnalyzeNotice, stacklevel=user_stacklevel())
    if engine == "ray":
        from affectlab.analyze.ray_engine import require_ray

        require_ray()  # before any work: say how to install it
    out = check_out_dir(out)
    if settings.model is None:  # the default model, named once so every worker loads the same one
        from affectlab.analyze.defaults import resolve_default_model

        settings.model = resolve_default_model()
    t0 = time.perf_counter()
    pool = None
    if engine == "ray" and not _all_finished(inputs, out):  # a finished corpus needs no cluster
        from affectlab.analyze.ray_engine import RayPool

        pool = RayPool(settings, address=address, workers=workers)  # its workers load while this process plans
    try:
        predictor = load_predictor(settings.model, device=settings.device, batch_size=settings.batch_size)
        plan = plan_corpus(inputs, out, corpus_settings(predictor, settings))
        return _run_plan(plan, predictor, settings, pool, engine, on_entry, progress, t0)
    finally:
        if pool is not None:
            pool.close()


def _all_finished(inputs, out: Path) -> bool:
    from affectlab.analyze.inputs import expand_inputs

    last = read_index(out)
    paths = [str(p) for p in expand_inputs(read_input_lists(inputs))]
    return all(p in last and last[p]["status"] == "ok" and (out / last[p]["table"]).is_file() for p in paths)


def _run_plan(plan, predictor, settings, pool, engine, on_entry, progress, t0) -> CorpusResult:
    out = plan.out
    index = IndexWriter(out)
    done: list[dict[str, Any]] = []

    def record(entry):
        index.add(entry)
        done.append(entry)
        if on_entry is not None:
            on_entry(entry)

    try:
        with CorpusProgress(len(plan.jobs), len(plan.kept), enabled=progress) as bar:
            if pool is None:
                n_workers = 1
                for job in plan.jobs:
                    entry = analyze_input(job, out, predictor, settings)
                    record(entry)
                    bar.update(entry)
            else:
                n_workers = pool.run(plan, settings, on_entry=lambda e: (record(e), bar.update(e)))
    finally:
        index.close()
    return CorpusResult(out, done, plan.kept, time.perf_counter() - t0, n_workers, engine)


class CorpusProgress:
    """A rich progress bar of inputs (finished / total) with the frames analysed so far."""

    def __init__(self, todo: int, kept: int, enabled: bool = True):
        self.todo, self.kept, self.enabled = todo, kept, enabled
        self.frames = 0
        self.failed = 0

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("inputs"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[frames]} frames, {task.fields[failed]} failed"),
                             TimeElapsedColumn(), disable=not self.enabled, transient=False)
        self._bar.__enter__()
        self._task = self._bar.add_task("corpus", total=self.todo + self.kept, completed=self.kept, frames=0,
                                        failed=0)
        return self

    def update(self, entry: Mapping[str, Any]) -> None:
        self.frames += int(entry.get("frames") or 0)
        self.failed += entry.get("status") != "ok"
        self._bar.update(self._task, advance=1, frames=self.frames, failed=self.failed)

    def __exit__(self, *exc):
        self._bar.__exit__(*exc)
