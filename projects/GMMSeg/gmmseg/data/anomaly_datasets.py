"""Anomaly segmentation benchmarks, registered in detectron2's catalogs in their release layouts.

Every dataset dict has "file_name", "height", "width", "image_id", "anomaly_mask_file_name" and
"anomaly_mask_convention": the name of the rule (ANOMALY_MASK_CONVENTIONS) that turns the
release's label file into our convention, **1 = anomaly, 0 = known (in-distribution), 255 =
void**. `load_anomaly_mask(path, convention)` applies it; the AnomalyEvaluator calls it, so label
files are read as released and never rewritten. A label value the rule does not know stops with
a ValueError naming the file and the value. The dicts carry no "sem_seg_file_name": these sets
have no labels in the training classes, so only anomaly metrics apply.

Layouts, under the datasets root ($DETECTRON2_DATASETS, else ./datasets); see also
docs/DATASETS_ANOMALY.md:

fishyscapes_lost_and_found_val  (Fishyscapes Lost & Found validation, 100 images)
    fishyscapes/fishyscapes_lostandfound/NNNN_<laf_id>_labels.png
        the Fishyscapes release fishyscapes_lostandfound.zip, unzipped (files at top level);
        0 known, 1 anomaly, 255 void  ("fishyscapes" rule)
    lost_and_found/leftImg8bit/{train,test}/<scene>/<laf_id>_leftImg8bit.png
        the Lost and Found release leftImg8bit.zip; <scene> = <laf_id> without its last two
        "_" fields, e.g. 04_Maurener_Weg_8_000000_000030 -> 04_Maurener_Weg_8

fishyscapes_static_val  (Fishyscapes Static validation, v3.0.0, 30 images)
    fishyscapes/fs_val_v3/NNNN_<cityscapes_id>_labels.png   0 / 1 / 255 ("fishyscapes" rule)
    fishyscapes/fs_val_v3/NNNN_<cityscapes_id>_rgb.npz      key "rgb": (1024, 2048, 3) int overlay
        the Fishyscapes release fs_val_v3.zip, unzipped
    cityscapes/leftImg8bit/val/<city>/<cityscapes_id>_leftImg8bit.png   (Cityscapes release)
    fishyscapes/fs_val_v3_images/NNNN_<cityscapes_id>.png    the image the loader reads
    The image is clip(cityscapes image + overlay, 0, 255), as the release's own loader builds it;
    tools/prepare_fishyscapes_static.py composes them once (loading never writes: a missing
    composed image stops with an error naming it and that command).

road_anomaly  (Road Anomaly, Lis et al. ICCV 2019, 60 images)
    RoadAnomaly_jpg/frame_list.json                        list of image file names
    RoadAnomaly_jpg/frames/<name>.jpg
    RoadAnomaly_jpg/frames/<name>.labels/labels_semantic.png
        0 background, 1 road -> known; 2 (and any other value < 255) anomaly; 255 void
        ("road_anomaly" rule, as the SegmentMeIfYouCan tooling reads this release)

smiyc_road_anomaly21_val / smiyc_road_obstacle21_val  (SegmentMeIfYouCan, validation frames:
the frames whose labels the release ships; 10 and 30 images)
    dataset_AnomalyTrack/images/<frame>.jpg
    dataset_AnomalyTrack/labels_masks/<frame>_labels_semantic.png
    dataset_ObstacleTrack/images/<frame>.webp
    dataset_ObstacleTrack/labels_masks/<frame>_labels_semantic.png
        0 not anomaly (obstacle track: road), 1 anomaly, 255 void ("smiyc" rule)

camvid_static_shift_val  (the same 101 images through another camera: exposure, white balance, blur,
    resolution; tools/prepare_camvid_static.py --camera-shift, gmmseg/data/camera_shift.py)
    camvid_static_shift/val/images/<name>.png, camvid_static_shift/val/labels/<name>.png
camvid_static_val  (CamVid val, 101 images, one real object of a non-road class pasted into each)
    camvid_static/val/images/<name>.png
    camvid_static/val/labels/<name>.png     1 pasted object, 0 known, 255 void ("ours" rule)
        written by tools/prepare_camvid_static.py from COCO-format instance masks; void holds
        CamVid's void, the open-set split's withheld classes and the object's soft edge

Registration is lazy (nothing is read until DatasetCatalog.get(name)); the root is read from
the environment at that moment. Missing data raises FileNotFoundError naming the expected layout.
Loading only reads; gmmseg.data.register_all_datasets registers these names once, at import.
"""

