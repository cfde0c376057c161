"""Import public checkpoints as affectlab models: EmotiEffLib ONNX models, face-api.js, open_clip backbones.

::

    affectlab models import faceapi:expression                         # from the asset hub
    affectlab models import faceapi:expression --file face_expression_model.bin
    affectlab models import emotiefflib:enet_b0_8_best_afew            # downloads once
    affectlab models import emotiefflib:enet_b0_8_va_mtl --file enet_b0_8_va_mtl.onnx
    affectlab models import clip:ViT-B-16 --file ViT-B-16-openai.bin
    affectlab analyze clip.mp4 --model emotiefflib:enet_b0_8_best_afew

EmotiEffLib (Apache-2.0, the HSEmotion models of A. Savchenko) publishes EfficientNet
expression models trained on AffectNet as ONNX graphs: input ``input``, float32
``N x 3 x S x S`` RGB scaled to [0, 1] and normalised with the ImageNet mean/std
(``S`` = 224 for ``enet_b0_*``, 260 for ``enet_b2_*``); output ``N x 8`` logits in the
order Anger, Contempt, Disgust, Fear, Happiness, Neutral, Sadness, Surprise (``*_7``
models drop Contempt), and for ``*_mtl`` models two more columns, valence and arousal.
An imported model is a self-contained affectlab model file under
:func:`affectlab.runtime.hub.models_home`; the class order is mapped by name onto
affectlab's canonical order. Upstream resizes with OpenCV's plain bilinear filter;
affectlab's preprocessing uses antialiased bilinear resizing, which differs only when
a crop is shrunk a lot.

``faceapi:expression`` converts face-api.js's FaceExpressionNet (TensorFlow.js manifest +
``.bin``, uint8-quantised; :mod:`affectlab.methods.faceapi`) into an ordinary model file of
method ``faceapi``: 7 expressions, no contempt, 112 px input. The weights come from the asset
hub (``faceapi-expression`` + ``faceapi-expression-manifest``, downloaded and verified on first
use) or from ``--file`` (the ``.bin``, with the manifest beside it, or the manifest with
the ``.bin`` it names beside it).

A CLIP import copies a local open_clip checkpoint file into the same folder after
checking that it loads into the named architecture; use it as
``--backbone clip:ViT-B-16 --weights $(affectlab models path clip:ViT-B-16)``, or pass
its path from :func:`imported_weights`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from affectlab.errors import ConfigError, ModelError
from affectlab.runtime.hub import INFO_FILE, MODEL_FILE, imported_models, models_home, slug

#: Where EmotiEffLib's ONNX graphs are published (``{name}`` is the model name).
EMOTIEFFLIB_URL = (
    "https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/models/affectnet_emotions/onnx/{name}.onnx"
)
_EMOTIEFFLIB_8 = ["anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
_EMOTIEFFLIB_7 = [c for c in _EMOTIEFFLIB_8 if c != "contempt"]
_IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "normalize": "imagenet"}

#: EmotiEffLib ONNX models: input side, output classes (in the graph's order), VA columns.
EMOTIEFFLIB_MODELS: dict[str, dict] = {
    "enet_b0_8_best_afew": {"input_size": 224, "classes": _EMOTIEFFLIB_8, "va": False},
    "enet_b0_8_best_vgaf": {"input_size": 224, "classes": _EMOTIEFFLIB_8, "va": False},
    "enet_b0_8_va_mtl": {"input_size": 224, "classes": _EMOTIEFFLIB_8, "va": True},
    "enet_b2_8": {"input_size": 260, "classes": _EMOTIEFFLIB_8, "va": False},
    "enet_b2_7": {"input_size": 260, "classes": _EMOTIEFFLIB_7, "va": False},
}


def parse_source(spec: str) -> tuple[str, str]:
    """``"emotiefflib:enet_b0_8_best_afew"`` -> ``("emotiefflib", "enet_b0_8_best_afew")``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(
            f"model source {spec!r} must be SOURCE:NAME, e.g. emotiefflib:enet_b0_8_best_afew, faceapi:expression "
            "or clip:ViT-B-16"
        )
    source, name = spec.split(":", 1)
    source, name = source.strip().lower(), name.strip()
    if source not in IMPORTERS:
        raise ConfigError(f"unknown model source {source!r} in {spec!r}; known sources: {', '.join(sorted(IMPORTERS))}")
    if not name:
        raise ConfigError(f"model source {spec!r} names no model after ':'")
    return source, name


