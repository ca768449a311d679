"""Map quality against segmentation masks: masks from maps, confusion counts, JI (Eq. 6).

Conventions (those of the original code):

* 21 segmentation classes: 0 = background, ``c + 1`` = VOC class ``c``; mask value 255
  is ignored everywhere (it is neither ground truth nor prediction).
* A map set becomes a mask by a per-pixel argmax over ``[t, map_0, ..., map_19]`` in
  float32, the first maximum winning: a pixel goes to class ``c + 1`` only when its best
  class score is **strictly** above ``t``; equal class scores go to the lower class id.
* IoU_c = TP / (T + P - TP); the original adds 1e-10 to the denominator, which changes
  nothing but the last bits, so a class with an empty union gets IoU 0 here as there.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, load_mask, mask_path
from ..errors import InputError, MissingInputError
from ..mapfile import load_maps

NUM_SEG_CLASSES = NUM_CLASSES + 1  # background + 20 object classes
IGNORE = IGNORE_INDEX
SEG_CLASS_NAMES: tuple[str, ...] = ("background",) + CLASS_NAMES
JI_DEFINITIONS = ("reference", "paper")

PathLike = str | os.PathLike


# ----------------------------------------------------------------- thresholds
def default_thresholds() -> np.ndarray:
    """The original curve: t = i / 100 for i = 0..59."""
    return np.arange(60) / 100.0


def _check_thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size == 0:
        raise ValueError("thresholds: need at least one background threshold")
    if not np.isfinite(thr).all() or thr.min() < 0:
        # With t < 0 the original's zero-filled maps of absent classes would win the argmax.
        raise ValueError(f"thresholds must be finite and >= 0, got min {thr.min()}")
    if thr.size > 1 and not (np.diff(thr) > 0).all():
        raise ValueError("thresholds must be strictly increasing")
    return thr


# ------------------------------------------------------------- maps -> mask
def _sorted_maps(classes: np.ndarray, cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(classes, kind="stable")
    if (order == np.arange(order.size)).all():
        return classes, cams
    return classes[order], cams[order]


def _add_best_class(acc: np.ndarray, classes: np.ndarray, cams: np.ndarray, score: np.ndarray, scale: int) -> None:
    """``acc += scale * (winning class id)`` per pixel, in place; ``classes`` sorted, ``score`` the max map.

    The winner is the first map in class order that reaches the max (np.argmax's rule),
    found with comparisons instead of an argmax over axis 0, which is several times slower.
    """
    acc += int(classes[0]) * scale
    if classes.size == 1:
        return
    not_yet = cams[0] != score
    step = np.empty_like(acc)
    for j in range(1, classes.size):  # K <= 20 maps of one image
        # acc += delta where not_yet; a multiply-add is much faster than np.add(..., where=)
        np.multiply(not_yet, acc.dtype.type(int(classes[j] - classes[j - 1]) * scale), out=step)
        acc += step
        if j < classes.size - 1:
            not_yet &= cams[j] != score


def count_below(thresholds32: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Number of thresholds strictly below each score (float32 ``<``), int [score.size].

    Equals ``np.searchsorted(thresholds32, score, 'left')``; for an evenly spaced grid it is
    computed as an estimate from the spacing, corrected by direct float32 comparisons.
    """
    s = score.reshape(-1)
    n = thresholds32.size
    step = np.diff(thresholds32.astype(np.float64))
    if n < 3 or np.ptp(step) > 1e-2 * step.mean():  # not a regular grid
        return np.searchsorted(thresholds32, s, side="left")
    ext = np.concatenate([[-np.inf], thresholds32, [np.inf]]).astype(np.float32)
    est = np.ceil((s - thresholds32[0]) * np.float32(1.0 / step.mean()))
    b = np.clip(est, 0, n, out=est).astype(np.intp)
    while True:  # one round for a regular grid; each round fixes off-by-one estimates
        too_high = ext[b] >= s      # threshold b-1 is not below s
        b -= too_high
        too_low = ext[b + 1] < s    # threshold b is below s
        b += too_low
        if not (too_high.any() or too_low.any()):
            return b


def maps_to_mask(classes: np.ndarray, cams: np.ndarray, t: float, shape: Sequence[int] | None = None) -> np.ndarray:
    """Segmentation mask (uint8 [H, W], 0 = background, c + 1 = class c) from class maps.

    Per pixel argmax over ``[t, maps...]`` in float32, first maximum winning, so a
    map equal to ``t`` gives background. ``shape`` is needed only when there are no maps.
    """
    if t < 0:
        raise ValueError(f"background threshold must be >= 0, got {t}")
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    cams = np.asarray(cams, dtype=np.float32)
    if classes.size == 0:
        hw = cams.shape[1:] if shape is None else tuple(shape)
        return np.zeros(hw, np.uint8)
    classes, cams = _sorted_maps(classes, cams)
    score = cams.max(axis=0)
    cls = np.ones(score.shape, np.uint8)  # mask value = class id + 1
    _add_best_class(cls, classes, cams, score, 1)
    cls *= score > np.float32(t)
    return cls


# ---------------------------------------------------------------- confusion
def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_SEG_CLASSES) -> np.ndarray:
    """Pixel counts int64 [C, C], rows = ground truth, columns = prediction; gt 255 ignored."""
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels, prediction {pred.size}")
    if gt.dtype == np.uint8 and pred.dtype == np.uint8 and num_classes <= IGNORE:
        # uint8 masks (every mask we load): count every (gt, pred) pair at once, then check the counts
        pmax = int(pred.max(initial=0))
        idx = gt.astype(np.uint16) * np.uint16(max(pmax + 1, num_classes)) + pred
        full = np.bincount(idx, minlength=256 * max(pmax + 1, num_classes)).reshape(256, -1)
        if full[num_classes:IGNORE].any():
            raise ValueError(f"ground-truth values outside 0..{num_classes - 1} and {IGNORE}")
        if full[:IGNORE, num_classes:].any():
            raise ValueError(f"predicted values outside 0..{num_classes - 1}")
        return full[:num_classes, :num_classes].astype(np.int64)
    gt, pred = gt.astype(np.intp), pred.astype(np.intp)
    valid = gt != IGNORE
    if (gt[valid] >= num_classes).any() or (gt < 0).any():
        raise ValueError(f"ground-truth values outside 0..{num_classes - 1} and {IGNORE}")
    if (pred[valid] >= num_classes).any() or (pred[valid] < 0).any():
        raise ValueError(f"predicted values outside 0..{num_classes - 1}")
    idx = gt[valid] * num_classes + pred[valid]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (T + P - TP) for confusion matrices [..., C, C]; empty union -> 0."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(-1) + conf.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), 0.0)


