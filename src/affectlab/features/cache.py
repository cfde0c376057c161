"""The feature cache: frozen-backbone features of a dataset, computed once, in a Zarr store.

AURA trains "purely at the feature level" (appendix A.2 of the AURA paper): a
frozen encoder sees every image once, and training reads vectors. ``affectlab extract``
(:func:`extract_features`) writes such a store::

    FEAT.zarr/
        zarr.json          attrs: backbone, preprocessing, dataset fingerprint, label
                           space, chunk size, completed chunks, ...
        global/            [N, D]       global features (float16 by default)
        tokens/            [N, T, Dt]   patch tokens (``--patch``; a CNN's map is
                                        flattened to h*w tokens)
        valid/             [N] bool     False where the image could not be read
        labels.parquet     the canonical label table of the source dataset

Extraction goes chunk by chunk (``chunk_rows`` rows, the Zarr chunk size of
``global``); a chunk is recorded as complete in the attrs only after it is written, so a
restarted extraction skips finished chunks and recomputes at most one. The store keeps
its labels, so training never decodes an image (:class:`affectlab.features.dataset.FeatureDataset`).

A store is keyed by backbone name, preprocessing and a dataset fingerprint (hash of the
image paths, their sizes and modification times, and the labels); extracting into an
existing store with a different key fails with a clear message instead of mixing features.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from affectlab import __version__
from affectlab.errors import ConfigError, DatasetError

FORMAT = "affectlab-features"
FORMAT_VERSION = 1
LABELS_FILE = "labels.parquet"
DTYPES = ("float16", "float32")


def _open_group(path: Path, mode: str):
    import zarr

    with warnings.catch_warnings():
        # labels.parquet lives inside the store on purpose; zarr notes it is not an array
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy.*")
        return zarr.open_group(str(path), mode=mode)


# ----------------------------------------------------------------------------- fingerprint
def dataset_fingerprint(dataset) -> str:
    """A hash of what a dataset's features depend on: image paths, sizes, mtimes and labels.

    In-memory images (FER2013 pixels) are hashed by content instead of file statistics.

    Parameters
    ----------
    dataset : AffectDataset
        A dataset from :func:`affectlab.load_dataset`.

    Returns
    -------
    str
        A 16-hex-digit digest; equal datasets give equal digests.
    """
    labels: pd.DataFrame = dataset.labels
    h = hashlib.sha1()
    images = getattr(dataset, "_row_arrays", {}).get("images")
    if images is not None:
        h.update(np.ascontiguousarray(images).tobytes())
        for p in labels["path"].astype(str):
            h.update(p.encode("utf-8", "surrogatepass") + b"\0")
    else:
        for p in labels["path"].astype(str):
            try:
                st = os.stat(p)
                stat = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stat = "missing"
            h.update(f"{p}\0{stat}\0".encode("utf-8", "surrogatepass"))
    # labels: the canonical columns (other reader extras do not change the features)
    cols = [c for c in labels.columns if c in ("expression", "valence", "arousal") or str(c).startswith("AU")]
    if cols:
        hashed = pd.util.hash_pandas_object(labels[cols].astype(str), index=False).to_numpy()
        h.update(hashed.tobytes())
    if hasattr(dataset, "crop"):
        h.update(f"crop={bool(dataset.crop)}".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the store
@dataclass
class FeatureStore:
    """A feature store on disk (read side). Open with :meth:`open`.

    Attributes
    ----------
    path : Path
    attrs : dict
        Everything :func:`extract_features` recorded (backbone, preprocessing, ...).
    """

    path: Path
    attrs: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureStore":
        """Open an existing store, checking it is a complete affectlab feature store.

        Raises
        ------
        DatasetError
            Not a store, or an extraction that has not finished (run ``affectlab
            extract`` again with the same arguments to resume it).
        """
        p = Path(path).expanduser()
        if not (p / "zarr.json").is_file():
            raise DatasetError(
                f"{str(p)!r} is not a feature store (no zarr.json); create one with "
                "`affectlab extract SPEC --backbone NAME --out FEAT.zarr`"
            )
        attrs = dict(_open_group(p, "r").attrs)
        if attrs.get("format") != FORMAT:
            raise DatasetError(f"{str(p)!r} is a Zarr store but not an affectlab feature store")
        store = cls(p, attrs)
        if not store.complete:
            done, total = len(attrs.get("completed", [])), store.num_chunks
            raise DatasetError(
                f"feature store {str(p)!r} is incomplete ({done} of {total} chunks extracted); resume it with "
                f"`affectlab extract {attrs.get('dataset', 'SPEC')} --backbone {attrs.get('backbone')} --out {p}`"
            )
        if not (p / LABELS_FILE).is_file():
            raise DatasetError(f"feature store {str(p)!r} lacks its label table {LABELS_FILE}")
        return store

    # -- description ------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return int(self.attrs["num_samples"])

    @property
    def dim(self) -> int:
        return int(self.attrs["dim"])

    @property
    def chunk_rows(self) -> int:
        return int(self.attrs["chunk_rows"])

    @property
    def num_chunks(self) -> int:
        return -(-self.num_samples // self.chunk_rows)

    @property
    def complete(self) -> bool:
        return len(set(self.attrs.get("completed", []))) >= self.num_chunks

    @property
    def has_tokens(self) -> bool:
        return bool(self.attrs.get("tokens"))

    @property
    def backbone(self) -> str:
        return str(self.attrs["backbone"])

    @property
    def label_space(self):
        from affectlab.data.schema import LabelSpace

        return LabelSpace.from_dict(self.attrs["label_space"])

    # -- data -------------------------------------------------------------------------
    def labels(self) -> pd.DataFrame:
        """The source dataset's canonical label table (row ``i`` is feature row ``i``)."""
        return pd.read_parquet(self.path / LABELS_FILE)

    def global_features(self) -> np.ndarray:
        """All global features, [N, D], in the stored dtype."""
        return np.asarray(_open_group(self.path, "r")["global"][:])

    def valid(self) -> np.ndarray:
        """[N] bool: False for rows whose image could not be read at extraction."""
        return np.asarray(_open_group(self.path, "r")["valid"][:], dtype=bool)

    def tokens_array(self):
        """The Zarr array of patch tokens (read lazily), or ``None``."""
        if not self.has_tokens:
            return None
        return _open_group(self.path, "r")["tokens"]

    def describe(self) -> str:
        a = self.attrs
        tok = f", tokens {a['tokens']}" if a.get("tokens") else ""
        return (
            f"{self.path}: {self.num_samples} samples x {self.dim}-d {a.get('dtype')} features{tok} "
            f"from backbone {a.get('backbone')!r} on {a.get('dataset')}"
        )


