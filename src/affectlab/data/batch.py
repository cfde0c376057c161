"""The sample and batch contract between datasets, methods and the engine.

``Dataset.__getitem__(i)`` returns a dict (or ``None`` for an unreadable image, which
:func:`collate` drops and counts):

=============  ===============================  =============================================
key            value                            missing
=============  ===============================  =============================================
``image``      float32 [3, H, W], normalised    (absent for feature datasets)
``features``   float32 [D] (global) -- cached   (absent for image datasets)
``expr``       int64 [] index into the label    -1
               space's expressions; multi-label
               datasets: float32 [C] of 0/1     -1 entries
``va``         float32 [2] valence, arousal     NaN
               in [-1, 1]
``au``         float32 [K] 1/0 in label-space   -1 entries
               AU order
``index``      int64 [] row of ``.labels``
=============  ===============================  =============================================

A batch is the same dict with a leading batch dimension, plus ``skipped`` (int64 [],
samples dropped from this batch because their image could not be read). A key only some
samples carry (``dominance`` of EMOTIC in a batch mixed with other sets) is filled with
its missing code in the others.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import default_collate

SAMPLE_KEYS = ("image", "features", "expr", "va", "au", "index")


class CollatedBatch(dict):
    """A batch a dataset assembled itself in ``__getitems__`` (vectorised, e.g. cached
    features); :func:`collate` passes it through unchanged."""


def collate(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack samples into a batch, dropping ``None`` (unreadable) samples and counting them."""
    if isinstance(samples, CollatedBatch):
        return samples
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    if not kept:
        return {"skipped": torch.tensor(skipped), "empty": True}
    batch = default_collate(_fill_missing_keys(kept))
    batch["skipped"] = torch.tensor(skipped)
    return batch


def _fill_missing_keys(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every sample the keys any sample has (mixed datasets: EMOTIC's ``dominance``
    next to a set without it), filled with the missing code of the contract: NaN for
    float tensors, -1 for integer ones."""
    keys = {k for s in samples for k in s}
    if all(len(s) == len(keys) for s in samples):
        return samples
    template = {}
    for k in keys:
        ref = next(s[k] for s in samples if k in s)
        if not torch.is_tensor(ref):
            raise TypeError(f"samples disagree on key {k!r} and its value is not a tensor ({type(ref).__name__})")
        template[k] = torch.full_like(ref, float("nan") if ref.is_floating_point() else -1)
    return [s if len(s) == len(keys) else {**template, **s} for s in samples]


def batch_size(batch: dict[str, Any]) -> int:
    """Number of samples in a batch (0 for a batch whose samples were all skipped)."""
    if batch.get("empty"):
        return 0
    return int(batch["index"].shape[0])


class Batches:
    """The one loop of a model over data: evaluate, explain, extract and the Predictor iterate this.

    Iterating yields the non-empty batches of ``data``, their tensors on ``device``, inside
    ``torch.inference_mode()``; a batch whose samples were all unreadable is not yielded
    (one rule: :func:`batch_size` is 0). :attr:`skipped` counts the unreadable samples seen so
    far and :attr:`samples` the samples yielded.

    Parameters
    ----------
    data : Dataset or iterable of batches
        A dataset (batched here with :func:`collate`) or batches already made.
    batch_size : int
        Samples per batch when ``data`` is a dataset.
    device : str or torch.device, optional
        Where the tensors go (default: where they are).
    progress : bool
        Show a progress bar (``description`` names it).
    total : int, optional
        Number of batches, for the bar when ``data`` has no length.
    num_workers : int
        DataLoader workers when ``data`` is a dataset.

    Examples
    --------
    >>> loop = Batches(dataset, batch_size=64)  # doctest: +SKIP
    >>> outputs = [method(batch) for batch in loop]  # doctest: +SKIP
    >>> loop.skipped  # doctest: +SKIP
    0
    """

    def __init__(self, data, *, batch_size: int = 64, device=None, progress: bool = False, description: str = "",
                 total: int | None = None, num_workers: int = 0):
        if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple)):
            from torch.utils.data import DataLoader

            data = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
        self.data = data
        self.device = None if device is None else torch.device(device)
        self.progress = progress
        self.description = description or "predicting"
        self.total = total if total is not None else (len(data) if hasattr(data, "__len__") else None)
        self.skipped = 0
        self.samples = 0

    def __len__(self) -> int:
        return int(self.total or 0)

    def __iter__(self):
        iterator = self.data
        if self.progress:
            from rich.progress import track

            iterator = track(iterator, description=self.description, total=self.total, transient=True)
        with torch.inference_mode():
            for batch in iterator:
                self.skipped += int(batch.get("skipped", 0))
                n = batch_size(batch) if ("index" in batch or batch.get("empty")) else _leading(batch)
                if n == 0:
                    continue
                self.samples += n
                if self.device is not None:
                    batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                yield batch


def _leading(batch: dict[str, Any]) -> int:
    """Samples of a batch without ``index`` (made by the caller): the length of its first tensor."""
    for value in batch.values():
        if torch.is_tensor(value) and value.ndim >= 1:
            return int(value.shape[0])
    return 0
