"""One pass over the map files and masks: per-image JI (Eq. 6) and every requested map metric.

:func:`evaluate_maps` reads each map file and each mask once (one decode each) and
returns, per image, the reference and paper JI (the numbers of
:func:`dywsss.metrics.per_sample.per_image_ji`), the mask metrics of
:mod:`dywsss.metrics.map_metrics` (mean over the image's ground-truth classes, NaN
classes left out), and the covariates of the partial VICE (object area fraction,
object count). :meth:`MapEvaluation.summary` is ``eval/<list>_<weights>/map_metrics.json``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ..data.boxes import boxes_from_xml, xml_path
from ..data.voc import CLASS_NAMES, mask_path
from ..errors import ConfigError
from ..provenance import sha256_files
from .map_metrics import (
    DEFAULT_MAP_METRICS, DEFAULT_PG_TOLERANCE, MAP_METRICS, MIN_OBJECT_FRACTION, ClassMap, ImageMasks,
    check_metric_names, column_orientation, prepare_map,
)
from .segmentation import (
    check_inputs_exist, confusion_matrix, image_ji, load_gt_and_maps, map_file, maps_to_mask,
)

PathLike = str | os.PathLike
#: Per-image covariates written beside the metrics (partial VICE controls for the first two).
COVARIATE_COLUMNS: tuple[str, ...] = ("fg_fraction", "n_objects", "n_classes")
PARTIAL_COVARIATES: tuple[str, ...] = ("fg_fraction", "n_objects")


@dataclass
class MapEvaluation:
    """Everything one pass computes; arrays are in list order."""

    names: list[str]
    metrics: list[str]                    # mask metrics computed (registered names)
    ji_reference: np.ndarray              # [N]
    ji_paper: np.ndarray                  # [N]
    pair_image: np.ndarray                # [P] image index of each (image, class) pair
    pair_class: np.ndarray                # [P] 0-based class id
    pair_scores: dict[str, np.ndarray]    # metric -> [P]
    covariates: dict[str, np.ndarray]     # COVARIATE_COLUMNS -> [N]
    box_source: list[str] = field(default_factory=list)  # per image: "xml" | "mask" | "" (epg_box not asked)
    settings: dict = field(default_factory=dict)

    def image_scores(self) -> dict[str, np.ndarray]:
        """Per metric, the mean over each image's classes of its finite values (NaN when none is)."""
        return {m: _group_nanmean(self.pair_image, v, len(self.names)) for m, v in self.pair_scores.items()}

    def columns(self) -> dict[str, np.ndarray]:
        """The per-sample CSV columns this pass adds: ``ji_reference, ji_paper``, the metrics, the covariates."""
        return {"ji_reference": self.ji_reference, "ji_paper": self.ji_paper, **self.image_scores(),
                **self.covariates}

    def class_means(self, metric: str) -> dict[str, float]:
        """Mean of the finite pair values per class (classes that occur in some image)."""
        v = self.pair_scores[metric]
        out = {}
        for c in np.unique(self.pair_class):
            sel = (self.pair_class == c) & np.isfinite(v)
            if sel.any():
                out[CLASS_NAMES[int(c)]] = float(v[sel].mean())
        return out

    def dataset_mean(self, metric: str) -> float:
        """The dataset figure: mean over images, or for ``dataset_mean='classes'`` metrics (``pg``) the
        mean over classes of the per-class means (the per-class hit rate averaged over classes)."""
        if MAP_METRICS.get(metric).dataset_mean == "classes":
            per_class = list(self.class_means(metric).values())
            return float(np.mean(per_class)) if per_class else float("nan")
        v = self.image_scores()[metric]
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def summary(self) -> dict:
        """``map_metrics.json``: per metric the dataset figure, both means, per-class means, counts."""
        per_image = self.image_scores()
        out: dict = {"n_images": len(self.names), "n_pairs": int(self.pair_image.size), "metrics": {}}
        for m in self.metrics:
            spec = MAP_METRICS.get(m)
            v, pv = per_image[m], self.pair_scores[m]
            per_class = self.class_means(m)
            out["metrics"][m] = {
                "mean": _none(self.dataset_mean(m)),
                "dataset_mean": spec.dataset_mean,
                "mean_over_images": _none(float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")),
                "mean_over_classes": _none(float(np.mean(list(per_class.values()))) if per_class else float("nan")),
                "per_class": per_class,
                "n_images": int(np.isfinite(v).sum()),
                "n_pairs_nan": int((~np.isfinite(pv)).sum()),
                "higher_is_better": spec.higher_is_better,
                "definition": spec.definition,
            }
        out["ji"] = {"ji_reference": _none(_nanmean(self.ji_reference)), "ji_paper": _none(_nanmean(self.ji_paper))}
        out["covariates"] = {k: _none(_nanmean(v)) for k, v in self.covariates.items()}
        if self.box_source:
            out["box_source"] = {s: self.box_source.count(s) for s in ("xml", "mask")}
        out["settings"] = self.settings
        return out


def _nanmean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _none(x: float) -> float | None:
    return None if not np.isfinite(x) else x


def _group_nanmean(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    total = np.bincount(group[ok], weights=values[ok], minlength=n)
    count = np.bincount(group[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _image_classes(classes: Sequence[Sequence[int]] | None, i: int, masks: ImageMasks) -> list[int]:
    return masks.present if classes is None else sorted({int(c) for c in classes[i]})


def evaluate_maps(
    names: Sequence[str],
    map_dir: PathLike,
    gt_dir: PathLike,
    classes: Sequence[Sequence[int]] | None = None,
    metrics: Sequence[str] = DEFAULT_MAP_METRICS,
    t: float = 0.1,
    annotations_dir: PathLike | None = None,
    pg_tolerance: float = DEFAULT_PG_TOLERANCE,
    allow_pickle: bool = False,
    hash_inputs: bool = True,
    progress: bool = True,
) -> MapEvaluation:
    """Per-image JI and map metrics in one pass over ``map_dir/<name>.npz`` and ``gt_dir/<name>.png``.

    ``classes[i]``: image i's ground-truth classes (0-based; the label file's). A class
    without a stored map is scored as an all-zero map. ``None``: the classes present in
    the mask. ``metrics``: names from :data:`MAP_METRICS` that need no model (model metrics
    are skipped here; :mod:`dywsss.metrics.faithfulness` computes them). ``t``: background
    threshold of the JI. ``annotations_dir``: the VOC ``Annotations/`` folder for ``epg_box``
    (images without an XML there use the mask's components). ``hash_inputs``: record the
    sha256 of all map files and masks in ``settings['inputs_sha256']``.
    """
    metrics = [m for m in check_metric_names(metrics) if MAP_METRICS.get(m).needs != "model"]
    if not (np.isfinite(pg_tolerance) and pg_tolerance >= 0):
        raise ConfigError(f"pg_tolerance={pg_tolerance!r}: expected a number >= 0 (pixels)")
    if classes is not None and len(classes) != len(names):
        raise ValueError(f"{len(names)} names but {len(classes)} class lists")
    names = list(names)
    paths = [map_file(map_dir, n) for n in names]
    masks_paths = [mask_path(gt_dir, n) for n in names]
    check_inputs_exist(paths, "map files are", map_dir)
    check_inputs_exist(masks_paths, "ground-truth masks are", gt_dir)
    want_boxes = "epg_box" in metrics
    scorers = [(m, MAP_METRICS.get(m).score) for m in metrics]

    n = len(names)
    conf = np.zeros((n, 21, 21), np.int64)
    cov = {k: np.full(n, np.nan) for k in COVARIATE_COLUMNS}
    pair_image, pair_class, values, box_source = [], [], [], []
    n_missing_maps = 0
    for i, (name, path) in enumerate(tqdm(list(zip(names, paths)), desc="map metrics", disable=not progress,
                                          leave=False)):
        gt, file_classes, cams = load_gt_and_maps(path, gt_dir, name, allow_pickle)
        conf[i] = confusion_matrix(gt, maps_to_mask(file_classes, cams, t, shape=gt.shape))
        xml = xml_path(annotations_dir, name) if (want_boxes and annotations_dir is not None) else None
        use_xml = xml is not None and xml.is_file()
        masks = ImageMasks(gt, boxes_from_xml(xml, gt.shape) if use_xml else None, confusion=conf[i])
        if want_boxes:
            box_source.append("xml" if use_xml else "mask")
        cov["fg_fraction"][i], cov["n_objects"][i] = masks.fg_fraction, masks.n_objects
        cov["n_classes"][i] = len(masks.present)
        index = {int(c): k for k, c in enumerate(file_classes)}
        for c in _image_classes(classes, i, masks):
            if c in index:
                a = prepare_map(cams[index[c]])
            else:
                a, n_missing_maps = np.zeros(gt.shape, np.float32), n_missing_maps + 1
            cm = ClassMap(masks, c, a, float(pg_tolerance))
            pair_image.append(i)
            pair_class.append(c)
            values.append([fn(cm) for _, fn in scorers])

    ji_ref, ji_paper = image_ji(conf, "reference"), image_ji(conf, "paper")
    _warn_empty(conf, names)
    scores = np.asarray(values, dtype=np.float64).reshape(len(values), len(metrics))
    settings = dict(
        map_dir=str(map_dir), gt_dir=str(gt_dir),
        annotations_dir=None if annotations_dir is None else str(annotations_dir),
        metrics=metrics, ji_threshold=float(t), pg_tolerance=float(pg_tolerance),
        classes="given (labels)" if classes is not None else "present in the mask",
        pairs_without_stored_map=n_missing_maps,
        covariates=dict(fg_fraction="object pixels (1..20) / valid pixels (gt != 255)",
                        n_objects=f"8-connected components of gt = c+1 with >= {MIN_OBJECT_FRACTION:g} of the image's "
                                  "pixels, summed over the classes present in the mask",
                        n_classes="object classes present in the mask"),
    )
    if hash_inputs:
        settings["inputs_sha256"] = dict(maps=sha256_files(paths), masks=sha256_files(masks_paths))
    return MapEvaluation(
        names=names, metrics=metrics, ji_reference=ji_ref, ji_paper=ji_paper,
        pair_image=np.asarray(pair_image, np.intp), pair_class=np.asarray(pair_class, np.intp),
        pair_scores={m: scores[:, k] for k, m in enumerate(metrics)}, covariates=cov,
        box_source=box_source, settings=settings,
    )


def _warn_empty(conf: np.ndarray, names: Sequence[str]) -> None:
    empty = np.flatnonzero(conf.sum((-2, -1)) == 0)
    if empty.size:
        warnings.warn(f"{empty.size} image(s) have no valid (non-255) mask pixels; their JI is NaN: "
                      f"{[names[i] for i in empty[:5]]}", stacklevel=3)


def write_map_metrics_json(path: PathLike, evaluation: MapEvaluation,
                           model_columns: Mapping[str, np.ndarray] | None = None, **extra) -> Path:
    """Write :meth:`MapEvaluation.summary` atomically, plus the dataset means of the model metrics'
    per-image columns (``model_columns``: e.g. insertion, deletion_norm from
    :func:`dywsss.metrics.faithfulness.batch_faithfulness`, in list order) and ``extra`` fields
    (e.g. provenance)."""
    from ..io import write_json_atomic

    summary = evaluation.summary()
    for col, values in (model_columns or {}).items():
        name, sign = column_orientation(col)
        v = np.asarray(values, dtype=np.float64)
        summary["metrics"][col] = {
            "mean": _none(_nanmean(v)), "dataset_mean": "images", "mean_over_images": _none(_nanmean(v)),
            "n_images": int(np.isfinite(v).sum()), "higher_is_better": sign > 0,
            "definition": MAP_METRICS.get(name).definition + (" (p_k / p_0)" if col.endswith("_norm") else ""),
        }
    return write_json_atomic(path, {**summary, **extra})


__all__ = ["COVARIATE_COLUMNS", "PARTIAL_COVARIATES", "MapEvaluation", "evaluate_maps", "write_map_metrics_json"]
