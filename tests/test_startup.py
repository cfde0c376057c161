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