def _key(attrs: Mapping[str, Any]) -> dict:
    return {
        "backbone": attrs.get("backbone"),
        "preprocessing": attrs.get("preprocessing"),
        "fingerprint": attrs.get("fingerprint"),
        "dtype": attrs.get("dtype"),
        "patch": bool(attrs.get("patch")),
        "weights": attrs.get("weights"),
    }


def _mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    what = {
        "backbone": "backbone",
        "preprocessing": "preprocessing",
        "fingerprint": "dataset fingerprint (image paths, sizes, mtimes or labels differ)",
        "dtype": "dtype",
        "patch": "--patch setting",
        "weights": "backbone weights file",
    }
    a, b = _key(old), _key(new)
    return [f"{what[k]}: store has {a[k]!r}, this extraction {b[k]!r}" for k in a if a[k] != b[k]]


# ----------------------------------------------------------------------------- extraction
def _tokens_of(out: Mapping[str, Any]):
    if "tokens" in out:
        return out["tokens"]
    if "map" in out:
        m = out["map"]
        return m.flatten(2).transpose(1, 2)  # [B, h*w, C]
    return None


def _write_labels(labels: pd.DataFrame, path: Path) -> None:
    table = labels.reset_index(drop=True).copy()
    for col in table.columns:
        if table[col].dtype == object:
            # mixed python objects (lists, None) do not all go to parquet; strings do
            table[col] = table[col].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) if not isinstance(v, str) else v)
    tmp = path.with_name(path.name + ".tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def extract_features(
    data,
    backbone,
    out: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    pretrained: bool = False,
    batch_size: int = 64,
    dtype: str = "float16",
    patch: bool = False,
    chunk_rows: int | None = None,
    num_workers: int = 0,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_chunks: int | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    strategy: str | None = None,
) -> FeatureStore:
    """Extract frozen-backbone features of a dataset into a resumable Zarr store.

    Parameters
    ----------
    data : str or AffectDataset
        Dataset spec (``manifest:synth/labels.csv``, ``rafdb:/data/RAF-DB:train`` ...) or
        a dataset from :func:`affectlab.load_dataset`.
    backbone : str or Backbone
        Registry name (``clip:ViT-B-16``, ``run:runs/cnn``, ``builtin:cnn-small`` ...) or
        a :class:`~affectlab.features.backbones.Backbone`.
    out : path
        The store (``FEAT.zarr``). An existing store with the same backbone,
        preprocessing and dataset is resumed; a different one is an error.
    weights : path, optional
        Local weights file for ``backbone`` when it is a name.
    pretrained : bool
        Build ``backbone`` (a name) with its family's standard weights (torchvision's /
        open_clip's / timm's own caches).
    batch_size : int
        Images per forward pass.
    dtype : {"float16", "float32"}
        Storage type of the features.
    patch : bool
        Also store patch tokens (or a CNN's flattened feature map).
    chunk_rows : int, optional
        Rows per chunk (the unit of resumption). Default: ``16 * batch_size``.
    num_workers : int
        DataLoader workers decoding images.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default CUDA when available.
    overwrite : bool
        Delete an existing store at ``out`` first.
    progress : bool
        Show a progress bar.
    max_chunks : int, optional
        Stop after computing this many chunks (the rest is left for a later call);
        used to test resumption.
    devices, num_nodes : int
        Processes per node and nodes of a Lightning DDP extraction (see
        :mod:`affectlab.features.distributed`); ``1, 1`` (default) extracts in this process.
    strategy : str, optional
        Lightning strategy of a multi-process extraction (``"ddp"``, the default when
        ``devices * num_nodes > 1``).

    Returns
    -------
    FeatureStore
        The store (complete unless ``max_chunks`` stopped it early; then the returned
        object's ``complete`` is False).

    Raises
    ------
    ConfigError
        Bad option values.
    DatasetError
        The store at ``out`` holds features of another backbone, preprocessing or dataset.
    """
    import torch
    from torch.utils.data import Subset

    from affectlab.data.batch import Batches
    from affectlab.features.backbones import Backbone, create_backbone

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if chunk_rows is not None and (not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1):
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if isinstance(data, (str, os.PathLike)):
        from affectlab.data.datasets import load_dataset

        dataset = load_dataset(data)
    elif hasattr(data, "labels") and hasattr(data, "read_rgb"):
        dataset = data
    else:
        raise ConfigError(f"data must be a dataset spec or an image dataset, got {type(data).__name__}")
    if isinstance(backbone, str):
        bb_name = backbone
        bb = create_backbone(backbone, weights=weights, pretrained=pretrained)
    elif isinstance(backbone, Backbone):
        bb, bb_name = backbone, backbone.name
    else:
        raise ConfigError(f"backbone must be a name or a Backbone, got {type(backbone).__name__}")
    n = len(dataset)
    if n == 0:
        raise DatasetError(f"{getattr(dataset, 'name', 'dataset')} is empty: nothing to extract")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bb = bb.to(dev).eval()
    from affectlab.data.transforms import preprocessing_transform

    dataset.set_transform(preprocessing_transform(bb.preprocessing))
    rows = int(chunk_rows or 16 * batch_size)
    rows = min(rows, n)

    out = Path(out).expanduser()
    if devices * num_nodes > 1 or strategy is not None:
        from affectlab.features.distributed import extract_distributed

        return extract_distributed(
            dataset, bb, bb_name, out, weights=weights, batch_size=batch_size, dtype=dtype, patch=patch, rows=rows,
            num_workers=num_workers, device=device, overwrite=overwrite, progress=progress, devices=devices,
            num_nodes=num_nodes, strategy=strategy or "ddp",
        )
    group, completed = open_for_extraction(dataset, bb, bb_name, out, weights=weights, dtype=dtype, patch=patch,
                                           rows=rows, overwrite=overwrite)
    num_chunks = -(-n // rows)
    todo = [c for c in range(num_chunks) if c not in completed]
    if max_chunks is not None:
        todo = todo[: max(int(max_chunks), 0)]

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"extracting {bb_name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=False,
    )
    done_rows = sum(min(rows, n - c * rows) for c in completed)
    with bar, torch.inference_mode():
        task = bar.add_task("extract", total=n, completed=done_rows)
        for c in todo:
            lo, hi = c * rows, min((c + 1) * rows, n)
            loop = Batches(Subset(dataset, range(lo, hi)), batch_size=batch_size, num_workers=num_workers)
            parts, seen = [], 0
            for batch in loop:
                part = encode_batch(bb, batch, dev, dtype, patch, bb_name)
                if part is not None:
                    parts.append(part)
                bar.advance(task, loop.samples + loop.skipped - seen)
                seen = loop.samples + loop.skipped
            bar.advance(task, loop.samples + loop.skipped - seen)  # unreadable rows of trailing batches
            if "global" not in group:  # arrays are created once the first chunk tells the feature sizes
                if not parts:
                    raise DatasetError(f"no readable image in rows {lo}-{hi - 1} of {group.attrs['dataset']}")
                create_arrays(group, parts[0], n, rows, dtype)
            write_chunk(group, lo, hi, parts, dtype)
            completed.add(c)
            # recorded only after the data are written: an interruption redoes this chunk
            group.attrs["completed"] = sorted(completed)
    if (out / DONE_DIR).is_dir():  # markers of an interrupted multi-process run, now in the attrs
        merge_done_markers(out)
    group.attrs["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    attrs = dict(_open_group(out, "r").attrs)
    return FeatureStore(out, attrs)


def read_attrs(path: str | os.PathLike) -> dict:
    """The attributes of a store (also of an incomplete one), as a plain dict."""
    return json.loads(json.dumps(dict(_open_group(Path(path), "r").attrs)))


def write_features(
    out: str | os.PathLike,
    features: np.ndarray,
    labels: pd.DataFrame,
    label_space,
    *,
    backbone: str = "precomputed",
    dtype: str = "float16",
    chunk_rows: int = 16384,
    dataset: str = "precomputed",
) -> FeatureStore:
    """Write features computed elsewhere (another toolkit, a benchmark) as a feature store.

    Parameters
    ----------
    out : path
        New store (must not exist).
    features : ndarray [N, D]
        Global features, row ``i`` belonging to ``labels`` row ``i``.
    labels : DataFrame
        Canonical label table (``path``, ``expression``, ``valence``, ``arousal``, ``AU<k>``).
    label_space : LabelSpace
        The descriptors of ``labels``.
    backbone : str
        Name recorded as the features' source.
    """
    feats = np.asarray(features)
    if feats.ndim != 2 or len(feats) != len(labels) or len(feats) == 0:
        raise ConfigError(f"features must be [N, D] with N = {len(labels)} label rows, got shape {feats.shape}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out).expanduser()
    if out.exists():
        raise DatasetError(f"{str(out)!r} exists; write_features creates a new store")
    n, dim = feats.shape
    rows = int(min(chunk_rows, n))
    group = _open_group(out, "w")
    group.create_array("global", shape=(n, dim), chunks=(rows, dim), dtype=dtype, fill_value=0)
    group.create_array("valid", shape=(n,), chunks=(rows,), dtype="bool", fill_value=False)
    group["global"][:] = feats.astype(dtype)
    group["valid"][:] = np.ones(n, dtype=bool)
    _write_labels(labels, out / LABELS_FILE)
    group.attrs.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "affectlab_version": __version__,
            "backbone": backbone,
            "backbone_info": None,
            "weights": None,
            "preprocessing": None,
            "fingerprint": None,
            "dataset": dataset,
            "label_space": label_space.to_dict(),
            "num_samples": n,
            "chunk_rows": rows,
            "dtype": dtype,
            "patch": False,
            "dim": int(dim),
            "tokens": None,
            "completed": list(range(-(-n // rows))),
        }
    )
    return FeatureStore(out, dict(_open_group(out, "r").attrs))


# ----------------------------------------------------------------------------- extraction steps
# Shared by the one-process loop above and the DDP ranks of affectlab.features.distributed.
DONE_DIR = "chunks-done"
TOKEN_CHUNK_ROWS = 16


def extraction_attrs(dataset, bb, bb_name: str, *, weights, dtype: str, patch: bool, rows: int) -> dict:
    """The attributes that key a store: backbone, preprocessing, dataset fingerprint, sizes."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "affectlab_version": __version__,
        "backbone": bb_name,
        "backbone_info": bb.describe(),
        "weights": None if weights is None else Path(weights).name,
        "weights_info": getattr(bb, "weights_info", None),
        "preprocessing": bb.preprocessing.to_dict(),
        "fingerprint": dataset_fingerprint(dataset),
        "dataset": str(getattr(dataset, "name", "dataset")),
        "label_space": dataset.label_space.to_dict(),
        "num_samples": len(dataset),
        "chunk_rows": rows,
        "dtype": dtype,
        "patch": bool(patch),
    }


def open_for_extraction(dataset, bb, bb_name: str, out: Path, *, weights, dtype: str, patch: bool, rows: int,
                        overwrite: bool = False, create: bool = True):
    """Open (resume) or create the store at ``out``; returns ``(group, completed chunk ids)``.

    With ``create=False`` the store must exist already (a DDP rank other than 0 opening
    what rank 0 prepared). The completed chunks are those of the attrs plus the chunk
    markers ranks leave (:func:`mark_done`), so any interrupted run resumes.

    Raises
    ------
    DatasetError
        ``out`` holds something else, or features of another backbone, preprocessing,
        dataset or chunking.
    """
    import shutil

    new_attrs = extraction_attrs(dataset, bb, bb_name, weights=weights, dtype=dtype, patch=patch, rows=rows)
    n = new_attrs["num_samples"]
    if out.exists() and overwrite and create:
        shutil.rmtree(out)
    if out.exists() and not (out / "zarr.json").is_file():
        if any(out.iterdir()):
            raise DatasetError(f"{str(out)!r} exists and is not a feature store; choose another --out")
    if (out / "zarr.json").is_file():
        old = dict(_open_group(out, "r").attrs)
        if old.get("format") != FORMAT:
            raise DatasetError(f"{str(out)!r} is a Zarr store but not an affectlab feature store; choose another --out")
        problems = _mismatch(old, new_attrs)
        if problems:
            raise DatasetError(
                f"feature store {str(out)!r} was extracted differently and features cannot be mixed: "
                + "; ".join(problems)
                + ". Use another --out, or --overwrite to replace it"
            )
        if int(old.get("num_samples", -1)) != n or int(old.get("chunk_rows", -1)) != rows:
            raise DatasetError(
                f"feature store {str(out)!r} has {old.get('num_samples')} rows in chunks of {old.get('chunk_rows')}, "
                f"this extraction {n} in chunks of {rows}; use the same --batch-size or --overwrite"
            )
        return _open_group(out, "a"), {int(c) for c in old.get("completed", [])} | done_markers(out)
    if not create:
        raise DatasetError(f"feature store {str(out)!r} was not prepared by rank 0")
    group = _open_group(out, "w")
    group.attrs.update({**new_attrs, "completed": [], "dim": None, "tokens": None})
    _write_labels(dataset.labels, out / LABELS_FILE)
    return group, set()


def encode_batch(bb, batch, device, dtype: str, patch: bool, bb_name: str = "backbone"):
    """``(dataset rows, global features, tokens or None)`` of one collated batch (``None`` if empty)."""
    if batch.get("empty"):
        return None
    res = bb(batch["image"].to(device))
    g = res["global"].float().cpu().numpy().astype(dtype)
    tok = None
    if patch:
        t = _tokens_of(res)
        if t is None:
            raise ConfigError(f"backbone {bb_name!r} gives neither patch tokens nor a feature map; drop --patch")
        tok = t.float().cpu().numpy().astype(dtype)
    return np.asarray(batch["index"]), g, tok


def create_arrays(group, part, n: int, rows: int, dtype: str) -> None:
    """Create the ``global`` / ``valid`` (/ ``tokens``) arrays sized by one encoded batch."""
    _, g, tok = part
    dim = g.shape[1]
    group.create_array("global", shape=(n, dim), chunks=(rows, dim), dtype=dtype, fill_value=0)
    group.create_array("valid", shape=(n,), chunks=(rows,), dtype="bool", fill_value=False)
    group.attrs["dim"] = int(dim)
    if tok is not None:
        t, dt = tok.shape[1:]
        # small token chunks: a training sample reads its own tokens only
        group.create_array("tokens", shape=(n, t, dt), chunks=(min(rows, TOKEN_CHUNK_ROWS), t, dt), dtype=dtype,
                           fill_value=0)
        group.attrs["tokens"] = [int(t), int(dt)]


def write_chunk(group, lo: int, hi: int, parts, dtype: str) -> None:
    """Write the encoded batches of rows ``lo:hi`` (unreadable rows stay invalid)."""
    dim = int(group.attrs["dim"])
    block = np.zeros((hi - lo, dim), dtype=dtype)
    valid = np.zeros(hi - lo, dtype=bool)
    tblock = None
    if group.attrs.get("tokens"):
        t, dt = group.attrs["tokens"]
        tblock = np.zeros((hi - lo, t, dt), dtype=dtype)
    for idx, g, tok in parts:
        local = idx - lo  # index is the dataset row
        block[local] = g
        valid[local] = True
        if tblock is not None:
            tblock[local] = tok
    group["global"][lo:hi] = block
    group["valid"][lo:hi] = valid
    if tblock is not None:
        group["tokens"][lo:hi] = tblock


def mark_done(out: Path, chunk: int) -> None:
    """Record chunk ``chunk`` as written, without touching the attrs other ranks also read."""
    folder = out / DONE_DIR
    folder.mkdir(exist_ok=True)
    (folder / str(int(chunk))).touch()


def done_markers(out: Path) -> set[int]:
    folder = out / DONE_DIR
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def merge_done_markers(out: Path) -> None:
    """Fold the chunk markers into the attrs (one process, after every rank finished)."""
    import shutil

    group = _open_group(out, "a")
    group.attrs["completed"] = sorted({int(c) for c in group.attrs.get("completed", [])} | done_markers(out))
    shutil.rmtree(out / DONE_DIR, ignore_errors=True)
