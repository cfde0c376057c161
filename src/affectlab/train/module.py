"""The one LightningModule that trains every method.

:class:`AffectModule` calls ``method(batch)`` and ``method.loss(outputs, batch)``, logs
every loss term, collects predictions over the validation epoch and computes
:func:`affectlab.metrics.summarize` on them. Nothing here knows a method by name:
methods plug in through the contract of :mod:`affectlab.methods.base`. Optional method
hooks, called when defined: ``on_train_epoch_start(epoch)``, ``on_train_epoch_end(epoch)``
(AURA-style codebook resets) and ``parameter_groups()`` (a list of torch param-group
dicts, e.g. a smaller ``lr`` for a pretrained backbone).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch

from affectlab.data.batch import batch_size as count_batch
from affectlab.data.schema import LabelSpace
from affectlab.errors import ConfigError
from affectlab.train.config import SCORE_METRICS, TrainConfig


# ------------------------------------------------------------------ prediction arrays
def _sigmoid_or_softmax(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)


def collect_predictions(outputs, batch: Mapping[str, Any], space: LabelSpace) -> dict[str, np.ndarray]:
    """Per-sample prediction and label arrays of one batch, as float/int numpy arrays.

    Keys: ``index``; ``expr_true`` / ``expr_scores`` (probabilities); ``va_true`` /
    ``va_pred`` ([B, 3] with dominance when the model predicts it and the batch has it);
    ``au_true`` / ``au_scores`` (probabilities) -- for the tasks of ``space`` the outputs
    carry.
    """
    out: dict[str, np.ndarray] = {"index": batch["index"].detach().cpu().numpy().astype(np.int64)}
    if "expr" in space.tasks and outputs.expr_logits is not None:
        probs = _sigmoid_or_softmax(outputs.expr_logits.detach().float(), space.multilabel)
        out["expr_scores"] = probs.cpu().numpy()
        out["expr_true"] = batch["expr"].detach().cpu().numpy()
    if "va" in space.tasks and outputs.va is not None:
        out["va_pred"] = outputs.va.detach().float().cpu().numpy()[:, :2]
        out["va_true"] = batch["va"].detach().float().cpu().numpy()[:, :2]
        if outputs.va.shape[1] >= 3 and "dominance" in batch:
            # a third continuous output is dominance (CAGE on EMOTIC); summarize adds dominance_*
            out["va_pred"] = outputs.va.detach().float().cpu().numpy()[:, :3]
            dom = batch["dominance"].detach().float().cpu().numpy().reshape(-1, 1)
            out["va_true"] = np.concatenate([out["va_true"], dom], axis=1)
    if "au" in space.tasks and outputs.au_logits is not None:
        out["au_scores"] = torch.sigmoid(outputs.au_logits.detach().float()).cpu().numpy()
        out["au_true"] = batch["au"].detach().float().cpu().numpy()
    return out


def concat_predictions(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate batch arrays; rows with a repeated ``index`` (DDP padding) are dropped."""
    if not parts:
        return {}
    keys = parts[0].keys()
    merged = {k: np.concatenate([p[k] for p in parts if k in p], axis=0) for k in keys}
    _, first = np.unique(merged["index"], return_index=True)
    if len(first) != len(merged["index"]):
        first.sort()
        merged = {k: v[first] for k, v in merged.items()}
    return merged


def compute_metrics(preds: Mapping[str, np.ndarray], space: LabelSpace, *, protocol: str | None = None) -> dict:
    """:func:`affectlab.metrics.summarize` on collected prediction arrays (the names of ``metrics.METRIC_NAMES``)."""
    from affectlab import metrics

    kwargs = {k: preds[k] for k in ("expr_true", "expr_scores", "va_true", "va_pred", "au_true", "au_scores") if k in preds}
    if not kwargs:
        return {}
    result = metrics.summarize(label_space=space, protocol=protocol, **kwargs)
    return result


def selection_score(result: Mapping[str, Any], space: LabelSpace) -> float:
    """The default model-selection value ``score``.

    The mean of ``expr_f1_macro`` (``topk_acc`` when multi-label), ``va_ccc`` and
    ``au_f1_mean`` over the tasks of ``space``: each task counts equally whatever its
    metric's scale. It is logged in ``log.csv`` but is not one of ``metrics.METRIC_NAMES``, so it is
    not written to ``metrics.json``.
    """
    values = []
    for task in space.tasks:
        key = SCORE_METRICS[task]
        if task == "expr" and space.multilabel:
            key = "topk_acc"
        v = result.get(key)
        if v is not None and math.isfinite(float(v)):
            values.append(float(v))
    return float(np.mean(values)) if values else float("nan")


