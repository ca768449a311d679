"""PASCAL VOC 2012 (+SBD) data layer: class names, lists, labels, images, masks, input checks.

Every loader fails with a message that names the offending file (and row or
image id), so that a broken dataset is reported before any stage starts its
work rather than mid-epoch. :func:`check_inputs` scans a whole list (image
headers, labels, masks) and reports every bad entry in one message. This
module does not import torch (the CSV and JSON tools stay light); the torch
datasets are in :mod:`dywsss.data.datasets`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError, MissingInputError
from ..io import read_json_object

CLASS_NAMES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_CLASSES = 20
IGNORE_INDEX = 255
# Mask values: 0 background, 1..20 classes (class id + 1), 255 ignore.
VALID_MASK_VALUES: frozenset[int] = frozenset(range(NUM_CLASSES + 1)) | {IGNORE_INDEX}

PathLike = str | os.PathLike


def _voc_palette() -> list[int]:
    """The standard VOC colour map: bits of the index spread over R, G, B from the top bit down."""
    idx = np.arange(256)
    rgb = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):  # 8 bit planes, each contributes one bit per channel
        for ch in range(3):
            rgb[:, ch] |= ((idx >> (3 * shift + ch)) & 1) << (7 - shift)
    return rgb.reshape(-1).astype(int).tolist()


VOC_PALETTE: list[int] = _voc_palette()


# ---------------------------------------------------------------------- lists
def palette_rgb(mask: np.ndarray) -> np.ndarray:
    """Class-index mask [H, W] -> uint8 RGB [H, W, 3] in the VOC palette (255, the ignore band, cream)."""
    return np.asarray(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)[mask]


def _list_entry_id(line: str) -> str:
    token = line.split()[0]
    if "/" in token or token.lower().endswith((".jpg", ".jpeg", ".png")):
        return Path(token).stem
    return token

def read_image_list(path: PathLike) -> list[str]:
    """Image ids of a list file, one per line.

    Also accepts the original's lines ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``
    (the id is the stem of the first token). Blank lines are skipped. A repeated id
    is an error naming both rows: it would count the image twice in every metric.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: image list not found")
    names: list[str] = []
    first_row: dict[str, int] = {}
    for row, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name = _list_entry_id(line)
        if name in first_row:
            raise InputError(f"{path}: row {row}: image {name!r} is listed twice (first at row {first_row[name]}); "
                             "remove the repeated line")
        first_row[name] = row
        names.append(name)
    if not names:
        raise InputError(f"{path}: image list is empty")
    return names


# --------------------------------------------------------------------- labels
def _check_class_ids(ids: Sequence[int], name: str, path: Path) -> list[int]:
    out = []
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < NUM_CLASSES:
            raise InputError(f"{path}: image {name!r} has class id {c!r}; expected integers in 0..{NUM_CLASSES - 1}")
        out.append(int(c))
    return out


def _multi_hot(ids: Sequence[int]) -> np.ndarray:
    vec = np.zeros(NUM_CLASSES, dtype=np.float32)
    vec[list(ids)] = 1.0
    return vec


