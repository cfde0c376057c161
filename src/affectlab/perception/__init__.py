"""Pretrained face models: detectors, alignment, landmarks, head pose, blendshapes, AUs.

A layer below :mod:`affectlab.runtime` and above ``methods`` / ``features`` / ``data``:
it imports only :mod:`affectlab.data`, :mod:`affectlab.errors` and third-party libraries.
Model files come in as paths; finding and downloading them is the runtime's asset hub.

Modules: :mod:`~affectlab.perception.detectors` (the detector contract, registry, YuNet,
Haar, ``none``), :mod:`~affectlab.perception.align` (box and aligned crops, the framing
spec a model declares), :mod:`~affectlab.perception.framing` (detect-then-frame for
dataset images, with a per-path cache), :mod:`~affectlab.perception.landmarks`,
:mod:`~affectlab.perception.pose`, :mod:`~affectlab.perception.au`.
"""
