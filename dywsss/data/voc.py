"""PASCAL VOC 2012 (+SBD) data layer: class names, lists, labels, images, masks, datasets.

Every loader fails with a message that names the offending file, so that a
broken dataset is reported before training starts rather than mid-epoch.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

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
    (the id is the stem of the first token). Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image list not found")
    names = [_list_entry_id(line) for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: image list is empty")
    return names


# --------------------------------------------------------------------- labels
def _check_class_ids(ids: Sequence[int], name: str, path: Path) -> list[int]:
    out = []
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < NUM_CLASSES:
            raise ValueError(f"{path}: image {name!r} has class id {c!r} outside 0..{NUM_CLASSES - 1}")
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
        raise FileNotFoundError(f"{path}: label file not found")
    if path.suffix == ".npy":
        return _load_pickled_labels(path, allow_pickle)
    raw = read_json_object(path, "a valid JSON label file", " {image id: [class ids]}")
    labels = {}
    for name, ids in raw.items():
        if not isinstance(ids, list):
            raise ValueError(f"{path}: image {name!r}: expected a list of class ids, got {ids!r}")
        labels[name] = _multi_hot(_check_class_ids(ids, name, path))
    return labels


def _load_pickled_labels(path: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    if not allow_pickle:
        raise ValueError(
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
        raise ValueError(f"{path}: expected a pickled dict id -> float32[20], got {type(obj).__name__}")
    labels = {}
    for name, vec in obj.items():
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape != (NUM_CLASSES,) or not np.isin(vec, (0.0, 1.0)).all():
            raise ValueError(f"{path}: image {name!r}: expected a 0/1 vector of length {NUM_CLASSES}")
        labels[str(name)] = vec
    return labels


class MissingLabelsError(KeyError):
    """Listed images without an entry in the label file."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


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
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: unreadable image ({exc})") from exc


def mask_path(gt_dir: PathLike, name: str) -> Path:
    return Path(gt_dir) / f"{name}.png"


def load_mask(gt_dir: PathLike, name: str, expect_shape: Sequence[int] | None = None) -> np.ndarray:
    """The segmentation mask ``gt_dir/<name>.png`` as uint8 [H, W] class indices.

    Palette PNGs give their indices, grayscale PNGs their values. ``expect_shape``
    (the image's (H, W) or (H, W, 3)) is checked against the mask's size.
    """
    path = mask_path(gt_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: mask must be a palette or grayscale PNG, got mode {im.mode}")
            mask = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: unreadable mask ({exc})") from exc
    if expect_shape is not None and tuple(mask.shape) != tuple(expect_shape[:2]):
        raise ValueError(
            f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
            f"{expect_shape[1]}x{expect_shape[0]} (width x height)"
        )
    bad = np.setdiff1d(np.unique(mask), np.fromiter(VALID_MASK_VALUES, dtype=np.int64))
    if bad.size:
        raise ValueError(f"{path}: mask values {bad.tolist()[:10]} outside {{0..20, 255}}")
    return mask


# ------------------------------------------------------------------ checking
def check_data(
    voc12_root: PathLike,
    list_file: PathLike,
    label_file: PathLike,
    img_dir: str = "JPEGImages",
    allow_pickle: bool = False,
) -> list[str]:
    """Check a split before training and return its names.

    Fails fast on a missing dataset root, a missing or empty list, listed names
    without labels and missing image files (the first few are reported).
    """
    root = Path(voc12_root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: dataset root not found. Put PASCAL VOC 2012 there (the VOC2012/ folder with "
            "JPEGImages/ and SegmentationClassAug/, see voc12/README.md), or set --options voc12_root=DIR; "
            "for the synthetic demo run scripts/make_demo_voc.py"
        )
    if not (root / img_dir).is_dir():
        raise FileNotFoundError(f"{root / img_dir}: image folder not found in the dataset root")
    names = read_image_list(list_file)
    label_matrix(names, load_cls_labels(label_file, allow_pickle=allow_pickle), source=label_file)
    missing = [str(image_path(root, n, img_dir)) for n in names if not image_path(root, n, img_dir).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{list_file}: {len(missing)} of {len(names)} listed images are missing, e.g. {', '.join(missing[:3])}"
        )
    return names


# ------------------------------------------------------------------ datasets
class VOCImages(Dataset):
    """Unnormalised original images with labels, for stages that do their own scaling.

    Item: ``dict(name=str, image=np.uint8 [H, W, 3], label=FloatTensor[20])``. Use
    ``collate_fn=collate_images`` (or batch_size=None) since image sizes differ.
    """

    def __init__(
        self,
        names: Sequence[str],
        voc12_root: PathLike,
        labels: Mapping[str, np.ndarray],
        img_dir: str = "JPEGImages",
    ) -> None:
        self.names = list(names)
        self.voc12_root = Path(voc12_root)
        self.img_dir = img_dir
        self.labels = label_matrix(self.names, labels)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: int) -> dict:
        name = self.names[idx]
        img = load_image(image_path(self.voc12_root, name, self.img_dir))
        return dict(name=name, image=img, label=torch.from_numpy(self.labels[idx].copy()))


class VOCClassification(VOCImages):
    """Images with multi-hot labels for training / validation.

    Item: ``dict(name=str, img=FloatTensor[3, H, W], label=FloatTensor[20])``;
    ``transform`` maps the uint8 HxWx3 RGB image to the tensor.
    """

    def __init__(
        self,
        names: Sequence[str],
        voc12_root: PathLike,
        labels: Mapping[str, np.ndarray],
        transform: Callable[[np.ndarray], torch.Tensor],
        img_dir: str = "JPEGImages",
    ) -> None:
        super().__init__(names, voc12_root, labels, img_dir)
        self.transform = transform

    def __getitem__(self, idx: int) -> dict:
        item = super().__getitem__(idx)
        return dict(name=item["name"], img=self.transform(item["image"]), label=item["label"])


def collate_images(batch: list[dict]) -> dict:
    """Batch :class:`VOCImages` items: names and images as lists, labels stacked."""
    return dict(
        name=[b["name"] for b in batch],
        image=[b["image"] for b in batch],
        label=torch.stack([b["label"] for b in batch]),
    )