import json
import logging
import os
import re
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .catalog import register_dataset
from .common import datasets_root, read_image_size, root_note

__all__ = [
    "ANOMALY_MASK_CONVENTIONS",
    "ANOMALY_DATASETS",
    "load_anomaly_mask",
    "load_fishyscapes_lost_and_found",
    "load_fishyscapes_static",
    "fishyscapes_static_files",
    "FS_STATIC_PREPARE_COMMAND",
    "load_road_anomaly",
    "load_smiyc",
    "load_camvid_static",
    "register_anomaly_datasets",
]

logger = logging.getLogger(__name__)

KNOWN, ANOMALY, VOID = 0, 1, 255
_INVALID = -1


def _lut(mapping: Dict[int, int], default: int = _INVALID) -> np.ndarray:
    lut = np.full(256, default, np.int16)
    for raw, ours in mapping.items():
        lut[raw] = ours
    return lut


def _road_anomaly_lut() -> np.ndarray:
    lut = np.full(256, ANOMALY, np.int16)  # any labelled object class (>= 2) is an anomaly
    lut[0] = lut[1] = KNOWN
    lut[255] = VOID
    return lut


_IDENTITY = {KNOWN: KNOWN, ANOMALY: ANOMALY, VOID: VOID}
#: name -> (256,) int16 lookup table raw label value -> ours (0 known, 1 anomaly, 255 void),
#: -1 for values that must not occur. Add an entry to support another release.
ANOMALY_MASK_CONVENTIONS: Dict[str, np.ndarray] = {
    "ours": _lut(_IDENTITY),  # the demo data and any set already in our convention
    "fishyscapes": _lut(_IDENTITY),  # Fishyscapes L&F and Static releases
    "smiyc": _lut(_IDENTITY),  # SegmentMeIfYouCan labels_masks
    "road_anomaly": _road_anomaly_lut(),
}


def load_anomaly_mask(path: str, convention: str = "ours") -> np.ndarray:
    """Read an anomaly label file and convert it: (H, W) uint8, 1 anomaly, 0 known, 255 void."""
    if convention not in ANOMALY_MASK_CONVENTIONS:
        raise KeyError(
            f"unknown anomaly mask convention {convention!r} for {path!r}; known: {sorted(ANOMALY_MASK_CONVENTIONS)}"
        )
    with Image.open(path) as im:
        raw = np.asarray(im)
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(
            f"anomaly label file {path!r}: expected a single-channel 8-bit image, "
            f"got shape {raw.shape} dtype {raw.dtype}"
        )
    mask = ANOMALY_MASK_CONVENTIONS[convention][raw]
    if (mask == _INVALID).any():
        bad = np.unique(raw[mask == _INVALID]).tolist()
        raise ValueError(
            f"anomaly label file {path!r} has value(s) {bad} that the {convention!r} convention does not define"
        )
    return mask.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Layouts (also used in error messages)
LAYOUT_FS_LAF = """  <root>/fishyscapes/fishyscapes_lostandfound/NNNN_<laf_id>_labels.png   (fishyscapes_lostandfound.zip)
  <root>/lost_and_found/leftImg8bit/{train,test}/<scene>/<laf_id>_leftImg8bit.png   (Lost and Found leftImg8bit.zip)"""
