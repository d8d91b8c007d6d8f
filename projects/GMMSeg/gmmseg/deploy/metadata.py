"""What an exported file says about itself, so that it can be run without the config or the
checkpoint: input format and test-time resize, output names, class names and colours.

Stored as one JSON string: in an ONNX file as the metadata property "gmmseg", in a TorchScript
file as the extra file "gmmseg.json".
"""

import json
from typing import List, Optional

__all__ = [
    "METADATA_KEY",
    "TORCHSCRIPT_EXTRA_FILE",
    "FORMAT_VERSION",
    "export_metadata",
    "class_names_and_colors",
    "dumps",
    "loads",
]

METADATA_KEY = "gmmseg"
TORCHSCRIPT_EXTRA_FILE = "gmmseg.json"
FORMAT_VERSION = 1
_REQUIRED = (
    "format_version",
    "input_format",
    "min_size_test",
    "max_size_test",
    "outputs",
    "class_names",
)


def class_names_and_colors(cfg, num_classes: int):
    """(names, colours or None) of cfg.DATASETS.TEST[0] if it is registered with `num_classes`
    stuff classes, else ("class 0", ...) and None."""
    from detectron2.data import MetadataCatalog

    if len(cfg.DATASETS.TEST):
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        names = getattr(meta, "stuff_classes", None)
        if names is not None and len(names) == num_classes:
            colors = getattr(meta, "stuff_colors", None)
            return list(names), (
                [list(map(int, c)) for c in colors] if colors is not None else None
            )
    return [f"class {i}" for i in range(num_classes)], None


def export_metadata(cfg, num_classes: int, config_file: str = "", weights: str = "") -> dict:
    """The metadata of a model built from `cfg`; "outputs" is filled in by export.export_model."""
    names, colors = class_names_and_colors(cfg, num_classes)
    return {
        "format_version": FORMAT_VERSION,
        # the input: one image (3, H, W) float32 in 0..255, channels in this order, any H and W
        "input_format": cfg.INPUT.FORMAT,
        # DefaultPredictor's test-time resize (shortest edge, capped longest edge; 0 = none)
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "outputs": [],  # set by export.export_model, as "input_size": None (any) or [H, W] (only that)
        "class_names": names,
        "class_colors": colors,
        "predictor": cfg.MODEL.PREDICTOR.NAME,
        "config_file": config_file,
        "weights": weights,
    }


def dumps(metadata: dict) -> str:
    return json.dumps(metadata, sort_keys=True)


def loads(text: Optional[str], path: str) -> dict:
    """Parse and check the metadata of the exported file `path` (named in the errors)."""
    if not text:
        raise ValueError(
            f"{path}: no GMMSeg metadata ({METADATA_KEY!r}); export it with tools/deploy/export_model.py"
        )
    metadata = json.loads(text)
    missing: List[str] = [k for k in _REQUIRED if k not in metadata]
    if missing:
        raise ValueError(f"{path}: GMMSeg metadata lacks {missing}")
    if metadata["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path}: GMMSeg metadata format_version {metadata['format_version']}, this code reads "
            f"{FORMAT_VERSION}; export the model again"
        )
    return metadata
