"""The demo scenes: procedurally rendered street scenes, each deterministic from (seed, split, index).

Six classes: sky, road, building, tree, car, person. "building" has two appearances that share
no colour or texture (red brick with mortar joints and dark windows vs a blue glass curtain wall
with a frame grid), so one Gaussian per class cannot model it. Every image also varies in
lighting (gain, colour cast, left-right gradient), sensor noise and blur; some show the ego
vehicle's bonnet at the bottom, which is labelled void (255).

Two anomaly splits render scenes like the val split with objects of a category no training image
has; their pixels are 255 in the semantic label and 1 in the anomaly mask:
- "anomaly" (far): 1-3 geometric objects in never-seen saturated colours (magenta / lime / cyan
  checkerboards and stripes), pasted over the scene;
- "near": 1-2 animals (a four-legged body, head and tail in natural fur colours: brown, tan, grey,
  black, with a soft fur texture), standing on the road among the cars and people and occluded by
  them like any object: a new category whose colours and scale are those of the known street.
"""

from typing import Dict

import cv2
import numpy as np

__all__ = [
    "DEMO_CLASSES",
    "DEMO_COLORS",
    "DEMO_SPLITS",
    "ANOMALY_SPLITS",
    "APPEARANCES",
    "GENERATOR_VERSION",
    "HEIGHT",
    "WIDTH",
    "IGNORE",
    "render_scene",
    "scene_rng",
]

DEMO_CLASSES = ("sky", "road", "building", "tree", "car", "person")
DEMO_COLORS = [
    (70, 130, 180),
    (128, 64, 128),
    (70, 70, 70),
    (107, 142, 35),
    (0, 0, 142),
    (220, 20, 60),
]
SKY, ROAD, BUILDING, TREE, CAR, PERSON = range(6)
IGNORE = 255
HEIGHT, WIDTH = 96, 128
DEMO_SPLITS = ("train", "val", "anomaly", "near")
ANOMALY_SPLITS = ("anomaly", "near")  # the splits with anomaly masks: far and near anomalies
_SPLIT_CODE = {"train": 1, "val": 2, "anomaly": 3, "near": 4}
# Bump when the renderer changes: an existing folder from another version is regenerated.
GENERATOR_VERSION = 3

# Finer than classes: which appearance drew each pixel (used by tests and analysis).
APPEARANCES = (
    "sky",
    "road",
    "building_brick",
    "building_glass",
    "tree",
    "car",
    "person",
    "anomaly",
    "void",
    "animal",
)
A_SKY, A_ROAD, A_BRICK, A_GLASS, A_TREE, A_CAR, A_PERSON, A_ANOMALY, A_VOID, A_ANIMAL = range(10)
APPEARANCE_TO_CLASS = np.array(
    [SKY, ROAD, BUILDING, BUILDING, TREE, CAR, PERSON, IGNORE, IGNORE, IGNORE], np.uint8
)

_YY, _XX = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)

# Object palettes. None contains the anomaly colours (saturated magenta, lime, cyan).
_CAR_COLORS = np.array(
    [
        (225, 225, 222),
        (168, 172, 178),
        (35, 36, 42),
        (140, 22, 28),
        (32, 44, 100),
        (218, 186, 40),
        (90, 96, 60),
        (120, 70, 30),
    ],
    np.float32,
)
_SHIRT_COLORS = np.array(
    [
        (200, 40, 40),
        (40, 70, 160),
        (235, 235, 230),
        (30, 30, 30),
        (230, 150, 30),
        (60, 120, 70),
        (150, 110, 80),
        (110, 60, 120),
    ],
    np.float32,
)
_SKIN_COLORS = np.array([(232, 192, 162), (196, 142, 102), (120, 80, 58)], np.float32)
# fur of the near split's animals: natural colours, none of them the anomaly palette's
_FUR_COLORS = np.array(
    [(120, 78, 40), (176, 132, 84), (150, 146, 140), (34, 30, 28), (200, 170, 120)], np.float32
)
_ANOMALY_COLORS = np.array([(255, 0, 255), (0, 255, 0), (0, 255, 255), (255, 0, 160)], np.float32)


