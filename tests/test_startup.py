"""Start-up (issue 17, item 12): the command line imports the heavy libraries only in the
commands that need them. What is imported is behaviour; the timings are in
benchmarks/bench_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_one_photo_imports_only_what_inference_needs(tmp_path):
    import numpy as np
    from PIL import Image

    photo = tmp_path / "one.jpg"
    Image.fromarray(np.full((96, 96, 3), 120, dtype=np.uint8)).save(photo)
    code = (
        "import contextlib, io\nfrom affectlab.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert main(['analyze', {str(photo)!r}, '--out', {str(tmp_path / 't.csv')!r}, '-q']) == 0\n"
        "print('scipy.optimize' in sys.modules)"
    )
    probe = f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    optimize, imported = out.stdout.strip().splitlines()[-2:]
    # torch and torchvision (the packaged model is a torchvision MobileNetV2), pandas (the table) and
    # OpenCV (decoding, detection) are needed
    assert not {"lightning", "matplotlib", "sklearn"} & set(json.loads(imported)), imported
    assert optimize == "False"
