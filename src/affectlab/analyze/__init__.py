"""Media -> faces -> model -> per-frame affect table, plots, annotated video, report.

``affectlab.analyze(inputs, model=...)`` is the entry point (:func:`affectlab.analyze.api.analyze`);
it is a function of the top-level package, which imports this package first so the name
stays the function (import this package's modules by their full names).

Modules: :mod:`~affectlab.analyze.inputs` (files, folders, globs, frame streaming),
:mod:`~affectlab.perception.detectors` (registry, Haar, ``none``),
:mod:`~affectlab.analyze.tracking` (IoU tracker), :mod:`~affectlab.analyze.pipeline`
(the loop), :mod:`~affectlab.analyze.table` (:class:`AffectTable`),
:mod:`~affectlab.analyze.writers`, :mod:`~affectlab.analyze.sinks`,
:mod:`~affectlab.analyze.overlay` (annotated video), :mod:`~affectlab.analyze.report` (HTML).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "AffectTable": "affectlab.analyze.table",
    "register_detector": "affectlab.perception.detectors",
    "create_detector": "affectlab.perception.detectors",
    "available_detectors": "affectlab.perception.detectors",
    "load_predictor": "affectlab.analyze.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'affectlab.analyze' has no attribute {name!r}")
