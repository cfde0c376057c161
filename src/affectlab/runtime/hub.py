"""The model hub: every way to name a trained model, resolved and loaded in one place.

A model is addressed by

- a **packaged name**: ``affectlab-base`` (alias ``default``) ships inside the package:
  version 3, a MobileNetV2 distilled on real in-the-wild faces from face-api.js's expression
  net and the FaceLandmarker's AUs (8 expressions, 15 AUs, fully offline;
  ``docs/models/affectlab-base.md``); it is what :func:`affectlab.analyze` falls back to when
  no model is given and no downloaded default is present;
- an **imported name** (``affectlab models import emotiefflib:<name>``, see
  :mod:`affectlab.runtime.importers`): a folder under :func:`models_home` holding ``model.ckpt`` (an
  ordinary affectlab model file) and ``info.json``; ``models/`` under
  :func:`affectlab.runtime.assets.affectlab_home` (``$AFFECTLAB_HOME``, default the
  platform's user cache dir), beside the downloaded assets (models imported by earlier
  versions into ``~/.affectlab/models`` are still found when ``AFFECTLAB_HOME`` is unset);
- a **path**: a run directory written by ``affectlab train`` or a model file.

:func:`resolve_model` turns any of them into a model file and :func:`load_model`
rebuilds the method (like timm's ``create_model``); :func:`list_models` lists the names.
A registered name always means the registered model: a folder called ``default`` in the
working directory does not shadow it unless the user writes a path (``./default``).

Model files are data (see :mod:`affectlab.modelfile`): loading one never runs code.

::

    from affectlab.runtime.hub import list_models, load_model
    list_models()                       # [{'name': 'affectlab-base', 'kind': 'packaged', ...}, ...]
    method, info = load_model("default")
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from affectlab.errors import ModelError
from affectlab.modelfile import MODEL_FILE, WEIGHT_SOURCE_KEYS, model_file, read_payload

#: The packaged default model for real faces.
BASE_MODEL = "affectlab-base"
#: Name ``Predictor.load(None)`` / ``analyze`` without ``--model`` resolve to.
DEFAULT_ALIAS = "default"
#: Folder of the packaged weights inside the installed package.
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "models"
BASE_MODEL_FILE = PACKAGE_DIR / f"{BASE_MODEL}.pt"
INFO_FILE = "info.json"


def models_home() -> Path:
    """The folder new imports go to: ``affectlab_home()/models``."""
    from affectlab.runtime.assets import affectlab_home

    return affectlab_home() / "models"


def _legacy_models_home() -> Path | None:
    # before the asset hub, imports went to ~/.affectlab/models when AFFECTLAB_HOME was unset
    if os.environ.get("AFFECTLAB_HOME"):
        return None
    legacy = Path.home() / ".affectlab" / "models"
    return legacy if legacy.is_dir() and legacy != models_home() else None


def slug(name: str) -> str:
    """A folder name for a model name (``emotiefflib:enet_b0_8_va_mtl`` -> ``emotiefflib--enet_b0_8_va_mtl``)."""
    return name.replace(":", "--").replace("/", "_").replace("\\", "_")


def base_model_path() -> Path:
    """The packaged ``affectlab-base`` weights file.

    Raises
    ------
    ModelError
        If the file is missing from this installation.
    """
    if not BASE_MODEL_FILE.is_file():
        raise ModelError(
            f"the packaged model file {BASE_MODEL_FILE} is missing from this installation; reinstall affectlab "
            "or pass --model RUN"
        )
    return BASE_MODEL_FILE


def imported_models() -> list[dict]:
    """``info.json`` of every imported model under :func:`models_home` (with ``path``), by name.

    A model found both there and in the legacy ``~/.affectlab/models`` is taken from :func:`models_home`.
    """
    found, seen = [], set()
    for home in (models_home(), _legacy_models_home()):
        if home is None or not home.is_dir():
            continue
        for folder in sorted(p for p in home.iterdir() if p.is_dir()):
            info_path = folder / INFO_FILE
            try:
                info = json.loads(info_path.read_text())
            except (OSError, ValueError):
                continue  # a half-written or foreign folder
            if isinstance(info, dict) and isinstance(info.get("name"), str) and info["name"] not in seen:
                info["path"] = str(folder)
                seen.add(info["name"])
                found.append(info)
    return sorted(found, key=lambda i: i["name"])


def _imported_path(name: str):
    def path_fn() -> Path:
        # looked up on load: the user folder may have changed since registration
        for info in imported_models():
            if info["name"] == name and info.get("kind", "model") == "model":
                return Path(info["path"]) / MODEL_FILE
        raise ModelError(
            f"imported model {name!r} is no longer under {models_home()}; import it again with "
            f"'affectlab models import {name} --file PATH'"
        )

    return path_fn


# name -> function returning the path of its model file (may locate or unpack it)
_PACKAGED: dict[str, Callable[[], str | os.PathLike]] = {}


def register_packaged_model(name: str, path_fn: Callable[[], str | os.PathLike]) -> None:
    """Make :func:`resolve_model` (``Predictor.load``, ``--model``) accept ``name``.

    Parameters
    ----------
    name : str
        Short name users pass as ``--model`` (e.g. ``"default"``).
    path_fn : callable
        Called on load (not on registration), so locating or unpacking the weights
        costs nothing until the model is used. Returns a run directory or model file.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a packaged model needs a non-empty name")
    if not callable(path_fn):
        raise TypeError(f"path_fn must be callable, got {type(path_fn).__name__}")
    _PACKAGED[name.strip()] = path_fn


