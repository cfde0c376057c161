"""The annotated video's drawing: readable labels, sizes that follow the frame, the VA
widget beside the faces (synthetic faces only)."""

import numpy as np
import pandas as pd
import pytest

from affectlab.analyze.overlay import Annotator
from affectlab.data.schema import AU_SETS, EXPRESSIONS

AUS = list(AU_SETS["synth"])


def _rows(boxes, valence=0.4, arousal=-0.2):
    rows = []
    for face, (x, y, w, h) in enumerate(boxes):
        probs = np.full(len(EXPRESSIONS), 0.02)
        probs[1] = 1 - probs[1:].sum() + probs[1]
        row = {"input": "clip.mp4", "frame": 0, "time_s": 0.0, "face": face, "x": x, "y": y, "w": w, "h": h,
               "score": 1.0, "expression": "happiness", "valence": valence, "arousal": arousal}
        row.update({f"expr_{n}": p for n, p in zip(EXPRESSIONS, probs)})
        row.update({a: 0.1 + 0.05 * j for j, a in enumerate(AUS)})
        rows.append(row)
    return pd.DataFrame(rows)


def _synth_frame(size):
    from affectlab.data.synth import sample_batch

    images, _ = sample_batch(1, seed=4, size=size)
    return np.ascontiguousarray(images[0])


def _luminance(rgb):
    c = rgb.astype(float) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def _contrast(region):
    lum = _luminance(region.reshape(-1, 3))
    dark, light = np.percentile(lum, 10), np.percentile(lum, 99.5)
    return (light + 0.05) / (dark + 0.05)


def _inside(rect, h, w):
    return 0 <= rect[0] < rect[2] <= w and 0 <= rect[1] < rect[3] <= h


@pytest.mark.parametrize("size,box", [(96, (20, 24, 56, 56)), (720, (200, 150, 320, 320))])
def test_labels_have_contrast_and_sizes_follow_the_frame(size, box):
    frame = _synth_frame(size)
    ann = Annotator(EXPRESSIONS, AUS, va=True)
    out = ann.draw(frame, _rows([box]))
    assert min(out.shape[:2]) >= 360  # a small video is enlarged before drawing: labels one can read
    assert len(ann.regions["labels"]) == 2  # expression line, top AUs line
    for x0, y0, x1, y1 in ann.regions["labels"]:
        region = out[y0:y1, x0:x1]
        assert y1 - y0 >= 14  # text at least ~10 px high
        assert _contrast(region) >= 7  # WCAG AAA for text
    # the box line thickness grows with the frame
    lay = ann._layout
    assert lay["box"] >= 2 and (size < 720 or lay["box"] >= 3)


@pytest.mark.parametrize("size,box", [(96, (4, 4, 88, 88)), (128, (10, 60, 60, 60)), (640, (440, 440, 180, 180))])
def test_the_va_widget_does_not_cover_a_face(size, box):
    frame = _synth_frame(size)
    ann = Annotator(EXPRESSIONS, AUS, va=True)
    rows = _rows([box])
    h, w = ann.prepare(*frame.shape[:2], rows)
    out = ann.draw(frame, rows)
    assert out.shape[:2] == (h, w)
    widget = ann.regions["widget"]
    assert widget is not None and _inside(widget, *out.shape[:2])
    for face in ann.regions["faces"]:
        assert not (widget[0] < face[2] and face[0] < widget[2] and widget[1] < face[3] and face[1] < widget[3])
    # the widget is drawn: dark disc with a light ring
    x0, y0, x1, y1 = widget
    assert _contrast(out[y0:y1, x0:x1]) >= 4


def test_a_face_filling_the_frame_gets_a_side_panel_and_the_trail_moves():
    frame = _synth_frame(64)
    ann = Annotator(EXPRESSIONS, AUS, va=True)
    rows = _rows([(0, 0, 64, 64)])
    h, w = ann.prepare(64, 64, rows)
    assert w > h  # the panel is beside the frame
    first = ann.draw(frame, rows)
    second = ann.draw(frame, _rows([(0, 0, 64, 64)], valence=-0.6, arousal=0.7))
    x0, y0, x1, y1 = ann.regions["widget"]
    assert x0 >= h  # in the panel, right of the enlarged frame
    assert np.abs(first[y0:y1, x0:x1].astype(int) - second[y0:y1, x0:x1].astype(int)).sum() > 0


def test_rows_with_the_478_landmark_columns_are_drawn(tmp_path):
    # more than 255 columns: pandas' itertuples gives plain tuples, so drawing must not rely on it
    from affectlab.analyze.report import images_report
    from affectlab.analyze.table import AffectTable

    rows = _rows([(20, 24, 56, 56)])
    extra = pd.DataFrame({f"lm{i}_{c}": [float(i)] for i in range(478) for c in "xyz"})
    rows = pd.concat([rows, extra], axis=1)
    out = Annotator(EXPRESSIONS, AUS, va=True).draw(_synth_frame(96), rows)
    assert out.shape[0] >= 360
    page = images_report(AffectTable.from_frame(rows, EXPRESSIONS, AUS), tmp_path / "images.html")
    assert "class='probs'" in page.read_text()
