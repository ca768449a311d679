"""A small synthetic dataset in the VOC2012 layout, for the demo and the tests.

Each of the 20 classes has its own shape, colour family and texture (e.g.
aeroplane = a cross in red stripes, tvmonitor = a hollow dark frame in
rings). An image holds 1-3 objects of different classes with random size,
position, rotation and aspect, drawn in order so that later objects occlude
earlier ones, on a smooth random colour field with line/ellipse clutter and
pixel noise. The mask marks each object's visible pixels with class id + 1 and
a thin 255 band along every outline (as VOC does); the labels are the classes
still visible in the mask, so masks, labels and XML always agree.

Everything is drawn from ``numpy.random.default_rng((seed, split, index))``:
the same seed gives the same bytes, and an image does not depend on how many
other images are made.

A :class:`DemoShift` makes an out-of-distribution set with the same classes
(beyond-spec §3.4, "generator shift"): every class hue is rotated by
``hue_shift`` degrees (colours never seen in training; shapes and textures
kept) and/or the background is replaced by a kind never seen in training
(``stripes``: bold saturated stripes; ``blocks``: a coarse grid of saturated
colours). The shift draws from its own generator ``(seed, split, index, 1)``
after the image's usual draws, so a shifted image has exactly the layout, the
mask and the labels of the unshifted image of the same seed and index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import ConfigError
from ..io import atomic_path, write_text_atomic
from .labels import write_cls_labels
from .voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, VOC_PALETTE

PathLike = str | os.PathLike
Polygon = np.ndarray  # float [K, 2] in object units, x right, y down, about [-1, 1]


# ----------------------------------------------------------------- shapes
def _disc(cx: float, cy: float, r: float, n: int = 28) -> Polygon:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _ellipse(rx: float, ry: float, n: int = 32) -> Polygon:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _poly(*pts: tuple[float, float]) -> Polygon:
    return np.array(pts, dtype=np.float64)


def _star(points: int = 5, inner: float = 0.45) -> Polygon:
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


# Each shape: a list of (polygon, fill) pairs drawn in order; fill 0 cuts a hole.
SHAPES: dict[str, list[tuple[Polygon, int]]] = {
    "cross": [(_rect(-1, -0.28, 1, 0.28), 1), (_rect(-0.28, -1, 0.28, 1), 1)],
    "spectacles": [(_disc(-0.55, 0, 0.45), 1), (_disc(0.55, 0, 0.45), 1),
                   (_disc(-0.55, 0, 0.22), 0), (_disc(0.55, 0, 0.22), 0), (_rect(-0.2, -0.08, 0.2, 0.08), 1)],
    "triangle": [(_poly((0, -1), (0.95, 0.8), (-0.95, 0.8)), 1)],
    "hull": [(_poly((-1, -0.1), (1, -0.1), (0.6, 0.55), (-0.6, 0.55)), 1), (_rect(-0.06, -1, 0.06, -0.1), 1)],
    "bottle": [(_rect(-0.35, -0.3, 0.35, 1), 1), (_rect(-0.14, -1, 0.14, -0.3), 1)],
    "wide_rect": [(_rect(-1, -0.5, 1, 0.5), 1)],
    "car": [(_rect(-1, -0.05, 1, 0.5), 1), (_poly((-0.55, -0.05), (-0.3, -0.55), (0.35, -0.55), (0.6, -0.05)), 1),
            (_disc(-0.55, 0.55, 0.22), 1), (_disc(0.55, 0.55, 0.22), 1)],
    "cat_head": [(_disc(0, 0.15, 0.8), 1), (_poly((-0.75, -0.2), (-0.65, -1), (-0.15, -0.6)), 1),
                 (_poly((0.75, -0.2), (0.65, -1), (0.15, -0.6)), 1)],
    "chair": [(_rect(-0.6, -1, -0.3, 1), 1), (_rect(-0.6, 0.05, 0.6, 0.3), 1), (_rect(0.35, 0.05, 0.6, 1), 1)],
    "ellipse": [(_ellipse(1, 0.6), 1)],
    "table": [(_rect(-1, -0.6, 1, -0.3), 1), (_rect(-0.85, -0.3, -0.65, 0.8), 1), (_rect(0.65, -0.3, 0.85, 0.8), 1)],
    "dog": [(_ellipse(0.75, 0.4), 1), (_disc(0.75, -0.35, 0.32), 1), (_rect(-0.65, 0.1, -0.45, 0.85), 1),
            (_rect(0.3, 0.1, 0.5, 0.85), 1)],
    "parallelogram": [(_poly((-0.4, -0.7), (1, -0.7), (0.4, 0.7), (-1, 0.7)), 1)],
    "dumbbell": [(_disc(-0.62, 0, 0.38), 1), (_disc(0.62, 0, 0.38), 1), (_rect(-0.62, -0.14, 0.62, 0.14), 1)],
    "keyhole": [(_disc(0, -0.62, 0.34), 1), (_poly((-0.3, -0.25), (0.3, -0.25), (0.55, 1), (-0.55, 1)), 1)],
    "star": [(_star(5, 0.45), 1)],
    "cloud": [(_disc(-0.5, 0.15, 0.45), 1), (_disc(0.0, -0.2, 0.5), 1), (_disc(0.5, 0.15, 0.45), 1),
              (_disc(0.0, 0.3, 0.45), 1)],
    "u_shape": [(_rect(-1, -0.6, -0.65, 0.6), 1), (_rect(0.65, -0.6, 1, 0.6), 1), (_rect(-1, 0.1, 1, 0.6), 1)],
    "arrow": [(_poly((-1, -0.3), (0.45, -0.3), (1, 0), (0.45, 0.3), (-1, 0.3)), 1)],
    "frame": [(_rect(-1, -0.75, 1, 0.75), 1), (_rect(-0.72, -0.48, 0.72, 0.48), 0)],
}


# ---------------------------------------------------------------- textures
# Each texture maps object-frame coordinates (u, v, in object units) to a
# boolean "primary colour" pattern; ``rng`` is for the random ones.
def _stripes(angle_deg: float) -> Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return lambda u, v, p, rng: np.sin(2 * np.pi * (c * u + s * v) / p) > 0


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    small = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "solid": lambda u, v, p, rng: np.ones(u.shape, dtype=bool),
    "hstripes": _stripes(90),
    "vstripes": _stripes(0),
    "diagonal": _stripes(45),
    "checker": lambda u, v, p, rng: (np.floor(u / p) + np.floor(v / p)) % 2 == 0,
    "dots": lambda u, v, p, rng: ((u % p - p / 2) ** 2 + (v % p - p / 2) ** 2) > (0.3 * p) ** 2,
    "rings": lambda u, v, p, rng: np.sin(2 * np.pi * np.hypot(u, v) / p) > 0,
    "wavy": lambda u, v, p, rng: np.sin(2 * np.pi * (v + 0.12 * np.sin(2 * np.pi * u / (2 * p))) / p) > 0,
    "speckle": lambda u, v, p, rng: rng.random(u.shape) > 0.35,
    "spots": lambda u, v, p, rng: _smooth_noise(u.shape, 6, rng) < 0.62,
}


@dataclass(frozen=True)
class ClassStyle:
    shape: str
    hue: float          # degrees, 0..360
    sat: float          # 0..1
    val: float          # 0..1
    texture: str
    period: float       # texture period in object units


STYLES: tuple[ClassStyle, ...] = (
    ClassStyle("cross", 0, 0.85, 0.85, "hstripes", 0.30),          # aeroplane
    ClassStyle("spectacles", 180, 0.80, 0.80, "solid", 0.30),      # bicycle
    ClassStyle("triangle", 55, 0.85, 0.90, "dots", 0.35),          # bird
    ClassStyle("hull", 220, 0.80, 0.80, "diagonal", 0.30),         # boat
    ClassStyle("bottle", 120, 0.80, 0.70, "vstripes", 0.25),       # bottle
    ClassStyle("wide_rect", 30, 0.90, 0.95, "checker", 0.35),      # bus
    ClassStyle("car", 300, 0.75, 0.85, "solid", 0.30),             # car
    ClassStyle("cat_head", 25, 0.65, 0.50, "speckle", 0.30),       # cat
    ClassStyle("chair", 270, 0.65, 0.75, "checker", 0.22),         # chair
    ClassStyle("ellipse", 0, 0.05, 0.92, "spots", 0.40),           # cow
    ClassStyle("table", 38, 0.55, 0.70, "wavy", 0.22),             # diningtable
    ClassStyle("dog", 15, 0.80, 0.65, "diagonal", 0.25),           # dog
    ClassStyle("parallelogram", 330, 0.60, 0.90, "hstripes", 0.22),  # horse
    ClassStyle("dumbbell", 90, 0.80, 0.80, "checker", 0.30),       # motorbike
    ClassStyle("keyhole", 200, 0.60, 0.90, "rings", 0.30),         # person
    ClassStyle("star", 140, 0.80, 0.50, "dots", 0.28),             # pottedplant
    ClassStyle("cloud", 50, 0.12, 0.95, "speckle", 0.30),          # sheep
    ClassStyle("u_shape", 345, 0.75, 0.55, "vstripes", 0.22),      # sofa
    ClassStyle("arrow", 240, 0.80, 0.55, "checker", 0.18),         # train
    ClassStyle("frame", 0, 0.0, 0.30, "rings", 0.25),              # tvmonitor
)
assert len(STYLES) == NUM_CLASSES and all(s.shape in SHAPES and s.texture in TEXTURES for s in STYLES)


# ----------------------------------------------------------------- drawing
def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (h in degrees, s and v in [0, 1]) as float RGB in [0, 255]."""
    hsv = np.array([[[h % 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)]]], dtype=np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] * 255.0


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour field with line / ellipse clutter, float32 [H, W, 3]."""
    cells = int(rng.integers(2, 6))
    base = rng.uniform(40, 215, size=(cells, cells, 3)).astype(np.float32)
    grey = base.mean(axis=2, keepdims=True)
    base = grey + rng.uniform(0.3, 0.8) * (base - grey)        # muted colours
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.uniform(-25, 25, size=(max(2, h // 12), max(2, w // 12), 1)).astype(np.float32)
    img += cv2.resize(fine, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thick = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p0, p1, colour, thick, cv2.LINE_AA)
        else:
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(4, max(5, w // 6))), int(rng.integers(4, max(5, h // 6))))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, thick, cv2.LINE_AA)
    return img


BACKGROUNDS = ("clutter", "stripes", "blocks")


@dataclass(frozen=True)
class DemoShift:
    """A generator shift: class hues rotated by ``hue_shift`` degrees, another ``background`` kind."""

    hue_shift: float = 0.0
    background: str = "clutter"

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background={self.background!r}: choose one of {', '.join(BACKGROUNDS)}")
        if not np.isfinite(self.hue_shift):
            raise ValueError(f"hue_shift={self.hue_shift!r}: must be a finite number of degrees")

    @property
    def is_identity(self) -> bool:
        return self.hue_shift % 360 == 0 and self.background == "clutter"

    @property
    def tag(self) -> str:
        """Short name used in list names: ``shift_hue120_stripes``."""
        parts = ["shift"]
        if self.hue_shift % 360:
            parts.append(f"hue{self.hue_shift:g}")
        if self.background != "clutter":
            parts.append(self.background)
        return "_".join(parts)


def _shifted_background(h: int, w: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """An unseen background, float32 [H, W, 3]: saturated ``stripes`` or ``blocks``."""
    colours = np.stack([_hsv_to_rgb(float(rng.uniform(0, 360)), float(rng.uniform(0.7, 1.0)),
                                    float(rng.uniform(0.5, 1.0))) for _ in range(4)])
    if kind == "stripes":
        period = rng.uniform(6, 18)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        band = np.floor((xx * np.cos(angle) + yy * np.sin(angle)) / period).astype(np.int64) % 2
        return colours[band].astype(np.float32)
    cells = int(rng.integers(4, 9))
    grid = rng.integers(0, len(colours), size=(cells, cells))
    idx = cv2.resize(grid.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return colours[idx].astype(np.float32)


@dataclass
class _Placed:
    cls: int
    mask: np.ndarray        # bool [H, W], the object's full silhouette


def _place(cls: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A randomly placed object: silhouette (bool [H, W]), pixel -> object-frame matrix, centre (x, y)."""
    scale = rng.uniform(0.14, 0.36) * min(h, w)                 # half-extent in pixels
    aspect = np.exp(rng.uniform(-0.2, 0.2))
    theta = np.radians(rng.uniform(-30, 30))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    cx, cy = rng.uniform(0.12, 0.88) * w, rng.uniform(0.12, 0.88) * h
    # pixel = R @ diag(sx, sy) @ local + centre
    sx, sy = scale * aspect * flip, scale / aspect
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    fwd = rot @ np.diag([sx, sy])
    canvas = np.zeros((h, w), dtype=np.uint8)
    for poly, fill in SHAPES[STYLES[cls].shape]:
        pts = poly @ fwd.T + (cx, cy)
        cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], int(fill), cv2.LINE_8, shift=4)
    return canvas.astype(bool), np.linalg.inv(fwd), np.array([cx, cy])


