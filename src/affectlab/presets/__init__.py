"""YAML training presets shipped with affectlab (``affectlab train --preset NAME``)."""
