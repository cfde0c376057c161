"""The LightningDataModule: training / validation loaders, samplers, DDP sharding.

Samplers are built here, for the trainer's world size and rank, and Lightning is told
not to wrap them (``Trainer(use_distributed_sampler=False)``): every sampler is seeded
per epoch (``set_epoch``, which Lightning calls), so the data order of epoch ``e`` is
the same whether a run went straight through or was resumed at ``e``.

``sampler``:

* ``shuffle`` -- :class:`torch.utils.data.DistributedSampler` (also with one process,
  for its per-epoch seeding);
* ``balanced`` -- :class:`affectlab.data.samplers.BalancedClassSampler` over expression
  classes (unlabelled rows keep their natural share);
* ``balanced-subset`` -- :class:`affectlab.data.samplers.BalancedSubsetSampler`: a new
  expression-balanced subset per epoch, without replacement (CAGE section 5.3;
  ``balanced_per_class`` samples per class, default the smallest class);
* ``multitask`` -- :class:`affectlab.data.samplers.MultiTaskBatchSampler`: each batch
  holds equal parts of each training set (give several ``--train`` specs).
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from affectlab.data.batch import collate
from affectlab.errors import ConfigError
from affectlab.train.config import TrainConfig


def expression_codes_of(dataset) -> np.ndarray:
    """Expression index per sample (-1 missing) of a dataset or a ConcatDataset of them."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([expression_codes_of(d) for d in dataset.datasets])
    codes = np.asarray(dataset.expr_targets)
    if codes.ndim != 1:
        raise ConfigError("sampler 'balanced' needs single-label expressions; this training set is multi-label")
    return codes.astype(np.int64)


class AffectDataModule(L.LightningDataModule):
    """Loaders for one training set (or several, concatenated) and one validation set.

    Parameters
    ----------
    train_sets : sequence of Dataset
        Training sets, already encoded in the model's label space and transformed.
        Several sets are concatenated; ``sampler="multitask"`` draws equal parts of each.
    val_set : Dataset
        Validation set (same label space).
    config : TrainConfig
        ``batch_size``, ``eval_batch_size``, ``num_workers``, ``sampler``, ``seed``.
    """

    def __init__(self, train_sets: Sequence[Dataset], val_set: Dataset, config: TrainConfig):
        super().__init__()
        self.train_sets = list(train_sets)
        self.train_set = self.train_sets[0] if len(self.train_sets) == 1 else ConcatDataset(self.train_sets)
        self.val_set = val_set
        self.config = config
        if config.sampler == "multitask" and len(self.train_sets) < 2:
            raise ConfigError("sampler 'multitask' needs several training sets (repeat --train)")

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _loader(self, dataset, **kwargs) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            **kwargs,
        )

    def per_process_batch(self, world: int) -> int:
        """The batch of one process: ``global_batch_size / world`` when a global batch is set
        (a DDP run keeps the effective batch of the paper), else ``batch_size``."""
        cfg = self.config
        if cfg.global_batch_size is None:
            return cfg.batch_size
        if cfg.global_batch_size % world:
            raise ConfigError(
                f"global_batch_size {cfg.global_batch_size} does not split over {world} processes; "
                "choose a multiple of devices x num_nodes (or set batch_size per process instead)"
            )
        return cfg.global_batch_size // world

    def train_dataloader(self) -> DataLoader:
        cfg = self.config
        world, rank = self._world()
        n = len(self.train_set)
        batch_size = self.per_process_batch(world)
        if cfg.sampler == "multitask":
            from affectlab.data.samplers import MultiTaskBatchSampler

            batches = MultiTaskBatchSampler(
                [len(d) for d in self.train_sets], batch_size, seed=cfg.seed, num_replicas=world, rank=rank
            )
            return self._loader(self.train_set, batch_sampler=batches)
        if cfg.sampler == "balanced":
            from affectlab.data.samplers import BalancedClassSampler

            sampler = BalancedClassSampler(
                expression_codes_of(self.train_set), seed=cfg.seed, missing="share", num_replicas=world, rank=rank
            )
        elif cfg.sampler == "balanced-subset":
            from affectlab.data.samplers import BalancedSubsetSampler

            sampler = BalancedSubsetSampler(
                expression_codes_of(self.train_set), cfg.balanced_per_class, seed=cfg.seed, num_replicas=world, rank=rank
            )
            n = len(sampler) * world
        else:
            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        # a last batch of one sample breaks batch norm; drop the ragged tail when there is more
        drop_last = n // world > batch_size
        return self._loader(self.train_set, batch_size=batch_size, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        cfg = self.config
        world, rank = self._world()
        sampler = None
        if world > 1:
            # padding repeats a few samples; the module drops repeated indices
            sampler = DistributedSampler(self.val_set, num_replicas=world, rank=rank, shuffle=False)
        return self._loader(self.val_set, batch_size=cfg.eval_batch_size or self.per_process_batch(world), sampler=sampler)
