"""The default analysis stack: which pretrained pieces analyze uses when none is named.

One place decides it (the CLI, the Python API and the report all ask here):

* **expression model** — :data:`DEFAULT_MODELS` in order, the first whose assets are present:
  face-api.js's FaceExpressionNet (``faceapi:expression``, 7 classes, no contempt; asset
  ``faceapi-expression``), else the packaged ``affectlab-base`` (always present);
* **landmarks, head pose, AUs** — MediaPipe's FaceLandmarker (asset ``face-landmarker``)
  when present: ``pose_*`` and the landmarker's ``AU<k>`` columns. Without it analyze says
  once how to get it; asking for ``landmarks`` / ``blendshapes`` without it is an error
  naming the asset.

The detector's default (YuNet when its asset is present, else Haar) is
:mod:`affectlab.perception.detectors`'.
"""

from __future__ import annotations

#: (model name, assets it needs) in order of preference for analyze without ``--model``.
DEFAULT_MODELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("faceapi:expression", ("faceapi-expression", "faceapi-expression-manifest")),
    ("default", ()),
)
LANDMARKER_ASSET = "face-landmarker"


def _present(name: str) -> bool:
    from affectlab.runtime.assets import ASSETS, asset_status

    return name in ASSETS and asset_status(name) == "present"


def _has_code(name: str) -> bool:
    import importlib.util

    source = name.split(":")[0] if ":" in name else None
    return source is None or importlib.util.find_spec(f"affectlab.methods.{source}") is not None


def default_model() -> str:
    """Name of the expression model analyze uses without ``--model`` (see the module docstring)."""
    for name, assets in DEFAULT_MODELS:
        if all(_present(a) for a in assets) and _has_code(name):
            return name
    return "default"


def resolve_default_model() -> str:
    """:func:`default_model`, made loadable: an asset-backed model is imported once (no download)."""
    name = default_model()
    if ":" in name:
        from affectlab.runtime.importers import import_model

        import_model(name)  # converts the present asset into the models folder, once
    return name


def landmarker_present() -> bool:
    """Whether the ``face-landmarker`` asset is present and verified (no download)."""
    return _present(LANDMARKER_ASSET)


def missing_assets_notice(label_space) -> str:
    """One line for a run without YuNet and without the landmarker (a first offline run).

    Says what the run uses instead, what each asset would add and the commands that get
    them -- online (``models fetch``) or from local copies (``models add``, the wording of
    :class:`~affectlab.runtime.assets.AssetMissingError`).
    """
    gives = []
    if getattr(label_space, "expressions", ()):
        gives.append("expressions")
    if getattr(label_space, "aus", ()):
        gives.append("AUs")
    own = f" (the model's own {' and '.join(gives)} are given)" if gives else ""
    return (
        "not installed, and would improve this run: yunet (face detector; OpenCV's Haar cascades are used "
        "instead, which miss rotated, small and dark faces) and face-landmarker (head pose, landmarks, the "
        f"landmarker's AUs){own}; get them with `affectlab models fetch yunet face-landmarker`, or from local "
        "copies with `affectlab models add face_detection_yunet_2023mar.onnx face_landmarker.task`"
    )
