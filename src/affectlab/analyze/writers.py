"""Incremental table writers: CSV, Parquet and JSON files that keep the rows written so far.

``affectlab analyze`` appends rows as they are computed, so a run that fails or is
interrupted later still leaves everything computed so far on disk. CSV chunks are
appended and flushed (valid after every chunk, even if the process is killed); JSON is
an array of records whose closing bracket is written on close (a killed run leaves the
records without it, which ``analyze --resume`` reads back); Parquet row groups go
through a ``pyarrow.parquet.ParquetWriter`` closed (footer written) on the way out, even
after Ctrl-C or an error -- but a process killed outright (``kill -9``, out of memory)
leaves a Parquet file without its footer, which cannot be read: prefer ``.csv`` for
long runs on machines that may kill jobs.
"""

from __future__ import annotations

import os
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


class TableWriter:
    """Append DataFrame chunks with fixed ``columns`` to a CSV / Parquet / JSON file.

    Use as a context manager; :meth:`close` is idempotent. The file is created (with a
    header / empty array) when the writer opens, so even a run that produces no row
    leaves a valid, empty table. ``append=True`` continues an existing, well-formed CSV
    or JSON table written with the same columns (``analyze --resume``); Parquet files
    cannot be appended to.
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
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._schema = pa.Schema.from_pandas(self._typed(pd.DataFrame(columns=self.columns)), preserve_index=False)
            self._pq = pq.ParquetWriter(str(self.path), self._schema)

    def _open_append(self) -> None:
        if self.format == "parquet":
            raise ConfigError(f"{self.path}: a Parquet file cannot be appended to; write a new file")
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
        df = df.reindex(columns=self.columns).reset_index(drop=True)
        dtypes = column_dtypes(self.columns)
        out = {}
        for c in self.columns:
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

            self._pq.write_table(pa.Table.from_pandas(df, schema=self._schema, preserve_index=False))
        self.rows += len(df)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pq is not None:
            self._pq.close()
        else:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