LAYOUT_FS_STATIC = """  <root>/fishyscapes/fs_val_v3/NNNN_<cityscapes_id>_labels.png and NNNN_<cityscapes_id>_rgb.npz   (fs_val_v3.zip)
  <root>/cityscapes/leftImg8bit/val/<city>/<cityscapes_id>_leftImg8bit.png   (Cityscapes)
  <root>/fishyscapes/fs_val_v3_images/NNNN_<cityscapes_id>.png   (written by tools/prepare_fishyscapes_static.py)"""
LAYOUT_ROAD_ANOMALY = """  <root>/RoadAnomaly_jpg/frame_list.json
  <root>/RoadAnomaly_jpg/frames/<name>.jpg
  <root>/RoadAnomaly_jpg/frames/<name>.labels/labels_semantic.png"""
LAYOUT_CAMVID_STATIC = """  <root>/camvid_static/val/images/<name>.png
  <root>/camvid_static/val/labels/<name>.png   (written by tools/prepare_camvid_static.py)"""
LAYOUT_SMIYC = """  <root>/{track_dir}/images/<frame>.{ext}
  <root>/{track_dir}/labels_masks/<frame>_labels_semantic.png"""


def _not_found(dataset: str, what: str, layout: str, root: Optional[str]) -> FileNotFoundError:
    """root: the loader's argument (None: $DETECTRON2_DATASETS), named as root_note says."""
    return FileNotFoundError(
        f"Dataset '{dataset}': {what}. Expected layout (<root> = {os.path.abspath(datasets_root(root))!r}; "
        f"{root_note(root)}):\n{layout}\nSee docs/DATASETS_ANOMALY.md."
    )


def _record(image: str, mask: str, convention: str, image_id: str) -> dict:
    h, w = read_image_size(image)
    return {
        "file_name": image,
        "height": h,
        "width": w,
        "image_id": image_id,
        "anomaly_mask_file_name": mask,
        "anomaly_mask_convention": convention,
    }


def _label_files(folder: str, suffix: str) -> List[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(suffix))


_FS_NAME = re.compile(r"^(\d+)_(.+)_labels\.png$")


def load_fishyscapes_lost_and_found(root: Optional[str] = None) -> List[dict]:
    """Fishyscapes Lost & Found validation (see the module docstring for the layout)."""
    name, folder = "fishyscapes_lost_and_found_val", datasets_root(root)
    label_dir = os.path.join(folder, "fishyscapes", "fishyscapes_lostandfound")
    image_dir = os.path.join(folder, "lost_and_found", "leftImg8bit")
    labels = _label_files(label_dir, "_labels.png")
    if not labels:
        raise _not_found(name, f"no *_labels.png in {label_dir!r}", LAYOUT_FS_LAF, root)
    records, missing = [], []
    for label in labels:
        m = _FS_NAME.match(label)
        if m is None:
            raise ValueError(
                f"Dataset '{name}': unexpected label file name {label!r} (expected NNNN_<laf_id>_labels.png)"
            )
        laf_id = m.group(2)
        scene = "_".join(laf_id.split("_")[:-2])
        candidates = [
            os.path.join(image_dir, split, scene, f"{laf_id}_leftImg8bit.png")
            for split in ("train", "test")
        ]
        image = next((c for c in candidates if os.path.isfile(c)), None)
        if image is None:
            missing.append(candidates[0])
            continue
        records.append(_record(image, os.path.join(label_dir, label), "fishyscapes", m.group(1)))
    if missing:
        raise _not_found(
            name,
            f"{len(missing)} Lost and Found image(s) missing, e.g. {missing[0]!r} (or the same under test/)",
            LAYOUT_FS_LAF,
            root,
        )
    return records


#: the command that composes the Fishyscapes Static images (named in the loader's error)
FS_STATIC_PREPARE_COMMAND = "python tools/prepare_fishyscapes_static.py"


