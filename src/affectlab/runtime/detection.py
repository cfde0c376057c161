"""Which face detector a run uses: YuNet when its asset is present, else Haar (said once).

:func:`resolve_detector` turns a detector request into a detector callable:

``"auto"`` (the default everywhere)
    YuNet (:class:`~affectlab.perception.detectors.YuNetDetector`) when the asset
    ``yunet`` is in the cache (:mod:`affectlab.runtime.assets`; nothing is downloaded for
    a default), otherwise OpenCV's Haar cascades, with a one-line notice -- once per
    process -- that says so and how to get YuNet.
``"yunet"``
    YuNet, fetching the asset on first use; offline without it, an
    :class:`~affectlab.runtime.assets.AssetMissingError` naming the asset and the command
    that registers a local copy. ``detector_options["model"]`` points at another file.
any other registry name or a callable
    :func:`~affectlab.perception.detectors.create_detector`.
"""

from __future__ import annotations

from typing import Any, Mapping

from affectlab.perception.detectors import Detector, create_detector

#: The detector request meaning "the best one present".
AUTO = "auto"

HAAR_FALLBACK_NOTICE = (
    "face detector: YuNet is not installed (asset 'yunet'), falling back to OpenCV's Haar cascades, "
    "which miss rotated, small and dark faces; get YuNet with `affectlab models fetch yunet` "
    "(or `affectlab models add face_detection_yunet_2023mar.onnx` for a local copy)"
)

_noticed = False


def _take_notice() -> str | None:
    """The Haar fallback notice the first time it is due in this process, then ``None``."""
    global _noticed
    if _noticed:
        return None
    _noticed = True
    return HAAR_FALLBACK_NOTICE


def reset_notices() -> None:
    """Let the next fallback say its notice again (tests, long-lived sessions)."""
    global _noticed
    _noticed = False


def yunet_present() -> bool:
    """Whether the YuNet asset is in the cache with the right sha256."""
    from affectlab.runtime.assets import asset_status

    return asset_status("yunet") == "present"


def resolve_detector(
    name: str | Detector = AUTO, options: Mapping[str, Any] | None = None
) -> tuple[Detector, str, str | None]:
    """The detector for a request, its resolved name and a notice to show (or ``None``).

    Parameters
    ----------
    name : str or callable
        ``"auto"``, ``"yunet"``, ``"haar"``, ``"none"``, a registered name, or a detector callable.
    options : mapping, optional
        Keyword options of the detector factory. With ``"auto"`` they go to whichever
        detector is chosen, so give only options both take (or none).

    Returns
    -------
    (detector, name, notice)
        ``name`` is what ran (``"yunet"`` or ``"haar"`` for ``"auto"``; a callable's
        ``__name__``); ``notice`` is the one-line Haar fallback message the first time
        ``"auto"`` falls back in this process.
    """
    options = dict(options or {})
    if callable(name):
        return name, getattr(name, "__name__", type(name).__name__), None
    if not isinstance(name, str):
        from affectlab.errors import ConfigError

        raise ConfigError(f"detector must be a name or a callable, got {name!r}")
    key = name.strip().lower()
    if key == AUTO:
        if "model" in options or yunet_present():
            return _yunet(options), "yunet", None
        return create_detector("haar", **options), "haar", _take_notice()
    if key == "yunet":
        return _yunet(options), "yunet", None
    return create_detector(name, **options), name, None


def _yunet(options: dict) -> Detector:
    if "model" not in options:
        from affectlab.runtime.assets import asset_path

        options = {**options, "model": asset_path("yunet")}
    return create_detector("yunet", **options)
