"""Object boxes of an image: from ``Annotations/<id>.xml`` or from the mask's connected components.

Boxes are returned as 0-based, half-open pixel slices ``(y0, y1, x0, x1)`` so that
``region[y0:y1, x0:x1]`` is the box. VOC XML stores 1-based inclusive corners
(``xmin..xmax``), so ``x0 = xmin - 1`` and ``x1 = xmax``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError, MissingInputError
from .voc import CLASS_NAMES

PathLike = str | os.PathLike
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (0-based, half-open)
_CLASS_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}
#: 8-connectivity for scipy.ndimage.label
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def xml_path(annotations_dir: PathLike, name: str) -> Path:
    return Path(annotations_dir) / f"{name}.xml"


def boxes_from_xml(path: PathLike, shape: tuple[int, int] | None = None,
                   include_difficult: bool = False) -> dict[int, list[Box]]:
    """``{class id: [boxes]}`` of the objects of a VOC annotation (non-difficult ones by default).

    Corners are clipped to ``shape`` (H, W) when given; a box that is empty after
    clipping is an error naming the file (the XML does not fit the mask).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: annotation not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: unreadable XML annotation ({exc})") from exc
    out: dict[int, list[Box]] = {}
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise InputError(f"{path}: unknown object class {name!r} (expected one of the 20 VOC names)")
        if not include_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        bb = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (int(round(float(bb.findtext(k)))) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"{path}: object {name!r} lacks a numeric <bndbox> (xmin, ymin, xmax, ymax)") from None
        y0, y1, x0, x1 = ymin - 1, ymax, xmin - 1, xmax
        if shape is not None:
            y0, x0 = max(y0, 0), max(x0, 0)
            y1, x1 = min(y1, shape[0]), min(x1, shape[1])
        if y1 <= y0 or x1 <= x0:
            raise InputError(f"{path}: box of {name!r} ({xmin},{ymin})-({xmax},{ymax}) is empty inside the "
                             f"{'image' if shape is None else f'{shape[1]}x{shape[0]} mask'}")
        out.setdefault(_CLASS_INDEX[name], []).append((y0, y1, x0, x1))
    return out


def component_labels(region: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean region: (label image int32, count)."""
    labels, n = ndimage.label(region, structure=EIGHT_CONNECTED)
    return labels, int(n)


def boxes_from_components(labels: np.ndarray, n: int) -> list[Box]:
    """Tight boxes of the components 1..n of a label image (:func:`component_labels`)."""
    if n == 0:
        return []
    return [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in ndimage.find_objects(labels, n) if s is not None]


def union_mask(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """Boolean [H, W] union of boxes."""
    out = np.zeros(shape, dtype=bool)
    for y0, y1, x0, x1 in boxes:
        out[y0:y1, x0:x1] = True
    return out
