"""Map quality beyond JI: registered per-(image, class) metrics of a class map (issue 11).

Notation: ``A`` = the stored map of class ``c`` at image size, taken as ``max(A, 0)``
(stored maps are already in [0, 1]; this matters only for unclamped legacy maps, a hair
below 0), ``gt`` the mask (``c + 1`` = class c, 255 = ignored: such pixels count nowhere
unless a metric says otherwise).

* ``epg`` (energy pointing game against the mask; Wang et al. 2020, beyond-spec 1.4):
  ``sum(A[gt == c+1]) / sum(A[gt != 255])``; NaN when the denominator is 0.
* ``epg_box``: the same with the union of class c's boxes (non-difficult objects of
  ``Annotations/<id>.xml``; without XML the tight boxes of the 8-connected components of
  ``gt == c+1``) in place of ``gt == c+1``, valid pixels only.
* ``pg`` (pointing game, Zhang et al. 2018, TorchRay protocol): 1 when some pixel with
  ``gt == c+1`` lies within Euclidean distance ``pg_tolerance`` (15 px) of the map's first
  maximum in row-major order, else 0; an all-zero map is a miss. The dataset figure is the
  per-class hit rate averaged over classes.
* ``ap_mask``: average precision of the pixel scores ``A`` against ``gt == c+1`` over the
  valid pixels, scikit-learn's ``average_precision_score`` definition
  (``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, descending); with no positive
  pixel it is 0 as in scikit-learn; with no valid pixel NaN.
* ``gini`` (compactness, beyond-spec 1.4, the map alone): all pixels sorted ascending
  ``a_1..a_n``, ``G = sum_i (2i - n - 1) a_i / (n sum_i a_i)``; NaN for an all-zero map.
* ``insertion`` / ``deletion`` (Petsiuk et al. 2018) need the model: computed by
  :mod:`dywsss.metrics.faithfulness` (torch); registered here for their names, columns and
  orientation only, so that this module never imports torch.

A metric is one function ``score(m: ClassMap) -> float`` registered with
:func:`map_metric`; the one-pass evaluation (:mod:`dywsss.metrics.map_eval`) builds the
:class:`ClassMap` of every (image, ground-truth class) once and calls each requested metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Literal, Sequence

import numpy as np

from ..data.boxes import Box, boxes_from_components, component_labels, union_mask
from ..errors import ConfigError
from ..registry import Registry

IGNORE = 255
DEFAULT_PG_TOLERANCE = 15.0
#: Smallest connected component counted as an object by ``n_objects``, as a fraction of the image.
MIN_OBJECT_FRACTION = 1e-3

Needs = Literal["mask", "map", "model"]
DatasetMean = Literal["images", "classes"]


@dataclass(frozen=True)
class MapMetric:
    """A registered map metric: how to score one (image, class) and how to read the result."""

    name: str
    score: Callable[["ClassMap"], float] | None  # None: computed elsewhere (model metrics)
    higher_is_better: bool = True
    needs: Needs = "mask"
    #: per-image CSV columns it produces (default: its name)
    columns: tuple[str, ...] = ()
    #: dataset figure: mean over images of the per-image values, or mean over classes of the per-class means
    dataset_mean: DatasetMean = "images"
    definition: str = ""

    @property
    def orientation(self) -> int:
        """+1 when higher is better, -1 when lower is better (VICE negates such metrics)."""
        return 1 if self.higher_is_better else -1


MAP_METRICS: Registry[MapMetric] = Registry("map metric")


def map_metric(name: str, *, higher_is_better: bool = True, needs: Needs = "mask",
               dataset_mean: DatasetMean = "images", columns: Sequence[str] = (),
               definition: str = "") -> Callable:
    """Register ``score(m: ClassMap) -> float`` as the map metric ``name``."""

    def add(fn: Callable[["ClassMap"], float]) -> Callable[["ClassMap"], float]:
        MAP_METRICS.register(name)(MapMetric(name, fn, higher_is_better, needs, tuple(columns) or (name,),
                                             dataset_mean, definition or (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return add


def register_model_metric(name: str, columns: Sequence[str], higher_is_better: bool, definition: str) -> None:
    """Register a metric that needs the network (its scores come from :mod:`dywsss.metrics.faithfulness`)."""
    MAP_METRICS.register(name)(MapMetric(name, None, higher_is_better, "model", tuple(columns), "images", definition))


#: The default of ``map_metrics``: every metric that needs only the maps and masks.
DEFAULT_MAP_METRICS: tuple[str, ...] = ("epg", "epg_box", "pg", "ap_mask", "gini")
#: Columns of the paper's JI (all higher-is-better).
JI_COLUMNS: tuple[str, ...] = ("miou", "ji_reference", "ji_paper")


def check_metric_names(names: Sequence[str], key: str = "map_metrics") -> list[str]:
    """Validate a ``map_metrics`` list (unknown or repeated names are a ConfigError naming the key)."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    for n in names:
        if n not in MAP_METRICS:
            try:
                MAP_METRICS.get(n)
            except KeyError as exc:
                raise ConfigError(f"{key}: {exc.args[0]}") from None
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: repeated metric names in {names}")
    return names