def image_ji(conf: np.ndarray, definition: str = "reference") -> np.ndarray:
    """Per-image JI (Eq. 6) from per-image confusion matrices [..., 21, 21].

    ``reference`` (the original code): mean IoU over the classes whose IoU is non-zero,
    background included; when no class has IoU > 0 the result is 0 (the original
    takes the mean of an empty slice, NaN). ``paper`` (Eq. 6 as written): mean IoU over
    the classes present in the ground truth or the prediction (valid pixels only), so a
    present but entirely missed class counts as 0. An image without valid pixels -> NaN.
    """
    if definition not in JI_DEFINITIONS:
        raise ValueError(f"ji_definition must be one of {JI_DEFINITIONS}, got {definition!r}")
    conf = np.asarray(conf, dtype=np.float64)
    iou = iou_from_confusion(conf)
    if definition == "reference":
        keep = iou != 0
    else:
        keep = (conf.sum(-1) + conf.sum(-2)) > 0
    n_keep = keep.sum(-1)
    total = conf.sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ji = np.where(n_keep > 0, (iou * keep).sum(-1) / np.maximum(n_keep, 1), 0.0)
    return np.where(total > 0, ji, np.nan)


# ------------------------------------------------------- one-pass JI curve
def image_threshold_histogram(
    gt: np.ndarray, classes: np.ndarray, cams: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Pixel counts int64 [21, 20, T + 1] by (gt class, best map class, score bin).

    The bin of a pixel is the number of thresholds strictly below its best class score
    (float32 comparison, as the original's argmax), so at threshold ``k`` the pixel is
    predicted as its best class iff its bin is > k. ``thresholds`` must be sorted.
    Ignored (255) pixels are dropped; an image without maps counts as all background.
    """
    thr32 = np.asarray(thresholds, dtype=np.float32)
    nb = thr32.size + 1
    size = NUM_SEG_CLASSES * NUM_CLASSES * nb
    g = gt.reshape(-1).astype(np.intp)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if classes.size == 0:
        idx = g * (NUM_CLASSES * nb)  # class slot 0, bin 0: background at every t >= 0
    else:
        classes, cams = _sorted_maps(classes, np.asarray(cams, dtype=np.float32))
        score = cams.max(axis=0)
        idx = g * (NUM_CLASSES * nb)
        idx += count_below(thr32, score)
        _add_best_class(idx, classes, cams.reshape(classes.size, -1), score.reshape(-1), nb)
    idx[g == IGNORE] = size  # one spare bin for ignored pixels, dropped below
    return np.bincount(idx, minlength=size + 1)[:size].reshape(NUM_SEG_CLASSES, NUM_CLASSES, nb)


def confusion_from_histogram(hist: np.ndarray) -> np.ndarray:
    """Confusion matrices int64 [T, 21, 21] for every threshold from the summed histogram."""
    hist = np.asarray(hist, dtype=np.int64)
    n_thr = hist.shape[-1] - 1
    # fg[g, c, k] = pixels of gt g whose best class c scores above threshold k (bin > k)
    fg = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1][..., 1:]
    conf = np.empty((n_thr, NUM_SEG_CLASSES, NUM_SEG_CLASSES), np.int64)
    conf[:, :, 1:] = fg.transpose(2, 0, 1)
    conf[:, :, 0] = hist.sum((1, 2))[None, :] - fg.sum(1).T
    return conf


@dataclass
class JICurve:
    """Dataset mIoU over background thresholds (stage 3). Fractions in [0, 1]."""

    thresholds: np.ndarray          # [T] (empty for label-PNG predictions)
    confusion: np.ndarray           # [T or 1, 21, 21] pixel counts
    per_class_iou: np.ndarray = field(init=False)   # [T or 1, 21]
    miou: np.ndarray = field(init=False)            # [T or 1]

    def __post_init__(self) -> None:
        self.per_class_iou = iou_from_confusion(self.confusion)
        self.miou = self.per_class_iou.mean(-1)

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.miou))

    @property
    def best_threshold(self) -> float | None:
        return float(self.thresholds[self.best_index]) if self.thresholds.size else None

    @property
    def best_miou(self) -> float:
        return float(self.miou[self.best_index])

    @property
    def absent_classes(self) -> list[str]:
        """Classes with no ground-truth pixel in the whole set (their IoU is 0 or undefined)."""
        gt_count = self.confusion[0].sum(1)
        return [SEG_CLASS_NAMES[i] for i in np.flatnonzero(gt_count == 0)]

    def summary(self) -> dict:
        """The ``ji_curve.json`` fields (settings are added by the caller)."""
        return dict(
            thresholds=self.thresholds.tolist(),
            miou=self.miou.tolist(),
            best_threshold=self.best_threshold,
            best_miou=self.best_miou,
            per_class_iou=dict(zip(SEG_CLASS_NAMES, self.per_class_iou[self.best_index].tolist())),
            absent_classes=self.absent_classes,
        )


# ----------------------------------------------------------------- file IO
def map_file(map_dir: PathLike, name: str, input_type: str = "auto") -> Path:
    """``map_dir/<name>.npz`` (or ``.npy``/``.png`` by ``input_type``; auto: npz, then npy)."""
    map_dir = Path(map_dir)
    if input_type == "auto":
        npz = map_dir / f"{name}.npz"
        return npz if npz.exists() or not (map_dir / f"{name}.npy").exists() else map_dir / f"{name}.npy"
    if input_type not in ("npz", "npy", "png"):
        raise ValueError(f"input type must be npz, npy or png, got {input_type!r}")
    return map_dir / f"{name}.{input_type}"


def check_inputs_exist(paths: Sequence[Path], what: str, source: PathLike = "") -> None:
    """Fail before any work when listed files are missing, naming a few of them."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        where = f"{source}: " if str(source) else ""
        raise MissingInputError(
            f"{where}{len(missing)} of {len(paths)} {what} missing, e.g. {', '.join(missing[:3])}"
        )


def load_gt_and_maps(
    map_path: Path, gt_dir: PathLike, name: str, allow_pickle: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mask uint8 [H, W], classes int64 [K], maps float32 [K, H, W])`` of one image, sizes checked."""
    gt = load_mask(gt_dir, name)
    classes, cams = load_maps(map_path, allow_pickle=allow_pickle)
    if classes.size and cams.shape[1:] != gt.shape:
        raise InputError(
            f"{map_path}: maps are {cams.shape[2]}x{cams.shape[1]} but the mask "
            f"{mask_path(gt_dir, name)} is {gt.shape[1]}x{gt.shape[0]} (width x height)"
        )
    return gt, classes, cams


def load_label_png(path: Path, shape: Sequence[int]) -> np.ndarray:
    """A label-index prediction PNG (values 0..20) as uint8 [H, W], checked against ``shape``."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: prediction must be a palette or grayscale PNG, got mode {im.mode}")
            pred = np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: unreadable prediction PNG ({exc})") from exc
    if pred.shape != tuple(shape):
        raise ValueError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]}, mask is {shape[1]}x{shape[0]}")
    if pred.max(initial=0) >= NUM_SEG_CLASSES:
        raise ValueError(f"{path}: prediction values must be 0..{NUM_SEG_CLASSES - 1}, found {int(pred.max())}")
    return pred


