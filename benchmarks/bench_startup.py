"""Start-up cost of the command line: wall time and peak RSS of a fresh process for

* ``affectlab --help``
* ``affectlab datasets`` (the format listing)
* ``affectlab analyze one.jpg --out t.csv`` (one 160x160 photo, the default model and detector)

Targets (issue 17): --help and datasets < 1 s, one photo < 3 s. Each command runs in its
own child so its peak RSS is its own; the median of ``--repeat`` runs is printed, with the
load average (the machine is shared: on a loaded machine the CPU seconds are the fairer figure).

Usage: ``python benchmarks/bench_startup.py [--repeat 3]``; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    exe = [sys.executable, "-m", "affectlab"]
    with tempfile.TemporaryDirectory() as tmp:
        import numpy as np
        from PIL import Image

        photo = Path(tmp) / "one.jpg"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(photo)
        commands = {
            "affectlab --help": [*exe, "--help"],
            "affectlab datasets": [*exe, "datasets"],
            "affectlab analyze one.jpg": [*exe, "analyze", str(photo), "--out", str(Path(tmp) / "t.csv"), "-q"],
        }
        results = {name: measure(cmd, args.repeat) for name, cmd in commands.items()}
    load = os.getloadavg()[0]
    print(f"median of {args.repeat} runs, load average {load:.1f}")
    for name, r in results.items():
        print(f"{name:28s} {r['wall_s']:6.2f} s wall  {r['cpu_s']:6.2f} s CPU  {r['peak_rss_mb']:7.0f} MB peak RSS")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