def fishyscapes_static_files(root: Optional[str] = None) -> List[Dict[str, str]]:
    """The files of each Fishyscapes Static validation image, from the release's label files:
    id (NNNN), label, overlay (the release's *_rgb.npz), base (the Cityscapes image) and image
    (the composed image tools/prepare_fishyscapes_static.py writes). Only lists; reads no image.
    """
    name, folder = "fishyscapes_static_val", datasets_root(root)
    release = os.path.join(folder, "fishyscapes", "fs_val_v3")
    city_dir = os.path.join(folder, "cityscapes", "leftImg8bit", "val")
    labels = _label_files(release, "_labels.png")
    if not labels:
        raise _not_found(name, f"no *_labels.png in {release!r}", LAYOUT_FS_STATIC, root)
    files = []
    for label in labels:
        m = _FS_NAME.match(label)
        if m is None:
            raise ValueError(
                f"Dataset '{name}': unexpected label file name {label!r} (expected NNNN_<cityscapes_id>_labels.png)"
            )
        fs_id, cs_id = m.group(1), m.group(2)
        files.append(
            {
                "id": fs_id,
                "label": os.path.join(release, label),
                "overlay": os.path.join(release, f"{fs_id}_{cs_id}_rgb.npz"),
                "base": os.path.join(city_dir, cs_id.split("_")[0], f"{cs_id}_leftImg8bit.png"),
                "image": os.path.join(release + "_images", f"{fs_id}_{cs_id}.png"),
            }
        )
    return files


def load_fishyscapes_static(root: Optional[str] = None) -> List[dict]:
    """Fishyscapes Static validation v3 (see the module docstring); reads the composed images,
    which tools/prepare_fishyscapes_static.py writes once."""
    records = []
    for f in fishyscapes_static_files(root):
        if not os.path.isfile(f["image"]):
            raise FileNotFoundError(
                f"Dataset 'fishyscapes_static_val': the composed image {f['image']!r} does not exist; "
                f"write the composed images once with `{FS_STATIC_PREPARE_COMMAND}` (same datasets root; "
                f"{root_note(root)}). See docs/DATASETS_ANOMALY.md."
            )
        records.append(_record(f["image"], f["label"], "fishyscapes", f["id"]))
    return records


def load_road_anomaly(root: Optional[str] = None) -> List[dict]:
    """Road Anomaly (see the module docstring for the layout)."""
    name = "road_anomaly"
    base = os.path.join(datasets_root(root), "RoadAnomaly_jpg")
    list_file = os.path.join(base, "frame_list.json")
    if not os.path.isfile(list_file):
        raise _not_found(name, f"no {list_file!r}", LAYOUT_ROAD_ANOMALY, root)
    with open(list_file) as f:
        frames = json.load(f)
    records = []
    for frame in frames:
        image = os.path.join(base, "frames", frame)
        mask = os.path.join(
            base, "frames", os.path.splitext(frame)[0] + ".labels", "labels_semantic.png"
        )
        for path in (image, mask):
            if not os.path.isfile(path):
                raise _not_found(
                    name, f"missing {path!r} (listed in frame_list.json)", LAYOUT_ROAD_ANOMALY, root
                )
        records.append(_record(image, mask, "road_anomaly", os.path.splitext(frame)[0]))
    if not records:
        raise _not_found(name, f"{list_file!r} lists no frame", LAYOUT_ROAD_ANOMALY, root)
    return records


