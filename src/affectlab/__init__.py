"""affectlab: facial affect analysis (expressions, valence/arousal, action units).

The public API is imported lazily so ``import affectlab`` and ``affectlab --help`` stay
fast; heavy modules (torch, Lightning) load when first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_dataset": "affectlab.runtime.data",
    "Predictor": "affectlab.runtime.predictor",
    "analyze": "affectlab.analyze.api",
    "LabelSpace": "affectlab.data.schema",
    "AffectlabError": "affectlab.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'affectlab' has no attribute {name!r}")
