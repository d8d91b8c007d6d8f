"""Pictures of anomaly maps: a few images per figure, one row per image (the image, its
ground-truth anomaly mask, then one panel per score map), every score on one colour scale for all
images of a split.

A score's scale is fixed by its values on the split's known pixels (anomaly mask 0):
`known_pixel_range` gives two percentiles of them (default the median and the 99th percentile),
so in every panel of that score black is "as ordinary as the median known pixel" and the brightest
colour "beyond 99 % of the known pixels". Scores in different units (log-likelihoods, logits,
probabilities) are then shown on comparable scales: what lights up is what the score ranks above
the known pixels, as the AUROC measures it.

`colorize` maps a score to RGB on such a scale; `write_anomaly_figure` lays the panels out at fixed
pixel positions (`figure_layout`), so a panel's pixels can be found in the PNG. Plain NumPy arrays
in, a PNG out (matplotlib, Agg backend).
"""

import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

__all__ = [
    "KNOWN_PERCENTILES",
    "MASK_COLORS",
    "ScorePanel",
    "known_pixel_range",
    "colorize",
    "mask_to_rgb",
    "figure_layout",
    "write_anomaly_figure",
]

KNOWN_PERCENTILES = (50.0, 99.0)  # a score's colour range: these percentiles of its known pixels
CMAP = "inferno"
# the ground-truth panel: known pixels, anomalies, void (anomaly mask 0, 1, anything else)
MASK_COLORS = {"known": (40, 40, 40), "anomaly": (255, 255, 255), "void": (110, 150, 200)}


@dataclass(frozen=True)
class ScorePanel:
    """One column of a figure: a score's maps (one per image, higher = more anomalous), its colour
    range (lo, hi) and the column's title."""

    title: str
    maps: Sequence[np.ndarray]
    value_range: Tuple[float, float]


def known_pixel_range(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    percentiles: Sequence[float] = KNOWN_PERCENTILES,
) -> Tuple[float, float]:
    """(lo, hi): the two `percentiles` (NumPy's linear interpolation) of the score over the known
    pixels (mask == 0) of all images. ValueError when no pixel is known or a map and its mask
    differ in shape; hi is nudged above lo when the known pixels are all equal."""
    known = []
    for i, (m, k) in enumerate(zip(maps, masks)):
        if np.shape(m) != np.shape(k):
            raise ValueError(f"score map {i} is {np.shape(m)}, its anomaly mask {np.shape(k)}")
        known.append(np.asarray(m, np.float64)[np.asarray(k) == 0])
    values = np.concatenate(known) if known else np.empty(0)
    if values.size == 0:
        raise ValueError(
            "no known pixel (anomaly mask 0) in these images: the colour range needs some"
        )
    lo, hi = (float(v) for v in np.percentile(values, list(percentiles)))
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    return lo, hi