def load_cls_labels(path: PathLike, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Image-level labels ``{id: float32[20] multi-hot}``.

    Reads our ``cls_labels.json`` (``{id: [0-based class ids]}``). The original's
    ``cls_labels.npy`` (a pickled dict id -> float32[20]) is read only with
    ``allow_pickle=True`` and then warns: unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: label file not found")
    if path.suffix == ".npy":
        return _load_pickled_labels(path, allow_pickle)
    raw = read_json_object(path, "a valid JSON label file", " {image id: [class ids]}")
    labels = {}
    for name, ids in raw.items():
        if not isinstance(ids, list):
            raise InputError(f"{path}: image {name!r}: expected a list of class ids, got {ids!r}")
        if not ids:
            raise InputError(f"{path}: image {name!r} has no class (empty list); every VOC image holds at least "
                             "one object class: fix the entry or drop the image from the lists")
        labels[name] = _multi_hot(_check_class_ids(ids, name, path))
    return labels


def _load_pickled_labels(path: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    if not allow_pickle:
        raise InputError(
            f"{path}: a .npy label file is a pickled dict and loading pickle can run arbitrary code; "
            "convert it to cls_labels.json (scripts/make_cls_labels.py) or pass allow_pickle=True "
            "(--options allow_pickle=True) if you trust the file"
        )
    warnings.warn(f"{path}: loading a pickled label file (allow_pickle=True); only do this for trusted files",
                  stacklevel=2)
    obj = np.load(path, allow_pickle=True)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a pickled dict id -> float32[20], got {type(obj).__name__}")
    labels = {}
    for name, vec in obj.items():
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape != (NUM_CLASSES,) or not np.isin(vec, (0.0, 1.0)).all():
            raise InputError(f"{path}: image {name!r}: expected a 0/1 vector of length {NUM_CLASSES}")
        if not vec.any():
            raise InputError(f"{path}: image {name!r} has no class (all-zero label vector)")
        labels[str(name)] = vec
    return labels


class MissingLabelsError(InputError, KeyError):
    """Listed images without an entry in the label file."""


def label_matrix(names: Sequence[str], labels: Mapping[str, np.ndarray], source: PathLike = "") -> np.ndarray:
    """Stack the labels of ``names`` into float32 [N, 20]; error when a name has none."""
    missing = [n for n in names if n not in labels]
    if missing:
        where = f"{source}: " if str(source) else ""
        raise MissingLabelsError(
            f"{where}{len(missing)} listed image(s) have no labels, e.g. {', '.join(missing[:5])}"
        )
    if not names:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    return np.stack([np.asarray(labels[n], dtype=np.float32) for n in names])


# ------------------------------------------------------------- images, masks
def image_path(voc12_root: PathLike, name: str, img_dir: str = "JPEGImages") -> Path:
    return Path(voc12_root) / img_dir / f"{name}.jpg"


def load_image(path: PathLike) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from exc


def image_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image file, from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise MissingInputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from exc
    return h, w


def mask_path(gt_dir: PathLike, name: str) -> Path:
    return Path(gt_dir) / f"{name}.png"


def load_mask(gt_dir: PathLike, name: str, expect_shape: Sequence[int] | None = None) -> np.ndarray:
    """The segmentation mask ``gt_dir/<name>.png`` as uint8 [H, W] class indices.

    Palette PNGs give their indices, grayscale PNGs their values. ``expect_shape``
    (the image's (H, W) or (H, W, 3)) is checked against the mask's size.
    """
    path = mask_path(gt_dir, name)
    if not path.is_file():
        raise MissingInputError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise InputError(f"{path}: mask must be a palette or grayscale PNG, got mode {im.mode}")
            mask = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable mask ({exc})") from exc
    if expect_shape is not None and tuple(mask.shape) != tuple(expect_shape[:2]):
        raise InputError(
            f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
            f"{expect_shape[1]}x{expect_shape[0]} (width x height)"
        )
    bad = np.setdiff1d(np.unique(mask), np.fromiter(VALID_MASK_VALUES, dtype=np.int64))
    if bad.size:
        raise InputError(f"{path}: mask values {bad.tolist()[:10]} outside {{0..20, 255}}")
    return mask


# ------------------------------------------------------------------ checking
def check_dataset_root(voc12_root: PathLike, img_dir: str = "JPEGImages") -> Path:
    root = Path(voc12_root)
    if not root.is_dir():
        raise MissingInputError(
            f"{root}: dataset root not found. Put PASCAL VOC 2012 there (the VOC2012/ folder with "
            "JPEGImages/ and SegmentationClassAug/, see voc12/README.md), or set --options voc12_root=DIR; "
            "for the synthetic demo run scripts/make_demo_voc.py"
        )
    if not (root / img_dir).is_dir():
        raise MissingInputError(f"{root / img_dir}: image folder not found in the dataset root")
    return root


def _mask_header(path: Path) -> tuple[str, tuple[int, int]]:
    with Image.open(path) as im:
        w, h = im.size
        return im.mode, (h, w)


def _scan_one(root: Path, img_dir: str, gt_dir: PathLike | None, name: str) -> tuple[tuple[int, int] | None, str | None]:
    """(H, W) of one listed image and, when something is wrong, the problem in words."""
    try:
        size = image_size(image_path(root, name, img_dir))
    except (InputError, MissingInputError) as exc:
        return None, str(exc)
    if gt_dir is None:
        return size, None
    path = mask_path(gt_dir, name)
    try:
        mode, msize = _mask_header(path)
    except FileNotFoundError:
        return size, f"{path}: mask not found"
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return size, f"{path}: unreadable mask ({exc})"
    if mode not in ("P", "L"):
        return size, f"{path}: mask must be a palette or grayscale PNG, got mode {mode}"
    if msize != size:
        return size, f"{path}: mask size {msize[1]}x{msize[0]} differs from its image {size[1]}x{size[0]}"
    return size, None


def _one_message(what: str, problems: Sequence[str], shown: int = 5) -> str:
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return f"{what}: {len(problems)} bad file(s): " + "; ".join(problems[:shown]) + more


def check_inputs(
    voc12_root: PathLike,
    list_file: PathLike,
    label_file: PathLike,
    img_dir: str = "JPEGImages",
    gt_dir: PathLike | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
) -> tuple[list[str], list[tuple[int, int]]]:
    """Check one list before any work: names, labels, every image header (and masks).

    Every listed image must have a non-empty label entry and an image whose header
    decodes; with ``gt_dir`` also a palette/grayscale mask of the same size. All
    bad files are reported in one :class:`InputError`. Returns the names and the
    image sizes (H, W), which the map stage needs anyway.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    root = check_dataset_root(voc12_root, img_dir)
    names = read_image_list(list_file)
    label_matrix(names, load_cls_labels(label_file, allow_pickle=allow_pickle), source=label_file)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(tqdm(pool.map(lambda n: _scan_one(root, img_dir, gt_dir, n), names), total=len(names),
                            desc=f"checking {Path(list_file).name}", unit="img", disable=not progress or len(names) < 500,
                            leave=False))
    problems = [p for _, p in results if p]
    if problems:
        raise InputError(_one_message(str(list_file), problems))
    return names, [s for s, _ in results]  # type: ignore[misc]


def check_data(
    voc12_root: PathLike,
    list_file: PathLike,
    label_file: PathLike,
    img_dir: str = "JPEGImages",
    allow_pickle: bool = False,
) -> list[str]:
    """Check a split before training (:func:`check_inputs` without masks) and return its names."""
    return check_inputs(voc12_root, list_file, label_file, img_dir, allow_pickle=allow_pickle)[0]
