"""Incremental table writers: CSV, Parquet and JSON files that keep the rows written so far.

``affectlab analyze`` appends rows as they are computed, so a run that fails, is
interrupted or is killed later still leaves everything computed so far on disk. CSV
chunks are appended and flushed (valid after every chunk, even if the process is
killed); JSON is an array of records whose closing bracket is rewritten after every
chunk (a kill mid-chunk leaves whole records, which ``analyze --resume`` reads back).

A Parquet file is only readable once its footer is written, so a Parquet table is
written in *parts*: the rows of each finished input (a video, or a batch of still
images) go to one small Parquet file in ``<out>.parts/``, renamed into place once
complete; when the run ends (also after Ctrl-C or an error) the parts are assembled
into ``<out>``. A process killed outright (``kill -9``, out of memory) leaves ``<out>``
as it was when the run began (an empty table, or the rows kept by ``--resume``) plus
the parts of every finished input, which :func:`read_parquet_table` and
``analyze --resume`` read back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd

from affectlab.analyze.table import column_dtypes
from affectlab.errors import ConfigError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


def table_format(path) -> str:
    """``csv``, ``parquet`` or ``json`` from the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"output {path}: unknown table format {suffix or '(none)'!r}; use .csv, .parquet or .json")
    return FORMATS[suffix]


def check_writable(path, what: str, folder: bool = False) -> Path:
    """Fail now, before any work, when ``path`` (a file, or a folder with ``folder=True``)
    cannot be written: creates the folder, writes and removes a hidden probe file in it.

    Raises
    ------
    ConfigError
        Naming ``what`` (``--out``, ``--report`` ...), the path and the reason.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a folder for the report")
    directory = path if folder else path.parent
    probe = directory / f".{path.name}.affectlab-check"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
        if not folder and path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"[Errno 13] Permission denied: {str(path)!r}")
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be written ({exc}); choose a writable place") from None
    return path


def typed_frame(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with exactly ``columns`` in the dtypes the table files store."""
    df = df.reindex(columns=columns).reset_index(drop=True)
    dtypes = column_dtypes(columns)
    out = {}
    for c in columns:
        d = dtypes[c]
        if d is object:
            out[c] = df[c].astype(object).where(df[c].notna(), None)
        else:
            out[c] = df[c].astype(d)
    typed = pd.DataFrame(out, index=range(len(df)))
    # pyarrow needs an explicit string type for all-null object columns
    for c in ("input", "expression"):
        if c in typed.columns:
            typed[c] = typed[c].astype("string")
    return typed


def parquet_schema(columns: Sequence[str]):
    """The pyarrow schema of an analysis table with ``columns``."""
    import pyarrow as pa

    return pa.Schema.from_pandas(typed_frame(pd.DataFrame(columns=list(columns)), columns), preserve_index=False)