def _paint(img: np.ndarray, sil: np.ndarray, inv: np.ndarray, centre: np.ndarray, cls: int,
           rng: np.random.Generator, hue_shift: float = 0.0) -> None:
    """Paint a class's colour and texture into ``img`` where ``sil`` is set."""
    style = STYLES[cls]
    ys, xs = np.nonzero(sil)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = sil[y0:y1, x0:x1]
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = gx - centre[0], gy - centre[1]
    u = inv[0, 0] * dx + inv[0, 1] * dy       # object-frame coordinates
    v = inv[1, 0] * dx + inv[1, 1] * dy
    period = style.period * np.exp(rng.uniform(-0.2, 0.2))
    pattern = TEXTURES[style.texture](u, v, period, rng)
    hue = style.hue + rng.uniform(-12, 12) + hue_shift
    sat = style.sat * rng.uniform(0.8, 1.1)
    val = style.val * rng.uniform(0.8, 1.1)
    primary = _hsv_to_rgb(hue, sat, val)
    secondary = _hsv_to_rgb(hue, sat * 0.8, val * 0.45) if style.val > 0.4 else _hsv_to_rgb(hue, sat, 0.85)
    shade = 1.0 + 0.15 * (v / 2.0)[..., None]    # soft top-to-bottom shading
    colours = np.where(pattern[..., None], primary, secondary) * shade
    region = img[y0:y1, x0:x1]
    region[box] = colours[box]


