"""Verify a registered detectron2 semantic-segmentation dataset and say what is wrong with it.

`check_sem_seg_dataset(name)` loads the dataset dicts and, for every record, checks that the
image and its label map exist and can be read, that they have the same size (and the size the
record states, if any), that the label map has one channel and only ids in [0, K) or the ignore
label; it also compares the number of records with the official count of the split (declared
where the dataset is registered: catalog.official_size) and, when
the metadata names an image folder and a label folder (`image_root` / `sem_seg_root`), finds
images without a label map, label maps without an image and records pairing files of different
names (detectron2's `load_sem_seg` silently keeps the intersection when the two folders hold
different numbers of files, and pairs the sorted lists by position when they hold as many). It gathers per-class pixel frequencies on the way.

The command-line front end is tools/check_dataset.py.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .catalog import official_size, semantic_segmentation_datasets

__all__ = ["Problem", "DatasetCheckReport", "check_record", "check_sem_seg_dataset"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112
_SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class Problem:
    """One thing wrong: its kind, the file concerned and a sentence saying what is wrong."""

    kind: str  # load | count | missing_image | missing_label | orphan_label | mispaired |
    #            unreadable | size_mismatch | label_channels | bad_label
    file: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.file}: {self.message}"


@dataclass
class DatasetCheckReport:
    """What `check_sem_seg_dataset` found. `ok` is True when `problems` is empty."""

    name: str
    num_records: int = 0
    num_checked: int = 0
    expected_count: Optional[int] = None
    class_names: List[str] = field(default_factory=list)
    ignore_label: int = 255
    pixel_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,)
    image_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,)
    ignore_pixels: int = 0
    problems: List[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def problem_files(self, kind: Optional[str] = None) -> List[str]:
        """Files named by the problems (of one kind, if given)."""
        return [p.file for p in self.problems if kind is None or p.kind == kind]

    def format(self, max_listed: int = 50) -> str:
        """A human-readable report: counts, per-class frequencies, then every problem."""
        lines = []
        expected = "" if not self.expected_count else f" (expected {self.expected_count})"
        lines.append(
            f"Dataset '{self.name}': {self.num_records} records{expected}, "
            f"{self.num_classes} classes, ignore label {self.ignore_label}; "
            f"{self.num_checked} checked."
        )
        total = int(self.pixel_counts.sum()) + self.ignore_pixels
        if total > 0 and self.num_classes:
            lines.append(
                "Per-class pixel frequency (of all label pixels) and images containing it:"
            )
            names = [n if len(n) <= 32 else n[:31] + "~" for n in self.class_names]
            width = max(len(n) for n in names)
            lines.append(f"  {'id':>4}  {'class':<{width}}  {'pixels':>9}  {'images':>8}")
            for k, name in enumerate(names):
                lines.append(
                    f"  {k:4d}  {name:<{width}}  {100.0 * self.pixel_counts[k] / total:8.4f}%"
                    f"  {int(self.image_counts[k]):8d}"
                )
            lines.append(
                f"  ignore ({self.ignore_label}): {100.0 * self.ignore_pixels / total:.4f}%"
            )
            unseen = [
                f"{k} {self.class_names[k]}"
                for k in range(self.num_classes)
                if self.pixel_counts[k] == 0
            ]
            if unseen:
                lines.append(
                    f"Classes never seen ({len(unseen)}; normal for a small subset): "
                    + "; ".join(unseen)
                )
        if self.ok:
            lines.append("OK: no problem found.")
        else:
            kinds: Dict[str, int] = {}
            for p in self.problems:
                kinds[p.kind] = kinds.get(p.kind, 0) + 1
            summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            lines.append(f"FAILED: {len(self.problems)} problem(s) ({summary}):")
            for p in self.problems[:max_listed]:
                lines.append(f"  {p}")
            if len(self.problems) > max_listed:
                lines.append(
                    f"  ... and {len(self.problems) - max_listed} more (raise --max-listed to see them)"
                )
        return "\n".join(lines)


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) as detectron2's read_image returns it (EXIF orientation applied)."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # broken EXIF: detectron2 ignores it too
            orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _format_values(values: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def check_record(record: dict, num_classes: int, ignore_label: int = 255) -> dict:
    """Check one dataset dict. Returns {"problems": [Problem], "values": (V,) label ids present,
    "counts": (V,) their pixel counts} (empty arrays when the label could not be read)."""
    problems: List[Problem] = []
    empty = {"problems": problems, "values": np.zeros(0, np.int64), "counts": np.zeros(0, np.int64)}
    image_file = record.get("file_name")
    label_file = record.get("sem_seg_file_name")
    if not image_file or not os.path.isfile(image_file):
        problems.append(Problem("missing_image", str(image_file), "image file does not exist"))
    if not label_file:
        problems.append(
            Problem("missing_label", str(image_file), "record has no sem_seg_file_name")
        )
        return empty
    if not os.path.isfile(label_file):
        problems.append(
            Problem("missing_label", label_file, f"label map of {image_file} does not exist")
        )
        return empty

    image_size = None
    if image_file and os.path.isfile(image_file):
        try:
            image_size = _image_size(image_file)
        except Exception as e:  # noqa: BLE001 -- any reader error is a finding
            problems.append(Problem("unreadable", image_file, f"cannot read image: {e}"))
    try:
        with Image.open(label_file) as im:
            mode = im.mode
            label = np.asarray(im)
    except Exception as e:  # noqa: BLE001
        problems.append(Problem("unreadable", label_file, f"cannot read label map: {e}"))
        return empty
    if mode not in _SINGLE_CHANNEL_MODES or label.ndim != 2:
        problems.append(
            Problem(
                "label_channels",
                label_file,
                f"label map has mode {mode!r} / shape {label.shape}; expected one "
                "channel of class ids (a colour-coded map must be converted first)",
            )
        )
        return empty

    label_size = tuple(label.shape)
    if image_size is not None and image_size != label_size:
        problems.append(
            Problem(
                "size_mismatch",
                label_file,
                f"label map is {label_size[0]}x{label_size[1]} (HxW) but image "
                f"{image_file} is {image_size[0]}x{image_size[1]}",
            )
        )
    stated = (record.get("height"), record.get("width"))
    if image_size is not None and None not in stated and tuple(stated) != image_size:
        problems.append(
            Problem(
                "size_mismatch",
                image_file,
                f"record says {stated[0]}x{stated[1]} (HxW) but the image is {image_size[0]}x{image_size[1]}",
            )
        )

    flat = label.reshape(-1)
    if flat.dtype.kind in "ub":
        counts = np.bincount(flat)
        values = np.nonzero(counts)[0]
        counts = counts[values]
    else:
        values, counts = np.unique(flat, return_counts=True)
    values = values.astype(np.int64)
    remap = record.get("label_remap")
    if (
        remap
    ):  # as the mapper reads the label (a folder dataset's void value -> 255, CamVid open set)
        values, inverse = np.unique(
            [int(remap.get(int(v), int(v))) for v in values], return_inverse=True
        )
        counts = np.bincount(inverse, weights=counts).astype(np.int64)
    bad = (values != ignore_label) & ((values < 0) | (values >= num_classes))
    if bad.any():
        after = " after the dataset's label_remap" if remap else ""
        problems.append(
            Problem(
                "bad_label",
                label_file,
                f"label ids{after} {_format_values(values[bad])} outside [0, {num_classes}) "
                f"and not the ignore label {ignore_label} "
                f"({int(counts[bad].sum())} pixels)",
            )
        )
    return {"problems": problems, "values": values, "counts": counts.astype(np.int64)}


def _check_record_star(args):
    return check_record(*args)


def _list_stems(folder: str, exts: Sequence[str]) -> Dict[str, str]:
    exts = tuple(e.lower() for e in exts)
    return {
        os.path.splitext(f)[0]: os.path.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(exts)
    }


def _unmatched_files(image_root: str, label_root: str, label_ext: str = ".png") -> List[Problem]:
    """Images without a label map and label maps without an image, matched by file stem."""
    problems = []
    for folder, what in ((image_root, "image folder"), (label_root, "label folder")):
        if not os.path.isdir(folder):
            problems.append(Problem("load", folder, f"{what} does not exist"))
    if problems:
        return problems
    images = _list_stems(image_root, _IMAGE_EXTS)
    labels = _list_stems(label_root, (label_ext,))
    for stem in sorted(set(images) - set(labels)):
        problems.append(
            Problem(
                "missing_label",
                images[stem],
                f"image has no label map {stem}{label_ext} in {label_root}",
            )
        )
    for stem in sorted(set(labels) - set(images)):
        problems.append(
            Problem(
                "orphan_label",
                labels[stem],
                f"label map has no image with the same name in {image_root}",
            )
        )
    return problems


def _mispaired(records, image_root: str, label_root: str) -> List[Problem]:
    """Records whose image and label map do not have the same path stem under their roots."""

    def stem(path, root):
        return os.path.splitext(os.path.normpath(os.path.relpath(path, root)))[0]

    problems = []
    for r in records:
        image, label = r.get("file_name"), r.get("sem_seg_file_name")
        if image and label and stem(image, image_root) != stem(label, label_root):
            problems.append(
                Problem(
                    "mispaired", image, f"paired with the label map {label}, which has another name"
                )
            )
    return problems


def _progress(iterable: Iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="img")


def check_sem_seg_dataset(
    name: str,
    expected_count: Optional[int] = None,
    max_images: Optional[int] = None,
    num_workers: int = 0,
    progress: bool = False,
) -> DatasetCheckReport:
    """Check a registered semantic-segmentation dataset; never raises for a data problem.

    Args:
        name: a name in detectron2's DatasetCatalog whose metadata has `stuff_classes`
            (K = its length) and optionally `ignore_label` (default 255).
        expected_count: the number of records the split must have; None: the metadata's
            `expected_count`, else the official size declared at registration
            (catalog.official_size), else no count check; 0: no check.
        max_images: check only the first n records (the count check still sees all of them).
        num_workers: > 0 reads the files in that many processes.
        progress: show a progress bar (tqdm).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    report = DatasetCheckReport(name=name)
    if name not in DatasetCatalog.list():
        known = semantic_segmentation_datasets()
        report.problems.append(
            Problem(
                "load",
                name,
                f"no such dataset in DatasetCatalog; the semantic-segmentation names are: {', '.join(known)}",
            )
        )
        return report
    meta = MetadataCatalog.get(name)
    classes = meta.get("stuff_classes", None)
    if not classes:
        report.problems.append(
            Problem(
                "load", name, "metadata has no stuff_classes, so the number of classes K is unknown"
            )
        )
        return report
    report.class_names = list(classes)
    report.ignore_label = int(meta.get("ignore_label", 255))
    num_classes = len(report.class_names)
    report.pixel_counts = np.zeros(num_classes, np.int64)
    report.image_counts = np.zeros(num_classes, np.int64)

    image_root, label_root = meta.get("image_root", None), meta.get("sem_seg_root", None)
    if image_root and label_root:
        report.problems.extend(_unmatched_files(image_root, label_root))

    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # noqa: BLE001 -- a missing folder etc. is a finding, not a crash
        report.problems.append(Problem("load", name, f"{type(e).__name__}: {e}"))
        return report
    report.num_records = len(records)

    if expected_count is None:
        expected_count = meta.get("expected_count", None) or official_size(name)
    report.expected_count = expected_count or None
    if expected_count and len(records) != expected_count:
        report.problems.append(
            Problem(
                "count",
                name,
                f"{len(records)} records, the official "
                f"split has {expected_count} (pass --expected-count 0 to "
                "check a subset)",
            )
        )

    if image_root and label_root:  # load_sem_seg pairs sorted lists by position when their
        report.problems.extend(_mispaired(records, image_root, label_root))  # lengths agree

    todo = records if max_images is None else records[:max_images]
    report.num_checked = len(todo)
    jobs = [(r, num_classes, report.ignore_label) for r in todo]
    if num_workers > 0 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context().Pool(num_workers) as pool:
            results = list(
                _progress(
                    pool.imap(_check_record_star, jobs, chunksize=8),
                    len(jobs),
                    progress,
                    f"checking {name}",
                )
            )
    else:
        results = [
            check_record(*j) for j in _progress(jobs, len(jobs), progress, f"checking {name}")
        ]

    already = {(p.kind, p.file) for p in report.problems}
    for result in results:
        for p in result["problems"]:
            if (p.kind, p.file) not in already:
                report.problems.append(p)
        values, counts = result["values"], result["counts"]
        known = (values >= 0) & (values < num_classes)
        report.pixel_counts[values[known]] += counts[known]
        report.image_counts[values[known]] += 1
        report.ignore_pixels += int(counts[values == report.ignore_label].sum())
    return report
