"""Build image-level labels (``cls_labels.json``) from VOC XML annotations or masks.

The spec's labels are the object classes named in ``Annotations/<id>.xml``;
without XML they are the classes present in the segmentation mask (for 817 of
the 12031 VOC2012Aug images the two differ, see voc12/README.md).
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, InputError, MissingInputError
from ..io import write_text_atomic
from .voc import CLASS_NAMES, NUM_CLASSES, load_mask

PathLike = str | os.PathLike
MASK_DIRS: tuple[str, ...] = ("SegmentationClassAug", "SegmentationClass")
_CLASS_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}


def labels_from_xml(xml_path: PathLike) -> list[int]:
    """Sorted 0-based ids of the classes named by ``<object><name>`` in a VOC annotation.

    Only top-level objects count (not the ``<part>`` names of person layouts).
    """
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise MissingInputError(f"{xml_path}: annotation not found")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{xml_path}: unreadable XML annotation ({exc})") from exc
    ids = set()
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise InputError(f"{xml_path}: unknown object class {name!r} (expected one of the 20 VOC names)")
        ids.add(_CLASS_INDEX[name])
    return sorted(ids)


def labels_from_mask(mask: np.ndarray) -> list[int]:
    """Sorted 0-based ids of the classes present in a mask (values 1..20; 0 and 255 ignored)."""
    values = np.unique(np.asarray(mask))
    return [int(v) - 1 for v in values if 1 <= v <= NUM_CLASSES]


def _mask_dir(voc12_root: Path, name: str) -> Path | None:
    for sub in MASK_DIRS:
        if (voc12_root / sub / f"{name}.png").is_file():
            return voc12_root / sub
    return None


def _all_names(folder: Path, suffix: str) -> list[str]:
    return sorted(p.stem for p in folder.glob(f"*{suffix}"))


def build_cls_labels(
    voc12_root: PathLike,
    names: Iterable[str] | None = None,
    prefer: str = "xml",
    progress: bool = True,
) -> dict[str, list[int]]:
    """``{id: [0-based class ids]}`` for ``names`` (default: every annotated image).

    ``prefer="xml"`` reads ``Annotations/<id>.xml`` when that folder exists, else
    the masks (``SegmentationClassAug`` first, then ``SegmentationClass``);
    ``prefer="mask"`` always reads the masks.
    """
    if prefer not in ("xml", "mask"):
        raise ConfigError(f"prefer must be 'xml' or 'mask', got {prefer!r}")
    root = Path(voc12_root)
    if not root.is_dir():
        raise MissingInputError(f"{root}: VOC2012 folder not found")
    use_xml = prefer == "xml" and (root / "Annotations").is_dir()
    if names is None:
        if use_xml:
            names = _all_names(root / "Annotations", ".xml")
        else:
            found = set()
            for sub in MASK_DIRS:
                found.update(_all_names(root / sub, ".png"))
            names = sorted(found)
    names = list(names)
    if not names:
        raise InputError(f"{root}: no images to label (no Annotations/*.xml and no masks in {', '.join(MASK_DIRS)})")
    labels: dict[str, list[int]] = {}
    for name in tqdm(names, desc="labels", disable=not progress, leave=False):
        if use_xml:
            labels[name] = labels_from_xml(root / "Annotations" / f"{name}.xml")
            continue
        gt_dir = _mask_dir(root, name)
        if gt_dir is None:
            raise MissingInputError(f"{root}: no mask for {name!r} in {' or '.join(MASK_DIRS)}")
        labels[name] = labels_from_mask(load_mask(gt_dir, name))
    return labels


def write_cls_labels(path: PathLike, labels: Mapping[str, Sequence[int]]) -> Path:
    """Write ``{id: [class ids]}`` as compact JSON (atomically); images without any class are left out
    (every VOC image holds an object; the label reader refuses empty entries)."""
    clean = {str(k): [int(c) for c in v] for k, v in labels.items() if len(v)}
    for name, ids in clean.items():
        if any(not 0 <= c < NUM_CLASSES for c in ids):
            raise InputError(f"{path}: image {name!r} has class ids {ids} outside 0..{NUM_CLASSES - 1}")
    return write_text_atomic(path, json.dumps(clean, separators=(",", ":")) + "\n")


def class_counts(labels: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Number of images containing each class, int64 [20]."""
    flat = np.fromiter((c for ids in labels.values() for c in ids), dtype=np.int64)
    return np.bincount(flat, minlength=NUM_CLASSES)