def metric_columns(names: Sequence[str]) -> list[str]:
    """The per-image CSV columns of the metrics ``names``, in order."""
    return [col for n in names for col in MAP_METRICS.get(n).columns]


def column_orientation(column: str) -> tuple[str, int]:
    """``(metric name, +1 | -1)`` of a per-sample CSV column (JI columns: the paper's JI, +1).

    Raises KeyError for a column that no registered metric produces.
    """
    if column in JI_COLUMNS:
        return column, 1
    for name in MAP_METRICS.names():
        spec = MAP_METRICS.get(name)
        if column in spec.columns:
            return name, spec.orientation
    known = list(JI_COLUMNS) + [c for n in MAP_METRICS.names() for c in MAP_METRICS.get(n).columns]
    raise KeyError(f"no registered map metric has the column {column!r} (known: {', '.join(known)})")


# ------------------------------------------------------------------ shared per-image state
@dataclass
class ImageMasks:
    """The mask of one image and what several metrics derive from it, computed at most once."""

    gt: np.ndarray                                # uint8 [H, W]
    xml_boxes: dict[int, list[Box]] | None = None  # {class: boxes} from the XML, None: use components
    confusion: np.ndarray | None = None           # the image's [21, 21] JI confusion, if at hand: gives counts
    _targets: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _components: dict[int, tuple[np.ndarray, int, tuple[int, int]]] = field(default_factory=dict, repr=False)

    @cached_property
    def counts(self) -> np.ndarray:
        """Pixels per mask value, int [256]."""
        if self.confusion is None:
            return np.bincount(self.gt.ravel(), minlength=256)
        counts = np.zeros(256, np.int64)
        counts[:self.confusion.shape[0]] = self.confusion.sum(1)
        counts[IGNORE] = self.gt.size - counts.sum()
        return counts

    @cached_property
    def valid(self) -> np.ndarray:
        return self.gt != IGNORE

    @cached_property
    def ignored_index(self) -> np.ndarray:
        """Flat indices of the 255 pixels (few: the outline band)."""
        return np.flatnonzero(self.gt == IGNORE)

    @property
    def n_valid(self) -> int:
        return int(self.gt.size - self.counts[IGNORE])

    @cached_property
    def present(self) -> list[int]:
        """0-based classes with at least one pixel in the mask."""
        return [c for c in range(20) if self.counts[c + 1] > 0]

    def target_index(self, c: int) -> np.ndarray:
        """Flat indices of the pixels with ``gt == c+1``, cached per class."""
        if c not in self._targets:
            self._targets[c] = np.flatnonzero(self.gt == c + 1)
        return self._targets[c]

    def components(self, c: int) -> tuple[np.ndarray, int, tuple[int, int]]:
        """8-connected components of ``gt == c+1`` inside the class's bounding rectangle:
        (label image of the rectangle, count, (top, left) of the rectangle); cached per class."""
        if c not in self._components:
            region = self.gt == c + 1
            rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
            if rows.size == 0:
                self._components[c] = (np.zeros((0, 0), np.int32), 0, (0, 0))
            else:
                top, left = int(rows[0]), int(cols[0])
                labels, n = component_labels(region[top:rows[-1] + 1, left:cols[-1] + 1])
                self._components[c] = (labels, n, (top, left))
        return self._components[c]

    def boxes(self, c: int) -> list[Box] | None:
        """Class c's boxes: the XML's non-difficult ones (None when the XML has only difficult
        ones), or without XML the components' tight boxes (empty when c is absent from the mask)."""
        if self.xml_boxes is not None:
            return self.xml_boxes.get(c)
        labels, n, (top, left) = self.components(c)
        return [(y0 + top, y1 + top, x0 + left, x1 + left) for y0, y1, x0, x1 in boxes_from_components(labels, n)]

    # image covariates (partial VICE)
    @property
    def fg_fraction(self) -> float:
        """Fraction of the valid pixels that belong to an object class (1..20); NaN without valid pixels."""
        return float(self.counts[1:21].sum() / self.n_valid) if self.n_valid else float("nan")

    @cached_property
    def n_objects(self) -> int:
        """8-connected components of ``gt == c+1`` of at least :data:`MIN_OBJECT_FRACTION` of the image's
        pixels (at least 1 pixel), summed over the present classes. The floor drops the specks that
        the 255 outline band cuts off an object, which would otherwise count as objects."""
        floor = max(1.0, MIN_OBJECT_FRACTION * self.gt.size)
        total = 0
        for c in self.present:
            labels, k, _ = self.components(c)
            total += int((np.bincount(labels.ravel(), minlength=k + 1)[1:] >= floor).sum())
        return total


