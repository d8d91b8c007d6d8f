#!/usr/bin/env python
"""Compose the Fishyscapes Static validation images that fishyscapes_static_val reads.

    python tools/prepare_fishyscapes_static.py              # under $DETECTRON2_DATASETS
    python tools/prepare_fishyscapes_static.py --root /data/datasets --workers 4

The release (fs_val_v3.zip) ships overlays, not images. Expects, under the datasets root,

    fishyscapes/fs_val_v3/NNNN_<cityscapes_id>_labels.png and NNNN_<cityscapes_id>_rgb.npz
    cityscapes/leftImg8bit/val/<city>/<cityscapes_id>_leftImg8bit.png

and writes fishyscapes/fs_val_v3_images/NNNN_<cityscapes_id>.png = clip(Cityscapes image +
overlay, 0, 255), as the release's own loader builds it (gmmseg/data/anomaly_datasets.py lists
the files). A missing overlay or Cityscapes image, or an overlay of another size, stops with the
file named. Idempotent (existing outputs kept unless --overwrite; atomic writes), progress bar,
--workers.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from gmmseg.data.anomaly_datasets import fishyscapes_static_files
from gmmseg.data.common import datasets_root
from gmmseg.data.preparation import (
    add_preparation_arguments,
    run_jobs,
    run_preparation,
    save_png_atomic,
)


def compose_one(job) -> str:
    """(overlay npz, Cityscapes image, output png, overwrite) -> "written" | "skipped"."""
    overlay_path, base_path, image_path, overwrite = job
    if os.path.exists(image_path) and not overwrite:
        return "skipped"
    with Image.open(base_path) as im:
        base = np.asarray(im.convert("RGB"), dtype=np.int32)
    with np.load(overlay_path) as npz:
        overlay = npz["rgb"].astype(np.int32)
    if overlay.shape != base.shape:
        raise ValueError(
            f"overlay {overlay_path!r} has shape {overlay.shape}, image {base_path!r} has {base.shape}"
        )
    save_png_atomic(np.clip(base + overlay, 0, 255).astype(np.uint8), image_path)
    return "written"


def prepare_fishyscapes_static(root=None, workers: int = 0, overwrite: bool = False):
    """Compose every image of the release under `root` (None: $DETECTRON2_DATASETS); a missing
    input stops before anything is written."""
    files = fishyscapes_static_files(root)
    for f in files:
        for key in ("overlay", "base"):
            if not os.path.isfile(f[key]):
                raise FileNotFoundError(
                    f"missing {f[key]!r}, needed to compose {os.path.basename(f['image'])} "
                    "(see docs/DATASETS_ANOMALY.md for the layout)"
                )
    jobs = [(f["overlay"], f["base"], f["image"], overwrite) for f in files]
    return run_jobs(compose_one, jobs, workers, "fishyscapes static")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=None,
        help="the datasets folder (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    add_preparation_arguments(parser)
    args = parser.parse_args(argv)
    where = os.path.join(datasets_root(args.root), "fishyscapes", "fs_val_v3_images")
    return run_preparation(
        lambda: prepare_fishyscapes_static(args.root, args.workers, args.overwrite),
        "composed images",
        where,
    )


if __name__ == "__main__":
    sys.exit(main())
