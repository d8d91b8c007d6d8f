"""The demo dataset on disk: written once under `<root>/gmmseg_demo/`, complete or not at all.

    {train,val,anomaly,near}/images/NNNN.png  96 x 128 RGB
    {train,val,anomaly,near}/labels/NNNN.png  uint8 class ids, 255 = void
    {anomaly,near}/anomaly_masks/NNNN.png     1 = anomaly (far / near), 0 = known class, 255 = void
    generation.json                         seed, sizes and generator version

Generation goes to a hidden temporary folder that is renamed into place when complete, so an
interrupted run is never mistaken for a complete dataset. Image i of a split depends only on
(seed, split, i) (scene.py), so a larger split extends a smaller one.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, Mapping, Optional

import cv2

from ..common import datasets_root
from .scene import (
    ANOMALY_SPLITS,
    DEMO_CLASSES,
    DEMO_SPLITS,
    GENERATOR_VERSION,
    HEIGHT,
    WIDTH,
    render_scene,
    scene_rng,
)

__all__ = ["DEMO_DEFAULT_SIZES", "DEMO_DIRNAME", "generate_demo_dataset"]

logger = logging.getLogger(__name__)

DEMO_DEFAULT_SIZES = {"train": 300, "val": 60, "anomaly": 200, "near": 200}
DEMO_DIRNAME = "gmmseg_demo"
_MARKER = "generation.json"
_TMP_PREFIX = f".{DEMO_DIRNAME}.tmp-"


def _sizes(sizes: Optional[Mapping[str, int]]) -> Dict[str, int]:
    out = dict(DEMO_DEFAULT_SIZES)
    for k, v in (sizes or {}).items():
        if k not in out:
            raise KeyError(f"unknown demo split {k!r}; the splits are {DEMO_SPLITS}")
        if int(v) < 1:
            raise ValueError(f"demo split {k!r} needs at least one image, got {v}")
        out[k] = int(v)
    return out


def _spec(seed: int, sizes: Mapping[str, int]) -> dict:
    return {
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "sizes": dict(sizes),
        "height": HEIGHT,
        "width": WIDTH,
        "classes": list(DEMO_CLASSES),
    }


def _read_marker(folder: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, _MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_split(folder: str, split: str, seed: int, count: int) -> None:
    sub = ["images", "labels"] + (["anomaly_masks"] if split in ANOMALY_SPLITS else [])
    for s in sub:
        os.makedirs(os.path.join(folder, split, s))
    for i in range(count):
        scene = render_scene(
            scene_rng(seed, split, i),
            with_anomalies=split == "anomaly",
            near_anomalies=split == "near",
        )
        name = f"{i:04d}.png"
        ok = cv2.imwrite(os.path.join(folder, split, "images", name), scene["image"][:, :, ::-1])
        ok &= cv2.imwrite(os.path.join(folder, split, "labels", name), scene["label"])
        if split in ANOMALY_SPLITS:
            ok &= cv2.imwrite(
                os.path.join(folder, split, "anomaly_masks", name), scene["anomaly_mask"]
            )
        if not ok:
            raise OSError(f"could not write demo image {name} under {folder!r}")


def _remove_stale_tmp(parent: str, min_age_s: float = 600.0) -> None:
    """Delete temporary folders left by killed generations: their process no longer exists and
    they are older than `min_age_s` (a generation takes seconds; the age guard protects the
    folders of processes on other machines sharing the file system)."""
    now = time.time()
    for name in os.listdir(parent):
        if not name.startswith(_TMP_PREFIX):
            continue
        path = os.path.join(parent, name)
        try:
            pid = int(name[len(_TMP_PREFIX) :].split("-")[0])
            if now - os.stat(path).st_mtime < min_age_s:
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OSError):
            pass


def generate_demo_dataset(
    root: Optional[str] = None, seed: int = 0, sizes: Optional[Mapping[str, int]] = None
) -> str:
    """Write the demo dataset under `<root>/gmmseg_demo` unless an identical one is there.

    `sizes` overrides the number of images per split (default DEMO_DEFAULT_SIZES). A folder made
    by another seed, size or generator version is replaced. A folder without the generation
    marker was not written by this function and is left alone (error). Safe when several
    processes call it at once: each writes its own temporary folder, one rename wins.
    Returns the dataset folder.
    """
    sizes = _sizes(sizes)
    spec = _spec(seed, sizes)
    parent = datasets_root(root)
    final = os.path.join(parent, DEMO_DIRNAME)
    if os.path.isdir(final):
        marker = _read_marker(final)
        if marker == spec:
            return final
        if marker is None:
            raise FileExistsError(
                f"{final!r} exists but has no {_MARKER}: it was not written (completely) by the demo "
                f"generator. Delete it to let the generator write the demo dataset there."
            )
        logger.warning(
            "Demo dataset at %s was made with %s; regenerating with %s", final, marker, spec
        )
    os.makedirs(parent, exist_ok=True)
    _remove_stale_tmp(parent)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=parent)
    try:
        for split in DEMO_SPLITS:
            _write_split(tmp, split, seed, sizes[split])
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump(spec, f, indent=1)
        if os.path.isdir(final) and _read_marker(final) != spec:
            old = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-old-", dir=parent)
            os.rename(final, os.path.join(old, DEMO_DIRNAME))
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if _read_marker(final) != spec:  # not a concurrent writer of the same data
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "Generated the demo dataset (%s) in %s in %.1f s", sizes, final, time.perf_counter() - start
    )
    return final
