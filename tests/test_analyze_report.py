"""The HTML report: what it says, and how it renders in a real headless browser.

Every input here is a synthetic face (``affectlab synth``), a flat grey picture or a text
file: the screenshots show no real person.
"""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import affectlab
from affectlab.perception.detectors import register_detector
from analyze_media import synth_clip, untrained_predictor, write_video

LONG = "a_folder_name_long_enough_to_need_wrapping_" * 3


@register_detector("test-textured")
def _textured():
    """The whole frame is a face unless the frame is flat (a grey picture has none)."""

    def detect(image):
        h, w = image.shape[:2]
        return np.array([[4, 4, w - 8, h - 8, 0.9]]) if image.std() > 5 else np.zeros((0, 5))

    return detect


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from affectlab.data.synth import sample_batch

    root = tmp_path_factory.mktemp("report")
    inputs = []
    for k, day in enumerate(("day1", "day2")):
        folder = root / LONG / day
        folder.mkdir(parents=True)
        inputs.append(write_video(folder / "clip.mp4", synth_clip(10, size=96, seed=k)[0], fps=10))
    faces, _ = sample_batch(3, seed=5, size=96)
    for k, face in enumerate(faces):
        Image.fromarray(face).save(root / f"photo{k}.png")
        inputs.append(root / f"photo{k}.png")
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(root / "grey.png")
    (root / "broken.jpg").write_text("not an image")
    inputs += [root / "grey.png", root / "broken.jpg"]
    with pytest.warns(UserWarning, match="1 of 7 inputs failed"):
        table = affectlab.analyze(inputs, untrained_predictor(), detector="test-textured", out=root / "t.csv",
                                  video_out=root / "ann.mp4", report=root / "rep", progress=False)
    return root / "rep", inputs, table


def test_index_has_one_line_per_input_with_distinct_links_and_honest_results(report):
    rep, inputs, table = report
    index = (rep / "index.html").read_text()
    rows = re.findall(r"<tr>.*?</tr>", index, flags=re.S)[1:]
    assert len(rows) == len(inputs)
    links = re.findall(r"<a href='([^']+\.html[^']*)'", index)
    assert len(links) == 7 and len(set(links)) == 7  # every input: its own link (a failed image: its card)
    assert all((rep / link.split("#")[0]).is_file() for link in links)
    assert not [p for p in rep.iterdir() if p.is_file() and not p.name.endswith(".html")]  # never clip.html_2
    by_input = {str(p): r for p, r in zip(inputs, rows)}
    assert "no face found" in by_input[str(inputs[5])] and ">ok<" not in index
    assert "failed: not a readable image" in by_input[str(inputs[6])]
    assert "1 face" in by_input[str(inputs[2])] and "face in 10 of 10 frames" in by_input[str(inputs[0])]
    assert "day1/clip.mp4" in by_input[str(inputs[0])] and "day2/clip.mp4" in by_input[str(inputs[1])]
    # the model, the settings and the annotated videos are named
    assert "baseline" in index and "face detector" in index and "test-textured" in index
    for video in table.model_info["video_out"].values():
        assert f">{video.rsplit('/', 1)[-1]}<" in index
    # thumbnails of the inputs themselves, beside the report
    thumbs = re.findall(r"src='(thumbs/[^']+\.jpg)'", index)
    assert len(thumbs) == 6
    with Image.open(rep / thumbs[2]) as im:  # photo0, boxes drawn on it
        assert max(im.size) <= 240 and im.format == "JPEG"
        small = np.asarray(im.convert("RGB").resize((96, 96))).astype(float)
    assert np.abs(small - np.asarray(Image.open(inputs[2]).convert("RGB")).astype(float)).mean() < 25


def test_image_and_video_pages_show_probabilities_and_plots(report):
    rep, inputs, table = report
    images = (rep / "images.html").read_text()
    assert images.count("class='probs'") == 3  # one set of expression bars per face
    for name in ("photo0", "photo1", "photo2", "grey", "broken"):
        assert f"id='{name}'" in images
    p0 = table[table["input"] == str(inputs[2])].iloc[0]
    assert f"{p0['expr_happiness']:.2f}" in images and f"valence {p0['valence']:+.2f}" in images
    page = (rep / "day1_clip.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # expressions + VA over time, circumplex, AU heatmap
    assert "mean_happiness" in page and "<th>face 0</th>" in page  # the summary, transposed
    assert "ann_day1_clip.mp4" in page and "baseline" in page


# -- in a real browser ---------------------------------------------------------------------------------------------

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium on this machine (apt-get install chromium)")

PROBE = ("<script>window.__errors=[];window.addEventListener('error',function(e){"
         "window.__errors.push(String(e.message||(e.target&&(e.target.src||e.target.href))||e.type));},true);"
         "window.addEventListener('load',function(){var d=document.documentElement;"
         "d.setAttribute('data-scroll-width',String(d.scrollWidth));"
         "d.setAttribute('data-errors',window.__errors.join(' | '));});</script>")


def _chromium(tmp_path, *args):
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@needs_browser
@pytest.mark.parametrize("page", ["index.html", "images.html", "day1_clip.html"])
def test_pages_render_in_chromium_without_errors_or_overflow_at_1280px(report, tmp_path, page):
    rep, _, _ = report
    probe = rep / f"_probe_{page}"
    text = (rep / page).read_text()
    probe.write_text(text.replace("<head>", "<head>" + PROBE, 1))  # same folder: thumbnails resolve
    try:
        done = _chromium(tmp_path, "--window-size=1280,900", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    width = re.search(r'data-scroll-width="(\d+)"', done.stdout)
    errors = re.search(r'data-errors="([^"]*)"', done.stdout)
    assert width and errors, done.stdout[:500]
    assert int(width.group(1)) <= 1280  # nothing runs off the page
    assert errors.group(1) == ""  # no script error, no missing image


@needs_browser
def test_a_screenshot_of_the_index_shows_the_report(report, tmp_path):
    rep, _, _ = report
    shot = tmp_path / "index.png"
    done = _chromium(tmp_path, "--window-size=1280,1200", f"--screenshot={shot}", (rep / "index.html").as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB")).astype(float)
    assert pixels.shape[1] == 1280
    assert pixels.std() > 20  # not blank
    colourful = (pixels.max(axis=2) - pixels.min(axis=2) > 60).mean()
    assert colourful > 0.01  # the thumbnails of the (synthetic) faces are drawn