def _border_band(label: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a boundary between two different labels (bool)."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), dtype=np.uint8)
    return cv2.dilate(label, kernel) != cv2.erode(label, kernel)


def render_image(h: int, w: int, rng: np.random.Generator, shift: DemoShift | None = None,
                 shift_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One demo image: uint8 RGB [H, W, 3], uint8 mask [H, W] (0, 1..20, 255), visible class ids.

    Objects are drawn in order; a new object is re-placed (up to 8 tries) when
    it would hide more than 60% of an earlier object's visible pixels, so most
    objects stay recognisable. ``shift`` (with its own ``shift_rng``) changes colours
    and background only; ``rng`` is consumed exactly as without it.
    """
    shift = shift or DemoShift()
    img = _background(h, w, rng)
    if shift.background != "clutter":
        if shift_rng is None:
            raise ValueError("a background shift needs its own generator (shift_rng)")
        img = _shifted_background(h, w, shift.background, shift_rng)
    label = np.zeros((h, w), dtype=np.uint8)
    n_obj = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    classes = rng.choice(NUM_CLASSES, size=n_obj, replace=False)
    for cls in classes:
        visible = [(v, np.count_nonzero(label == v)) for v in np.unique(label) if v > 0]
        for _ in range(8):
            sil, inv, centre = _place(int(cls), h, w, rng)
            if sil.any() and all(np.count_nonzero((label == v) & ~sil) >= 0.4 * n for v, n in visible):
                break
        else:
            continue
        _paint(img, sil, inv, centre, int(cls), rng, shift.hue_shift)
        label[sil] = cls + 1
    img += rng.normal(0.0, rng.uniform(4, 12), size=img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    mask = label.copy()
    band = int(rng.integers(1, 3)) if min(h, w) >= 200 else 1    # VOC-like 2-4 px band; 2 px on small images
    mask[_border_band(label, band)] = IGNORE_INDEX
    present = [int(c) - 1 for c in np.unique(mask) if 1 <= c <= NUM_CLASSES]
    return image, mask, present


# ------------------------------------------------------------------ writing
def annotation_xml(name: str, mask: np.ndarray) -> str:
    """A VOC-style annotation: one ``<object>`` per class visible in ``mask``, with its box."""
    h, w = mask.shape
    objects = []
    for c in (int(v) for v in np.unique(mask) if 1 <= v <= NUM_CLASSES):
        ys, xs = np.nonzero(mask == c)
        objects.append(
            "\t<object>\n"
            f"\t\t<name>{CLASS_NAMES[c - 1]}</name>\n"
            "\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
            f"\t\t<bndbox>\n\t\t\t<xmin>{xs.min() + 1}</xmin>\n\t\t\t<ymin>{ys.min() + 1}</ymin>\n"
            f"\t\t\t<xmax>{xs.max() + 1}</xmax>\n\t\t\t<ymax>{ys.max() + 1}</ymax>\n\t\t</bndbox>\n"
            "\t</object>\n"
        )
    return (
        "<annotation>\n\t<folder>VOC2012</folder>\n"
        f"\t<filename>{name}.jpg</filename>\n"
        "\t<source>\n\t\t<database>dywsss synthetic demo</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>1</segmented>\n" + "".join(objects) + "</annotation>\n"
    )


def save_palette_png(path: PathLike, mask: np.ndarray) -> None:
    """Write a uint8 index mask as a palette PNG with the VOC colour map (atomically)."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    im.putpalette(VOC_PALETTE)  # turns the "L" image into "P" with the same indices
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _save_jpeg(path: PathLike, image: np.ndarray, quality: int = 92) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=quality)


@dataclass(frozen=True)
class DemoTree:
    """Paths of a generated demo set."""

    root: Path
    voc12_root: Path
    train_list: Path
    val_list: Path
    cls_labels: Path

    @property
    def gt_dir(self) -> Path:
        return self.voc12_root / "SegmentationClassAug"


SPLIT_CODES = {"train": 0, "val": 1}


def make_demo_voc(
    out: PathLike,
    n_train: int = 500,
    n_val: int = 150,
    seed: int = 0,
    min_side: int = 300,
    max_side: int = 500,
    progress: bool = True,
    shift: DemoShift | None = None,
) -> DemoTree:
    """Write the demo set under ``out`` (VOC2012/..., train_aug.txt, train.txt, val.txt, cls_labels.json).

    ``train.txt`` equals ``train_aug.txt`` (the demo has no separate SBD part).
    Image sides are uniform integers in [min_side, max_side]. With a ``shift`` the
    images are shifted (:class:`DemoShift`; masks and labels as without it), and the
    val list is also written as ``val_<shift tag>.txt`` beside a ``manifest.json``
    that ``dywsss.data.corruptions.read_ood_manifest`` reads, so the set is an OOD
    evaluation tree with evaluation folders of their own name.
    """
    if n_train < 1 or n_val < 1:
        raise ConfigError(f"need at least one train and one val image, got --train {n_train} --val {n_val}")
    if not 16 <= min_side <= max_side:
        raise ConfigError(f"need 16 <= min_side <= max_side, got {min_side}, {max_side}")
    root = Path(out)
    voc = root / "VOC2012"
    splits = {"train": [f"train_{i:06d}" for i in range(n_train)], "val": [f"val_{i:06d}" for i in range(n_val)]}
    labels: dict[str, list[int]] = {}
    jobs = [(split, i, name) for split, names in splits.items() for i, name in enumerate(names)]
    for split, i, name in tqdm(jobs, desc="demo images", disable=not progress, leave=False):
        rng = np.random.default_rng((seed, SPLIT_CODES[split], i))
        shift_rng = np.random.default_rng((seed, SPLIT_CODES[split], i, 1))
        h, w = (int(x) for x in rng.integers(min_side, max_side + 1, size=2))
        image, mask, present = render_image(h, w, rng, shift, shift_rng)
        _save_jpeg(voc / "JPEGImages" / f"{name}.jpg", image)
        save_palette_png(voc / "SegmentationClass" / f"{name}.png", mask)
        save_palette_png(voc / "SegmentationClassAug" / f"{name}.png", mask)
        write_text_atomic(voc / "Annotations" / f"{name}.xml", annotation_xml(name, mask))
        labels[name] = present
    lists = {k: "".join(f"{n}\n" for n in v) for k, v in splits.items()}
    seg = voc / "ImageSets" / "Segmentation"
    write_text_atomic(seg / "train.txt", lists["train"])
    write_text_atomic(seg / "val.txt", lists["val"])
    write_text_atomic(seg / "trainval.txt", lists["train"] + lists["val"])
    write_text_atomic(root / "train_aug.txt", lists["train"])
    write_text_atomic(root / "train.txt", lists["train"])
    write_text_atomic(root / "val.txt", lists["val"])
    write_cls_labels(root / "cls_labels.json", labels)
    if shift is not None and not shift.is_identity:
        _write_shift_manifest(root, shift, seed, lists["val"], n_train, n_val, min_side, max_side)
    return DemoTree(root, voc, root / "train_aug.txt", root / "val.txt", root / "cls_labels.json")


def _write_shift_manifest(root: Path, shift: DemoShift, seed: int, val_ids: str, n_train: int, n_val: int,
                          min_side: int, max_side: int) -> None:
    """The shifted set as an OOD evaluation tree: its val list under its own name, and the manifest."""
    import json

    from ..provenance import sha256_file

    list_name = f"val_{shift.tag}.txt"
    write_text_atomic(root / list_name, val_ids)
    manifest = dict(kind="shift", shift=dict(hue_shift=shift.hue_shift, background=shift.background),
                    seed=int(seed), n_images=n_val, list=list_name, voc12_root="VOC2012",
                    gt_dir="VOC2012/SegmentationClassAug", cls_label="cls_labels.json",
                    generator=dict(n_train=n_train, n_val=n_val, min_side=min_side, max_side=max_side),
                    list_sha256=sha256_file(root / list_name))
    write_text_atomic(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
