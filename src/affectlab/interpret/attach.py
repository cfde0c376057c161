"""Attach an AURA head to an image model: one model file that also explains each face.

The head is fit with affectlab's own commands on the image model's frozen features::

    affectlab extract manifest:train.csv --backbone run:runs/base --out train.zarr
    affectlab train --preset aura --train features:train.zarr --out runs/aura
    affectlab models attach-aura --model runs/base --head runs/aura --out with_aura.ckpt

:func:`attach_aura` (the last command) checks that the head was trained on features of
that model's encoder, assigns the head's training samples (``members``) to their
nearest archetypes with the AURA explainer's code and stores, per archetype, the
majority label, its share and the member count
(:func:`affectlab.interpret.aura_explain.archetype_stats`). The result is a model of
method ``aura-head`` (:mod:`affectlab.methods.aura_head`): ``affectlab analyze``, the
Predictor and ``affectlab evaluate`` take it like any model and add the columns
``archetype``, ``archetype_label``, ``archetype_purity``, ``archetype_size`` and
``archetype_distance``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from affectlab.errors import ConfigError, ModelError

_PREDICT = ("base", "aura")


def _load(model, what: str):
    from affectlab.runtime.hub import resolve_model
    from affectlab.runtime.hub import load_model

    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a run directory, a model file or a packaged model name, got {type(model).__name__}")
    return load_model(resolve_model(model))


def _members_spec(members, head_info) -> str:
    from affectlab.features.dataset import is_feature_spec

    if members is None:
        spec = ((head_info.get("train") or {}).get("config") or {}).get("train")
        if not (isinstance(spec, str) and is_feature_spec(spec)):
            raise ConfigError(
                f"the head {head_info['path']} does not record a feature store it was trained on; pass "
                "members='features:TRAIN.zarr' (--members), the features the head was trained on"
            )
        return spec
    if not is_feature_spec(members):
        raise ConfigError(
            f"members must be a feature store (features:FEAT.zarr) extracted with the image model's encoder, got {members!r}"
        )
    return os.fspath(members)


def member_statistics(head, dataset, *, batch_size: int = 512, progress: bool = False) -> dict[str, np.ndarray]:
    """Per archetype: majority label index (-1: none), its share, member count.

    Parameters
    ----------
    head : Aura
        A trained AURA model.
    dataset : FeatureDataset
        Its training features (the members), in the head's label space.

    Returns
    -------
    dict
        ``label`` [N] int, ``purity`` [N] float (NaN without labelled member),
        ``count`` [N] int, and ``archetype`` [len(dataset)] (each sample's archetype).
    """
    from affectlab.interpret.aura_explain import archetype_stats, infer

    res = infer(head, dataset, batch_size=batch_size, progress=progress)
    stats = archetype_stats(head, dataset, res)
    names = list(head.label_space.expressions)
    if "given_majority" in stats:
        code = {n: i for i, n in enumerate(names)}
        label = np.array([code.get(m, -1) for m in stats["given_majority"]], dtype=np.int64)
        purity = stats["given_purity"].to_numpy(dtype=np.float64)
    else:  # a head without expression classes: no label to name
        label = np.full(len(stats), -1, dtype=np.int64)
        purity = np.full(len(stats), np.nan)
    return {"label": label, "purity": purity, "count": stats["usage"].to_numpy(dtype=np.int64), "archetype": res["archetype"]}


def attach_aura(
    model,
    head,
    out,
    *,
    members=None,
    predict: str = "base",
    batch_size: int = 512,
    progress: bool = False,
) -> dict[str, Any]:
    """Write one model file holding an image model and an AURA head on its frozen features.

    Parameters
    ----------
    model : str or Path
        The image model: run directory, model file or packaged name (``default``). A model
        that already carries a head is replaced by its image model.
    head : str or Path
        An AURA run (``affectlab train --preset aura``) trained on features of ``model``'s
        encoder (``affectlab extract ... --backbone run:MODEL``).
    out : str or Path
        Model file to write.
    members : str or FeatureDataset, optional
        ``features:TRAIN.zarr``: the samples whose labels describe each archetype
        (default: the feature store the head was trained on, from its run config).
    predict : {"base", "aura"}
        Output the image model's predictions (default, unchanged) or the AURA head's.
    batch_size : int
        Samples per forward pass when assigning the members.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``path``, ``archetypes`` (codebook size), ``used_archetypes`` (with at least one
        member), ``members`` (samples), ``feature_dim``, ``predict``.

    Raises
    ------
    ModelError
        The head is not an AURA model, the image model has no encoder, or the head's
        feature width does not match the encoder's.
    ConfigError
        Bad ``predict`` / ``members``, or members extracted with another encoder width.
    """
    from affectlab.features.dataset import FeatureDataset, open_features
    from affectlab.methods.aura_head import AuraHeadModel, image_encoder
    from affectlab.modelfile import save_model

    if predict not in _PREDICT:
        raise ConfigError(f"predict must be one of {', '.join(_PREDICT)}, got {predict!r}")
    if out is None:
        raise ConfigError("attach_aura needs an output model file (--out FILE.ckpt)")
    base, base_info = _load(model, "model")
    if isinstance(base, AuraHeadModel):
        base = base.base
    head_method, head_info = _load(head, "head")
    if head_info["method"] != "aura":
        raise ModelError(f"{head_info['path']} is a {head_info['method']!r} model, not an AURA head (train one with --preset aura)")
    encoder = image_encoder(base)
    width = head_method.global_proj[0].in_features
    if width != encoder.out_dim:
        raise ModelError(
            f"the AURA head {head_info['path']} takes {width}-d features but the encoder of {base_info['path']} "
            f"({encoder.name}) gives {encoder.out_dim}-d; extract the head's features with --backbone run:<that model>"
        )
    if isinstance(members, FeatureDataset):
        dataset = members
    else:
        dataset = open_features(_members_spec(members, head_info))
    if dataset.feature_dim != width:
        raise ConfigError(f"{dataset.name} holds {dataset.feature_dim}-d features, the head takes {width}-d")
    dataset = dataset.with_label_space(head_method.label_space)
    stats = member_statistics(head_method, dataset, batch_size=batch_size, progress=progress)

    head_config = head_method.config.model_dump(mode="json")
    if isinstance(head_config.get("backbone"), str) and head_config["backbone"].startswith("run:"):
        # informative only; no machine-specific path in a model that may be shipped
        head_config["backbone"] = "run:" + Path(head_config["backbone"][4:]).name
    config = {
        "base_method": base.name,
        "base_config": base.config.model_dump(mode="json"),
        "base_label_space": base.label_space.to_dict(),
        "head_config": head_config,
        "head_label_space": head_method.label_space.to_dict(),
        "predict": predict,
    }
    combined = AuraHeadModel(base.label_space, config)
    combined.base.load_state_dict(base.state_dict())
    combined.head.load_state_dict(head_method.state_dict())
    combined.set_member_stats(stats["label"], stats["purity"], stats["count"])
    combined.eval()
    used = int((stats["count"] > 0).sum())

    def _summary(train: dict) -> dict:
        return {k: train[k] for k in ("best_epoch", "monitor", "monitor_value") if k in train}

    train_info = {
        "base": _summary(base_info.get("train") or {}),
        "head": _summary(head_info.get("train") or {}),
        "members": {"store": Path(str(dataset.store.path)).name, "samples": int(len(dataset)), "used_archetypes": used},
    }
    path = save_model(
        out, combined, preprocessing=base_info.get("preprocessing"), transform=base_info.get("transform"), train_info=train_info
    )
    return {
        "path": str(path),
        "archetypes": int(len(stats["count"])),
        "used_archetypes": used,
        "members": int(len(dataset)),
        "feature_dim": int(width),
        "predict": predict,
    }
