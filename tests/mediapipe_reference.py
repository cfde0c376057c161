"""Reference landmarks, blendshapes and pose from the ``mediapipe`` tasks API.

Run by ``tests/test_mediapipe_reference.py`` with the interpreter of a separate virtual
environment holding ``mediapipe`` (``AFFECTLAB_MEDIAPIPE_PYTHON``): the package depends on
opencv-contrib-python, which must never enter affectlab's environment. It imports nothing of
affectlab. Usage::

    python mediapipe_reference.py BUNDLE OUT.npz IMAGE...

writes ``landmarks`` [N, 478, 3] (``x * width, y * height, z * width``), ``blendshapes``
[N, 52], ``matrices`` [N, 4, 4] (facial transformation) and ``found`` [N] (NaN where not).
"""

import sys

import numpy as np


def main() -> None:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    bundle, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=bundle), output_face_blendshapes=True,
        output_facial_transformation_matrixes=True, num_faces=1,
    )
    landmarker = vision.FaceLandmarker.create_from_options(options)
    lms, bss, mats, found = [], [], [], []
    for p in paths:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        h, w = rgb.shape[:2]
        r = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        if not r.face_landmarks:
            lms.append(np.full((478, 3), np.nan))
            bss.append(np.full(52, np.nan))
            mats.append(np.full((4, 4), np.nan))
            found.append(False)
            continue
        lms.append(np.array([[q.x * w, q.y * h, q.z * w] for q in r.face_landmarks[0]]))
        bss.append(np.array([c.score for c in r.face_blendshapes[0]]))
        mats.append(np.array(r.facial_transformation_matrixes[0]))
        found.append(True)
    landmarker.close()
    np.savez(out, landmarks=np.array(lms), blendshapes=np.array(bss), matrices=np.array(mats), found=np.array(found))


if __name__ == "__main__":
    main()
