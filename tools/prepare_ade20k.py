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

from gmmseg.data.preparation import (
    add_preparation_arguments,
    dataset_folder,
    remap_label_file,
    run_jobs,
    run_preparation,
)

SPLITS = ("training", "validation")
# uint8 arithmetic: 0 - 1 wraps to 255 (ignore), k -> k - 1 otherwise
_LUT = ((np.arange(256, dtype=np.int64) - 1) % 256).astype(np.uint8)


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
            (
                os.path.join(src_dir, f),
                os.path.join(dst_dir, f),
                _LUT,
                overwrite,
                "ADE20K annotation",
            )
            for f in sorted(os.listdir(src_dir))
            if f.endswith(".png")
        ]
        results += run_jobs(remap_label_file, jobs, workers, f"ade20k {split}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ade",
        default=None,
        help="the ADEChallengeData2016 folder (default: $DETECTRON2_DATASETS/ADEChallengeData2016)",
    )
    add_preparation_arguments(parser)
    args = parser.parse_args(argv)
    ade_dir = dataset_folder("ADEChallengeData2016", args.ade)
    return run_preparation(
        lambda: prepare_ade20k(ade_dir, args.workers, args.overwrite), "label maps", ade_dir
    )


if __name__ == "__main__":
    sys.exit(main())