def _download(url: str, dest: Path, timeout: float) -> None:
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "affectlab"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as fh:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
            while chunk := response.read(1 << 16):
                fh.write(chunk)
                bar.update(len(chunk))


def _write_model_folder(name: str, write, info: dict, force: bool) -> dict:
    """Write an imported model's folder atomically (a temporary folder renamed into place)."""
    home = models_home()
    home.mkdir(parents=True, exist_ok=True)
    target = home / slug(name)
    if target.exists() and not force:
        raise ModelError(f"{name!r} is already imported at {target}; pass --force to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{slug(name)}-", dir=home))
    try:
        write(tmp)
        info = {"name": name, "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["path"] = str(target)
    return info


def _check_onnx(data: bytes, spec: dict, where: str) -> str:
    """Validate an EmotiEffLib graph's signature with onnxruntime; return its input name."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is in the onnx extra
        raise ModelError("importing ONNX models needs onnxruntime: pip install 'affectlab[onnx]'") from None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{where}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{where}: expected one image input, the graph has {len(inputs)}")
    shape = inputs[0].shape
    s = spec["input_size"]
    if len(shape) != 4 or any(isinstance(d, int) and d != want for d, want in zip(shape[1:], (3, s, s))):
        raise ModelError(f"{where}: expected an N x 3 x {s} x {s} input, the graph takes {shape}")
    probe = np.zeros((2, 3, s, s), dtype=np.float32)
    try:
        out = np.asarray(session.run(None, {inputs[0].name: probe})[0])
    except Exception as exc:
        raise ModelError(f"{where}: the graph fails on a 2 x 3 x {s} x {s} input ({exc})") from None
    width = len(spec["classes"]) + (2 if spec["va"] else 0)
    if out.shape != (2, width):
        what = f"{len(spec['classes'])} expression logits" + (" + valence, arousal" if spec["va"] else "")
        raise ModelError(f"{where}: expected an N x {width} output ({what}), got {tuple(out.shape)}")
    return inputs[0].name


def import_emotiefflib(
    name: str, file: str | os.PathLike | None = None, *, force: bool = False, timeout: float = 30.0
) -> dict:
    """Import an EmotiEffLib ONNX model as ``emotiefflib:<name>``.

    Parameters
    ----------
    name : str
        One of :data:`EMOTIEFFLIB_MODELS` (e.g. ``"enet_b0_8_best_afew"``).
    file : path, optional
        A local copy of ``<name>.onnx``. Without it the graph is downloaded from
        :data:`EMOTIEFFLIB_URL` once.
    force : bool
        Replace an earlier import of the same name.
    timeout : float
        Seconds to wait for the download server.

    Returns
    -------
    dict
        The model's ``info.json`` plus ``path`` (its folder).

    Raises
    ------
    ConfigError
        Unknown model name or missing file.
    ModelError
        No network and no ``file``, or a graph whose signature does not match.
    """
    if name not in EMOTIEFFLIB_MODELS:
        raise ConfigError(
            f"unknown EmotiEffLib model {name!r}; known: {', '.join(sorted(EMOTIEFFLIB_MODELS))}"
        )
    spec = EMOTIEFFLIB_MODELS[name]
    full = f"emotiefflib:{name}"
    if file is None:
        existing = [i for i in imported_models() if i["name"] == full]
        if existing and not force:
            return existing[0]  # downloads once
        url = EMOTIEFFLIB_URL.format(name=name)
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / f"{name}.onnx"
            try:
                _download(url, dest, timeout)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ModelError(
                    f"cannot download {full} from {url} ({reason}); offline, fetch {name}.onnx elsewhere and pass "
                    f"--file PATH: affectlab models import {full} --file {name}.onnx"
                ) from None
            data = dest.read_bytes()
        source = url
    else:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"--file {str(file)!r} does not exist; expected the model's {name}.onnx file")
        data = path.read_bytes()
        source = str(path.resolve())
    input_name = _check_onnx(data, spec, str(file or source))

    from affectlab.methods.onnx_model import OnnxModel
    from affectlab.modelfile import save_model

    method = OnnxModel.from_onnx(data, spec["classes"], va_outputs=spec["va"], input_name=input_name, source=source)
    preprocessing = {"input_size": spec["input_size"], "interpolation": "bilinear", **_IMAGENET}
    info = {
        "kind": "model",
        "source": source,
        "sha256": hashlib.sha256(data).hexdigest(),
        "description": f"EmotiEffLib {name}: {len(spec['classes'])} AffectNet expressions"
        + (" + valence/arousal" if spec["va"] else "")
        + f", {spec['input_size']} px",
        "license": "Apache-2.0 (EmotiEffLib)",
    }

    def write(folder: Path) -> None:
        save_model(folder / MODEL_FILE, method, preprocessing=preprocessing,
                   train_info={"imported_from": source, "sha256": info["sha256"]})

    return _write_model_folder(full, write, info, force=force or file is not None)


def import_clip(arch: str, file: str | os.PathLike | None = None, *, force: bool = False) -> dict:
    """Register a local open_clip checkpoint for the ``clip:<arch>`` backbone.

    The file is loaded into the architecture once (:func:`affectlab.features.backbones.create_backbone`)
    to fail early on a mismatch, then copied under :func:`affectlab.runtime.hub.models_home`.
    Nothing is downloaded: ``file`` is required.
    """
    if file is None:
        raise ConfigError(
            f"clip:{arch} needs a local open_clip checkpoint: affectlab models import clip:{arch} --file PATH "
            "(affectlab never downloads CLIP weights by itself)"
        )
    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(f"--file {str(file)!r} does not exist; expected an open_clip checkpoint for {arch}")
    from affectlab.features.backbones import create_backbone

    backbone = create_backbone(f"clip:{arch}", weights=str(path))
    data = path.read_bytes()
    info = {
        "kind": "backbone",
        "backbone": f"clip:{arch}",
        "weights": path.name,
        "source": str(path.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "description": f"open_clip {arch} weights for --backbone clip:{arch} ({backbone.out_dim}-d features)",
    }

    def write(folder: Path) -> None:
        shutil.copyfile(path, folder / path.name)

    # the user handed a file: it replaces an earlier import of the same name
    return _write_model_folder(f"clip:{arch}", write, info, force=True)


FACEAPI_MODELS = {"expression": ("faceapi-expression", "faceapi-expression-manifest")}


def _faceapi_files(file: Path) -> tuple[Path, Path]:
    """(``.bin``, manifest) from either one of them."""
    if file.suffix == ".json":
        manifest = file
        try:
            paths = [p for g in json.loads(file.read_text()) for p in g.get("paths", [])]
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise ModelError(f"--file {file}: not a TensorFlow.js weights manifest ({exc})") from None
        if len(paths) != 1:
            raise ModelError(f"--file {file}: the manifest names {len(paths)} weight files, expected 1")
        weights = file.parent / paths[0]
    else:
        weights = file
        stem = file.name[: -len(".bin")] if file.name.endswith(".bin") else file.stem
        manifest = file.parent / f"{stem}-weights_manifest.json"
    for p, what in ((weights, "weights .bin"), (manifest, "weights manifest")):
        if not p.is_file():
            raise ConfigError(
                f"{what} {p} not found; --file takes face_expression_model.bin with "
                "face_expression_model-weights_manifest.json beside it (or the manifest with its .bin)"
            )
    return weights, manifest


#: Bumped when the conversion itself changes (the preprocessing is hashed in as well).
FACEAPI_CONVERTER_VERSION = 1


def _faceapi_converter() -> str:
    """What an imported face-api model was converted with; another value means re-import."""
    import hashlib
    import json

    from affectlab.methods.faceapi import faceapi_preprocessing

    pre = json.dumps(faceapi_preprocessing(), sort_keys=True).encode()
    return f"{FACEAPI_CONVERTER_VERSION}-{hashlib.sha1(pre).hexdigest()[:8]}"


def import_faceapi(name: str, file: str | os.PathLike | None = None, *, force: bool = False) -> dict:
    """Import face-api.js's FaceExpressionNet as ``faceapi:expression``.

    Parameters
    ----------
    name : str
        ``"expression"`` (the only face-api network affectlab knows).
    file : path, optional
        ``face_expression_model.bin`` (manifest beside it) or the manifest. Without it the
        files come from the asset hub (:func:`affectlab.runtime.assets.asset_path`).
    force : bool
        Replace an earlier import (a ``file`` always replaces it).

    Returns
    -------
    dict
        The model's ``info.json`` plus ``path``.

    Raises
    ------
    ConfigError
        Unknown name or missing files.
    ModelError
        Files that do not decode into the network, or assets missing offline.
    """
    from affectlab.methods.faceapi import FACEAPI_EXPRESSIONS, faceapi_preprocessing, load_faceapi_expression
    from affectlab.runtime.assets import asset_path, asset_url, file_sha256

    if name not in FACEAPI_MODELS:
        raise ConfigError(f"unknown face-api model {name!r}; known: {', '.join(sorted(FACEAPI_MODELS))}")
    full = f"faceapi:{name}"
    converter = _faceapi_converter()
    if file is None:
        existing = [i for i in imported_models() if i["name"] == full]
        if existing and not force and existing[0].get("converter") == converter:
            return existing[0]
        force = force or bool(existing)  # made by another version of the conversion: convert again
        bin_name, manifest_name = FACEAPI_MODELS[name]
        weights, manifest = asset_path(bin_name), asset_path(manifest_name)
        source = asset_url(bin_name)
    else:
        weights, manifest = _faceapi_files(Path(file).expanduser())
        source = str(weights.resolve())
    sha = file_sha256(weights)
    method = load_faceapi_expression(weights, manifest, source=source, sha256=sha)

    from affectlab.modelfile import save_model

    classes = [e for e in method.label_space.expressions]
    info = {
        "kind": "model",
        "source": source,
        "sha256": sha,
        "classes": classes,
        "description": "face-api.js FaceExpressionNet: 7 expressions (no contempt), 112 px; "
        "256-d features in extras['features']",
        "license": "MIT (face-api.js; training data not disclosed)",
        "converter": converter,
    }
    assert set(classes) == set(FACEAPI_EXPRESSIONS)

    def write(folder: Path) -> None:
        save_model(folder / MODEL_FILE, method, preprocessing=faceapi_preprocessing(),
                   train_info={"imported_from": source, "sha256": sha})

    return _write_model_folder(full, write, info, force=force or file is not None)


def imported_weights(name: str) -> Path:
    """The stored weights file of an imported backbone (``clip:ViT-B-16``), for ``--weights``."""
    for info in imported_models():
        if info["name"] == name and info.get("kind") == "backbone":
            return Path(info["path"]) / info["weights"]
    raise ModelError(f"no imported backbone {name!r} under {models_home()}; run 'affectlab models import {name} --file PATH'")


def import_model(spec: str, file: str | os.PathLike | None = None, *, force: bool = False) -> dict:
    """Import ``SOURCE:NAME`` (``emotiefflib:<model>``, ``faceapi:expression`` or ``clip:<arch>``); see the module docstring."""
    source, name = parse_source(spec)
    return IMPORTERS[source](name, file, force=force)


IMPORTERS = {"emotiefflib": import_emotiefflib, "faceapi": import_faceapi, "clip": import_clip}
