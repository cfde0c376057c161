"""Start-up (issue 17, item 12): the command line imports the heavy libraries only in the
commands that need them. What is imported is behaviour; the timings are in
benchmarks/bench_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "lightning", "pandas", "matplotlib", "cv2", "scipy", "sklearn")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_heavy_library():
    assert _imported_after("import affectlab.cli") == []


def test_help_imports_no_heavy_library():
    code = "from affectlab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _imported_after(code) == []


def test_listing_the_dataset_formats_needs_no_torch():
    code = "import contextlib, io\nfrom affectlab.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['datasets'])"
    imported = _imported_after(code)
    assert not {"torch", "torchvision", "lightning", "matplotlib", "cv2"} & set(imported), imported


@pytest.mark.parametrize("home", ["empty", "assets"])
def test_one_photo_imports_only_what_inference_needs(tmp_path, request, home):
    """Both default stacks: affectlab-base (empty home) and face-api's net with YuNet and the
    landmarker (a home holding the pretrained files)."""
    from PIL import Image

    from affectlab.data.synth import sample_batch

    if home == "assets":
        request.getfixturevalue("assets_home")
    images, _ = sample_batch(1, seed=0, size=160)
    photo, table = tmp_path / "one.jpg", tmp_path / "t.csv"
    Image.fromarray(images[0]).save(photo)
    watched = (*HEAVY, "torch._dynamo", "sympy", "scipy.optimize", "open_clip", "timm")
    code = (
        "import contextlib, io, json, sys\nfrom affectlab.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert main(['analyze', {str(photo)!r}, '--out', {str(table)!r}, '-q']) == 0\n"
        f"print(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    import pandas as pd

    row = pd.read_csv(table).iloc[0]
    assert row["face"] == 0 and 0 <= row["expr_happiness"] <= 1  # the model ran on a face
    # torch, pandas (the table) and OpenCV (decoding, detection) are needed; torchvision is not:
    # its __init__ imports torch._dynamo (about 1 s), and a saved MobileNetV2 is rebuilt without it
    assert {"torch", "pandas", "cv2"} <= imported
    assert not {"torchvision", "torch._dynamo", "sympy", "lightning", "matplotlib", "sklearn", "scipy.optimize",
                "open_clip", "timm"} & imported, imported
