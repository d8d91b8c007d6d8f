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

from gmmseg.data.preparation import run_jobs, save_png_atomic

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
        import numpy as np
        from PIL import Image

        ids = np.asarray(Image.open(input_file))
        save_png_atomic(_label_id_lut()[ids], out)
    return "written"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cityscapes",
        default=None,
        help="the cityscapes folder (default: $DETECTRON2_DATASETS/cityscapes, else ./datasets/cityscapes)",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--source", choices=["polygons", "label-ids"], default="polygons")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: this one)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")
    args = parser.parse_args(argv)

    require_cityscapesscripts()
    root = args.cityscapes or os.path.join(
        os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets")), "cityscapes"
    )
    files = find_annotations(root, args.splits, args.source)
    if not files:
        what = "*_gtFine_polygons.json" if args.source == "polygons" else "*_gtFine_labelIds.png"
        print(
            f"error: no {what} under {os.path.join(root, 'gtFine', '{' + ','.join(args.splits) + '}', '<city>')}; "
            "unpack gtFine_trainvaltest.zip there (see datasets/README.md)",
            file=sys.stderr,
        )
        return 1
    results = run_jobs(convert_one, [(f, args.source, args.overwrite) for f in files], args.workers, "labelTrainIds")
    written = results.count("written")
    print(f"{written} labelTrainIds written, {len(results) - written} already present, under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
