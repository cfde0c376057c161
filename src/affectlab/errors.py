"""Exceptions every affectlab entry point raises for bad input.

The CLI prints an :class:`AffectlabError` as one line (no traceback unless ``--debug``),
so its message must say what was wrong and what to do.
"""

from __future__ import annotations

import math


class AffectlabError(Exception):
    """Base class for user-facing errors: the message is shown to the user as is."""


class LabelError(AffectlabError, ValueError):
    """A label value is unknown or out of range for its dataset."""

    def __init__(self, message: str, *, dataset: str | None = None, value=None):
        super().__init__(message)
        self.dataset = dataset
        self.value = value


class DatasetError(AffectlabError, ValueError):
    """A dataset on disk does not match the layout its reader expects."""


class ConfigError(AffectlabError, ValueError):
    """A configuration key, preset or option value is invalid."""


class ModelError(AffectlabError, ValueError):
    """A model, run directory or checkpoint cannot be loaded or used as asked."""


class UnsafeModelError(ModelError):
    """A model or weights file would need unpickling (which can run code): refused, nothing run."""


def check_nonnegative(value, what: str) -> float:
    """``value`` as a finite float >= 0, or a :class:`ConfigError` naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")
    return number



def check_device(device, what: str = "--device") -> str:
    """``device`` if this machine has it; a CUDA device without a usable GPU is a :class:`ConfigError`.

    torch's own error ("Found no NVIDIA driver ...") names neither the option nor the way
    out, so the request is checked before any model is loaded.
    """
    text = str(device).strip().lower()
    if text in ("gpu", "auto") and what == "--accelerator":
        text = "cuda" if text == "gpu" else text
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {device}: no CUDA GPU is usable on this machine (torch.cuda.is_available() "
                              f"is False); use {what} cpu")
        if ":" in text:
            index = text.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ConfigError(f"{what} {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                  f"(cuda:0 ...)")
    return str(device)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside affectlab.

    The public functions are reached through wrappers (``affectlab.analyze`` ->
    ``affectlab.analyze.api.analyze``), so a fixed ``stacklevel=2`` names affectlab's own
    ``__init__.py`` instead of the user's line.
    """
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # the function calling us is level 1 of warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