@dataclass
class ClassMap:
    """One (image, class): the map ``a`` (float32 [H, W], >= 0, see :func:`prepare_map`) with the image's masks."""

    masks: ImageMasks
    c: int
    a: np.ndarray
    pg_tolerance: float = DEFAULT_PG_TOLERANCE

    @cached_property
    def flat(self) -> np.ndarray:
        return self.a.reshape(-1)

    @cached_property
    def valid_mass(self) -> float:
        """``sum(A[gt != 255])`` in float64."""
        return float(self.flat.sum(dtype=np.float64) - self.flat[self.masks.ignored_index].sum(dtype=np.float64))

    @cached_property
    def is_zero(self) -> bool:
        return not bool(self.flat.any())

    @cached_property
    def value_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bin of each pixel int [H*W], pixels per bin int [B], value of each bin float64 [B])``.

        Bins are in ascending value order and equal values share a bin, so sorted-order
        statistics (AP, Gini) become sums over bins without a sort. Maps whose values are
        all float16 numbers >= +0.0 (every float16 map file, the default) are binned by their
        float32 bits >> 13, which is monotone for such values (shifted so that 0 and
        float16's smallest number are neighbours); other maps use ``np.unique``.
        """
        flat = self.flat
        bits = flat.view(np.uint32)
        key = bits >> np.uint32(13)
        if np.array_equal(key << np.uint32(13), bits):  # every value has float16's 10-bit mantissa
            np.maximum(key, np.uint32(_F16_MIN_KEY - 1), out=key)
            key -= np.uint32(_F16_MIN_KEY - 1)  # 0 -> bin 0, float16's smallest number -> bin 1, ...
            bins = key.astype(np.intp)
            count = np.bincount(bins)
            # fast path only when no value lies between 0 and float16's smallest number (they would share
            # bin 0) and none is -0.0 (its sign bit puts it past every float16 number >= 0)
            if count.size < _MAX_BINS and count[0] == flat.size - np.count_nonzero(bits):
                return bins, count, _bin_values(count.size)
        values, inverse, count = np.unique(flat + np.float32(0), return_inverse=True, return_counts=True)
        return inverse.reshape(-1), count, values.astype(np.float64)


#: float32 bits >> 13 of float16's smallest positive number, 2**-24
_F16_MIN_KEY = int(np.array(2.0 ** -24, np.float32).view(np.uint32)) >> 13
#: bins of the fast path: float16's largest number (65504) is bin 40961; -0.0 lands at 156674
_MAX_BINS = 1 << 16
_BIN_VALUES = np.zeros(1)


def _bin_values(n: int) -> np.ndarray:
    """Value of the bins 0..n-1 of :attr:`ClassMap.value_bins` (bin 0 = 0.0), float64, cached."""
    global _BIN_VALUES
    if _BIN_VALUES.size < n:
        keys = np.arange(_F16_MIN_KEY, _F16_MIN_KEY + n - 1, dtype=np.uint32) << np.uint32(13)
        _BIN_VALUES = np.concatenate([[0.0], keys.view(np.float32).astype(np.float64)])
    return _BIN_VALUES[:n]


def prepare_map(a: np.ndarray) -> np.ndarray:
    """``max(A, 0)`` as C-contiguous float32 (no copy when the map has no negative value)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a if a.min(initial=0.0) >= 0 else np.maximum(a, np.float32(0))


# ------------------------------------------------------------------ the mask metrics
@map_metric("epg", definition="sum of A over gt = c+1 / sum of A over gt != 255")
def energy_pointing_game(m: ClassMap) -> float:
    """Energy pointing game against the mask (NaN when the map has no mass on valid pixels)."""
    den = m.valid_mass
    if den <= 0:
        return float("nan")
    return float(m.flat[m.masks.target_index(m.c)].sum(dtype=np.float64) / den)


@map_metric("epg_box", definition="sum of A inside class c's boxes (valid pixels) / sum of A over gt != 255")
def energy_pointing_game_box(m: ClassMap) -> float:
    """Energy pointing game against the union of class c's boxes (XML, else mask components)."""
    den = m.valid_mass
    boxes = m.masks.boxes(m.c)
    if den <= 0 or boxes is None:
        return float("nan")
    inside = np.flatnonzero(union_mask(boxes, m.a.shape) & m.masks.valid)
    return float(m.flat[inside].sum(dtype=np.float64) / den)


@map_metric("pg", dataset_mean="classes",
            definition="1 if a pixel of gt = c+1 lies within pg_tolerance px of the map's first maximum, else 0")
def pointing_game(m: ClassMap) -> float:
    """Pointing game hit (1.0) or miss (0.0); an all-zero map is a miss."""
    if m.is_zero:
        return 0.0
    h, w = m.a.shape
    y, x = divmod(int(np.argmax(m.flat)), w)  # first maximum in row-major order
    r = int(np.floor(m.pg_tolerance))
    y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
    dy = (np.arange(y0, y1) - y)[:, None]
    dx = (np.arange(x0, x1) - x)[None, :]
    near = dy * dy + dx * dx <= m.pg_tolerance ** 2
    return float(np.any(near & (m.masks.gt[y0:y1, x0:x1] == m.c + 1)))


@map_metric("ap_mask", definition="average precision of the pixel scores against gt = c+1 (gt 255 excluded)")
def mask_average_precision(m: ClassMap) -> float:
    """scikit-learn's average precision of the valid pixels' scores against ``gt == c+1``."""
    if m.masks.n_valid == 0:
        return float("nan")
    target = m.masks.target_index(m.c)
    if target.size == 0:
        return 0.0  # scikit-learn: no positive pixel, recall is set to 1 at every threshold, AP = 0
    bins, count, _ = m.value_bins
    nb = count.size
    total = count - np.bincount(bins[m.masks.ignored_index], minlength=nb)
    pos = np.bincount(bins[target], minlength=nb)
    keep = np.flatnonzero(total)[::-1]  # one operating point per distinct score, highest first
    tp, seen = np.cumsum(pos[keep]), np.cumsum(total[keep])
    recall = tp / target.size
    return float(np.sum(np.diff(recall, prepend=0.0) * (tp / seen)))


@map_metric("gini", needs="map", definition="Gini index of all pixels of A (compactness; NaN for an all-zero map)")
def gini_index(m: ClassMap) -> float:
    """``G = sum_i (2i - n - 1) a_i / (n sum_i a_i)`` over all pixels sorted ascending."""
    if m.is_zero:
        return float("nan")
    _, count, values = m.value_bins
    keep = np.flatnonzero(count)
    count, values = count[keep].astype(np.float64), values[keep]
    n = float(m.flat.size)
    below = np.cumsum(count) - count  # pixels with a smaller value: their ranks are below + 1 .. below + count
    weight = count * (2.0 * below + count - n)  # sum of (2i - n - 1) over a block of equal values
    return float(np.sum(values * weight) / (n * np.sum(values * count)))


register_model_metric("insertion", ("insertion", "insertion_norm"), higher_is_better=True,
                      definition="area under p_c while the most relevant pixels are revealed on a blurred canvas")
register_model_metric("deletion", ("deletion", "deletion_norm"), higher_is_better=False,
                      definition="area under p_c while the most relevant pixels are set to 0")
