"""Explanations of trained models: archetype tables, annotation-error diagnosis, plots, HTML.

``affectlab explain --model RUN --data SPEC --out DIR`` dispatches on the method the
model was trained with, through a small registry (a method's explainer lives in its own
module, e.g. :mod:`affectlab.interpret.aura_explain`)::

    @register_explainer("aura")
    def explain_aura(model, info, data, out, **options) -> ExplainResult: ...

An explainer receives the loaded model (:func:`affectlab.runtime.hub.load_model`),
its info dict, the data spec (or dataset) and the output folder, and returns a dict of
written files and headline numbers.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

from affectlab.errors import ConfigError, ModelError

Explainer = Callable[..., dict]

_EXPLAINERS: dict[str, Explainer] = {}

#: Modules that register explainers when imported (missing ones are skipped).
EXPLAINER_MODULES: dict[str, str] = {
    "aura": "affectlab.interpret.aura_explain",
    "aura-head": "affectlab.interpret.aura_head_explain",
    "vavae": "affectlab.interpret.vavae_explain",
    "smm": "affectlab.interpret.smm_views",
}


def register_explainer(method: str, fn: Explainer | None = None):
    """Register ``fn`` as the explainer of models trained with ``method``.

    Usable as ``register_explainer("aura", fn)`` or as a decorator
    ``@register_explainer("aura")``.
    """
    if not isinstance(method, str) or not method:
        raise ValueError("register_explainer needs a method name")

    def deco(f: Explainer) -> Explainer:
        if method in _EXPLAINERS and _EXPLAINERS[method] is not f:
            raise ValueError(f"an explainer for {method!r} is already registered: {_EXPLAINERS[method]!r}")
        _EXPLAINERS[method] = f
        return f

    return deco(fn) if fn is not None else deco


def _load(method: str) -> None:
    mod = EXPLAINER_MODULES.get(method)
    if mod and method not in _EXPLAINERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def available_explainers() -> list[str]:
    """Methods whose models ``affectlab explain`` can explain."""
    for m in EXPLAINER_MODULES:
        _load(m)
    return sorted(_EXPLAINERS)


def get_explainer(method: str) -> Explainer:
    _load(method)
    if method not in _EXPLAINERS:
        raise ModelError(
            f"no explainer for models of method {method!r}; explainable methods: "
            f"{', '.join(available_explainers()) or 'none'}"
        )
    return _EXPLAINERS[method]


def explain(model: str | os.PathLike, data, out: str | os.PathLike, **options: Any) -> dict:
    """Explain a trained model on a dataset, writing files to ``out``.

    Parameters
    ----------
    model : path
        Run directory or model file.
    data : str or dataset
        Dataset spec (a feature store ``features:FEAT.zarr`` or an image dataset).
    out : path
        Output folder (created).
    **options
        Passed to the method's explainer.

    Returns
    -------
    dict
        ``files`` (name -> path) and headline numbers, as the explainer reports them.
    """
    from affectlab.runtime.hub import load_model

    if out is None:
        raise ConfigError("explain needs an output folder (--out DIR)")
    method, info = load_model(model)
    fn = get_explainer(info["method"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return fn(method, info, data, out, **options)