def dataset_ji_curve(
    names: Sequence[str],
    predict_dir: PathLike,
    gt_dir: PathLike,
    thresholds: Sequence[float] | np.ndarray | None = None,
    input_type: str = "npz",
    allow_pickle: bool = False,
    progress: bool = True,
) -> JICurve:
    """Dataset mIoU for every background threshold in one pass over the files (stage 3).

    Map files give the whole curve (default t = 0.00..0.59); label-index PNGs
    (``input_type='png'``) give a single point and ``thresholds`` is ignored.
    """
    if input_type == "npy" and not allow_pickle:
        raise ValueError(
            f"{predict_dir}: --type npy reads the original's pickled map files, which can run code "
            "stored in them; pass --allow-pickle if you trust them (our own maps are .npz)"
        )
    paths = [map_file(predict_dir, n, input_type) for n in names]
    check_inputs_exist(paths, f"{input_type} prediction files are", predict_dir)
    check_inputs_exist([mask_path(gt_dir, n) for n in names], "ground-truth masks are", gt_dir)
    it = tqdm(list(zip(names, paths)), desc="JI curve", disable=not progress, leave=False)
    if input_type == "png":
        conf = np.zeros((NUM_SEG_CLASSES, NUM_SEG_CLASSES), np.int64)
        for name, path in it:
            gt = load_mask(gt_dir, name)
            conf += confusion_matrix(gt, load_label_png(path, gt.shape))
        return JICurve(np.zeros(0), conf[None])
    thr = _check_thresholds(default_thresholds() if thresholds is None else thresholds)
    hist = np.zeros((NUM_SEG_CLASSES, NUM_CLASSES, thr.size + 1), np.int64)
    for name, path in it:
        gt, classes, cams = load_gt_and_maps(path, gt_dir, name, allow_pickle)
        hist += image_threshold_histogram(gt, classes, cams, thr)
    return JICurve(thr, confusion_from_histogram(hist))


