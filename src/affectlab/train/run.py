"""Run directories: the unit of reproducibility of a training run.

::

    RUN/config.yaml    the full resolved TrainConfig
    RUN/model.ckpt     best model, self-contained (affectlab.modelfile)
    RUN/last.ckpt      Lightning's full checkpoint of the last epoch (for --resume)
    RUN/metrics.json   best validation metrics (metric names of ARCHITECTURE.md (``metrics.METRIC_NAMES``))
    RUN/log.csv        one row per epoch: every loss term and metric

All files use paths relative to nothing: a run directory can be copied or moved.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from affectlab.errors import ConfigError, ModelError

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.ckpt"
LAST_FILE = "last.ckpt"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.csv"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    """Floats stay floats (NaN -> None so the file is strict JSON); numpy -> Python."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_config(run: str | os.PathLike, config) -> Path:
    """Write ``RUN/config.yaml`` from a :class:`TrainConfig`."""
    from affectlab.train.config import dump_config

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    path = run / CONFIG_FILE
    _atomic_write(path, dump_config(config))
    return path


def read_config(run: str | os.PathLike) -> dict[str, Any]:
    """The settings stored in ``RUN/config.yaml`` (a dict, for :func:`resolve_config`)."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{str(run)!r} is not a run directory: {CONFIG_FILE} is missing")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of settings")
    return data


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Write metrics as JSON (NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(_jsonable(dict(metrics)), indent=2) + "\n")
    return path


def read_metrics(run: str | os.PathLike) -> dict[str, Any]:
    """``RUN/metrics.json`` as a dict."""
    path = Path(run)
    path = path / METRICS_FILE if path.is_dir() else path
    if not path.is_file():
        raise ModelError(f"no metrics file at {path}")
    return json.loads(path.read_text())


def write_log(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write epoch rows as CSV; columns are the union of the rows' keys, ``epoch`` first."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    if "epoch" in columns:
        columns.remove("epoch")
        columns.insert(0, "epoch")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    os.replace(tmp, path)
    return path


def check_new_run(run: str | os.PathLike) -> Path:
    """Refuse to train into a directory that already holds a run (use ``--resume``)."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {str(run)!r} exists and is not a directory")
    taken = [name for name in (CONFIG_FILE, MODEL_FILE, LAST_FILE) if (run / name).exists()]
    if taken == [CONFIG_FILE]:
        raise ConfigError(
            f"{str(run)!r} holds a run that stopped before its first epoch ended; start it again with "
            f"--resume {run} (same settings) or choose another --out"
        )
    if taken:
        raise ConfigError(
            f"{str(run)!r} already holds a run ({', '.join(taken)}); continue it with --resume {run} "
            "or choose another --out"
        )
    return run


def check_resumable(run: str | os.PathLike) -> Path | None:
    """The ``last.ckpt`` of a run directory to resume from.

    ``None`` when the run stopped before its first epoch ended (``config.yaml`` but no
    ``last.ckpt``): resuming it starts it again with its settings, so a run killed early
    is never a dead end.

    Raises
    ------
    ConfigError, ModelError
        No run directory or config; a ``last.ckpt`` that is empty, truncated or not a
        checkpoint (the message names it and says how to start the run again).
    """
    from affectlab.errors import ModelError, UnsafeModelError

    run = Path(run)
    if not run.is_dir():
        raise ConfigError(f"--resume {str(run)!r}: no such run directory")
    last = run / LAST_FILE
    read_config(run)
    if not last.is_file():
        return None
    from affectlab.modelfile import safe_load

    # refuse a damaged or crafted file with affectlab's message before Lightning reads it
    if last.stat().st_size == 0:
        raise ModelError(f"{last}: empty resumption checkpoint (0 bytes); delete it and --resume {run} starts the "
                         "run again from its first epoch")
    try:
        safe_load(last, "resumption checkpoint")
    except UnsafeModelError:
        raise
    except ModelError as exc:
        raise ModelError(f"{exc}: it is truncated or damaged; delete it and --resume {run} starts the run again "
                         "from its first epoch") from None
    return last
