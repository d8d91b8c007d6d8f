#!/usr/bin/env python
"""Build camvid_static_val: CamVid val images with one real object pasted into each, of a class
that never occurs in CamVid (animals, furniture, kites, ...), the way Fishyscapes Static pasted
objects onto Cityscapes. A far-from-distribution anomaly benchmark for models trained on CamVid.

    python tools/prepare_camvid_static.py --source /data/coco_subset          # -> $DETECTRON2_DATASETS/camvid_static
    python tools/prepare_camvid_static.py --source /data/coco --annotations /data/coco/annotations/instances_val2017.json \
        --images /data/coco/val2017 --min-area 4000

--source: a folder holding COCO-format instance annotations and their images,
`annotations/*.json` + `images/` (e.g. the 10 COCO val2017 images with 77 instance masks of the
Apache-2.0 repository Clarifai/examples, folder datasets/upload/image_segmentation/coco/; COCO
annotations are CC BY 4.0, the images keep their Flickr licences, listed in the manifest), or
name the file and folder with --annotations / --images (the whole COCO val2017 works the same).
Instances of road-scene categories (person, vehicles, street furniture, plants:
gmmseg.data.pasted_objects.ROAD_SCENE_CATEGORIES), crowds and masks under --min-area pixels are
not used. Every CamVid val image (from $DETECTRON2_DATASETS/camvid/val, or --camvid) gets one
object, the objects used in turn in a seeded random order, scaled to 15-40 % of the image height,
bottom edge in the lower part of the image, with a feathered edge (gmmseg/data/pasted_objects.py).

Writes <output>/val/images/<name>.png, <output>/val/labels/<name>.png (1 pasted object, 0 known,
255 void: CamVid's void, the open-set split's withheld pedestrian and bicyclist, and the soft
edge where the object's alpha is below 0.5) and <output>/manifest.json (per image: the object's
category, COCO image and annotation ids, licence and placement). Deterministic for a --seed;
existing outputs are replaced. Nothing of it is committed: the data stay where you write them.

--camera-shift: instead, write camvid_static_shift (<output>_shift) from an existing camvid_static:
every image through another camera, one drawn per image (exposure, white balance, blur,
resolution: gmmseg/data/camera_shift.py), the labels unchanged, the cameras in its manifest.
"""

import argparse
import glob
import json
import os

import numpy as np
from PIL import Image

from gmmseg.data.camera_shift import camera_shift
from gmmseg.data.camvid import CAMVID_UNKNOWN_IDS, IGNORE
from gmmseg.data.pasted_objects import coco_objects, iter_assignments, paste_object
from gmmseg.data.preparation import dataset_folder, save_png_atomic


def find_annotations(source: str) -> str:
    found = sorted(glob.glob(os.path.join(source, "annotations", "*.json")))
    if len(found) != 1:
        raise FileNotFoundError(
            f"--source {source!r}: expected one COCO json in {source}/annotations/, found "
            f"{[os.path.basename(f) for f in found] or 'none'}; name it with --annotations"
        )
    return found[0]


def known_or_void(label: np.ndarray, path: str) -> np.ndarray:
    """CamVid label (0..10, 255) -> 0 for the 9 open-set known classes, 255 for void and the
    withheld classes."""
    bad = np.setdiff1d(np.unique(label), list(range(11)) + [IGNORE])
    if bad.size:
        raise ValueError(
            f"{path}: label values {bad.tolist()} are not CamVid ids (0..10, 255 void)"
        )
    out = np.zeros(label.shape, np.uint8)
    out[np.isin(label, list(CAMVID_UNKNOWN_IDS) + [IGNORE])] = 255
    return out