def image_confusions(
    map_dir: PathLike,
    names: Sequence[str],
    gt_dir: PathLike,
    t: float = 0.1,
    allow_pickle: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Per-image confusion matrices int64 [N, 21, 21] of the masks at background threshold ``t``."""
    paths = [map_file(map_dir, n) for n in names]
    check_inputs_exist(paths, "map files are", map_dir)
    check_inputs_exist([mask_path(gt_dir, n) for n in names], "ground-truth masks are", gt_dir)
    out = np.zeros((len(names), NUM_SEG_CLASSES, NUM_SEG_CLASSES), np.int64)
    for i, (name, path) in enumerate(tqdm(list(zip(names, paths)), desc="per-image JI", disable=not progress,
                                          leave=False)):
        gt, classes, cams = load_gt_and_maps(path, gt_dir, name, allow_pickle)
        out[i] = confusion_matrix(gt, maps_to_mask(classes, cams, t, shape=gt.shape))
    return out


def per_image_ji_from_confusions(conf: np.ndarray, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ji_reference, ji_paper)`` [N] from confusions [N, 21, 21]; warns about images without valid pixels."""
    ref, paper = image_ji(conf, "reference"), image_ji(conf, "paper")
    empty = np.flatnonzero(np.asarray(conf).sum((-2, -1)) == 0)
    if empty.size:
        which = [names[i] for i in empty[:5]] if names is not None else empty[:5].tolist()
        warnings.warn(f"{empty.size} image(s) have no valid (non-255) mask pixels; their JI is NaN: {which}",
                      stacklevel=2)
    return ref, paper
