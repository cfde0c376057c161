"""YAML training presets shipped with affectlab (``affectlab train --preset NAME``).

Each method has a **recommended** preset, the setting ``affectlab train --method M``
uses when no ``--preset`` is given: one that trains on the machine and data at hand (a
CPU, data from ``affectlab synth`` or of that size) in minutes. The **paper** presets
reproduce each paper's own setting (pretrained backbones at full resolution, the
papers' optimisers) and are one flag away (``--preset smm``). ``--preset none`` keeps
the bare :class:`affectlab.train.config.TrainConfig` defaults.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: ``--method`` -> the preset used when no ``--preset`` is given.
RECOMMENDED: dict[str, str] = {
    "baseline": "baseline",
    "smm": "smm-synth",
    "cage": "cage-synth",
    "aura": "aura",
    "vavae": "vavae",
}

#: ``--method`` -> the presets that follow its paper's setting.
PAPER: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "smm": ("smm",),
    "cage": ("cage-discrete", "cage-combined", "cage-va", "cage-emotic"),
    "aura": ("aura",),
    "vavae": ("vavae", "vavae-vanilla", "vavae-discrete"),
}

#: ``--preset`` value that means "no preset at all".
NO_PRESET = "none"


def recommended_preset(method: str | None) -> str | None:
    """The preset ``affectlab train --method METHOD`` uses without ``--preset``.

    ``None`` for a method without one (its bare defaults apply). ``method=None`` is the
    default method, ``baseline``.
    """
    return RECOMMENDED.get(method or "baseline")


def data_adjustments(preset: Mapping[str, Any], train_specs: Sequence[str] | str | None) -> dict[str, Any]:
    """Settings a recommended preset changes for the training data given.

    A preset that composes batches from several uni-task sets (``sampler: multitask``)
    falls back to plain shuffling when a single ``--train`` set is given, so one fully
    (or partly) labelled set trains with the same command.
    """
    n = 0 if train_specs is None else (1 if isinstance(train_specs, str) else len(train_specs))
    out: dict[str, Any] = {}
    if preset.get("sampler") == "multitask" and n <= 1:
        out["sampler"] = "shuffle"
    return out