class TableWriter:
    """Append DataFrame chunks with fixed ``columns`` to a CSV / Parquet / JSON file.

    Use as a context manager; :meth:`close` is idempotent. The file is created (with a
    header / empty array / an empty Parquet table) when the writer opens, so even a run
    that produces no row leaves a valid, empty table. ``append=True`` continues an
    existing, well-formed table written with the same columns (``analyze --resume``).
    Parquet rows go to the current part until :meth:`commit` (see the module docstring);
    for CSV and JSON, :meth:`commit` does nothing (every chunk is on disk already).
    """

    def __init__(self, path, columns: Sequence[str], append: bool = False):
        self.path = Path(path)
        self.format = table_format(self.path)
        self.columns = list(columns)
        self.rows = 0
        self._closed = False
        self._pq = None
        self._json_more = False  # records already in the array: the next chunk starts with a comma
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            self._open_append()
        elif self.format == "csv":
            self._fh = open(self.path, "w", newline="", encoding="utf-8")
            self._fh.write(",".join(self.columns) + "\n")
            self._fh.flush()
        elif self.format == "json":
            self._fh = open(self.path, "w", encoding="utf-8")
            self._fh.write("[\n")
            self._fh.flush()
            self._json_pos = self._fh.tell()
            self._fh.write("]\n")
            self._fh.flush()
        else:
            self._open_parquet()
            # a fresh table: an empty file in place now, the parts of a former run gone
            _remove_parts(self.path)
            _write_parquet_atomic(self.path, [], self._schema)

    def _open_parquet(self) -> None:
        self._schema = parquet_schema(self.columns)
        self._parts = parts_dir(self.path)
        self._part_tmp = None

    def _open_append(self) -> None:
        if self.format == "parquet":
            self._open_parquet()
            if _committed_parts(self.path):
                raise ConfigError(f"{self.path}: unassembled parts in {self._parts}; resume the run first")
            return
        if self.format == "csv":
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            return
        data = self.path.read_bytes()
        end = data.rfind(b"]")
        if not data.lstrip().startswith(b"[") or end < 0:
            raise ConfigError(f"{self.path}: not a JSON array of records; cannot append to it")
        self._json_more = b"{" in data[:end]
        self._fh = open(self.path, "r+", encoding="utf-8")
        self._json_pos = end  # UTF-8 text without BOM: the byte offset is a valid seek cookie

    def _typed(self, df: pd.DataFrame) -> pd.DataFrame:
        return typed_frame(df, self.columns)

    def write(self, chunk: pd.DataFrame) -> None:
        """Append rows (missing columns are filled with NaN, extra ones dropped)."""
        if self._closed:
            raise ConfigError(f"writer of {self.path} is closed")
        if chunk is None or len(chunk) == 0:
            return
        df = self._typed(chunk)
        if self.format == "csv":
            df.to_csv(self._fh, header=False, index=False, lineterminator="\n")
            self._fh.flush()
        elif self.format == "json":
            text = df.to_json(orient="records", lines=True, force_ascii=False, double_precision=10)
            records = ",\n".join(line for line in text.splitlines() if line)
            self._fh.seek(self._json_pos)
            self._fh.write(("," if self.rows or self._json_more else "") + records + "\n")
            self._json_pos = self._fh.tell()
            self._fh.write("]\n")
            self._fh.truncate()
            self._fh.flush()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._pq is None:
                self._parts.mkdir(parents=True, exist_ok=True)
                k = len(_committed_parts(self.path))
                self._part_name = self._parts / f"{k:06d}.parquet"
                self._part_tmp = self._parts / f".{k:06d}.parquet.tmp"
                self._pq = pq.ParquetWriter(str(self._part_tmp), self._schema)
            self._pq.write_table(pa.Table.from_pandas(df, schema=self._schema, preserve_index=False))
        self.rows += len(df)

    def commit(self) -> None:
        """Parquet: close the current part and put it in place, so its rows survive a
        kill (call it when the rows of whole inputs were written). CSV, JSON: nothing."""
        if self._pq is None:
            return
        self._pq.close()
        self._pq = None
        os.replace(self._part_tmp, self._part_name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.format == "parquet":
            self.commit()
            assemble_parts(self.path, self._schema)
        else:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def parts_dir(out) -> Path:
    """Where a Parquet table's finished parts wait until the run ends: ``<out>.parts/``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _committed_parts(out) -> list[Path]:
    d = parts_dir(out)
    return sorted(d.glob("[0-9]*.parquet")) if d.is_dir() else []


def _remove_parts(out) -> None:
    d = parts_dir(out)
    trash = d.with_name(f".{d.name}.old")
    for folder in (d, trash):
        if folder.exists():
            shutil.rmtree(folder)


def _write_parquet_atomic(path: Path, tables, schema) -> None:
    """Write pyarrow ``tables`` (one row group each) to ``path`` through a temporary file."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with pq.ParquetWriter(str(tmp), schema) as w:
        for t in tables:
            w.write_table(t)
    os.replace(tmp, path)


def read_parquet_table(out) -> pd.DataFrame:
    """The rows of a Parquet table written by :class:`TableWriter`: ``out`` then its
    committed parts, if a run writing it was killed before assembling them."""
    out = Path(out)
    frames = [pd.read_parquet(out)] + [pd.read_parquet(p) for p in _committed_parts(out)]
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def assemble_parts(out, schema=None, base=None) -> None:
    """Put ``out`` and its committed parts together into ``out`` and remove the parts;
    with ``base`` (a DataFrame), write ``base`` alone instead (the rows ``--resume`` keeps
    of both).

    Order matters for a kill at any point: the new file is written beside ``out``, the
    parts folder is renamed away, the new file replaces ``out``, then the renamed folder
    goes. Killed before the replace, the rows of the parts are lost from view and their
    inputs are analysed again by ``--resume`` (never counted twice).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    parts = _committed_parts(out)
    if base is None and not parts:
        return
    if schema is None:
        schema = pq.read_schema(str(out))
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    # one input at a time: memory stays that of the largest part, not of the whole table
    with pq.ParquetWriter(str(tmp), schema) as w:
        if base is not None:
            if len(base):
                w.write_table(pa.Table.from_pandas(base, schema=schema, preserve_index=False))
        else:
            for batch in pq.ParquetFile(str(out)).iter_batches():
                w.write_table(pa.Table.from_batches([batch]).cast(schema))
            for p in parts:
                t = pq.read_table(str(p), schema=schema)
                if t.num_rows:
                    w.write_table(t)
    d = parts_dir(out)
    trash = d.with_name(f".{d.name}.old")
    if d.exists():
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(d, trash)
    os.replace(tmp, out)
    if trash.exists():
        shutil.rmtree(trash)
