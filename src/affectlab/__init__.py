"""affectlab: facial affect analysis (expressions, valence/arousal, action units).

The public API::

    import affectlab
    table = affectlab.analyze(["session.mp4"])                 # faces -> AffectTable
    ds = affectlab.load_dataset("rafdb:/data/RAF-DB:test")      # or "features:FEAT.zarr"
    run = affectlab.train(method="baseline", train_specs=["manifest:synth/labels.csv"], out="runs/base")
    res = affectlab.evaluate("runs/base", "manifest:synth_test/labels.csv")
    pred = affectlab.Predictor.load("default")

Implementations load on first use, so ``import affectlab`` and ``affectlab --help`` stay
fast (torch, Lightning are imported by the call that needs them). Every error these
functions raise for bad input is an :class:`AffectlabError` (a subclass saying what kind),
with the one-line message the CLI prints.

``analyze``, ``train`` and ``evaluate`` share their names with the subpackages that
implement them (:mod:`affectlab.analyze`, :mod:`affectlab.train`, :mod:`affectlab.evaluate`).
The subpackages are imported here first (their ``__init__`` modules import nothing), so the
functions defined after them are what ``affectlab.analyze`` & co. stay bound to; the
subpackages' modules are imported by their full names (``from affectlab.analyze.table
import AffectTable``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# the light subpackages that share a name with a function below: imported before the
# functions are defined, so that importing their modules later cannot rebind the names
for _pkg in ("analyze", "evaluate", "train"):
    importlib.import_module(f"affectlab.{_pkg}")
del _pkg

#: public name -> module that defines it (classes and constants, imported on first access)
_LAZY = {
    "Predictor": "affectlab.runtime.predictor",
    "LabelSpace": "affectlab.data.schema",
    "AffectTable": "affectlab.analyze.table",
    "TrainResult": "affectlab.train.engine",
    "EvaluationResult": "affectlab.evaluate.engine",
    "AffectlabError": "affectlab.errors",
    "ConfigError": "affectlab.errors",
    "DatasetError": "affectlab.errors",
    "LabelError": "affectlab.errors",
    "ModelError": "affectlab.errors",
    "UnsafeModelError": "affectlab.errors",
}

if TYPE_CHECKING:  # what a type checker sees: the implementations themselves
    from affectlab.analyze.api import analyze
    from affectlab.analyze.table import AffectTable
    from affectlab.data.schema import LabelSpace
    from affectlab.errors import (
        AffectlabError,
        ConfigError,
        DatasetError,
        LabelError,
        ModelError,
        UnsafeModelError,
    )
    from affectlab.evaluate.engine import EvaluationResult, evaluate
    from affectlab.features.cache import extract_features
    from affectlab.interpret import explain
    from affectlab.runtime.data import load_dataset
    from affectlab.runtime.hub import list_models, load_model
    from affectlab.runtime.predictor import Predictor
    from affectlab.train.engine import TrainResult
    from affectlab.train.engine import run_training as train
else:

    def analyze(inputs, model=None, **options):
        """Faces in images, folders, globs and videos -> an :class:`AffectTable`.

        See :func:`affectlab.analyze.api.analyze` for the options.
        """
        from affectlab.analyze.api import analyze as run

        return run(inputs, model, **options)

    def load_dataset(spec, **options):
        """A dataset from ``FORMAT:PATH[:SPLIT]``, a manifest path or ``features:FEAT.zarr``.

        See :func:`affectlab.runtime.data.load_dataset`.
        """
        from affectlab.runtime.data import load_dataset as run

        return run(spec, **options)

    def train(**options):
        """Train a method and write a run directory -> ``TrainResult``.

        What ``affectlab train`` does; see :func:`affectlab.train.engine.run_training`
        (``method``, ``train_specs``, ``val_specs``, ``out``, ``preset``, ``resume``, ``sets``,
        and any config key).
        """
        from affectlab.train.engine import run_training

        return run_training(**options)

    def evaluate(model, data, **options):
        """A trained model over a dataset -> ``EvaluationResult`` (metrics, predictions).

        See :func:`affectlab.evaluate.engine.evaluate`.
        """
        from affectlab.evaluate.engine import evaluate as run

        return run(model, data, **options)

    def explain(model, data, out, **options):
        """Explain a trained model on data, writing tables, plots and HTML to ``out``.

        See :func:`affectlab.interpret.explain`.
        """
        from affectlab.interpret import explain as run

        return run(model, data, out, **options)

    def extract_features(data, backbone, out, **options):
        """Frozen-backbone features of a dataset into a feature store (``FEAT.zarr``).

        See :func:`affectlab.features.cache.extract_features`.
        """
        from affectlab.features.cache import extract_features as run

        return run(data, backbone, out, **options)

    def load_model(model):
        """``(method, info)`` of a packaged / imported model name, run directory or model file.

        See :func:`affectlab.runtime.hub.load_model`.
        """
        from affectlab.runtime.hub import load_model as run

        return run(model)

    def list_models():
        """Packaged and imported models (name, kind, path, description)."""
        from affectlab.runtime.hub import list_models as run

        return run()

    def __getattr__(name: str):
        if name in _LAZY:
            return getattr(importlib.import_module(_LAZY[name]), name)
        raise AttributeError(f"module 'affectlab' has no attribute {name!r}")


__all__ = [
    "__version__",
    "analyze",
    "load_dataset",
    "train",
    "evaluate",
    "explain",
    "extract_features",
    "load_model",
    "list_models",
    *_LAZY,
]
