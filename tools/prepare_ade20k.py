#!/usr/bin/env python
"""Write ADE20K's annotations_detectron2 (150 classes 0..149, 255 = ignore) for detectron2.

    python tools/prepare_ade20k.py          # $DETECTRON2_DATASETS/ADEChallengeData2016

Expects ADEChallengeData2016.zip unpacked (the SceneParsing benchmark release):

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   (0 = other, 1..150)

and writes ADEChallengeData2016/annotations_detectron2/{training,validation}/ADE_*.png with
label - 1 (so "other" 0 becomes 255), the layout detectron2's ade20k_sem_seg_{train,val} read.
Idempotent (existing outputs kept unless --overwrite; atomic writes), progress bar, --workers.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from gmmseg.data.preparation import run_jobs, save_png_atomic

SPLITS = ("training", "validation")
# uint8 arithmetic: 0 - 1 wraps to 255 (ignore), k -> k - 1 otherwise
_LUT = ((np.arange(256, dtype=np.int64) - 1) % 256).astype(np.uint8)


def convert_one(job) -> str:
    """(input png, output png, overwrite) -> "written" | "skipped"."""
    src, dst, overwrite = job
    if os.path.exists(dst) and not overwrite:
        return "skipped"
    raw = np.asarray(Image.open(src))
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(f"{src}: expected a single-channel uint8 annotation, got {raw.dtype} {raw.shape}")
    save_png_atomic(_LUT[raw], dst)
    return "written"


def prepare_ade20k(ade_dir: str, workers: int = 0, overwrite: bool = False):
    results = []
    for split in SPLITS:
        src_dir = os.path.join(ade_dir, "annotations", split)
        if not os.path.isdir(src_dir):
            raise FileNotFoundError(
                f"{src_dir} does not exist: unzip ADEChallengeData2016.zip so that "
                f"{ade_dir} holds images/ and annotations/ (see datasets/README.md)"
            )
        dst_dir = os.path.join(ade_dir, "annotations_detectron2", split)
        os.makedirs(dst_dir, exist_ok=True)
        jobs = [
            (os.path.join(src_dir, f), os.path.join(dst_dir, f), overwrite)
            for f in sorted(os.listdir(src_dir))
            if f.endswith(".png")
        ]
        results += run_jobs(convert_one, jobs, workers, f"ade20k {split}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ade",
        default=None,
        help="the ADEChallengeData2016 folder (default: $DETECTRON2_DATASETS/ADEChallengeData2016)",
    )
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    ade_dir = args.ade or os.path.join(
        os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets")), "ADEChallengeData2016"
    )
    try:
        results = prepare_ade20k(ade_dir, args.workers, args.overwrite)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    written = results.count("written")
    print(f"{written} label maps written, {len(results) - written} already present, under {ade_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