def build(camvid_val: str, objects, output: str, seed: int):
    """Paste one of `objects` into every image of `camvid_val` (images/ + labels/); returns the manifest."""
    images = sorted(glob.glob(os.path.join(camvid_val, "images", "*")))
    if not images:
        raise FileNotFoundError(
            f"no images in {camvid_val}/images (expected CamVid val: tools/prepare_camvid.py)"
        )
    if not objects:
        raise ValueError(
            "no object to paste: every instance was a road-scene category, a crowd or under --min-area"
        )
    rng = np.random.default_rng(seed)
    order = iter_assignments(len(images), len(objects), rng)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(output, "val", sub), exist_ok=True)
    manifest = {}
    for path, k in zip(images, order):
        stem = os.path.splitext(os.path.basename(path))[0]
        label_path = os.path.join(camvid_val, "labels", stem + ".png")
        if not os.path.isfile(label_path):
            raise FileNotFoundError(f"{path}: no label map {label_path}")
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(label_path) as im:
            known = known_or_void(np.asarray(im), label_path)
        pasted, anomaly, placement = paste_object(image, known, objects[k], rng)
        Image.fromarray(pasted).save(os.path.join(output, "val", "images", stem + ".png"))
        save_png_atomic(anomaly, os.path.join(output, "val", "labels", stem + ".png"))
        manifest[stem] = {
            "category": objects[k].category,
            **objects[k].source,
            **placement,
            "anomaly_pixels": int((anomaly == 1).sum()),
        }
    return manifest


def build_camera_shift(static_root: str, output: str, seed: int):
    """camvid_static (val/images + val/labels) through another camera per image -> `output`; the manifest."""
    images = sorted(glob.glob(os.path.join(static_root, "val", "images", "*.png")))
    if not images:
        raise FileNotFoundError(
            f"no images in {static_root}/val/images: write camvid_static first (this tool without --camera-shift)"
        )
    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(output, "val", sub), exist_ok=True)
    manifest = {}
    for path in images:
        name = os.path.basename(path)
        label = os.path.join(static_root, "val", "labels", name)
        if not os.path.isfile(label):
            raise FileNotFoundError(f"{path}: no label map {label}")
        with Image.open(path) as im:
            shifted, params = camera_shift(np.asarray(im.convert("RGB")), rng)
        Image.fromarray(shifted).save(os.path.join(output, "val", "images", name))
        with Image.open(label) as im:
            save_png_atomic(np.asarray(im), os.path.join(output, "val", "labels", name))
        manifest[name[:-4]] = params
    return manifest


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--source", help="folder with annotations/<one>.json and images/")
    ap.add_argument(
        "--annotations", help="COCO instances json (default: the one in --source/annotations)"
    )
    ap.add_argument("--images", help="folder of the json's images (default: --source/images)")
    ap.add_argument("--camvid", help="CamVid val folder (default: $DETECTRON2_DATASETS/camvid/val)")
    ap.add_argument("--output", help="default: $DETECTRON2_DATASETS/camvid_static")
    ap.add_argument(
        "--min-area", type=int, default=1000, help="smallest object mask used, in source pixels"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--camera-shift",
        action="store_true",
        help="write camvid_static_shift from an existing camvid_static (see the docstring)",
    )
    args = ap.parse_args(argv)
    if args.camera_shift:
        static = dataset_folder("camvid_static", args.output)
        output = static.rstrip("/") + "_shift"
        manifest = build_camera_shift(static, output, args.seed)
        with open(os.path.join(output, "manifest.json"), "w") as f:
            json.dump(
                {"source": os.path.abspath(static), "seed": args.seed, "images": manifest},
                f,
                indent=1,
            )
        print(f"wrote {len(manifest)} images through other cameras to {output}")
        return
    if not (args.source or (args.annotations and args.images)):
        ap.error("give --source, or both --annotations and --images")
    annotations = args.annotations or find_annotations(args.source)
    images = args.images or os.path.join(args.source, "images")
    objects = coco_objects(annotations, images, min_area=args.min_area)
    output = dataset_folder("camvid_static", args.output)
    manifest = build(
        args.camvid or os.path.join(dataset_folder("camvid"), "val"), objects, output, args.seed
    )
    with open(os.path.join(output, "manifest.json"), "w") as f:
        json.dump(
            {
                "source": os.path.abspath(annotations),
                "seed": args.seed,
                "objects": len(objects),
                "images": manifest,
            },
            f,
            indent=1,
        )
    cats = sorted({m["category"] for m in manifest.values()})
    print(
        f"wrote {len(manifest)} images with {len(objects)} distinct objects ({', '.join(cats)}) to {output}"
    )


if __name__ == "__main__":
    main()
