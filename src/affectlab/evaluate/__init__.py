"""Evaluation of a trained model over a dataset: metrics, prediction tables, smoothing search.

Modules: :mod:`~affectlab.evaluate.engine` (:func:`~affectlab.evaluate.engine.evaluate`,
:func:`~affectlab.evaluate.engine.run_evaluation`), :mod:`~affectlab.evaluate.smoothing`
(temporal smoothing of predictions before the metrics).
"""