_SMIYC_TRACKS = {
    "smiyc_road_anomaly21_val": ("dataset_AnomalyTrack", "jpg"),
    "smiyc_road_obstacle21_val": ("dataset_ObstacleTrack", "webp"),
}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def load_smiyc(name: str, root: Optional[str] = None) -> List[dict]:
    """A SegmentMeIfYouCan track's frames that have labels (the validation frames)."""
    track_dir, ext = _SMIYC_TRACKS[name]
    layout = LAYOUT_SMIYC.format(track_dir=track_dir, ext=ext)
    base = os.path.join(datasets_root(root), track_dir)
    label_dir = os.path.join(base, "labels_masks")
    suffix = "_labels_semantic.png"
    labels = _label_files(label_dir, suffix)
    if not labels:
        raise _not_found(name, f"no *{suffix} in {label_dir!r}", layout, root)
    records = []
    for label in labels:
        frame = label[: -len(suffix)]
        candidates = [os.path.join(base, "images", frame + e) for e in _IMAGE_EXTS]
        image = next((c for c in candidates if os.path.isfile(c)), None)
        if image is None:
            raise _not_found(
                name,
                f"no image for label {label!r} in {os.path.join(base, 'images')!r}",
                layout,
                root,
            )
        records.append(_record(image, os.path.join(label_dir, label), "smiyc", frame))
    return records


def load_camvid_static(
    root: Optional[str] = None, name: str = "camvid_static_val", folder: str = "camvid_static"
) -> List[dict]:
    """CamVid val with pasted objects (tools/prepare_camvid_static.py), labels in our convention;
    `folder` "camvid_static_shift": the same through another camera (--camera-shift)."""
    base = os.path.join(datasets_root(root), folder, "val")
    labels = _label_files(os.path.join(base, "labels"), ".png")
    if not labels:
        raise _not_found(
            name,
            f"no *.png in {os.path.join(base, 'labels')!r}",
            LAYOUT_CAMVID_STATIC.replace("camvid_static/", folder + "/"),
            root,
        )
    records = []
    for label in labels:
        image = os.path.join(base, "images", label)
        if not os.path.isfile(image):
            raise _not_found(
                name,
                f"no image {image!r} for label {label!r}",
                LAYOUT_CAMVID_STATIC.replace("camvid_static/", folder + "/"),
                root,
            )
        records.append(_record(image, os.path.join(base, "labels", label), "ours", label[:-4]))
    return records


#: dataset name -> (loader(root=None) -> list of dataset dicts, anomaly_mask_convention)
_BENCHMARKS: Dict[str, Tuple[Callable[[Optional[str]], List[dict]], str]] = {
    "fishyscapes_lost_and_found_val": (load_fishyscapes_lost_and_found, "fishyscapes"),
    "fishyscapes_static_val": (load_fishyscapes_static, "fishyscapes"),
    "road_anomaly": (load_road_anomaly, "road_anomaly"),
    "smiyc_road_anomaly21_val": (partial(load_smiyc, "smiyc_road_anomaly21_val"), "smiyc"),
    "smiyc_road_obstacle21_val": (partial(load_smiyc, "smiyc_road_obstacle21_val"), "smiyc"),
    "camvid_static_val": (load_camvid_static, "ours"),
    "camvid_static_shift_val": (
        partial(load_camvid_static, name="camvid_static_shift_val", folder="camvid_static_shift"),
        "ours",
    ),
}
#: dataset name -> loader(root=None) -> list of dataset dicts
ANOMALY_DATASETS: Dict[str, Callable[[Optional[str]], List[dict]]] = {
    n: load for n, (load, _) in _BENCHMARKS.items()
}


def register_anomaly_datasets(root: Optional[str] = None) -> List[str]:
    """Register the benchmarks above (lazy). `root` None: $DETECTRON2_DATASETS at load time.

    Metadata: anomaly_eval=True (read by gmmseg.evaluation.build_open_world_evaluators),
    ignore_label=255, anomaly_mask_convention. Re-registering replaces the previous entry.
    """
    for name, (loader, convention) in _BENCHMARKS.items():
        meta = dict(
            anomaly_eval=True,
            has_anomaly_masks=True,
            ignore_label=VOID,
            evaluator_type="anomaly",
            anomaly_mask_convention=convention,
        )
        register_dataset(name, partial(loader, root), meta)
    return list(_BENCHMARKS)
