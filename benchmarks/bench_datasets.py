"""Speed of the dataset readers and of sample loading on one core.

Run: ``python benchmarks/bench_datasets.py [--rows 287651] [--images 2000]``. Prints

* parse time of an AffectNet-layout ``training.csv`` with ``--rows`` rows (the size of
  AffectNet's manually annotated training list), without checking image files;
* the same with the check for missing image files (every row's file exists);
* ``dataset[i]`` samples per second (decode + face crop + to tensor) on ``--images``
  JPEG files of 112 px.

Targets: parsing the full AffectNet list under 10 s; sample loading >= 500 images/s so
image decoding never starves a CPU training loop. Times are process CPU times
(``time.process_time``), so they measure the cost on one core on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from affectlab.data.datasets import load_dataset  # noqa: E402

HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"


def write_affectnet(root: str, rows: int, images: int, rng: np.random.Generator) -> None:
    lists = os.path.join(root, "Manually_Annotated_file_lists")
    os.makedirs(lists)
    landmarks = ";".join(f"{v:.2f}" for v in rng.uniform(0, 100, 136))
    codes = rng.integers(0, 11, rows)
    va = np.round(rng.uniform(-1, 1, (rows, 2)), 4)
    va[rng.random(rows) < 0.05] = -2
    with open(os.path.join(lists, "training.csv"), "w") as fh:
        fh.write(HEADER + "\n")
        for i in range(rows):
            fh.write(f"{i % 1000}/{i:07d}.jpg,8,8,96,96,{landmarks},{codes[i]},{va[i, 0]},{va[i, 1]}\n")
    face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    for i in range(images):
        folder = os.path.join(root, "Manually_Annotated_Images", str(i % 1000))
        os.makedirs(folder, exist_ok=True)
        cv2.imwrite(os.path.join(folder, f"{i:07d}.jpg"), face)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=287651)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--dir", default=None, help="where the temporary files go")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        write_affectnet(root, args.rows, args.images, rng)
        t = time.process_time()
        ds = load_dataset(f"affectnet:{root}:train", check_files=False)
        parse = time.process_time() - t
        print(f"parse {args.rows} AffectNet rows: {parse:.2f} s CPU ({len(ds)} kept after dropping codes 8-10)")

        small = os.path.join(root, "small")
        write_affectnet(small, args.images, args.images, rng)
        t = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset(f"affectnet:{small}:train")
        check = time.process_time() - t
        print(f"parse + file check of {args.images} rows: {check:.3f} s CPU ({len(ds)} kept)")

        t = time.process_time()
        for i in range(len(ds)):
            sample = ds[i]
        took = time.process_time() - t
        print(
            f"dataset[i] (decode 112 px JPEG, crop 96 px face, to tensor): {len(ds) / took:.0f} samples/s "
            f"({1000 * took / len(ds):.2f} ms each); image {tuple(sample['image'].shape)}"
        )


if __name__ == "__main__":
    main()
