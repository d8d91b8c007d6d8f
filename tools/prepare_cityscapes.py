#!/usr/bin/env python
"""Write Cityscapes' *_gtFine_labelTrainIds.png (19 train ids, 255 = ignore) next to gtFine.

    pip install cityscapesscripts
    python tools/prepare_cityscapes.py                       # $DETECTRON2_DATASETS/cityscapes
    python tools/prepare_cityscapes.py --cityscapes /data/cityscapes --workers 4

Expects the official layout (leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip):

    cityscapes/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    cityscapes/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
                                                              ..._gtFine_labelIds.png

By default each label map is drawn from its polygons with cityscapesscripts' `json2labelImg`
(exactly what its `createTrainIdLabelImgs` does); `--source label-ids` instead maps the
*_gtFine_labelIds.png files through cityscapesscripts' label table (same result, faster).
Idempotent: existing outputs are kept unless --overwrite; each file is written to a temporary
name and renamed, so an interrupted run leaves no truncated file behind.
"""

import argparse
import functools
import glob
import os
import sys

from gmmseg.data.preparation import (
    add_preparation_arguments,
    dataset_folder,
    read_label_map,
    run_jobs,
    run_preparation,
    save_png_atomic,
)

_INSTALL_HINT = (
    "cityscapesscripts is not installed; it converts Cityscapes labels to train ids. "
    "Install it with:  pip install cityscapesscripts"
)


def require_cityscapesscripts():
    """Import cityscapesscripts or exit with the install command."""
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError:
        raise SystemExit(f"error: {_INSTALL_HINT}") from None


def find_annotations(cityscapes_dir: str, splits, source: str):
    """Sorted gtFine inputs (polygon json or labelIds png) of the splits."""
    pattern = "*_gtFine_polygons.json" if source == "polygons" else "*_gtFine_labelIds.png"
    files = []
    for split in splits:
        files += glob.glob(os.path.join(cityscapes_dir, "gtFine", split, "*", pattern))
    return sorted(files)


def output_path(input_file: str) -> str:
    for suffix in ("_polygons.json", "_labelIds.png"):
        if input_file.endswith(suffix):
            return input_file[: -len(suffix)] + "_labelTrainIds.png"
    raise ValueError(f"not a gtFine polygons/labelIds file: {input_file}")


@functools.lru_cache(maxsize=1)
def _label_id_lut():
    import numpy as np
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256:
            lut[label.id] = label.trainId if 0 <= label.trainId < 255 else 255
    return lut


def convert_one(job) -> str:
    """(input file, source, overwrite) -> "written" | "skipped"."""
    input_file, source, overwrite = job
    out = output_path(input_file)
    if os.path.exists(out) and not overwrite:
        return "skipped"
    if source == "polygons":
        # json2labelImg(input_file, out, "trainIds") without its extension-based save
        from cityscapesscripts.helpers.annotation import Annotation
        from cityscapesscripts.preparation.json2labelImg import createLabelImage

        annotation = Annotation()
        annotation.fromJsonFile(input_file)
        save_png_atomic(createLabelImage(annotation, "trainIds"), out)
    else:
        save_png_atomic(_label_id_lut()[read_label_map(input_file, "Cityscapes labelIds map")], out)
    return "written"


def prepare_cityscapes(
    cityscapes_dir: str, splits, source: str = "polygons", workers: int = 0, overwrite: bool = False
):
    """Write the labelTrainIds of every gtFine annotation of `splits`; none found stops with the
    folder searched."""
    files = find_annotations(cityscapes_dir, splits, source)
    if not files:
        what = "*_gtFine_polygons.json" if source == "polygons" else "*_gtFine_labelIds.png"
        where = os.path.join(cityscapes_dir, "gtFine", "{" + ",".join(splits) + "}", "<city>")
        raise FileNotFoundError(
            f"no {what} under {where}; unpack gtFine_trainvaltest.zip there (see datasets/README.md)"
        )
    return run_jobs(convert_one, [(f, source, overwrite) for f in files], workers, "labelTrainIds")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cityscapes",
        default=None,
        help="the cityscapes folder (default: $DETECTRON2_DATASETS/cityscapes, else ./datasets/cityscapes)",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--source", choices=["polygons", "label-ids"], default="polygons")
    add_preparation_arguments(parser)
    args = parser.parse_args(argv)

    require_cityscapesscripts()
    root = dataset_folder("cityscapes", args.cityscapes)
    return run_preparation(
        lambda: prepare_cityscapes(root, args.splits, args.source, args.workers, args.overwrite),
        "labelTrainIds",
        root,
    )


if __name__ == "__main__":
    sys.exit(main())
