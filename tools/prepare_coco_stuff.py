#!/usr/bin/env python
"""Write COCO-Stuff 171-class label maps (train ids 0..170, 255 = ignore) for detectron2.

    # COCO-Stuff-164k from the stuffthingmaps PNGs (stuffthingmaps_trainval2017.zip):
    python tools/prepare_coco_stuff.py 164k
    # COCO-Stuff-164k from the JSON annotations (stuff_*.json [+ instances_*.json]):
    python tools/prepare_coco_stuff.py 164k-json --split val2017
    # COCO-Stuff-10k (cocostuff-10k-v1.1.zip: images/, annotations/*.mat, imageLists/):
    python tools/prepare_coco_stuff.py 10k

Folders default to $DETECTRON2_DATASETS/coco (else ./datasets/coco); see datasets/README.md
for the layouts. Every mode is idempotent (existing outputs are kept unless --overwrite, files
are written under a temporary name and renamed), shows a progress bar (tqdm) and can use
several processes (--workers).

Label encodings: stuffthingmaps pixel = COCO-Stuff id - 1 (255 unlabeled); 10k .mat pixel = id
(0 unlabeled); JSON category_id = id. The 11 unused thing ids and the JSON's 183 "other" map to
255. In the JSON mode stuff regions are drawn first, then thing instances (largest first, so a
small object on a large one stays visible); without --things-json only stuff is labelled.
"""

import argparse
import json
import os
import shutil
import sys
from collections import defaultdict

import numpy as np

from gmmseg.data.coco_stuff import COCO_ID_TO_TRAIN_ID, IGNORE_LABEL, coco_id_lut
from gmmseg.data.preparation import (
    add_preparation_arguments,
    dataset_folder,
    remap_label_file,
    run_jobs,
    run_preparation,
    save_png_atomic,
)

SPLITS_164K = ("train2017", "val2017")
SPLITS_10K = ("train", "test")


def prepare_164k_png(
    coco_dir: str,
    splits=SPLITS_164K,
    workers: int = 0,
    overwrite: bool = False,
    input_name: str = "stuffthingmaps",
    output_name: str = "stuffthingmaps_detectron2",
):
    """coco/stuffthingmaps/<split>/*.png -> coco/stuffthingmaps_detectron2/<split>/*.png."""
    results = []
    for split in splits:
        src_dir = os.path.join(coco_dir, input_name, split)
        if not os.path.isdir(src_dir):
            raise FileNotFoundError(
                f"{src_dir} does not exist: unzip stuffthingmaps_trainval2017.zip "
                f"into {os.path.join(coco_dir, input_name)} (see datasets/README.md)"
            )
        dst_dir = os.path.join(coco_dir, output_name, split)
        os.makedirs(dst_dir, exist_ok=True)
        lut = coco_id_lut("stuffthingmaps")
        jobs = [
            (os.path.join(src_dir, f), os.path.join(dst_dir, f), lut, overwrite, "stuffthingmap")
            for f in sorted(os.listdir(src_dir))
            if f.endswith(".png")
        ]
        results += run_jobs(remap_label_file, jobs, workers, f"stuffthingmaps {split}")
    return results


# ---- 164k, JSON ---------------------------------------------------------------------------------
def _segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:  # compressed RLE
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def rasterize_annotations(height: int, width: int, stuff_anns, thing_anns) -> np.ndarray:
    """(H, W) uint8 train-id map: 255, then stuff regions, then things (largest first).

    Annotations are COCO dicts with "segmentation" (polygons or RLE) and "category_id"
    (COCO-Stuff ids); ids that are not one of the 171 classes (e.g. 183 "other") are not drawn.
    """
    label = np.full((height, width), IGNORE_LABEL, dtype=np.uint8)
    things = sorted(thing_anns, key=lambda a: -float(a.get("area", 0.0)))
    for ann in list(stuff_anns) + things:
        train_id = COCO_ID_TO_TRAIN_ID.get(int(ann["category_id"]))
        if train_id is None:
            continue
        label[_segmentation_mask(ann["segmentation"], height, width)] = train_id
    return label


def rasterize_one(job) -> str:
    """(image info, stuff anns, thing anns, output png, overwrite) -> "written" | "skipped"."""
    info, stuff_anns, thing_anns, dst, overwrite = job
    if os.path.exists(dst) and not overwrite:
        return "skipped"
    save_png_atomic(
        rasterize_annotations(int(info["height"]), int(info["width"]), stuff_anns, thing_anns), dst
    )
    return "written"


def _annotations_by_image(json_file: str):
    with open(json_file) as f:
        data = json.load(f)
    by_image = defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    return data["images"], by_image


def prepare_164k_json(
    stuff_json: str, output_dir: str, things_json=None, workers: int = 0, overwrite: bool = False
):
    """Rasterise stuff_<split>.json (+ instances_<split>.json) into output_dir/<stem>.png."""
    images, stuff = _annotations_by_image(stuff_json)
    things = _annotations_by_image(things_json)[1] if things_json else {}
    os.makedirs(output_dir, exist_ok=True)
    jobs = []
    for info in images:
        stem = os.path.splitext(os.path.basename(info["file_name"]))[0]
        jobs.append(
            (
                info,
                stuff.get(info["id"], []),
                things.get(info["id"], []),
                os.path.join(output_dir, stem + ".png"),
                overwrite,
            )
        )
    return run_jobs(rasterize_one, jobs, workers, f"rasterise {os.path.basename(stuff_json)}")