def colorize(score: np.ndarray, value_range: Tuple[float, float], cmap: str = CMAP) -> np.ndarray:
    """(H, W) score -> (H, W, 3) uint8 RGB: lo and below the colour map's first colour, hi and above
    its last, linear in between."""
    lo, hi = value_range
    norm = Normalize(vmin=lo, vmax=hi, clip=True)(np.asarray(score, np.float64))
    return (colormaps[cmap](np.asarray(norm))[..., :3] * 255 + 0.5).astype(np.uint8)


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) anomaly mask (1 anomaly, 0 known, else void) -> (H, W, 3) uint8 in MASK_COLORS."""
    mask = np.asarray(mask)
    out = np.empty(mask.shape + (3,), np.uint8)
    out[...] = MASK_COLORS["void"]
    out[mask == 0] = MASK_COLORS["known"]
    out[mask == 1] = MASK_COLORS["anomaly"]
    return out


# Fixed layout in pixels (PNG at DPI 100): panels of the image's size times SCALE, with room above
# the first row for the column titles, left of each row for its name, below the last for colour bars.
SCALE, DPI = 2, 100
_LEFT, _TOP, _GAP, _BOTTOM, _RIGHT = 28, 58, 6, 46, 8


def figure_layout(height: int, width: int, rows: int, columns: int) -> dict:
    """Pixel geometry of a figure of `rows` images x `columns` panels of (height, width) images:
    {"size": (H, W) of the PNG, "panel": (h, w), "origin": [[(y, x) of panel (r, c)'s top left]]}."""
    ph, pw = height * SCALE, width * SCALE
    size = (
        _TOP + rows * ph + (rows - 1) * _GAP + _BOTTOM,
        _LEFT + columns * pw + (columns - 1) * _GAP + _RIGHT,
    )
    origin = [
        [(_TOP + r * (ph + _GAP), _LEFT + c * (pw + _GAP)) for c in range(columns)]
        for r in range(rows)
    ]
    return {"size": size, "panel": (ph, pw), "origin": origin}


def write_anomaly_figure(
    path: str,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    panels: Sequence[ScorePanel],
    row_names: Sequence[str] = (),
    title: str = "",
    scale_note: str = "known pixels: median .. 99th percentile",
) -> str:
    """One PNG: a row per image (RGB uint8 (H, W, 3), all of one size), with the image, its anomaly
    mask (white: anomaly, dark: known, blue: void) and one panel per ScorePanel; a colour bar under
    each score's column, labelled `scale_note` (what its ends mean). Returns `path`."""
    if not images:
        raise ValueError("write_anomaly_figure: no image")
    h, w = images[0].shape[:2]
    for i, (im, m) in enumerate(zip(images, masks)):
        if im.shape[:2] != (h, w) or np.shape(m) != (h, w):
            raise ValueError(
                f"image {i} is {im.shape[:2]} with a mask of {np.shape(m)}; the figure's are {(h, w)}"
            )
    for p in panels:
        if len(p.maps) != len(images):
            raise ValueError(f"panel {p.title!r} has {len(p.maps)} maps for {len(images)} images")
    if len(masks) != len(images):
        raise ValueError(f"{len(masks)} anomaly masks for {len(images)} images")
    rows, columns = len(images), 2 + len(panels)
    layout = figure_layout(h, w, rows, columns)
    fig_h, fig_w = layout["size"]
    ph, pw = layout["panel"]
    fig = plt.figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)

    def axes(y, x, height, width):  # pixels from the top left -> a figure-fraction rectangle
        ax = fig.add_axes([x / fig_w, 1 - (y + height) / fig_h, width / fig_w, height / fig_h])
        ax.set_axis_off()
        return ax

    titles = ["image", "ground truth\n(white: anomaly)"] + [p.title for p in panels]
    for r in range(rows):
        content: List[np.ndarray] = [images[r], mask_to_rgb(masks[r])]
        content += [colorize(p.maps[r], p.value_range) for p in panels]
        for c, rgb in enumerate(content):
            y, x = layout["origin"][r][c]
            ax = axes(y, x, ph, pw)
            ax.imshow(rgb, interpolation="nearest", aspect="auto")
            if r == 0:
                ax.set_title(titles[c], fontsize=8, pad=3)
        if r < len(row_names):
            y, x = layout["origin"][r][0]
            fig.text(
                4 / fig_w,
                1 - (y + ph / 2) / fig_h,
                row_names[r],
                rotation=90,
                va="center",
                fontsize=7,
            )
    bottom = layout["origin"][-1][0][0] + ph
    for c, p in enumerate(panels, start=2):
        _, x = layout["origin"][0][c]
        cax = fig.add_axes(
            [(x + 8) / fig_w, 1 - (bottom + 18) / fig_h, (pw - 16) / fig_w, 8 / fig_h]
        )
        bar = fig.colorbar(
            plt.cm.ScalarMappable(Normalize(*p.value_range), CMAP),
            cax=cax,
            orientation="horizontal",
        )
        bar.set_ticks(list(p.value_range), labels=[f"{v:.3g}" for v in p.value_range])
        for label, align in zip(bar.ax.get_xticklabels(), ("left", "right")):
            label.set_horizontalalignment(align)
        bar.ax.tick_params(labelsize=6, length=2, pad=1)
        bar.set_label(scale_note, fontsize=6, labelpad=1)
    if title:
        fig.text(0.5, 1 - 4 / fig_h, title, ha="center", va="top", fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