# ---------------------------------------------------------------------------- rendering helpers
def _smooth_noise(rng, cells_y: int, cells_x: int, h: int = HEIGHT, w: int = WIDTH) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random grid upsampled bicubically to (h, w)."""
    grid = rng.random((cells_y, cells_x), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _paint(img, label, app, mask, color, cls: int, appearance: int) -> None:
    """Write `color` ((H, W, 3) or (3,)) into the masked pixels and set their label/appearance."""
    np.copyto(img, np.asarray(color, np.float32), where=mask[..., None])
    np.copyto(label, np.uint8(cls), where=mask)
    np.copyto(app, np.uint8(appearance), where=mask)


def _rect_mask(y0, y1, x0, x1) -> np.ndarray:
    return (_YY >= y0) & (_YY < y1) & (_XX >= x0) & (_XX < x1)


def _ellipse_mask(cy, cx, ry, rx) -> np.ndarray:
    return ((_YY - cy) / max(ry, 0.5)) ** 2 + ((_XX - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _sky(rng, img, label, app, horizon: int) -> None:
    top = np.array([60, 120, 205], np.float32) + rng.uniform(-20, 20, 3)
    bottom = np.array([175, 205, 235], np.float32) + rng.uniform(-15, 15, 3)
    t = np.clip(_YY / max(horizon, 1), 0, 1)[..., None]
    sky = top * (1 - t) + bottom * t
    clouds = np.clip((_smooth_noise(rng, 4, 6) - rng.uniform(0.45, 0.75)) * 3.0, 0, 1)[..., None]
    sky = sky * (1 - clouds) + np.float32(242) * clouds
    _paint(img, label, app, _YY < horizon, sky, SKY, A_SKY)


def _road(rng, img, label, app, horizon: int) -> None:
    grey = rng.uniform(80, 125)
    base = np.array([grey, grey, grey + rng.uniform(-4, 8)], np.float32)
    depth = np.clip((_YY - horizon) / (HEIGHT - horizon), 0, 1)
    shade = (0.85 + 0.25 * depth)[..., None]
    grain = (rng.standard_normal((HEIGHT, WIDTH)).astype(np.float32) * 7)[..., None]
    road = base * shade + grain + (_smooth_noise(rng, 6, 8)[..., None] - 0.5) * 20
    # A dashed centre line converging to the vanishing point.
    vx = WIDTH / 2 + rng.uniform(-25, 25)
    line_x = vx + (_YY - horizon) * rng.uniform(-0.5, 0.5)
    half = 0.4 + 1.6 * depth
    dashes = np.sin(8.0 / (depth + 0.15) + rng.uniform(0, 6.28)) > 0
    marking = (np.abs(_XX - line_x) < half) & dashes & (depth > 0.05)
    paint = (
        np.array([235, 230, 205], np.float32)
        if rng.random() < 0.7
        else np.array([230, 200, 60], np.float32)
    )
    road = np.where(marking[..., None], paint * shade, road)
    _paint(img, label, app, _YY >= horizon, road, ROAD, A_ROAD)


def _brick(rng, h: int, w: int) -> np.ndarray:
    """(h, w, 3) red brick facade: per-brick colour jitter, light mortar joints, dark windows."""
    bh, bw = int(rng.integers(3, 6)), int(rng.integers(7, 12))
    yy, xx = np.mgrid[0:h, 0:w]
    row = yy // bh
    shifted = xx + (row % 2) * (bw // 2)
    col = shifted // bw
    base = np.array([rng.uniform(135, 175), rng.uniform(45, 75), rng.uniform(30, 55)], np.float32)
    jitter = rng.uniform(-18, 18, (64, 64)).astype(np.float32)
    tex = base + jitter[row % 64, col % 64][..., None] * np.array([1.0, 0.6, 0.5], np.float32)
    mortar = ((yy % bh) == 0) | ((shifted % bw) == 0)
    tex[mortar] = (190, 182, 170)
    if rng.random() < 0.8:  # rows of dark windows
        ww, wh, sx, sy = (
            rng.integers(3, 6),
            rng.integers(4, 7),
            rng.integers(8, 13),
            rng.integers(10, 15),
        )
        win = (
            ((xx % sx) >= sx - ww)
            & ((yy % sy) >= 3)
            & ((yy % sy) < 3 + wh)
            & (xx > 2)
            & (xx < w - 2)
        )
        tex[win] = (38, 38, 48)
    return tex


def _glass(rng, h: int, w: int) -> np.ndarray:
    """(h, w, 3) blue glass curtain wall: panes with their own brightness, a reflection, a frame grid."""
    pw, ph = int(rng.integers(5, 9)), int(rng.integers(5, 9))
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.array([rng.uniform(45, 85), rng.uniform(100, 145), rng.uniform(165, 215)], np.float32)
    reflect = (0.8 + 0.4 * (1 - yy / max(h, 1)))[..., None].astype(np.float32)
    pane = rng.uniform(-20, 20, (32, 32)).astype(np.float32)
    per_pane = pane[(yy // ph) % 32, (xx // pw) % 32][..., None]
    tex = base * reflect + per_pane * np.array([0.5, 0.8, 1.0], np.float32)
    frame = ((yy % ph) == 0) | ((xx % pw) == 0)
    tex[frame] = (205, 210, 215) if rng.random() < 0.5 else (45, 50, 60)
    return tex


def _buildings(rng, img, label, app, horizon: int) -> None:
    x = int(rng.integers(-10, 10))
    while x < WIDTH:
        w = int(rng.integers(14, 42))
        if rng.random() < 0.8:
            top = int(rng.integers(3, max(4, horizon - 10)))
            bottom = horizon + int(rng.integers(0, 3))
            appearance = A_BRICK if rng.random() < 0.5 else A_GLASS
            tex = (_brick if appearance == A_BRICK else _glass)(rng, bottom - top, w)
            tex *= rng.uniform(0.8, 1.15)  # per-building exposure
            x0, x1 = max(x, 0), min(x + w, WIDTH)
            img[top:bottom, x0:x1] = tex[:, x0 - x : x1 - x]
            label[top:bottom, x0:x1] = BUILDING
            app[top:bottom, x0:x1] = appearance
        x += w + int(rng.integers(0, 10))


def _trees(rng, img, label, app, horizon: int) -> None:
    for _ in range(int(rng.integers(0, 4))):
        cx = rng.uniform(0, WIDTH)
        base_y = horizon + rng.uniform(0, 6)
        r = rng.uniform(6, 15)
        trunk = _rect_mask(
            base_y - r * 1.6, base_y, cx - rng.uniform(1, 2), cx + rng.uniform(1, 2.5)
        )
        crown = np.zeros((HEIGHT, WIDTH), bool)
        for _ in range(int(rng.integers(2, 4))):
            crown |= _ellipse_mask(
                base_y - r * 1.6 - rng.uniform(0, r * 0.6),
                cx + rng.uniform(-r, r) * 0.5,
                r * rng.uniform(0.6, 1.0),
                r * rng.uniform(0.6, 1.0),
            )
        leaf = np.array(
            [rng.uniform(35, 75), rng.uniform(95, 145), rng.uniform(25, 60)], np.float32
        )
        speckle = rng.random((HEIGHT, WIDTH), dtype=np.float32)
        crown_tex = leaf * (0.55 + 0.7 * speckle)[..., None]
        _paint(
            img,
            label,
            app,
            trunk,
            np.array([92, 62, 36], np.float32) * rng.uniform(0.8, 1.2),
            TREE,
            A_TREE,
        )
        _paint(img, label, app, crown, crown_tex, TREE, A_TREE)


def _depth_scale(y_bottom: float, horizon: int) -> float:
    return float(np.clip((y_bottom - horizon) / (HEIGHT - horizon), 0.05, 1.0))


def _car(rng, img, label, app, horizon: int, yb: float) -> None:
    s = _depth_scale(yb, horizon)
    w = 14 + 40 * s
    h = w * rng.uniform(0.4, 0.5)
    x0 = rng.uniform(-w * 0.3, WIDTH - w * 0.7)
    body_top = yb - h * 0.55
    color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.1)
    shade = (1.15 - 0.35 * np.clip((_YY - (yb - h)) / h, 0, 1))[..., None]
    body = _rect_mask(body_top, yb - h * 0.12, x0, x0 + w)
    cabin = _rect_mask(yb - h, body_top + 1, x0 + w * 0.2, x0 + w * 0.8)
    window = _rect_mask(yb - h * 0.9, body_top, x0 + w * 0.26, x0 + w * 0.74) & (
        np.abs(_XX - (x0 + w * 0.5)) > 0.7
    )
    wheels = _ellipse_mask(yb - h * 0.12, x0 + w * 0.22, h * 0.17, w * 0.09) | _ellipse_mask(
        yb - h * 0.12, x0 + w * 0.78, h * 0.17, w * 0.09
    )
    _paint(img, label, app, body | cabin, color * shade, CAR, A_CAR)
    _paint(
        img,
        label,
        app,
        window,
        np.array([48, 58, 72], np.float32) * rng.uniform(0.8, 1.2),
        CAR,
        A_CAR,
    )
    _paint(img, label, app, wheels, np.array([22, 22, 24], np.float32), CAR, A_CAR)


def _person(rng, img, label, app, horizon: int, yb: float) -> None:
    s = _depth_scale(yb, horizon)
    h = 18 + 36 * s
    cx = rng.uniform(2, WIDTH - 2)
    bw = h * 0.3
    head_r = h * 0.1
    legs = _rect_mask(yb - h * 0.45, yb, cx - bw * 0.45, cx + bw * 0.45) & (
        np.abs(_XX - cx) > h * 0.02
    )
    torso = _rect_mask(yb - h * 0.8, yb - h * 0.44, cx - bw * 0.5, cx + bw * 0.5)
    head = _ellipse_mask(yb - h * 0.8 - head_r, cx, head_r * 1.1, head_r)
    shirt = _SHIRT_COLORS[rng.integers(len(_SHIRT_COLORS))] * rng.uniform(0.85, 1.1)
    trousers = np.array([40, 42, 70] if rng.random() < 0.6 else [60, 50, 40], np.float32)
    _paint(img, label, app, legs, trousers, PERSON, A_PERSON)
    _paint(img, label, app, torso, shirt, PERSON, A_PERSON)
    _paint(img, label, app, head, _SKIN_COLORS[rng.integers(len(_SKIN_COLORS))], PERSON, A_PERSON)


def _anomaly(rng, img, label, app, horizon: int) -> None:
    """A geometric object with a checkerboard or stripe pattern of never-seen saturated colours."""
    cy = rng.uniform(horizon + 3, HEIGHT - 4) if rng.random() < 0.8 else rng.uniform(8, HEIGHT - 8)
    cx = rng.uniform(8, WIDTH - 8)
    r = 5 + 10 * _depth_scale(cy, horizon) + rng.uniform(0, 4)
    kind = rng.integers(3)
    if kind == 0:
        mask = _ellipse_mask(cy, cx, r * rng.uniform(0.6, 1.0), r)
    else:
        n = 3 if kind == 1 else 5
        ang = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
        if kind == 2:  # a star: alternate outer and inner vertices
            ang = rng.uniform(0, 2 * np.pi) + np.arange(2 * n) * np.pi / n
            rad = np.where(np.arange(2 * n) % 2 == 0, r, r * 0.45)
        else:
            rad = np.full(n, r)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        m = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.fillPoly(m, [np.round(pts * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
        mask = m.astype(bool)
    c1, c2 = _ANOMALY_COLORS[rng.choice(len(_ANOMALY_COLORS), 2, replace=False)]
    period = int(rng.integers(2, 5))
    if rng.random() < 0.5:
        pattern = ((_YY // period + _XX // period) % 2) == 0
    else:
        pattern = (((_XX + _YY) // period) % 2) == 0
    tex = np.where(pattern[..., None], c1, c2)
    _paint(img, label, app, mask, tex, IGNORE, A_ANOMALY)


def _animal(rng, img, label, app, horizon: int, yb: float) -> None:
    """A four-legged animal standing at y = yb: body, legs, head, ears and tail in one fur colour
    with a soft texture (the near split's unseen category)."""
    s = _depth_scale(yb, horizon)
    h = 12 + 26 * s  # shoulder height
    w = h * rng.uniform(1.3, 1.8)  # body length
    x0 = rng.uniform(-w * 0.2, WIDTH - w * 0.8)
    facing = 1 if rng.random() < 0.5 else -1
    body_cy, body_ry = yb - h * 0.62, h * 0.24
    body = _ellipse_mask(body_cy, x0 + w / 2, body_ry, w / 2)
    leg_w = max(w * 0.07, 1.0)
    legs = np.zeros_like(body)
    for f in (0.14, 0.3, 0.7, 0.86):
        legs |= _rect_mask(body_cy, yb, x0 + w * f - leg_w / 2, x0 + w * f + leg_w / 2)
    hx = x0 + w / 2 + facing * w * 0.55
    head = _ellipse_mask(body_cy - h * 0.28, hx, h * 0.16, h * 0.2)
    ear = _ellipse_mask(body_cy - h * 0.45, hx - facing * h * 0.06, h * 0.08, h * 0.05)
    tx = x0 + w / 2 - facing * w * 0.5
    tail = _rect_mask(
        body_cy - h * 0.32,
        body_cy - h * 0.05,
        min(tx, tx - facing * h * 0.12),
        max(tx, tx - facing * h * 0.12),
    )
    fur = _FUR_COLORS[rng.integers(len(_FUR_COLORS))] * rng.uniform(0.85, 1.1)
    texture = (0.8 + 0.4 * _smooth_noise(rng, 24, 32))[..., None]
    _paint(img, label, app, body | legs | head | ear | tail, fur * texture, IGNORE, A_ANIMAL)


def _bonnet(rng, img, label, app) -> None:
    """The ego vehicle's bonnet at the bottom edge: void."""
    depth = rng.uniform(4, 9)
    curve = HEIGHT - depth + 4 * ((_XX - WIDTH / 2) / (WIDTH / 2)) ** 2
    color = np.array([52, 56, 66], np.float32) * rng.uniform(0.7, 1.3)
    _paint(img, label, app, _YY >= curve, color, IGNORE, A_VOID)


def _photometric(rng, img: np.ndarray) -> np.ndarray:
    """Scene-wide lighting, colour cast, sensor noise and blur."""
    gain = rng.uniform(0.65, 1.3)
    cast = rng.uniform(0.88, 1.12, 3).astype(np.float32)
    slope = rng.uniform(-0.2, 0.2)
    gradient = (1.0 + slope * (_XX / WIDTH - 0.5))[..., None]
    out = img * (gain * cast) * gradient
    out += rng.standard_normal(out.shape).astype(np.float32) * rng.uniform(2, 9)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.5, 1.0))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator, with_anomalies: bool = False, near_anomalies: bool = False
) -> Dict[str, np.ndarray]:
    """Draw one scene: with_anomalies, far ones pasted over it ("anomaly" split); near_anomalies,
    1-2 animals among its objects ("near" split).

    Returns "image" (96, 128, 3) uint8 RGB, "label" (96, 128) uint8 class ids / 255,
    "appearance" (96, 128) uint8 indices into APPEARANCES, and with either kind of anomalies
    "anomaly_mask" (96, 128) uint8 (1 anomaly, 0 known, 255 void).
    """
    img = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    app = np.zeros((HEIGHT, WIDTH), np.uint8)
    horizon = int(rng.integers(32, 54))
    _sky(rng, img, label, app, horizon)
    _road(rng, img, label, app, horizon)
    _buildings(rng, img, label, app, horizon)
    _trees(rng, img, label, app, horizon)
    # Cars and people sorted far to near so nearer ones occlude farther ones.
    objects = [(_car, rng.uniform(horizon + 6, HEIGHT + 4)) for _ in range(rng.integers(0, 4))]
    objects += [(_person, rng.uniform(horizon + 4, HEIGHT + 2)) for _ in range(rng.integers(1, 5))]
    if near_anomalies:  # in the lower part of the image, where they are large enough to see
        objects += [
            (_animal, rng.uniform(horizon + (HEIGHT - horizon) * 0.4, HEIGHT))
            for _ in range(rng.integers(1, 3))
        ]
    for draw, y_bottom in sorted(objects, key=lambda o: o[1]):
        draw(rng, img, label, app, horizon, y_bottom)
    if with_anomalies:
        for _ in range(int(rng.integers(1, 4))):
            _anomaly(rng, img, label, app, horizon)
    if rng.random() < 0.35:
        _bonnet(rng, img, label, app)
    out = {"image": _photometric(rng, img), "label": label, "appearance": app}
    if with_anomalies or near_anomalies:
        mask = np.where((app == A_ANOMALY) | (app == A_ANIMAL), 1, 0).astype(np.uint8)
        mask[app == A_VOID] = IGNORE
        out["anomaly_mask"] = mask
    return out


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image `index` of `split`: independent of the split sizes."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)])
    )
