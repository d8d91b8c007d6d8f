#!/usr/bin/env python
"""Check a prepared semantic-segmentation dataset and list what is wrong with it.

    python tools/check_dataset.py --dataset ade20k_sem_seg_val
    python tools/check_dataset.py --root /data --dataset coco_stuff_10k_sem_seg_train \
        --dataset coco_stuff_10k_sem_seg_test --workers 2
    # the datasets of a config (its DATASETS.TRAIN + TEST), e.g. your own folder dataset:
    python tools/check_dataset.py --config-file configs/user_data/fpn_r50_gmm.yaml DATASETS.FOLDER.ROOT /data/mine
    python tools/check_dataset.py --list       # the semantic-segmentation datasets it can check

Any dataset registered in detectron2's DatasetCatalog works (importing `gmmseg` registers the
project's datasets; --root registers them again under that folder). Checks: record count against the official split size, every image has its
label map (and no label map lacks an image), image/label sizes agree, label ids are in [0, K) or
the ignore label. Prints per-class pixel frequencies and every problem with its file name.
Exit code: 0 when every dataset is fine, 1 otherwise.
"""

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="registered dataset name (repeat for several)",
    )
    parser.add_argument(
        "--config-file",
        default=None,
        metavar="FILE",
        help="a training config: registers its DATASETS.FOLDER dataset and checks its "
        "DATASETS.TRAIN + TEST (unless --dataset is given)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of --config-file"
    )
    parser.add_argument(
        "--root",
        default=None,
        help="datasets folder; sets DETECTRON2_DATASETS before the datasets are "
        "registered (default: the variable, else ./datasets)",
    )
    parser.add_argument(
        "--expected-count",
        type=int,
        default=None,
        help="number of images the split must have (default: the official count "
        "for known splits; 0 disables the count check, e.g. for a subset)",
    )
    parser.add_argument(
        "--max-images", type=int, default=None, help="check only the first N records"
    )
    parser.add_argument("--workers", type=int, default=0, help="processes reading the files")
    parser.add_argument("--max-listed", type=int, default=50, help="problems printed per dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the registered semantic-segmentation datasets (with their official sizes) and exit",
    )
    args = parser.parse_args(argv)
    if not args.dataset and not args.config_file and not args.list:
        parser.error("give --dataset NAME, --config-file FILE or --list")
    if args.opts and not args.config_file:
        parser.error(f"config overrides {args.opts} need --config-file")
    return args


def datasets_of_config(config_file: str, opts) -> list:
    """Register the config's DATASETS.FOLDER dataset; its DATASETS.TRAIN + TEST names."""
    from gmmseg import load_config
    from gmmseg.data.folder_dataset import setup_folder_dataset

    cfg = load_config(config_file, opts)
    setup_folder_dataset(cfg)
    return list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)


def list_datasets() -> str:
    """One line per semantic-segmentation dataset in the catalog: name, classes, official size."""
    from detectron2.data import MetadataCatalog

    from gmmseg.data.catalog import official_size, semantic_segmentation_datasets

    lines = []
    for name in semantic_segmentation_datasets():
        size = official_size(name)
        classes = len(MetadataCatalog.get(name).stuff_classes)
        lines.append(f"{name}  ({classes} classes{f', {size} images' if size else ''})")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.root is not None:
        os.environ["DETECTRON2_DATASETS"] = os.path.abspath(os.path.expanduser(args.root))
    import gmmseg  # noqa: F401  (registers the project's datasets)
    from gmmseg.data import register_all_datasets
    from gmmseg.data.check import check_sem_seg_dataset

    if args.root is not None:  # gmmseg may have been imported before the root was set
        register_all_datasets(os.environ["DETECTRON2_DATASETS"])
    names = list(args.dataset)
    if args.config_file:
        config_names = datasets_of_config(args.config_file, args.opts)
        names = names or config_names
    if args.list:
        print(list_datasets())
        return 0
    all_ok = True
    for name in names:
        report = check_sem_seg_dataset(
            name,
            expected_count=args.expected_count,
            max_images=args.max_images,
            num_workers=args.workers,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        print(report.format(max_listed=args.max_listed))
        print()
        all_ok &= report.ok
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
