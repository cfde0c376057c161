"""Packaged and imported models addressed by name.

``affectlab-base`` (alias ``default``) ships inside the package: a small expression
model trained on real in-the-wild faces (``docs/models/affectlab-base.md``). It is what
:func:`affectlab.analyze` and ``affectlab analyze`` use when no model is given.

Imported models (``affectlab models import emotiefflib:<name>``, see
:mod:`affectlab.models.importers`) live under the user model folder
:func:`models_home` -- ``models/`` under :func:`affectlab.runtime.assets.affectlab_home`
(``$AFFECTLAB_HOME``, default the platform's user cache dir, e.g. ``~/.cache/affectlab``),
beside the downloaded assets -- one folder per model holding ``model.ckpt`` (an ordinary
affectlab model file) and ``info.json``. Models imported by earlier versions into
``~/.affectlab/models`` are still found there when ``AFFECTLAB_HOME`` is not set. Both kinds are registered with
:func:`affectlab.predictor.register_packaged_model`, so ``Predictor.load(name)``,
``--model NAME`` in ``analyze`` / ``evaluate`` / ``explain`` accept their names.

::

    from affectlab.models import list_models
    list_models()   # [{'name': 'affectlab-base', 'kind': 'packaged', ...}, ...]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from affectlab.errors import ModelError

#: The packaged default model for real faces.
BASE_MODEL = "affectlab-base"
#: Name ``Predictor.load(None)`` / ``analyze`` without ``--model`` resolve to.
DEFAULT_ALIAS = "default"
PACKAGE_DIR = Path(__file__).resolve().parent
BASE_MODEL_FILE = PACKAGE_DIR / f"{BASE_MODEL}.pt"
INFO_FILE = "info.json"
MODEL_FILE = "model.ckpt"


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


def register_all() -> None:
    """Register the packaged model and every imported model with the Predictor (idempotent)."""
    from affectlab.predictor import register_packaged_model

    register_packaged_model(BASE_MODEL, base_model_path)
    register_packaged_model(DEFAULT_ALIAS, base_model_path)
    for info in imported_models():
        if info.get("kind", "model") == "model":
            register_packaged_model(info["name"], _imported_path(info["name"]))


def list_models() -> list[dict]:
    """Packaged and imported models: ``name``, ``kind`` (packaged / imported / backbone), ``path``, ``description``."""
    rows = [
        {
            "name": BASE_MODEL,
            "kind": "packaged",
            "path": str(BASE_MODEL_FILE),
            "description": "8 expressions from real faces, with nearest AURA archetype (default; no VA, no AUs)"
            + ("" if BASE_MODEL_FILE.is_file() else " [weights file missing]"),
        }
    ]
    for info in imported_models():
        kind = "backbone" if info.get("kind") == "backbone" else "imported"
        rows.append({"name": info["name"], "kind": kind, "path": info["path"], "description": info.get("description", "")})
    return rows


__all__ = [
    "BASE_MODEL",
    "DEFAULT_ALIAS",
    "base_model_path",
    "imported_models",
    "list_models",
    "models_home",
    "register_all",
]