def register_all() -> None:
    """Register the packaged model and every imported model (cheap, idempotent)."""
    register_packaged_model(BASE_MODEL, base_model_path)
    register_packaged_model(DEFAULT_ALIAS, base_model_path)
    for info in imported_models():
        if info.get("kind", "model") == "model":
            register_packaged_model(info["name"], _imported_path(info["name"]))


def available_packaged_models() -> list[str]:
    """Names :func:`resolve_model` accepts besides paths."""
    register_all()
    return sorted(_PACKAGED)


def packaged_model_path(name: str) -> str | os.PathLike | None:
    """The model file of packaged or imported model ``name``, or None if there is none."""
    register_all()
    if isinstance(name, str) and name.strip() in _PACKAGED:
        return _PACKAGED[name.strip()]()
    return None


def _written_as_path(model: str) -> bool:
    """Whether the user wrote an explicit path (``./default``, ``../x``, ``/abs``, ``~/m``)."""
    return model.startswith((".", "~", "/", os.sep)) or Path(model).is_absolute()


def is_packaged(model) -> bool:
    """Whether ``model`` names a packaged or imported model (rather than a path)."""
    if not isinstance(model, str) or _written_as_path(model):
        return False
    register_all()
    return model.strip() in _PACKAGED


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The model file ``model`` stands for: a packaged / imported name, a run directory or a file.

    ``None`` means the packaged default model. A registered name wins over a file or
    folder of the same name in the working directory; write ``./NAME`` for the folder.
    A :class:`~pathlib.Path` is always a path.

    Raises
    ------
    ModelError
        If ``model`` is neither a registered name nor an existing run directory / model file.
    """
    if model is None:
        model = DEFAULT_ALIAS
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"a model is a name, a run directory or a model file, got {type(model).__name__}")
    if is_packaged(model):
        return model_file(_PACKAGED[str(model).strip()]())
    if not Path(model).expanduser().exists():
        names = ", ".join(available_packaged_models()) or "none registered"
        raise ModelError(
            f"model {str(model)!r} does not exist: it is neither a run directory, a model file nor a packaged "
            f"model name (packaged: {names}; see 'affectlab models')"
        )
    return model_file(model)


def build_method(payload: Mapping[str, Any], source: str | os.PathLike | None = None):
    """Rebuild the method of a model payload and load its weights.

    ``source`` (the file) is named in the error when the weights do not fit.
    """
    from affectlab.data.schema import LabelSpace
    from affectlab.features.backbones import rebuilding
    from affectlab.methods.base import get_method_class

    cls = get_method_class(payload["method"])
    config = dict(payload.get("method_config") or {})
    for key, value in WEIGHT_SOURCE_KEYS.items():
        if key in cls.Config.model_fields and key in config:
            config[key] = value
    space = LabelSpace.from_dict(payload["label_space"])
    with rebuilding():  # the state dict below holds every weight: architectures only
        method = cls(space, config)
    state = payload["state_dict"]
    where = f"{source}: " if source is not None else ""
    try:
        missing, unexpected = method.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        # torch lists every mismatching tensor over many lines; one names the problem
        found = re.search(r"size mismatch for ([\w.]+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) from "
                          r"checkpoint, the shape in current model is (torch\.Size\(\[[^\]]*\]\))", str(exc))
        if found is None:
            raise ModelError(f"{where}the weights do not fit method {payload['method']!r} ({type(exc).__name__})") from None
        def dims(text):
            return "x".join(re.findall(r"\d+", text)) or "scalar"

        n = str(exc).count("size mismatch")
        held = [f"{len(space.expressions)} expressions"] if space.expressions else []
        held += ["valence/arousal"] if space.va else []
        held += [f"{len(space.aus)} AUs"] if space.aus else []
        raise ModelError(
            f"{where}the weights do not fit the model's label space ({', '.join(held) or 'empty'}): {found.group(1)} is "
            f"{dims(found.group(2))} in the file, the label space needs {dims(found.group(3))}"
            f"{f' ({n} tensors differ)' if n > 1 else ''}; the file's label_space does not describe its weights"
        ) from None
    if missing or unexpected:
        raise ModelError(
            f"{where}the weights do not match method {payload['method']!r}: missing {sorted(missing)[:5]}, "
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
        A packaged or imported model name, ``RUN`` (reads ``RUN/model.ckpt``) or a model file.

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

    p = resolve_model(path)
    payload = read_payload(p)
    method = build_method(payload, p)
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


def list_models() -> list[dict]:
    """Packaged and imported models: ``name``, ``kind`` (packaged / imported / backbone), ``path``, ``description``."""
    rows = [
        {
            "name": BASE_MODEL,
            "kind": "packaged",
            "path": str(BASE_MODEL_FILE),
            "description": "v3: 8 expressions + 15 AUs from real faces, with nearest AURA archetype (default; offline; no VA)"
            + ("" if BASE_MODEL_FILE.is_file() else " [weights file missing]"),
        }
    ]
    for info in imported_models():
        kind = "backbone" if info.get("kind") == "backbone" else "imported"
        rows.append({"name": info["name"], "kind": kind, "path": info["path"], "description": info.get("description", "")})
    return rows
