"""Continue an interrupted ``affectlab analyze --out`` run (``--resume``).

Every run that writes a table also keeps a small sidecar, ``<out>.progress.json``: the
settings that decide the rows (model weights, columns, detector, ``every``, time window,
smoothing) and, as each input finishes, its name and row count. An input is *finished*
once all its rows were handed to the table writer, so the sidecar never runs ahead of
the table on disk (a Parquet table keeps each finished input in a part file until the
run ends, see :mod:`affectlab.analyze.writers`; the row counts below catch a part not
yet in place). CSV, JSON and Parquet tables all survive Ctrl-C, errors and kills.

Resuming reads the table and the sidecar and keeps the rows of the finished inputs
whose row count in the table matches the sidecar and whose rows are whole (no cut
line, no face without its predictions, numbers where numbers belong:
:func:`damaged_inputs`); every other row is dropped and that input is analysed again
from its start, so face ids, tracking and smoothing are exactly those of one
uninterrupted run. Inputs that failed (an unreadable file) count as finished, as in a
single run, and are not retried; an output that failed (a full disk) is not an input
failure, and its input is analysed again. Rewrites go through a temporary file and
:func:`os.replace`, so a second interruption still leaves a valid table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from affectlab.analyze.pipeline import Sink
from affectlab.analyze.sinks import TableSink
from affectlab.analyze.table import column_dtypes
from affectlab.errors import ConfigError

PROGRESS_VERSION = 1
PROGRESS_KEY = "affectlab_analyze_progress"
_TAIL = "\n]}\n"  # closes the sidecar's list of finished inputs

#: the settings that decide the rows, and how the user names each of them
SETTING_NAMES = {
    "model_weights": "--model (other weights)",
    "model": "--model",
    "columns": "the model's output columns",
    "detector": "--detector",
    "detector_options": "the detector options",
    "every": "--every",
    "start": "--start",
    "end": "--end",
    "smooth": "--smooth",
}


def progress_path(out) -> Path:
    """The sidecar of table ``out``: ``<out>.progress.json`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".progress.json")


def _temp_path(out: Path) -> Path:
    # same folder (os.replace must not cross file systems) and same suffix (the format)
    return out.with_name(f".{out.stem}.resume-tmp{out.suffix}")


def model_fingerprint(predictor) -> str | None:
    """A hash of the model's config, weights and buffers (``None`` when it has none)."""
    method = getattr(predictor, "method", None)
    state = getattr(method, "state_dict", None)
    if not callable(state):
        return None
    import torch

    tensors = state()
    if not tensors:
        return None
    h = hashlib.blake2b(digest_size=16)
    # the config too: a setting without weights of its own may still change the outputs
    h.update(f"{getattr(method, 'name', type(method).__name__)}:{getattr(method, 'config', None)!r};".encode())
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_settings(predictor, info: Mapping, columns: Sequence[str], detector, detector_options, every, start, end,
                 smooth) -> dict[str, Any]:
    """The settings of a run that decide its rows, as stored in the sidecar."""
    name = detector if isinstance(detector, str) else getattr(detector, "__name__", type(detector).__name__)
    settings = {
        "model": str(info.get("path") or repr(predictor)),
        "model_weights": model_fingerprint(predictor),
        "columns": list(columns),
        "detector": name,
        "detector_options": dict(detector_options or {}),
        "every": every,
        "start": start,
        "end": end,
        "smooth": smooth,
    }
    return json.loads(json.dumps(settings, default=str))  # the types a JSON round trip gives


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def check_settings(out: Path, recorded: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first setting that differs."""
    sidecar = progress_path(out).name
    for key, label in SETTING_NAMES.items():
        old, new = recorded.get(key), current.get(key)
        if key == "model" and recorded.get("model_weights") and current.get("model_weights"):
            continue  # same weights loaded from elsewhere: the same model
        if key == "model_weights" and not (old and new):
            continue
        if old == new:
            continue
        if key == "model_weights":
            detail = f"the table was made with {recorded.get('model')} whose weights differ from {current.get('model')}"
        elif key == "columns":
            only_old = [c for c in old or [] if c not in (new or [])]
            only_new = [c for c in new or [] if c not in (old or [])]
            detail = f"only in the table: {only_old[:6] or 'none'}, only in this run: {only_new[:6] or 'none'}"
        else:
            detail = f"the table was made with {_show(old)}, this run has {_show(new)}"
        raise ConfigError(
            f"cannot resume {out}: {label} differs ({detail}; see {sidecar}); "
            "use the same settings, or run without --resume to start over"
        )


def read_progress(out: Path) -> dict:
    """The sidecar of ``out``, checked."""
    path = progress_path(out)
    if not path.is_file():
        raise ConfigError(
            f"cannot resume {out}: {path.name} is missing, so which inputs were finished is unknown; "
            "run without --resume to start over"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot resume {out}: {path.name} cannot be read ({exc}); run without --resume") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = _read_cut_progress(text)
        if data is None:
            raise ConfigError(f"cannot resume {out}: {path.name} cannot be read (not JSON); run without --resume") from None
    if not isinstance(data, dict) or data.get(PROGRESS_KEY) != PROGRESS_VERSION or not isinstance(
        data.get("finished"), list
    ):
        raise ConfigError(f"cannot resume {out}: {path.name} is not an affectlab analyze progress file")
    return data


def _read_cut_progress(text: str) -> dict | None:
    """A sidecar whose last append was cut by a kill: the header line and every whole
    entry line (the layout :class:`ProgressSink` writes), or None."""
    lines = text.splitlines()
    try:
        data = json.loads(lines[0] + _TAIL)
    except (IndexError, ValueError):
        return None
    for line in lines[1:]:
        try:
            data["finished"].append(json.loads(line.rstrip().rstrip(",")))
        except ValueError:
            break
    return data


def _read_json_records(path: Path) -> pd.DataFrame:
    """The records of a JSON table cut short by a kill: one record per line until the
    first line that does not parse (see :class:`~affectlab.analyze.writers.TableWriter`)."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip().strip(",").strip()
        if line in ("", "[", "]"):
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return pd.DataFrame.from_records(records)


def read_table(out: Path, fmt: str) -> tuple[pd.DataFrame, bool]:
    """The rows of ``out`` and whether the file is well formed (can be appended to)."""
    try:
        if fmt == "parquet":
            from affectlab.analyze.writers import read_parquet_table

            return read_parquet_table(out), True
        if fmt == "csv":
            with open(out, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                ends_whole = f.read(1) == b"\n"
            try:
                df, clean = pd.read_csv(out), ends_whole
            except pd.errors.ParserError:
                df, clean = pd.read_csv(out, on_bad_lines="skip", engine="python"), False
            if not ends_whole and len(df):
                df = df.iloc[:-1]  # a line cut by a kill: pandas would fill its missing fields with NaN
            return df, clean
        try:
            return pd.read_json(out, orient="records"), True
        except ValueError:
            return _read_json_records(out), False
    except Exception as exc:  # noqa: BLE001 - any unreadable table: one clear line
        hint = (" (a Parquet file cut while being written has no footer; affectlab writes the rows of a running "
                "analysis to OUT.parts/ so that a kill cannot do that)") if fmt == "parquet" else ""
        raise ConfigError(
            f"cannot resume {out}: the table cannot be read{hint}: {type(exc).__name__}: {exc}; "
            "run without --resume to start over"
        ) from None


def retype(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with the analysis dtypes (as the pipeline makes them) and a fresh index."""
    dtypes = column_dtypes(columns)
    out = {}
    for c in columns:
        col = df[c].reset_index(drop=True) if c in df.columns else pd.Series([None] * len(df), dtype=object)
        if dtypes[c] is object:
            # a plain object array, as the pipeline builds it: pandas infers the same dtype
            out[c] = col.astype(object).where(col.notna(), None).to_numpy(dtype=object)
        else:
            out[c] = col.astype(dtypes[c])
    return pd.DataFrame(out, index=range(len(df)), columns=list(columns))


#: columns every row with a face (``face >= 0``) has a value in
def _required(columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in ("x", "y", "w", "h", "score", "expression", "valence", "arousal")
            or c.startswith("expr_") or re.fullmatch(r"AU\d+", c)]


def damaged_inputs(df: pd.DataFrame, columns: Sequence[str]) -> set[str]:
    """Inputs with a row that the pipeline cannot have written: a number column holding
    text, a missing or fractional frame / face number, a face without its box, score or
    predictions (a cut or edited line). Their rows are dropped and they are analysed again."""
    dtypes = column_dtypes(columns)
    bad = np.zeros(len(df), dtype=bool)
    for c in columns:
        if c not in df.columns or dtypes[c] is object:
            continue
        col = df[c]
        v = pd.to_numeric(col, errors="coerce")
        bad |= (v.isna() & col.notna()).to_numpy()  # not a number
        if dtypes[c] in (np.int64, "Int64"):
            frac = (v.notna() & (v != np.round(v))).to_numpy()
            bad |= frac
            if dtypes[c] is np.int64:
                bad |= v.isna().to_numpy()
    face = pd.to_numeric(df["face"], errors="coerce").fillna(-1).to_numpy() if "face" in df.columns else np.full(len(df), -1)
    has_face = face >= 0
    for c in _required(columns):
        if c in df.columns:
            bad |= has_face & df[c].isna().to_numpy()
    return set(df.loc[bad, "input"].dropna().astype(str)) if "input" in df.columns else set()


@dataclass
class ResumePlan:
    """What a resumed run keeps and what it still has to analyse.

    Attributes
    ----------
    out : Path
    format : str
    kept : DataFrame
        Rows of the finished inputs, in file order, with the analysis dtypes.
    finished : list of dict
        Sidecar entries (``input``, ``resolved``, ``rows``, ``failure``) of those inputs.
    remaining : list of Path
        Inputs of this run still to analyse, in run order.
    dropped_rows : int
        Rows of unfinished inputs removed from the table.
    rewrite : bool
        Whether the file must be rewritten (rows dropped or a damaged tail).
    """

    out: Path
    format: str
    kept: pd.DataFrame
    finished: list[dict] = field(default_factory=list)
    remaining: list[Path] = field(default_factory=list)
    dropped_rows: int = 0
    rewrite: bool = False

    @property
    def failures(self) -> list[str]:
        return [e["failure"] for e in self.finished if e.get("failure")]

    def summary(self) -> dict:
        return {"kept_inputs": len(self.finished), "kept_rows": len(self.kept), "dropped_rows": self.dropped_rows,
                "remaining": len(self.remaining), "progress": str(progress_path(self.out))}


def plan_resume(out, settings: Mapping[str, Any], paths: Sequence[Path]) -> ResumePlan | None:
    """Compare ``out`` and its sidecar with this run; ``None`` when ``out`` does not exist.

    Raises
    ------
    ConfigError
        The sidecar is missing or unreadable, the table cannot be read, or a setting
        that decides the rows differs.
    """
    from affectlab.analyze.writers import table_format

    out = Path(out)
    if not out.exists():
        return None
    fmt = table_format(out)
    progress = read_progress(out)
    check_settings(out, dict(progress.get("settings") or {}), settings)
    columns = list(settings["columns"])
    df, clean = read_table(out, fmt)
    if len(df.columns) or len(df):  # an empty JSON array has no columns at all
        if list(df.columns) != columns:
            raise ConfigError(
                f"cannot resume {out}: its columns are not those recorded in {progress_path(out).name}; "
                "run without --resume to start over"
            )
    counts = df["input"].astype(str).value_counts() if len(df) else pd.Series(dtype=int)
    damaged = damaged_inputs(df, columns) if len(df) else set()
    finished, seen = [], set()
    for entry in progress["finished"]:
        try:
            name, rows = str(entry["input"]), int(entry["rows"])
        except (KeyError, TypeError, ValueError):
            continue
        if name not in seen and name not in damaged and int(counts.get(name, 0)) == rows:
            seen.add(name)
            finished.append(dict(entry, input=name, rows=rows))
    keep = df["input"].astype(str).isin(seen).to_numpy() if len(df) else []
    try:
        kept = retype(df[keep] if len(df) else df, columns)
    except (TypeError, ValueError) as exc:  # damaged_inputs should have caught it: still one clear line
        raise ConfigError(f"cannot resume {out}: its rows cannot be read back ({type(exc).__name__}: {exc}); "
                          "run without --resume to start over") from None
    done = {str(e.get("resolved") or Path(e["input"]).resolve()) for e in finished}
    remaining = [p for p in paths if str(Path(p).resolve()) not in done]
    dropped = len(df) - len(kept)
    parts = False
    if fmt == "parquet":
        from affectlab.analyze.writers import parts_dir

        parts = parts_dir(out).is_dir()  # a killed run's parts: assemble them even with nothing left to do
    return ResumePlan(out, fmt, kept, finished, remaining, dropped, rewrite=dropped > 0 or not clean or parts)


def replay(plan: ResumePlan, sinks: Sequence[Sink]) -> None:
    """Feed the kept rows to ``sinks`` input by input, as the first run did (reports
    then cover the whole table)."""
    from affectlab.analyze.inputs import media_kind

    groups = {k: g for k, g in plan.kept.groupby("input", sort=False)} if len(plan.kept) else {}
    for entry in plan.finished:
        name = entry["input"]
        for s in sinks:
            s.start_input(name, media_kind(name), None)
        rows = groups.get(name)
        if rows is not None:
            for s in sinks:
                s.write(rows, [])
        for s in sinks:
            s.end_input(name, entry.get("failure"))


class ResumeTableSink(TableSink):
    """The table of a resumed run: the kept rows, then the new ones.

    When rows must go (or a Parquet table has parts of a killed run), the kept rows are
    first written to a temporary file that replaces ``out``; new rows are then appended
    as in a fresh run (CSV, JSON in place; Parquet in parts assembled at the end).
    """

    def __init__(self, plan: ResumePlan, columns: Sequence[str]):
        from affectlab.analyze.writers import TableWriter, assemble_parts, parquet_schema, typed_frame

        out = plan.out
        if plan.format == "parquet":
            if plan.rewrite:
                assemble_parts(out, parquet_schema(columns), base=typed_frame(plan.kept, columns))
        elif plan.rewrite:
            tmp = _temp_path(out)
            with TableWriter(tmp, columns) as w:
                w.write(plan.kept)
            os.replace(tmp, out)
        super().__init__(out, columns, writer=TableWriter(out, columns, append=True))


class ProgressSink(Sink):
    """Keep ``<out>.progress.json`` up to date: the run's settings and its finished inputs.

    Place it after the table sink: an input is recorded once its rows were written.
    Still images are batched, so an image may end before its rows are written; it is
    recorded with the chunk that holds them (an image's rows always come in one chunk).
    """

    def __init__(self, out, settings: Mapping[str, Any], finished: Sequence[Mapping] = ()):
        self.out = Path(out)
        self.path = progress_path(out)
        self.label = str(self.path)
        self.settings = dict(settings)
        self.finished = [dict(e) for e in finished]
        self._kind: dict[str, str] = {}
        self._rows: dict[str, int] = {}
        self._waiting: list[str] = []
        self._pending: list[dict] = []
        self._save()

    def start_input(self, path, kind, fps):
        self._kind[path] = kind
        self._rows[path] = 0

    def write(self, chunk, frames):
        if not len(chunk):
            return
        for name, n in chunk["input"].value_counts(sort=False).items():
            self._rows[name] = self._rows.get(name, 0) + int(n)
        ready = [p for p in self._waiting if self._rows.get(p)]
        if ready:
            self._waiting = [p for p in self._waiting if p not in ready]
            for p in ready:
                self._finish(p, None)
            self._save()

    def end_input(self, path, failure):
        if failure is None and self._kind.get(path) == "image" and not self._rows.get(path):
            self._waiting.append(path)  # its rows are still in the model's batch
            return
        self._finish(path, failure)
        self._save()

    def _finish(self, path: str, failure: str | None) -> None:
        entry = {"input": path, "resolved": str(Path(path).resolve()), "rows": self._rows.get(path, 0),
                 "failure": failure}
        self.finished.append(entry)
        self._pending.append(entry)

    # The file is one JSON document laid out as a header line, one line per finished
    # input and a closing line, so recording an input appends one line (overwriting the
    # closing one) instead of rewriting the whole list, whose cost grew with the square of
    # the number of inputs (a 3000-image folder: 9.6 s -> 8.0 s for the whole analysis).
    def _save(self) -> None:
        if self._pending and self._append():
            return
        header = json.dumps({PROGRESS_KEY: PROGRESS_VERSION, "table": self.out.name, "settings": self.settings})
        lines = [header[:-1] + ', "finished": ['] + [json.dumps(e) for e in self.finished]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        body = "\n" + ",\n".join(lines[1:]) if len(lines) > 1 else ""
        tmp.write_text(lines[0] + body + _TAIL, encoding="utf-8")
        os.replace(tmp, self.path)
        self._pending = []

    def _append(self) -> bool:
        """Append the pending entries in place; False when the file is not as written last."""
        tail = _TAIL.encode()
        if not self.path.is_file():
            return False
        with open(self.path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < len(tail) + 1:
                return False
            f.seek(size - len(tail) - 1)
            before = f.read(1)
            if f.read() != tail:
                return False
            lead = b"\n" if before == b"[" else b",\n"  # no comma after the header line
            f.seek(size - len(tail))
            f.truncate()
            f.write(lead + ",\n".join(json.dumps(e) for e in self._pending).encode() + tail)
        self._pending = []
        return True
