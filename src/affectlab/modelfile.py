"""The model file format (``RUN/model.ckpt``) and the one safe way to read it.

A model file is **data**: a ``torch.save`` of a plain dict of tensors, numbers, strings,
lists and dicts. It is read with ``torch.load(weights_only=True)`` only; a file that
would need unpickling of anything else (a class, a function: the way a crafted pickle
runs code) is refused with an :class:`~affectlab.errors.UnsafeModelError` naming the
file and the object it asks for. There is no fallback to a full unpickle.

This module sits at the bottom of the layers (it needs only torch and
:mod:`affectlab.errors`), so methods (``init_from``), backbones (weight files) and the
runtime share it. Rebuilding a method from a file is :func:`affectlab.runtime.hub.load_model`.

Keys:

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
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from affectlab import __version__
from affectlab.errors import ModelError, UnsafeModelError

FORMAT = "affectlab-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.ckpt"

#: Method config keys that point at external weight files (``init_from``: another run) or
#: ask for downloads. The saved ``state_dict`` already holds every weight, so rebuilding
#: ignores them.
WEIGHT_SOURCE_KEYS = {"weights": None, "backbone_weights": None, "pretrained": False, "init_from": None}
#: Attributes of a method holding its image encoder (what ``run:RUN`` backbones extract with).
ENCODER_ATTRS = ("backbone", "encoder")


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


def safe_load(path: str | os.PathLike, what: str = "model file") -> Any:
    """``torch.load(path, weights_only=True)`` with affectlab's one-line errors.

    Parameters
    ----------
    path : str or Path
        The file to read.
    what : str
        What the file is, for the message (``"model file"``, ``"backbone weights"``).

    Raises
    ------
    UnsafeModelError
        The file needs unpickling of a class or function (it could run code); nothing
        from it is executed.
    ModelError
        The file is missing, truncated or not a torch file.
    """
    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # a truncated or foreign file: nothing asked to be unpickled
            raise ModelError(f"cannot read {what} {str(p)!r}: not a file written by torch.save") from None
        obj = f" ({found.group(1)})"
        raise UnsafeModelError(
            f"{p}: refused to load this {what}: it asks to unpickle a Python object{obj}, which could run code; "
            "affectlab reads model files as data (tensors, numbers, strings) only"
        ) from None
    except FileNotFoundError:
        raise ModelError(f"{what} {str(p)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is one user error
        raise ModelError(f"cannot read {what} {str(p)!r} ({type(exc).__name__}: {exc})") from None


def model_file(path: str | os.PathLike) -> Path:
    """``RUN`` (a run directory) -> ``RUN/model.ckpt``; a file stays as it is.

    Names of packaged or imported models are resolved by
    :func:`affectlab.runtime.hub.resolve_model`, not here.

    Raises
    ------
    ModelError
        If the path does not exist or the directory holds no model file.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        f = p / MODEL_FILE
        if not f.is_file():
            raise ModelError(
                f"{str(path)!r} is a directory without {MODEL_FILE}; pass a run directory written by "
                "'affectlab train' or a model file"
            )
        return f
    if not p.is_file():
        raise ModelError(
            f"model {str(path)!r} does not exist (expected a run directory, a .ckpt model file or a packaged "
            "model name: see 'affectlab models')"
        )
    return p


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """The raw dict of a model file (or a run directory's ``model.ckpt``), validated.

    Raises
    ------
    UnsafeModelError
        The file would need unpickling (see :func:`safe_load`).
    ModelError
        Not an affectlab model file, or one written by a newer affectlab.
    """
    p = model_file(path)
    payload = safe_load(p, "model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = ""
        if isinstance(payload, dict) and "pytorch-lightning_version" in payload:
            hint = " (this is Lightning's resumption checkpoint last.ckpt; load RUN/model.ckpt or the run directory)"
        raise ModelError(f"{p} is not an affectlab model file{hint}")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{p} was written by a newer affectlab (model format {payload['format_version']}); upgrade affectlab"
        )
    if isinstance(payload.get("state_dict"), dict):
        payload["state_dict"] = unpack_int8(payload["state_dict"])
    return payload


# ----------------------------------------------------------------------------- int8 storage
#: A weight stored as int8 is two tensors: ``<key>.__q8`` (int8) and ``<key>.__q8scale``
#: (one float16 scale per output channel); :func:`read_payload` turns them back into float32.
Q8, Q8_SCALE = ".__q8", ".__q8scale"


def pack_int8(state_dict: dict, min_numel: int = 16384) -> dict:
    """Store the large weight matrices and kernels of ``state_dict`` as int8 (per-output-channel
    symmetric scales), the rest unchanged: about half the size of float16 for shipping a model.

    Only floating tensors with at least 2 dimensions and ``min_numel`` elements are packed
    (biases, norms and small layers keep their precision).
    """
    import torch

    out = {}
    for key, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and value.dim() >= 2 and value.numel() >= min_numel:
            w = value.detach().float()
            scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
            shape = (-1,) + (1,) * (w.dim() - 1)
            out[key + Q8] = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8)
            out[key + Q8_SCALE] = scale.to(torch.float16)
        else:
            out[key] = value
    return out


def unpack_int8(state_dict: dict) -> dict:
    """The float32 weights of a state dict written by :func:`pack_int8` (others unchanged)."""
    if not any(isinstance(k, str) and k.endswith(Q8) for k in state_dict):
        return state_dict
    import torch

    out = {}
    for key, value in state_dict.items():
        if key.endswith(Q8_SCALE):
            continue
        if key.endswith(Q8):
            base = key[: -len(Q8)]
            scale = state_dict.get(base + Q8_SCALE)
            if scale is None:
                raise ModelError(f"model weights {base!r} are int8 without their scale {base + Q8_SCALE!r}")
            shape = (-1,) + (1,) * (value.dim() - 1)
            out[base] = value.to(torch.float32) * scale.to(torch.float32).view(shape)
        else:
            out[key] = value
    return out