# ---- 10k ----------------------------------------------------------------------------------------
def convert_10k_one(job) -> str:
    """(name, source dir, output dir, split, copy, overwrite) -> "written" | "skipped"."""
    from scipy.io import loadmat

    name, src, out, split, copy, overwrite = job
    image_dst = os.path.join(out, "images_detectron2", split, name + ".jpg")
    label_dst = os.path.join(out, "annotations_detectron2", split, name + ".png")
    done = os.path.exists(label_dst) and os.path.lexists(image_dst)
    if done and not overwrite:
        return "skipped"
    image_src = os.path.join(src, "images", name + ".jpg")
    if os.path.lexists(image_dst):
        os.remove(image_dst)
    if copy:
        shutil.copyfile(image_src, image_dst)
    else:
        os.symlink(os.path.relpath(image_src, os.path.dirname(image_dst)), image_dst)
    raw = loadmat(os.path.join(src, "annotations", name + ".mat"))["S"]
    if raw.min() < 0 or raw.max() > 255:
        raise ValueError(f"{name}.mat: label values outside 0..255 ({raw.min()}..{raw.max()})")
    save_png_atomic(coco_id_lut("coco_id")[raw.astype(np.uint8)], label_dst)
    return "written"


def prepare_10k(
    source_dir: str, output_dir=None, workers: int = 0, copy: bool = False, overwrite: bool = False
):
    """cocostuff-10k-v1.1 (images/, annotations/*.mat, imageLists/{train,test}.txt) ->
    output_dir/{images_detectron2,annotations_detectron2}/{train,test}/ (default: in place)."""
    output_dir = output_dir or source_dir
    results = []
    for split in SPLITS_10K:
        list_file = os.path.join(source_dir, "imageLists", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise FileNotFoundError(
                f"{list_file} does not exist: unzip cocostuff-10k-v1.1.zip into {source_dir} (see datasets/README.md)"
            )
        with open(list_file) as f:
            names = [line.strip() for line in f if line.strip()]
        for sub in ("images_detectron2", "annotations_detectron2"):
            os.makedirs(os.path.join(output_dir, sub, split), exist_ok=True)
        jobs = [
            (os.path.splitext(n)[0], source_dir, output_dir, split, copy, overwrite) for n in names
        ]
        results += run_jobs(convert_10k_one, jobs, workers, f"coco-stuff-10k {split}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_preparation_arguments(common)

    p = sub.add_parser("164k", parents=[common], help="stuffthingmaps PNGs -> 171-class maps")
    p.add_argument("--coco", default=None, help="coco folder (default $DETECTRON2_DATASETS/coco)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS_164K))

    p = sub.add_parser("164k-json", parents=[common], help="stuff/instances JSON -> 171-class maps")
    p.add_argument("--coco", default=None, help="coco folder (default $DETECTRON2_DATASETS/coco)")
    p.add_argument("--split", default="val2017", choices=list(SPLITS_164K))
    p.add_argument(
        "--stuff-json", default=None, help="default <coco>/annotations/stuff_<split>.json"
    )
    p.add_argument(
        "--things-json",
        default=None,
        help="default <coco>/annotations/instances_<split>.json if it exists; 'none' to label stuff only",
    )

    p = sub.add_parser("10k", parents=[common], help="cocostuff-10k .mat files -> 171-class maps")
    p.add_argument(
        "--source", default=None, help="unzipped cocostuff-10k-v1.1 (default <coco>/coco_stuff_10k)"
    )
    p.add_argument("--coco", default=None, help="coco folder (default $DETECTRON2_DATASETS/coco)")
    p.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    args = parser.parse_args(argv)

    coco_dir = dataset_folder("coco", args.coco)
    if args.mode == "164k":
        where = os.path.join(coco_dir, "stuffthingmaps_detectron2")
        return run_preparation(
            lambda: prepare_164k_png(coco_dir, args.splits, args.workers, args.overwrite),
            "label maps",
            where,
        )
    if args.mode == "164k-json":
        stuff_json = args.stuff_json or os.path.join(
            coco_dir, "annotations", f"stuff_{args.split}.json"
        )
        things_json = args.things_json
        if things_json is None:
            candidate = os.path.join(coco_dir, "annotations", f"instances_{args.split}.json")
            things_json = candidate if os.path.isfile(candidate) else None
        elif things_json.lower() == "none":
            things_json = None
        if things_json is None:
            print(
                "warning: no instances JSON, thing classes are left unlabeled (255)",
                file=sys.stderr,
            )
        where = os.path.join(coco_dir, "stuffthingmaps_detectron2", args.split)
        return run_preparation(
            lambda: prepare_164k_json(stuff_json, where, things_json, args.workers, args.overwrite),
            "label maps",
            where,
        )
    source = args.source or os.path.join(coco_dir, "coco_stuff_10k")
    where = os.path.join(coco_dir, "coco_stuff_10k")
    return run_preparation(
        lambda: prepare_10k(source, where, args.workers, args.copy, args.overwrite),
        "label maps",
        where,
    )


if __name__ == "__main__":
    sys.exit(main())
