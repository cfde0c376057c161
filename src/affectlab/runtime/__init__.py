"""Using trained and pretrained models: the model hub, the asset hub, preprocessing, the data opener.

Modules (import them directly; this package imports nothing so that ``import affectlab``
and ``import affectlab.runtime.assets`` stay cheap): :mod:`~affectlab.runtime.hub`
(resolve / load / list models by name or path), :mod:`~affectlab.runtime.assets`
(downloadable model files), :mod:`~affectlab.runtime.predictor`
(:class:`~affectlab.runtime.predictor.Predictor`), :mod:`~affectlab.runtime.data` (one
opener for dataset specs and ``features:`` stores), :mod:`~affectlab.runtime.importers`
(``affectlab models import``), :mod:`~affectlab.runtime.run_backbone` (the ``run:RUN`` backbone).
"""
