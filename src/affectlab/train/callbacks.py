"""Lightning callbacks of a training run: the run-directory recorder and ``last.ckpt`` for resumption.

``RUN/last.ckpt`` also stores the random-number-generator states, so a resumed run
continues exactly where the interrupted one stopped (CPU, ``num_workers=0``). Only rank
0 writes the run directory.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from affectlab.metrics import METRIC_NAMES
from affectlab.train import run as rundir
from affectlab.train.config import TrainConfig


def _rng_state() -> dict[str, Any]:
    import torch

    # numpy's state as plain values + a tensor: last.ckpt must load with weights_only=True
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _scalar_items(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _design_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k in METRIC_NAMES}


def make_recorder(out: Path, cfg: TrainConfig, preprocessing, transform_info):
    """A Lightning callback writing the run directory (rank 0) and keeping RNG states."""
    from lightning.pytorch.callbacks import Callback

    from affectlab.modelfile import save_model

    class RunRecorder(Callback):
        def __init__(self):
            self.rows: list[dict[str, Any]] = []
            self.best_value: float | None = None
            self.best_epoch = -1
            self.best_metrics: dict[str, Any] = {}

        @property
        def state_key(self) -> str:
            return "affectlab_run"

        def setup(self, trainer, pl_module, stage):
            if trainer.is_global_zero:
                rundir.write_config(out, cfg)

        def _better(self, value: float) -> bool:
            if not math.isfinite(value):
                return self.best_value is None and self.best_epoch < 0
            if self.best_value is None or not math.isfinite(self.best_value):
                return True
            return value < self.best_value if cfg.monitor_mode == "min" else value > self.best_value

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            train_losses = pl_module.finish_train_epoch()
            epoch = int(trainer.current_epoch)
            value = pl_module.monitor_value()
            row: dict[str, Any] = {"epoch": epoch, "lr": float(trainer.optimizers[0].param_groups[0]["lr"])}
            row.update({f"train_{k}": v for k, v in train_losses.items()})
            row.update({f"val_{k}": v for k, v in pl_module.val_losses.items()})
            row.update(_scalar_items(pl_module.val_metrics))
            self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
            improved = self._better(value)
            if improved:
                self.best_value, self.best_epoch = value, epoch
                self.best_metrics = _design_metrics(pl_module.val_metrics)
            if trainer.is_global_zero:
                rundir.write_log(out / rundir.LOG_FILE, self.rows)
                if improved:
                    info = {
                        "best_epoch": epoch,
                        "monitor": cfg.monitor_name,
                        "monitor_value": value,
                        "config": cfg.model_dump(mode="json"),
                    }
                    save_model(
                        out / rundir.MODEL_FILE,
                        pl_module.method,
                        preprocessing=preprocessing,
                        transform=transform_info,
                        train_info=info,
                    )
                    rundir.write_metrics(out / rundir.METRICS_FILE, self.best_metrics)

        def state_dict(self):
            return {
                "rows": self.rows,
                "best_value": self.best_value,
                "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics,
                "rng": _rng_state(),
            }

        def load_state_dict(self, state):
            self.rows = list(state.get("rows", []))
            self.best_value = state.get("best_value")
            self.best_epoch = int(state.get("best_epoch", -1))
            self.best_metrics = dict(state.get("best_metrics", {}))
            if "rng" in state:
                _set_rng_state(state["rng"])

    return RunRecorder()


def _last_checkpoint_class():
    from lightning.pytorch.callbacks import Callback

    class LastCheckpoint(Callback):
        """Save Lightning's full checkpoint at every epoch end (atomically) for ``--resume``."""

        def __init__(self, path: Path):
            self.path = Path(path)

        def on_train_epoch_end(self, trainer, pl_module):
            pl_module.method_epoch_end()
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp)  # collective; rank 0 writes
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
            trainer.strategy.barrier("affectlab_last_checkpoint")

    return LastCheckpoint


def last_checkpoint(path: Path):
    return _last_checkpoint_class()(path)


def step_budget(max_steps: int):
    """A callback that ends training at ``max_steps`` optimiser steps *with* a validation.

    Lightning's own ``max_steps`` stops mid-epoch without validating, so the run would
    have no best model; asking the trainer to stop (``should_stop``) makes the epoch
    loop validate first, and the run directory gets its model.ckpt and metrics.
    """
    from lightning.pytorch.callbacks import Callback

    class StepBudget(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step >= max_steps:
                trainer.should_stop = True

    return StepBudget()
