"""Start-up cost of the command line: wall time and peak RSS of a fresh process for

* ``affectlab --help``
* ``affectlab datasets`` (the format listing)
* ``affectlab analyze one.jpg --out t.csv`` (one 160x160 photo of a synthetic face, the default
  models and detector)

Targets (issue 17): --help and datasets < 1 s, one photo < 3 s. Each command runs in its
own child so its peak RSS is its own; the median of ``--repeat`` runs is printed, with the
load average (the machine is shared: on a loaded machine the CPU seconds are the fairer figure).

The commands run offline in a temporary ``AFFECTLAB_HOME``: empty by default (a first offline
run: the packaged ``affectlab-base`` and Haar cascades), or holding the pretrained files of
``--assets DIR`` (registered as ``affectlab models add`` does; analyze then uses face-api's
expression net, YuNet and the FaceLandmarker). One unmeasured analysis runs first, so the
one-time import of the face-api net into the models folder is not counted.

Measured (2-core machine shared with trainings; figures in the README): at load 1.5-3 one
photo cost 2.4 s CPU with the empty home (was 3.8 s: importing torchvision, for the packaged
model's MobileNetV2, imported torch._dynamo) and 2.1 s with the pretrained files, 1.5 s of
either being ``import torch``; wall time is about CPU time on an idle machine, and up to
twice it at load 5.

Usage: ``python benchmarks/bench_startup.py [--repeat 3] [--assets ../shared/models]``;
``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# One child measuring one grandchild: RUSAGE_CHILDREN of a process that ran a single
# command is that command's peak RSS alone.
_MEASURE = r"""
import resource, subprocess, sys, time
t0 = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
wall = time.perf_counter() - t0
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, use.ru_maxrss / 1024, code, use.ru_utime + use.ru_stime)
"""


def measure(cmd: list[str], repeat: int) -> dict:
    walls, rss, cpus = [], [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
        wall, peak, code, cpu = out.stdout.split()
        if int(code) != 0:
            raise SystemExit(f"{' '.join(cmd)} exited with {code}")
        walls.append(float(wall))
        rss.append(float(peak))
        cpus.append(float(cpu))
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "peak_rss_mb": statistics.median(rss),
            "runs": walls}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--assets", type=Path, default=None,
                    help="folder of pretrained files (e.g. ../shared/models) to register in the temporary home")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    exe = [sys.executable, "-m", "affectlab"]
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        home = Path(tmp) / "home"
        os.environ.update(AFFECTLAB_HOME=str(home), TORCH_HOME=str(home / "torch"), AFFECTLAB_OFFLINE="1")
        os.environ.pop("AFFECTLAB_ASSET_BASE_URL", None)
        added = _register_assets(args.assets) if args.assets else []
        from affectlab.data.synth import sample_batch

        photo = Path(tmp) / "one.jpg"
        Image.fromarray(sample_batch(1, seed=0, size=160)[0][0]).save(photo)  # a face: the model runs
        commands = {
            "affectlab --help": [*exe, "--help"],
            "affectlab datasets": [*exe, "datasets"],
            "affectlab analyze one.jpg": [*exe, "analyze", str(photo), "--out", str(Path(tmp) / "t.csv"), "-q"],
        }
        subprocess.run(commands["affectlab analyze one.jpg"], capture_output=True, check=True)  # one-time set-up
        with open(Path(tmp) / "t.csv", newline="") as f:
            faces = [row["face"] for row in csv.DictReader(f)]
        if faces != ["0"]:
            raise SystemExit("no face found in the benchmark photo: the model did not run")
        results = {name: measure(cmd, args.repeat) for name, cmd in commands.items()}
    load = os.getloadavg()[0]
    print(f"median of {args.repeat} runs, load average {load:.1f}; AFFECTLAB_HOME "
          + (f"with {', '.join(added)}" if added else "empty"))
    for name, r in results.items():
        print(f"{name:28s} {r['wall_s']:6.2f} s wall  {r['cpu_s']:6.2f} s CPU  {r['peak_rss_mb']:7.0f} MB peak RSS")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "assets": added, "results": results}, indent=2))


def _register_assets(folder: Path) -> list[str]:
    """Register the files of ``folder`` (searched recursively) that are affectlab assets."""
    from affectlab.runtime.assets import ASSETS, add_files

    names = {a.filename for a in ASSETS.values()}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name in names)
    if not files:
        raise SystemExit(f"no affectlab asset files under {folder}")
    return sorted(name for _, name in add_files(files))


if __name__ == "__main__":
    main()
