"""gmmseg.evaluation.anomaly_figures: colour ranges from known pixels, colouring, and the figure's
panels found at their fixed pixel positions in the PNG."""

import numpy as np
import pytest
from PIL import Image

from gmmseg.evaluation.anomaly_figures import (
    MASK_COLORS,
    ScorePanel,
    colorize,
    figure_layout,
    known_pixel_range,
    mask_to_rgb,
    write_anomaly_figure,
)

# inferno's first and last colours (matplotlib's table), as uint8 RGB
INFERNO_LOW, INFERNO_HIGH = (0, 0, 4), (252, 255, 164)


def test_range_takes_percentiles_of_the_known_pixels_only():
    maps = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 100.0], [5.0, 6.0]])]
    masks = [np.array([[0, 0], [0, 1]]), np.array([[0, 1], [255, 0]])]
    # known values 0, 1, 2, 4, 6 (3 and 100 are anomalies, 5 is void): median 2; the 90th
    # percentile at position 0.9 * 4 = 3.6 between 4 and 6: 5.2
    assert known_pixel_range(maps, masks, (50, 90)) == pytest.approx((2.0, 5.2))
    assert known_pixel_range(maps, masks, (0, 100)) == pytest.approx((0.0, 6.0))


def test_range_of_constant_known_pixels_is_not_empty_and_errors_name_the_problem():
    lo, hi = known_pixel_range([np.full((2, 2), 3.0)], [np.zeros((2, 2), int)])
    assert lo == 3.0 and hi > lo
    with pytest.raises(ValueError, match="no known pixel"):
        known_pixel_range([np.zeros((2, 2))], [np.ones((2, 2), int)])
    with pytest.raises(ValueError, match=r"score map 0 is \(2, 2\), its anomaly mask \(2, 3\)"):
        known_pixel_range([np.zeros((2, 2))], [np.zeros((2, 3), int)])


def test_colorize_is_linear_between_lo_and_hi_and_clipped_outside():
    rgb = colorize(np.array([[-5.0, 2.0, 6.0, 100.0]]), (2.0, 6.0))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert [tuple(c) for c in rgb[0]] == [INFERNO_LOW, INFERNO_LOW, INFERNO_HIGH, INFERNO_HIGH]
    middle = colorize(np.array([[4.0]]), (2.0, 6.0))[0, 0]
    assert tuple(middle) != INFERNO_LOW and tuple(middle) != INFERNO_HIGH
    assert tuple(colorize(np.array([[40.0]]), (20.0, 60.0))[0, 0]) == tuple(
        middle
    )  # only the position counts


def test_mask_colours():
    rgb = mask_to_rgb(np.array([[0, 1, 255, 7]]))
    assert [tuple(c) for c in rgb[0]] == [
        MASK_COLORS["known"],
        MASK_COLORS["anomaly"],
        MASK_COLORS["void"],
        MASK_COLORS["void"],
    ]


def test_figure_panels_sit_at_their_layout_positions(tmp_path):
    h, w = 12, 16
    images = [
        np.full((h, w, 3), (200, 30, 30), np.uint8),
        np.full((h, w, 3), (30, 200, 30), np.uint8),
    ]
    masks = [np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)]
    masks[1][:, : w // 2] = 1  # image 2: left half anomalous
    score = ScorePanel("s", [np.full((h, w), 2.0), np.full((h, w), 9.0)], (2.0, 6.0))
    path = write_anomaly_figure(
        str(tmp_path / "f" / "fig.png"), images, masks, [score], ["a", "b"], "title"
    )
    layout = figure_layout(h, w, rows=2, columns=3)
    with Image.open(path) as im:
        png = np.asarray(im.convert("RGB")).astype(int)
    assert png.shape[:2] == layout["size"]
    ph, pw = layout["panel"]

    def at(r, c, fy=0.5, fx=0.5):  # a pixel inside panel (r, c), away from its edges
        y, x = layout["origin"][r][c]
        return png[y + int(ph * fy), x + int(pw * fx)]

    expected = {
        (0, 0, 0.5): (200, 30, 30),
        (1, 0, 0.5): (30, 200, 30),
        (0, 1, 0.5): MASK_COLORS["known"],
        (1, 1, 0.25): MASK_COLORS["anomaly"],
        (1, 1, 0.75): MASK_COLORS["known"],
        (0, 2, 0.5): INFERNO_LOW,  # 2.0 = lo
        (1, 2, 0.5): INFERNO_HIGH,  # 9.0 > hi
    }
    for (r, c, fx), colour in expected.items():
        assert np.abs(at(r, c, fx=fx) - colour).max() <= 2, (r, c, fx, at(r, c, fx=fx), colour)


def test_figure_refuses_mismatched_inputs(tmp_path):
    image, mask = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="panel 's' has 1 maps for 2 images"):
        write_anomaly_figure(
            str(tmp_path / "x.png"), [image, image], [mask, mask], [ScorePanel("s", [mask], (0, 1))]
        )
    with pytest.raises(ValueError, match=r"image 1 is \(4, 5\)"):
        write_anomaly_figure(
            str(tmp_path / "x.png"), [image, np.zeros((4, 5, 3), np.uint8)], [mask, mask], []
        )
