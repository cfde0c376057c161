"""Feature extraction over Lightning DDP ranks (``affectlab extract --devices N [--num-nodes M]``).

Lightning's predict loop runs the frozen backbone on every rank. Chunk ``c`` of the store
(``chunk_rows`` rows, the Zarr chunk of ``global``) belongs to rank ``c mod world_size``;
each rank encodes its chunks batch by batch (batches never cross a chunk, so they are the
batches of a one-process extraction) and writes each finished chunk straight into the
shared Zarr store -- ranks write disjoint Zarr chunks, so no locking is needed. A chunk is
marked done (a marker file, not the attrs every rank reads) only after its rows are
written; after the last rank finishes, rank 0 folds the markers into the attrs. So an
interrupted run, resumed with any number of processes, redoes at most the chunks in
flight, and the fingerprint checks are the one-process ones
(:func:`affectlab.features.cache.open_for_extraction`).

Rank 0 prepares the store (checks or creates it, and creates the arrays from one encoded
batch) before the others open it. Lightning's DDP launcher starts the other ranks by
running the same command again, so run it as a command (``affectlab extract ...`` or a
script), not from an interactive session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectlab.errors import ConfigError


def _batch_plan(todo, n: int, rows: int, batch_size: int, rank: int, world: int):
    """``[(chunk, [rows...]), ...]``: this rank's batches, chunk by chunk."""
    plan = []
    for c in todo:
        if c % world != rank:
            continue
        lo, hi = c * rows, min((c + 1) * rows, n)
        for start in range(lo, hi, batch_size):
            plan.append((c, list(range(start, min(start + batch_size, hi)))))
    return plan


class _Batches:
    """This rank's batches, as an iterable Lightning passes through unchanged (a DataLoader it
    would re-create with its own sampler, undoing the chunk plan)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def extract_distributed(dataset, bb, bb_name: str, out: Path, *, weights, batch_size: int, dtype: str, patch: bool,
                        rows: int, num_workers: int, device, overwrite: bool, progress: bool, devices: int,
                        num_nodes: int, strategy: str):
    """The multi-process path of :func:`affectlab.features.cache.extract_features`."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from affectlab.data.batch import collate
    from affectlab.features import cache

    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if patch and rows % cache.TOKEN_CHUNK_ROWS and rows < len(dataset):
        # token arrays are chunked by 16 rows: two ranks must never share one of those chunks
        raise ConfigError(f"--patch with several processes needs chunks of a multiple of {cache.TOKEN_CHUNK_ROWS} "
                          f"rows, got {rows}; pass --chunk-rows or a --batch-size that gives one")
    n = len(dataset)
    accelerator = "cpu" if device == "cpu" or (device is None and not torch.cuda.is_available()) else "auto"
    open_args = dict(weights=weights, dtype=dtype, patch=patch, rows=rows)

    class Extraction(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = bb
            self.plan: list = []

        def setup(self, stage):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            if rank == 0:
                group, _ = cache.open_for_extraction(dataset, bb, bb_name, out, overwrite=overwrite, **open_args)
                if "global" not in group:
                    probe = next((i for i in range(n) if dataset[i] is not None), None)
                    if probe is None:
                        raise ConfigError(f"no readable image in {group.attrs['dataset']}")
                    with torch.inference_mode():
                        part = cache.encode_batch(bb.to(self.device).eval(), collate([dataset[probe]]), self.device,
                                                  dtype, patch, bb_name)
                    cache.create_arrays(group, part, n, rows, dtype)
            self.trainer.strategy.barrier("store-ready")
            self.group, completed = cache.open_for_extraction(dataset, bb, bb_name, out, create=False, **open_args)
            todo = [c for c in range(-(-n // rows)) if c not in completed]
            self.plan = _batch_plan(todo, n, rows, batch_size, rank, world)
            self.parts: dict[int, list] = {}
            self.left = {}
            for c, idx in self.plan:
                self.left[c] = self.left.get(c, 0) + len(idx)

        def predict_dataloader(self):
            return _Batches(DataLoader(dataset, batch_sampler=[idx for _, idx in self.plan], num_workers=num_workers,
                                       collate_fn=collate))

        def predict_step(self, batch, batch_idx):
            if batch_idx >= len(self.plan):
                return None
            chunk, idx = self.plan[batch_idx]
            part = cache.encode_batch(self.backbone, batch, self.device, dtype, patch, bb_name)
            if part is not None:
                self.parts.setdefault(chunk, []).append(part)
            self.left[chunk] -= len(idx)
            if self.left[chunk] == 0:
                lo, hi = chunk * rows, min((chunk + 1) * rows, n)
                cache.write_chunk(self.group, lo, hi, self.parts.pop(chunk, []), dtype)
                cache.mark_done(out, chunk)  # only after the rows are written
            return None

        def on_predict_end(self):
            self.trainer.strategy.barrier("chunks-written")
            if self.trainer.global_rank == 0:
                import time

                cache.merge_done_markers(out)
                cache._open_group(out, "a").attrs["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            self.trainer.strategy.barrier("merged")

    module = Extraction()
    trainer = pl.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
        use_distributed_sampler=False, inference_mode=True,
    )
    import warnings

    with warnings.catch_warnings():
        # Lightning's own deprecation notes: nothing a user can act on
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.predict(module, return_predictions=False)
    return cache.FeatureStore(out, dict(cache._open_group(out, "r").attrs))
