"""Pretrained face models: detectors, alignment, landmarks, head pose, blendshapes, AUs."""
