"""A change of camera, simulated on an image: exposure, colour balance, blur and resolution.

`camera_shift(image, rng)` draws one camera per image (seeded) and renders the image through it, at
the image's own size (so its labels stay valid): a lower resolution (downscaled by 0.35-0.6, then
upscaled back bilinearly), a defocus or motion blur (Gaussian, radius 0.8-2 pixels), another
exposure (gain 0.55-0.8 or 1.25-1.6, then clipping) and another white balance (per-channel gains
0.8-1.2). tools/prepare_camvid_static.py --camera-shift writes camvid_static_shift_val with it: the
far anomalies of camvid_static_val seen through another camera, a test of whether a score survives
a shift that lowers every pixel's likelihood, not only the anomalies'.
"""

from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["camera_shift", "CAMERA_RANGES"]

CAMERA_RANGES = {
    "scale": (0.35, 0.6),
    "blur": (0.8, 2.0),
    "gain_dark": (0.55, 0.8),
    "gain_bright": (1.25, 1.6),
    "channel_gain": (0.8, 1.2),
}


def camera_shift(
    image: np.ndarray, rng: np.random.Generator
) -> Tuple[np.ndarray, Dict[str, float]]:
    """(H, W, 3) uint8 RGB -> the same image through a random other camera (H, W, 3) uint8, and the
    camera's parameters."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"camera_shift needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    r = CAMERA_RANGES
    params = {
        "scale": float(rng.uniform(*r["scale"])),
        "blur": float(rng.uniform(*r["blur"])),
        "gain": float(rng.uniform(*(r["gain_dark"] if rng.random() < 0.5 else r["gain_bright"]))),
        "channel_gains": [float(g) for g in rng.uniform(*r["channel_gain"], size=3)],
    }
    h, w = image.shape[:2]
    im = Image.fromarray(image)
    small = (max(1, round(w * params["scale"])), max(1, round(h * params["scale"])))
    im = im.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    im = im.filter(ImageFilter.GaussianBlur(params["blur"]))
    out = (
        np.asarray(im).astype(np.float32)
        * params["gain"]
        * np.asarray(params["channel_gains"], np.float32)
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), params
