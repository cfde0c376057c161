"""One framing step for dataset photographs: detect, then crop as the model's framing says.

``evaluate``, ``train`` and ``extract`` take ``detect_faces``: when the dataset holds
uncropped photographs (not face crops), :func:`set_framing` gives its datasets a
:class:`~affectlab.perception.framing.FaceFramer` built from the same detector
``analyze`` resolves (``"auto"``: YuNet when present, else Haar) and the model's
``preprocessing["framing"]``, at the model's input size. Every image is then cropped as
``analyze`` crops it, so the metrics ``evaluate`` reports are those ``analyze`` delivers
on the same photographs. Faces are detected once per image (cached by path) when the
step is set up, before any DataLoader worker starts.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Iterable, Mapping

from affectlab.errors import user_stacklevel
from affectlab.perception.framing import FaceFramer

log = logging.getLogger("affectlab.runtime")


def _leaves(dataset) -> Iterable:
    """The datasets that read images, inside concatenations and subsets."""
    inner = getattr(dataset, "datasets", None)
    if inner is not None:
        for d in inner:
            yield from _leaves(d)
        return
    if hasattr(dataset, "dataset") and not hasattr(dataset, "set_framer"):
        yield from _leaves(dataset.dataset)
        return
    yield dataset


def set_framing(
    datasets,
    preprocessing: Mapping[str, Any] | Any,
    *,
    detector: Any = "auto",
    detector_options: Mapping[str, Any] | None = None,
    framer: FaceFramer | None = None,
    progress: bool = False,
) -> FaceFramer:
    """Frame the faces of ``datasets`` (one or a list) as analyze does; returns the framer.

    Parameters
    ----------
    datasets : dataset or list of datasets
        Image datasets (:class:`~affectlab.data.labeled.AffectDataset`, also inside a
        concatenation); feature datasets are left alone.
    preprocessing : Preprocessing or mapping
        The model's: ``input_size`` and ``framing``.
    detector, detector_options
        As for ``affectlab analyze`` (:func:`affectlab.runtime.detection.resolve_detector`).
    framer : FaceFramer, optional
        Reuse one (and its cache), e.g. for the training and the validation set.
    progress : bool
        Show a progress bar while faces are detected.
    """
    from affectlab.runtime.detection import resolve_detector

    get = preprocessing.get if isinstance(preprocessing, Mapping) else lambda k, d=None: getattr(preprocessing, k, d)
    if framer is None:
        det, name, note = resolve_detector(detector, detector_options)
        if note:
            warnings.warn(note, UserWarning, stacklevel=user_stacklevel())
        framer = FaceFramer(det, get("framing"), get("input_size"))
        level = getattr(det, "level_keypoints", None)
        if framer.framing.kind == "aligned" and callable(level):
            level()  # as analyze does for an aligned model: keypoints measured upright
        framer.detector_name = name
    leaves = [d for ds in (datasets if isinstance(datasets, (list, tuple)) else [datasets]) for d in _leaves(ds)
              if callable(getattr(d, "set_framer", None))]
    for d in leaves:
        d.set_framer(framer)
    total = sum(len(d) for d in leaves)
    bar = None
    if progress and total:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("finding faces", total=total)
    try:
        for d in leaves:
            for i in range(len(d)):
                d.read_rgb(i)  # detects and caches (a cached image costs only its read and crop)
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    if framer.missed:
        log.warning("no face found in %d of %d images: the whole image is used for those", len(framer.missed), total)
    return framer
