"""Far-from-distribution anomalies made the way Fishyscapes Static was: real segmented objects of
classes that never occur in the training data, pasted onto in-distribution images with a soft
edge. Used by tools/prepare_camvid_static.py (COCO instances onto CamVid val).

An object is an RGB crop and its binary mask (from a COCO instance annotation). Pasting scales it
to a random height, puts its bottom edge at a random place in the lower part of the image (road
scenes: objects stand on the ground), and alpha-blends it with its mask blurred by a Gaussian
(the feathered edge). The anomaly mask in this project's convention (1 anomaly, 0 known, 255
void): 1 where the blended alpha >= 0.5, 255 on the rest of the soft edge (alpha in (0, 0.5)),
and elsewhere the image's own known / void pixels.
"""

import contextlib
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "PastedObject",
    "ROAD_SCENE_CATEGORIES",
    "coco_objects",
    "paste_object",
    "iter_assignments",
]

# COCO categories that are (or look like) classes of road scenes such as CamVid's (pedestrians,
# cyclists, vehicles, street furniture, plants): never pasted, they would not be anomalies.
ROAD_SCENE_CATEGORIES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "potted plant",
)


@dataclass
class PastedObject:
    """An object cut out of its source image: `rgb` (h, w, 3) uint8 and `mask` (h, w) bool, with
    where it came from (for the manifest and the attribution)."""

    rgb: np.ndarray
    mask: np.ndarray
    category: str
    source: Dict


def coco_objects(
    annotation_json: str,
    images_dir: str,
    *,
    min_area: int = 1000,
    exclude: Sequence[str] = ROAD_SCENE_CATEGORIES,
) -> List[PastedObject]:
    """The instances of a COCO-format annotation file that can be pasted: not crowd, mask area
    >= `min_area` pixels, category not in `exclude`; each cut to its mask's bounding box."""
    from PIL import Image
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(annotation_json)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    unknown = sorted(set(exclude) - set(names.values()))
    if unknown and names:
        raise ValueError(
            f"{annotation_json}: excluded categories {unknown} are not categories of this file"
        )
    objects = []
    for ann in sorted(coco.loadAnns(coco.getAnnIds(iscrowd=False)), key=lambda a: a["id"]):
        if names[ann["category_id"]] in exclude:
            continue
        mask = coco.annToMask(ann).astype(bool)
        if mask.sum() < min_area:
            continue
        info = coco.loadImgs(ann["image_id"])[0]
        path = f"{images_dir}/{info['file_name']}"
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        if rgb.shape[:2] != mask.shape:
            raise ValueError(
                f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, its annotation {ann['id']} in "
                f"{annotation_json} is {mask.shape[1]}x{mask.shape[0]}"
            )
        ys, xs = np.nonzero(mask)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        source = {
            "image_id": ann["image_id"],
            "annotation_id": ann["id"],
            "file_name": info["file_name"],
            "license": info.get("license"),
            "url": info.get("flickr_url") or info.get("coco_url"),
        }
        objects.append(
            PastedObject(rgb[box].copy(), mask[box].copy(), names[ann["category_id"]], source)
        )
    return objects


def paste_object(
    image: np.ndarray,
    known: np.ndarray,
    obj: PastedObject,
    rng: np.random.Generator,
    *,
    height_range=(0.15, 0.4),
    bottom_range=(0.55, 0.95),
    max_width: float = 0.6,
    feather_sigma: float = 1.5,
    position: Optional[tuple] = None,
):
    """Paste `obj` into `image` (H, W, 3) uint8. `known` (H, W) uint8: 0 known pixel, 255 void.

    The object's height is `height_range` x H (its width then follows its aspect ratio, at most
    `max_width` x W), its bottom edge at `bottom_range` x H, left edge uniform. `position`
    (top, left, height, width) fixes the placement instead (tests). Returns (new image, anomaly
    mask (H, W) uint8 in {0, 1, 255}, placement dict)."""
    h_img, w_img = image.shape[:2]
    oh, ow = obj.mask.shape
    if position is None:
        height = rng.uniform(*height_range) * h_img
        scale = min(height / oh, max_width * w_img / ow)
        height, width = max(int(round(oh * scale)), 1), max(int(round(ow * scale)), 1)
        bottom = int(round(rng.uniform(*bottom_range) * h_img))
        top = int(np.clip(bottom - height, 0, h_img - height))
        left = int(rng.integers(0, max(w_img - width, 0) + 1))
    else:
        top, left, height, width = position
    rgb = cv2.resize(
        obj.rgb, (width, height), interpolation=cv2.INTER_AREA if height < oh else cv2.INTER_LINEAR
    )
    hard = (
        cv2.resize(obj.mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        >= 0.5
    )
    # the feathered edge: the mask blurred, on a canvas with room for the blur outside the box
    pad = int(np.ceil(3 * feather_sigma)) if feather_sigma > 0 else 0
    canvas = np.zeros((h_img + 2 * pad, w_img + 2 * pad), np.float32)
    canvas[top + pad : top + pad + height, left + pad : left + pad + width] = hard
    if feather_sigma > 0:
        canvas = cv2.GaussianBlur(canvas, (2 * pad + 1, 2 * pad + 1), feather_sigma)
    alpha = canvas[pad : pad + h_img, pad : pad + w_img]
    layer = np.zeros_like(image, dtype=np.float32)
    layer[top : top + height, left : left + width] = rgb
    # outside the box the layer is 0 but so is the object mask, whose blur can reach there only
    # through pixels next to the object: fill them with the nearest object colours
    if feather_sigma > 0:
        layer = _extend_colours(layer, hard, top, left, pad)
    out = alpha[..., None] * layer + (1 - alpha[..., None]) * image.astype(np.float32)
    anomaly = np.where(known == 255, 255, 0).astype(np.uint8)
    anomaly[alpha > 0] = 255
    anomaly[alpha >= 0.5] = 1
    placement = {"top": top, "left": left, "height": height, "width": width}
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), anomaly, placement


def _extend_colours(layer, hard, top, left, pad):
    """`layer` with the pixels within `pad` of the object (inside its box or outside) set to the
    colour of the nearest object pixel, so that the soft edge blends object colours, not black."""
    h_img, w_img = layer.shape[:2]
    height, width = hard.shape
    y0, x0 = max(top - pad, 0), max(left - pad, 0)
    y1, x1 = min(top + height + pad, h_img), min(left + width + pad, w_img)
    region_mask = np.zeros((y1 - y0, x1 - x0), bool)
    region_mask[top - y0 : top - y0 + height, left - x0 : left - x0 + width] = hard
    if not region_mask.any():
        return layer
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~region_mask, return_indices=True)
    region = layer[y0:y1, x0:x1]
    layer[y0:y1, x0:x1] = region[iy, ix]
    return layer


def iter_assignments(num_images: int, num_objects: int, rng: np.random.Generator) -> List[int]:
    """Object index per image: every object used as evenly as possible, in a random order."""
    order = []
    while len(order) < num_images:
        order.extend(rng.permutation(num_objects).tolist())
    return order[:num_images]
