"""Self-contained model files (``RUN/model.ckpt``): save and rebuild a trained method.

A model file is a ``torch.save`` of a plain dict (no pickled classes, so it loads with
``torch.load(weights_only=True)``):

``format``, ``format_version``
    ``"affectlab-model"``, 1.
``method``, ``method_config``
    Registry name and hyper-parameters (JSON-able) to rebuild the ``nn.Module``.
``label_space``
    :meth:`LabelSpace.to_dict` of the space the model predicts.
``preprocessing``
    The backbone's input size and normalisation (:class:`Preprocessing.to_dict`), or
    ``None`` for feature-level methods.
``transform``
    Transform presets (``{"train": ..., "eval": ...}``) used in training.
``state_dict``, ``extra_state``
    Weights (and buffers) and :meth:`Method.extra_state`.
``train``
    Informative: training config, best epoch, monitored metric and value.

Nothing in the file is an absolute path, so a run directory can be moved or copied.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from affectlab import __version__
from affectlab.errors import ModelError

FORMAT = "affectlab-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.ckpt"

#: Method config keys that point at external weight files (``init_from``: another run) or
#: ask for downloads. The saved ``state_dict`` already holds every weight, so rebuilding
#: ignores them.
WEIGHT_SOURCE_KEYS = {"weights": None, "backbone_weights": None, "pretrained": False, "init_from": None}


def _plain(value: Any) -> Any:
    """Make ``value`` loadable with ``weights_only=True`` (numpy -> tensors / lists)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def model_payload(
    method,
    *,
    preprocessing: Mapping[str, Any] | None = None,
    transform: Mapping[str, Any] | None = None,
    train_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict :func:`save_model` writes (useful to save from another process)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "affectlab_version": __version__,
        "method": method.name,
        "method_config": method.config.model_dump(mode="json"),
        "label_space": method.label_space.to_dict(),
        "preprocessing": None if preprocessing is None else _plain(dict(preprocessing)),
        "transform": _plain(dict(transform or {})),
        "state_dict": {k: v.detach().cpu().clone() for k, v in method.state_dict().items()},
        "extra_state": _plain(method.extra_state() or {}),
        "train": _plain(dict(train_info or {})),
    }


def save_model(path: str | os.PathLike, method, **kwargs) -> Path:
    """Write ``method`` as a self-contained model file (see the module docstring).

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = model_payload(method, **kwargs)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def resolve_model_path(path: str | os.PathLike) -> Path:
    """``RUN`` (a run directory) -> ``RUN/model.ckpt``; a file stays as is; a packaged
    model name (``affectlab-base``, an imported model) -> its model file.

    Raises
    ------
    ModelError
        If the path does not exist or the directory holds no model file.
    """
    p = Path(path)
    if not p.exists() and isinstance(path, str):
        from affectlab.predictor import packaged_model_path

        packaged = packaged_model_path(path)
        if packaged is not None:
            p = Path(packaged)
    if p.is_dir():
        p = p / MODEL_FILE
        if not p.is_file():
            raise ModelError(
                f"{str(path)!r} is a directory without {MODEL_FILE}; pass a run directory written by "
                "'affectlab train' or a model file"
            )
        return p
    if not p.is_file():
        raise ModelError(
            f"model {str(path)!r} does not exist (expected a run directory, a .ckpt model file or a packaged "
            "model name: see 'affectlab models')"
        )
    return p


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """The raw dict of a model file, validated."""
    p = resolve_model_path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # extra_state of a third-party method may hold objects the safe loader refuses;
        # the user pointed at this file explicitly.
        try:
            payload = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as exc:  # corrupt file
            raise ModelError(f"{p}: not a readable model file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:
        raise ModelError(f"{p}: not a readable model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = ""
        if isinstance(payload, dict) and "pytorch-lightning_version" in payload:
            hint = " (this is Lightning's resumption checkpoint last.ckpt; load RUN/model.ckpt or the run directory)"
        raise ModelError(f"{p} is not an affectlab model file{hint}")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{p} was written by a newer affectlab (model format {payload['format_version']}); upgrade affectlab"
        )
    return payload


def build_method(payload: Mapping[str, Any]):
    """Rebuild the method of a model payload and load its weights."""
    from affectlab.data.schema import LabelSpace
    from affectlab.methods.base import get_method_class

    cls = get_method_class(payload["method"])
    config = dict(payload.get("method_config") or {})
    for key, value in WEIGHT_SOURCE_KEYS.items():
        if key in cls.Config.model_fields and key in config:
            config[key] = value
    space = LabelSpace.from_dict(payload["label_space"])
    method = cls(space, config)
    state = payload["state_dict"]
    missing, unexpected = method.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"the weights do not match method {payload['method']!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]} (was the model saved by another affectlab version?)"
        )
    method.load_extra_state(payload.get("extra_state") or {})
    method.eval()
    return method


def load_model(path: str | os.PathLike):
    """Load a trained model from a run directory or a model file.

    Parameters
    ----------
    path : str or Path
        ``RUN`` (reads ``RUN/model.ckpt``) or a model file.

    Returns
    -------
    method : Method
        The rebuilt method in eval mode, on the CPU.
    info : dict
        ``method``, ``method_config``, ``label_space`` (a :class:`LabelSpace`),
        ``preprocessing`` (dict or None), ``transform``, ``train``, ``path``.

    Raises
    ------
    ModelError
        Missing file, not an affectlab model, or weights that do not fit the method.

    Examples
    --------
    >>> method, info = load_model("runs/baseline")  # doctest: +SKIP
    >>> info["label_space"].tasks  # doctest: +SKIP
    ('expr', 'va', 'au')
    """
    from affectlab.data.schema import LabelSpace

    p = resolve_model_path(path)
    payload = read_payload(p)
    method = build_method(payload)
    info = {
        "method": payload["method"],
        "method_config": dict(payload.get("method_config") or {}),
        "label_space": LabelSpace.from_dict(payload["label_space"]),
        "preprocessing": payload.get("preprocessing"),
        "transform": dict(payload.get("transform") or {}),
        "train": dict(payload.get("train") or {}),
        "path": str(p),
        "affectlab_version": payload.get("affectlab_version"),
    }
    return method, info
