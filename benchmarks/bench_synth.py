"""Speed of the synthetic face generator on one core.

Run: ``python benchmarks/bench_synth.py [--n 1000] [--size 112]``. Prints images per
second for sampling the parameters, for rendering alone, and for ``generate`` writing
JPEG (quality 95, the default) and PNG files. Target: >= 300 images/s at 112 px
including the JPEG writing. Rates use the process CPU time (``time.process_time``), so
they measure the cost on one core even on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402

from affectlab.data.synth import _plan, generate, render_face  # noqa: E402


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} images/s ({1000 * seconds / n:.2f} ms each)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=".", help="where the temporary output goes (default: here; "
                    "some /tmp mounts are far slower to write to)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    n, size = args.n, args.size
    kw = dict(size=size, seed=args.seed, subjects=None, label_noise=0.0, drop_labels=0.0,
              keep=("expr", "va", "au"), sequences=0, frames=0, expressions=None)

    render_face(_plan(8, **kw)[0].params[0])  # warm-up (noise bank, imports)
    t = time.process_time()
    plan, _ = _plan(n, **kw)
    t_plan = time.process_time() - t
    t = time.process_time()
    for p in plan.params:
        render_face(p)
    t_render = time.process_time() - t

    results = {}
    for fmt in ("jpg", "png"):
        with tempfile.TemporaryDirectory(dir=args.dir, prefix=".bench_synth_") as tmp:
            t = time.process_time()
            generate(os.path.join(tmp, "out"), n, size=size, seed=args.seed, image_format=fmt, progress=False)
            results[fmt] = time.process_time() - t

    print(f"synthetic faces, {n} images of {size} px, one core (cv2 threads = 1)")
    print(f"  sample parameters + labels : {_rate(n, t_plan)}")
    print(f"  render only                : {_rate(n, t_render)}")
    print(f"  generate, JPEG q95 (default): {_rate(n, results['jpg'])}")
    print(f"  generate, PNG              : {_rate(n, results['png'])}")
    print(f"  load average now           : {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