def _all_gather_objects(obj):
    """Gather a picklable object from every rank (identity without torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


# ------------------------------------------------------------------------ the module
class AffectModule(L.LightningModule):
    """LightningModule wrapping a :class:`~affectlab.methods.base.Method`.

    Parameters
    ----------
    method : Method
        The model; its ``label_space`` names the tasks that are evaluated.
    config : TrainConfig
        Optimiser, scheduler and monitor settings.
    """

    def __init__(self, method, config: TrainConfig):
        super().__init__()
        self.method = method
        self.config = config
        self.space: LabelSpace = method.label_space
        self._train_sums: dict[str, torch.Tensor] = {}
        self._train_count = 0
        self._val_sums: dict[str, torch.Tensor] = {}
        self._val_count = 0
        self._val_parts: list[dict[str, np.ndarray]] = []
        #: metrics of the last validation epoch (``metrics.METRIC_NAMES`` + ``score``)
        self.val_metrics: dict[str, Any] = {}
        #: mean loss terms of the last training / validation epoch
        self.train_losses: dict[str, float] = {}
        self.val_losses: dict[str, float] = {}
        #: unreadable images of one epoch (train + validation), the most over the epochs:
        #: the same broken files are met again every epoch
        self.skipped = 0
        self._epoch_skipped = {"train": 0, "val": 0}

    def forward(self, batch):
        return self.method(batch)

    # -- loss bookkeeping ---------------------------------------------------------------
    @staticmethod
    def _add(sums: dict[str, torch.Tensor], terms: Mapping[str, torch.Tensor], n: int) -> None:
        for key, value in terms.items():
            if torch.is_tensor(value) and value.numel() == 1:
                v = value.detach().float().reshape(()) * n
                sums[key] = sums[key] + v if key in sums else v

    def _reduce(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        """Epoch means of the loss terms, summed over ranks."""
        keys = sorted(sums)
        vec = torch.tensor([float(sums[k]) for k in keys] + [float(count)], dtype=torch.float64, device=self.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            vec = self.trainer.strategy.reduce(vec, reduce_op="sum")
        total = float(vec[-1])
        if total <= 0:
            return {}
        return {k: float(vec[i]) / total for i, k in enumerate(keys)}

    # -- training -----------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_sums, self._train_count = {}, 0
        self._epoch_skipped["train"] = 0
        hook = getattr(self.method, "on_train_epoch_start", None)
        if callable(hook):
            hook(self.current_epoch)

    def training_step(self, batch, batch_idx):
        n = count_batch(batch)
        self._count_skipped("train", batch)
        if n == 0:
            return None  # every image of the batch was unreadable
        outputs = self.method(batch)
        terms = self.method.loss(outputs, batch)
        loss = terms["loss"]
        self._add(self._train_sums, terms, n)
        self._train_count += n
        self.log("loss", loss.detach(), prog_bar=True, batch_size=n)
        return loss

    def method_epoch_end(self) -> None:
        """Run the method's ``on_train_epoch_end`` hook.

        Called by the engine's checkpoint callback just before ``last.ckpt`` is written
        (callbacks run before the module's own epoch-end hook), so a resumed run sees
        the state the hook left.
        """
        hook = getattr(self.method, "on_train_epoch_end", None)
        if callable(hook):
            hook(self.current_epoch)

    def finish_train_epoch(self) -> dict[str, float]:
        """Reduce the epoch's training loss terms (collective: call on every rank)."""
        self.train_losses = self._reduce(self._train_sums, self._train_count)
        return self.train_losses

    # -- validation ---------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums, self._val_count, self._val_parts = {}, 0, []
        self._epoch_skipped["val"] = 0

    def _count_skipped(self, stage: str, batch) -> None:
        self._epoch_skipped[stage] += int(batch.get("skipped", 0))
        self.skipped = max(self.skipped, sum(self._epoch_skipped.values()))

    def validation_step(self, batch, batch_idx):
        n = count_batch(batch)
        self._count_skipped("val", batch)
        if n == 0:
            return None
        outputs = self.method(batch)
        terms = self.method.loss(outputs, batch)
        self._add(self._val_sums, terms, n)
        self._val_count += n
        self._val_parts.append(collect_predictions(outputs, batch, self.space))
        return None

    def on_validation_epoch_end(self) -> None:
        self.val_losses = self._reduce(self._val_sums, self._val_count)
        parts = [p for rank_parts in _all_gather_objects(self._val_parts) for p in rank_parts]
        preds = concat_predictions(parts)
        result = compute_metrics(preds, self.space) if preds else {}
        result["score"] = selection_score(result, self.space)
        self.val_metrics = result
        self._val_parts = []
        if math.isfinite(result["score"]):
            # every rank holds the same gathered value; sync_dist keeps Lightning's DDP check quiet
            self.log("val_score", result["score"], prog_bar=True, sync_dist=True)

    def monitor_value(self) -> float:
        """Value of the configured monitor after the last validation epoch."""
        name = self.config.monitor_name
        if name == "loss" or name.startswith("val_"):
            key = "loss" if name == "loss" else name[4:]
            if key not in self.val_losses:
                raise ConfigError(
                    f"monitor {name!r}: the method's validation loss has no term {key!r}; "
                    f"terms: {', '.join('val_' + k for k in self.val_losses) or 'none'}"
                )
            return float(self.val_losses[key])
        value = self.val_metrics.get(name)
        return float("nan") if value is None else float(value)

    # -- optimisation -------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.config
        groups = getattr(self.method, "parameter_groups", None)
        params = groups() if callable(groups) else [p for p in self.method.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
            )
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return opt
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = max(total // max(cfg.epochs, 1), 1)
        warmup = min(cfg.warmup_epochs * per_epoch, total - 1)
        floor = cfg.min_lr / cfg.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
