"""Explain a model carrying an AURA head (method ``aura-head``) with the AURA explainer.

``affectlab explain --model default --data manifest:faces.csv --out DIR`` encodes the
images with the model's own encoder (the features its head was trained on) into
``DIR/features.zarr`` and writes the AURA files of
:func:`affectlab.interpret.aura_explain.explain_aura` for the head: archetype tables,
annotation-error diagnosis, plots and the HTML page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from affectlab.interpret import register_explainer


@register_explainer("aura-head")
def explain_aura_head(method, info: Mapping[str, Any], data, out: Path, *, batch_size: int = 512, progress: bool = True, **options) -> dict:
    """Run the AURA explainer on the head of ``method`` (an :class:`~affectlab.methods.aura_head.AuraHeadModel`).

    Takes the arguments of :func:`~affectlab.interpret.aura_explain.explain_aura` (the
    extra ``options`` go to it) and returns what it returns; ``data`` is an image dataset
    spec, encoded with the model's own encoder into ``out/features.zarr``, or
    ``features:FEAT.zarr`` already extracted with it (``--backbone run:MODEL``).
    """
    from affectlab.features.backbones import Preprocessing
    from affectlab.features.cache import extract_features
    from affectlab.features.dataset import FeatureDataset, is_feature_spec, open_features
    from affectlab.runtime.run_backbone import RunBackbone
    from affectlab.interpret.aura_explain import explain_aura
    from affectlab.methods.aura_head import image_encoder

    out = Path(out)
    if isinstance(data, FeatureDataset):
        dataset = data
    elif isinstance(data, (str, os.PathLike)) and is_feature_spec(data):
        dataset = open_features(data)
    else:
        encoder = image_encoder(method.base)
        pre = info.get("preprocessing")
        source = str(info.get("path", "model"))
        # the model's own encoder, frozen, with the preprocessing it was trained with
        backbone = RunBackbone(
            encoder,
            name=f"run:{Path(source).name}",
            preprocessing=Preprocessing.from_dict(pre) if pre else encoder.preprocessing,
            source=source,
        )
        store = extract_features(data, backbone, out / "features.zarr", batch_size=min(batch_size, 128), progress=progress)
        dataset = FeatureDataset(store)
    return explain_aura(method.head, info, dataset, out, batch_size=batch_size, progress=progress, **options)
