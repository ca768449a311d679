"""Cross-model consensus of explanations (beyond-spec §2; Li, Xiong, Huang, Ji, Dou, Machine Learning 2023).

A committee of m models explains the same image and class; their maps L_1..L_m
(flattened, K pixels) are voted into a consensus c, and each member is scored by
its similarity to c (Algorithms 1-2):

* **vote** (§2.1 step 3, registered in :data:`VOTING_RULES`): every member's map
  is first put through the rule's per-member normalisation ("term") and the
  consensus is the mean of the terms:

  - ``l2`` (default, §2.4): ``c_k = (1/m) sum_j L_jk / ||L_j||_2``;
  - ``lime_printed`` (the formula as printed for LIME): ``c_k = (1/m) sum_j L_jk^2 / ||L_j||_2``;
  - ``minmax`` (the SmoothGrad rule): ``c_k = (1/m) sum_j (L_jk - min L_j) / (max L_j - min L_j)``.

  A member map with zero norm (or zero range) contributes a zero term.
* **score** (§2.1 step 4): a member enters the score in the same normalisation the
  vote gives it (its term ``T_j``): ``cosine`` = ``<T_j, c> / (||T_j|| ||c||)`` (0 when
  either is zero) or ``rbf`` = ``exp(-1/2 (||T_j - c|| / sigma)^2)`` with sigma the
  median of ``||T_j - c||`` over every member and (image, class) pair of the run
  (§2.4 default), recorded beside the scores. Defaults: cosine for ``l2`` and
  ``lime_printed``, rbf for ``minmax`` (the paper's pairing).
* **multi-label** (§2.3 default): one consensus per (image, ground-truth class). A
  member's score is the mean over all pairs; its per-image score the mean over the
  image's classes (the ``consensus_score`` column of its per-sample CSV).
* **AP against masks** (§2.1 step 5): the average precision of ``sklearn.metrics.average_precision_score``
  (computed for many maps in one sort, :func:`average_precision_rows`) of a map's pixels against
  ``mask == class + 1``, mask value 255 left out; mean over the pairs whose mask has the class.

The map files hold every member's maps at the original image size already
(``dywsss.mapfile``), so members with different input sizes vote pixel for pixel;
a map of another size is resized bilinearly to the mask's size.

**What is voted** (``source``): the spec votes the members' raw attributions L_j
(§2.1 step 2-3: LIME weights, SmoothGrad gradients). ``source="raw"`` reads the
signed, unnormalised maps the map stage stores with ``cam_store_raw=True`` (key
``raw``, :func:`dywsss.mapfile.load_raw`); ``source="maps"`` the stored maps,
clamped at 0 and min-max normalised per class (every map file has them). The
choice changes the vote (a signed map keeps its negative evidence, a normalised
one ties it at 0) and is recorded in the provenance.

Committee robustness (§2.2-2.3) is computed in the same pass: besides the full
committee, random sub-committees (seeded; all of them when a size has no more
combinations than trials) vote too, and every member is scored against each.
Committee size: Pearson, over all members, of the scores against a sub-committee
with those against the full committee, and the sub-committee consensus's AP.
Committee swap: a fixed set of evaluated models plus random others from the rest;
Pearson over the evaluated models.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data.voc import IGNORE_INDEX, NUM_CLASSES, load_mask, mask_path
from ..errors import InputError, MissingInputError
from ..io import write_json_atomic
from ..mapfile import load_maps, load_raw, read_maps_meta, save_maps
from ..provenance import sha256_files
from ..registry import Registry
from .correlation import Correlation, correlate

PathLike = str | os.PathLike
Rule = Callable[[np.ndarray], np.ndarray]

VOTING_RULES: Registry[Rule] = Registry("consensus voting rule")
SIMILARITIES: tuple[str, ...] = ("cosine", "rbf")
DEFAULT_SIMILARITY: dict[str, str] = {"l2": "cosine", "lime_printed": "cosine", "minmax": "rbf"}
#: what a member's vote reads from its map files: the signed raw attributions or the normalised maps
MAP_SOURCES: tuple[str, ...] = ("raw", "maps")
#: committees scored per matrix product (bounds memory at [rows, pixels] float64)
_COMMITTEE_CHUNK = 32


# ------------------------------------------------------------------ voting
def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


@VOTING_RULES.register("l2")
def l2_terms(maps: np.ndarray) -> np.ndarray:
    """``L_jk / ||L_j||_2`` (§2.4 default: normalise, then average)."""
    maps = np.asarray(maps, dtype=np.float64)
    return _safe_div(maps, np.linalg.norm(maps, axis=-1, keepdims=True))


@VOTING_RULES.register("lime_printed")
def lime_printed_terms(maps: np.ndarray) -> np.ndarray:
    """``L_jk^2 / ||L_j||_2``: the LIME vote as printed in the paper (it drops the sign)."""
    maps = np.asarray(maps, dtype=np.float64)
    return _safe_div(maps * maps, np.linalg.norm(maps, axis=-1, keepdims=True))


@VOTING_RULES.register("minmax")
def minmax_terms(maps: np.ndarray) -> np.ndarray:
    """``(L_jk - min L_j) / (max L_j - min L_j)``: the SmoothGrad vote."""
    maps = np.asarray(maps, dtype=np.float64)
    lo = maps.min(axis=-1, keepdims=True)
    return _safe_div(maps - lo, maps.max(axis=-1, keepdims=True) - lo)


def member_terms(maps: np.ndarray, rule: str = "l2") -> np.ndarray:
    """Each member's map [..., m, K] as it enters the vote of ``rule``."""
    return VOTING_RULES.get(rule)(maps)


def vote(maps: np.ndarray, rule: str = "l2") -> np.ndarray:
    """The consensus [..., K] of member maps [..., m, K] under ``rule`` (the mean of the terms)."""
    return member_terms(maps, rule).mean(axis=-2)


# ----------------------------------------------------------------- scoring
def cosine_scores(terms: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """Cosine similarity [m, T] of member terms [m, K] with consensus rows [T, K]; 0 for a zero vector."""
    terms, consensus = np.atleast_2d(terms), np.atleast_2d(consensus)
    dots = terms @ consensus.T
    norms = np.linalg.norm(terms, axis=1)[:, None] * np.linalg.norm(consensus, axis=1)[None, :]
    return _safe_div(dots, norms)


def distances(terms: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """Euclidean distance [m, T] between member terms [m, K] and consensus rows [T, K]."""
    terms, consensus = np.atleast_2d(terms), np.atleast_2d(consensus)
    sq = (terms * terms).sum(1)[:, None] + (consensus * consensus).sum(1)[None, :] - 2.0 * (terms @ consensus.T)
    return np.sqrt(np.maximum(sq, 0.0))


def rbf_sigma(dist: np.ndarray) -> float:
    """sigma of the RBF score (§2.4 default): the median of ``||T_j - c||`` over the run."""
    d = np.asarray(dist, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("rbf sigma: no distances")
    return float(np.median(d))


def rbf_scores(dist: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-1/2 (d / sigma)^2)``; sigma must be > 0."""
    if not sigma > 0:
        raise ValueError(f"rbf sigma must be > 0, got {sigma} (every member equals the consensus)")
    d = np.asarray(dist, dtype=np.float64)
    return np.exp(-0.5 * (d / sigma) ** 2)


def average_precision_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of each row of ``scores`` [R, K] for the binary ``labels`` [K], all rows in one sort.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first:
    exactly ``sklearn.metrics.average_precision_score`` (tied scores form one threshold), which
    the tests check; batched because sklearn's per-call input checks cost more than the sort
    on a few hundred thousand pixels. NaN for every row when ``labels`` has no positive.
    """
    y = np.asarray(labels, dtype=bool).reshape(-1)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.size:
        raise ValueError(f"AP: {s.shape[1]} scores per row for {y.size} labels")
    positives = int(y.sum())
    if positives == 0:
        return np.full(s.shape[0], np.nan)
    order = np.argsort(-s, axis=1, kind="stable")
    s = np.take_along_axis(s, order, axis=1)
    tp = np.cumsum(y[order], axis=1)
    last = np.ones(s.shape, dtype=bool)  # the last pixel of each group of tied scores: one threshold each
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    tp_at_last = np.where(last, tp, 0)
    previous = np.zeros_like(tp)
    previous[:, 1:] = np.maximum.accumulate(tp_at_last[:, :-1], axis=1)  # TP at the threshold before
    gain = np.where(last, (tp - previous) * (tp / np.arange(1, y.size + 1)), 0.0)
    return gain.sum(axis=1) / positives


def pixel_ap(mask: np.ndarray, cls: int, maps: np.ndarray) -> np.ndarray:
    """AP [R] of R score maps (``maps`` [R, ...], each with the mask's pixel count) for
    ``mask == cls + 1``, pixels 255 left out; NaN when the mask has no pixel of the class."""
    m = np.asarray(mask).reshape(-1)
    rows = np.asarray(maps).reshape(-1, m.size)
    valid = m != IGNORE_INDEX
    return average_precision_rows(m[valid] == cls + 1, rows[:, valid])


# -------------------------------------------------------------- committees
@dataclass(frozen=True)
class Committees:
    """Which members vote in each committee (bool [T, m]); row 0 is the full committee.

    ``kind[t]`` is ``full``, ``size`` or ``swap``; ``evaluated[t]`` marks the members
    whose scores the robustness Pearson compares (all for ``size``, the fixed set for ``swap``).
    """

    members: np.ndarray
    kind: tuple[str, ...]
    evaluated: np.ndarray

    @property
    def size(self) -> np.ndarray:
        return self.members.sum(1)

    def weights(self) -> np.ndarray:
        """Row-stochastic [T, m]: 1/|committee| for its members."""
        m = self.members.astype(np.float64)
        return m / m.sum(1, keepdims=True)


def _subsets(m: int, k: int, trials: int, rng: np.random.Generator,
             pool: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """``trials`` distinct k-subsets of ``pool`` (all of them when there are no more than ``trials``)."""
    pool = list(range(m)) if pool is None else list(pool)
    total = math.comb(len(pool), k)
    if total <= trials:
        return [tuple(c) for c in itertools.combinations(pool, k)]
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < trials:
        seen[tuple(sorted(int(i) for i in rng.choice(pool, size=k, replace=False)))] = None
    return list(seen)


def plan_committees(
    n_members: int, sizes: Sequence[int] | None = None, trials: int = 10, seed: int = 0,
    swap_evaluated: Sequence[int] | None = None, swap_extra: tuple[int, int] = (1, 3), swap_trials: int = 0,
) -> Committees:
    """The full committee, ``trials`` random sub-committees of each size in ``sizes`` (default
    2..m-1), and ``swap_trials`` committees of ``swap_evaluated`` plus a random number in
    ``swap_extra`` (inclusive) of the other members. Seeded by ``seed``."""
    m = int(n_members)
    if m < 1:
        raise ValueError("a committee needs at least one member")
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, ...]] = [tuple(range(m))]
    kinds = ["full"]
    evaluated = [tuple(range(m))]
    for k in (range(2, m) if sizes is None else sizes):
        if not 1 <= int(k) <= m:
            raise ValueError(f"committee size {k} outside 1..{m} (the number of members)")
        for sub in _subsets(m, int(k), int(trials), rng):
            rows.append(sub)
            kinds.append("size")
            evaluated.append(tuple(range(m)))
    if swap_trials:
        ev = sorted({int(i) for i in (swap_evaluated or ())})
        if not ev or ev[0] < 0 or ev[-1] >= m:
            raise ValueError(f"committee swap: evaluated members {ev} must be a non-empty subset of 0..{m - 1}")
        others = [i for i in range(m) if i not in ev]
        lo, hi = (int(v) for v in swap_extra)
        if not 0 <= lo <= hi:
            raise ValueError(f"committee swap: extra members range {swap_extra} must satisfy 0 <= low <= high")
        for _ in range(int(swap_trials)):
            k = int(rng.integers(min(lo, len(others)), min(hi, len(others)) + 1))
            extra = rng.choice(others, size=k, replace=False) if k else []
            rows.append(tuple(sorted(ev + [int(i) for i in extra])))
            kinds.append("swap")
            evaluated.append(tuple(ev))

    def as_mask(sets: list[tuple[int, ...]]) -> np.ndarray:
        out = np.zeros((len(sets), m), dtype=bool)
        for t, s in enumerate(sets):
            out[t, list(s)] = True
        return out

    return Committees(as_mask(rows), tuple(kinds), as_mask(evaluated))


# ------------------------------------------------------------------ a run
@dataclass(frozen=True)
class Member:
    """A committee member: a display name and its folder of map files (``<id>.npz``)."""

    name: str
    map_dir: Path


@dataclass
class ConsensusRun:
    """Everything one pass computed; scores and summaries are derived from it.

    Arrays over P (image, class) pairs, m members, T committees (row 0 = full):
    ``cos`` and ``dist`` [P, m, T], ``member_ap`` [P, m], ``committee_ap`` [P, T]
    (NaN where not computed or undefined).
    """

    members: list[str]
    rule: str
    pairs: list[tuple[str, int]]
    cos: np.ndarray
    dist: np.ndarray
    member_ap: np.ndarray
    committee_ap: np.ndarray
    committees: Committees
    ap_pairs: np.ndarray
    provenance: dict = field(default_factory=dict)

    def default_similarity(self) -> str:
        return DEFAULT_SIMILARITY[self.rule] if self.rule in DEFAULT_SIMILARITY else "cosine"

    def sigma(self, t: int = 0) -> float:
        """RBF sigma of committee ``t``: the median member distance over the run."""
        return rbf_sigma(self.dist[:, :, t])

    def pair_scores(self, similarity: str | None = None, t: int = 0) -> np.ndarray:
        """Scores [P, m] of every member for every (image, class) pair against committee ``t``."""
        similarity = similarity or self.default_similarity()
        if similarity == "cosine":
            return self.cos[:, :, t]
        if similarity == "rbf":
            return rbf_scores(self.dist[:, :, t], self.sigma(t))
        raise ValueError(f"similarity={similarity!r}: choose one of {', '.join(SIMILARITIES)}")

    def member_scores(self, similarity: str | None = None, t: int = 0) -> np.ndarray:
        """Each member's consensus score [m]: the mean over all (image, class) pairs."""
        return self.pair_scores(similarity, t).mean(axis=0)

    def per_image_scores(self, similarity: str | None = None) -> pd.DataFrame:
        """Per-image consensus score (mean over the image's classes): rows = images, columns = members."""
        frame = pd.DataFrame(self.pair_scores(similarity), columns=self.members)
        frame.insert(0, "name_image", [n for n, _ in self.pairs])
        return frame.groupby("name_image", sort=False).mean()

    def consensus_ap(self) -> float:
        """mAP of the full committee's consensus against the masks (mean over pairs with the class)."""
        col = self.committee_ap[:, 0]
        return float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")

    def member_mean_ap(self) -> np.ndarray:
        """Each member's own mAP against the masks [m]."""
        ok = np.isfinite(self.member_ap)
        return np.where(ok.any(0), np.nansum(self.member_ap, 0) / np.maximum(ok.sum(0), 1), np.nan)

    def robustness(self, similarity: str | None = None) -> pd.DataFrame:
        """One row per committee: kind, size, members, Pearson of the evaluated members' scores
        against this committee with their scores against the full one, and its consensus mAP
        (over the AP subset of pairs, ``ap_pairs``)."""
        full = self.member_scores(similarity, 0)
        rows = []
        for t in range(self.committees.members.shape[0]):
            ev = self.committees.evaluated[t]
            sub = self.member_scores(similarity, t)
            r = correlate(sub[ev], full[ev]).pearson
            ap = self.committee_ap[self.ap_pairs, t]
            rows.append(dict(committee=t, kind=self.committees.kind[t], size=int(self.committees.size[t]),
                             members=" ".join(np.asarray(self.members)[self.committees.members[t]]),
                             pearson_vs_full=r,
                             mean_ap=float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")))
        return pd.DataFrame(rows)

    def correlations(self, metrics: Mapping[str, Sequence[float]], similarity: str | None = None,
                     n_boot: int = 0, seed: int = 0) -> dict[str, Correlation]:
        """Across members: consensus score against each metric (e.g. mAP, ML-accuracy, best mIoU)."""
        scores = self.member_scores(similarity)
        out = {}
        for key, values in metrics.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != scores.shape:
                raise ValueError(f"metric {key!r}: {values.size} values for {scores.size} members")
            out[key] = correlate(scores, values, n_boot=n_boot, seed=seed)
        return out

    def summary(self, similarity: str | None = None) -> dict[str, Any]:
        """JSON-ready: settings, sigma, per-member scores and mAP, the consensus mAP, provenance."""
        similarity = similarity or self.default_similarity()
        cos, ap = self.member_scores("cosine"), self.member_mean_ap()
        rbf = self.member_scores("rbf") if self.sigma() > 0 else np.full(len(self.members), np.nan)
        return dict(
            rule=self.rule, source=self.provenance.get("source", "maps"), similarity=similarity,
            rbf_sigma=self.sigma(), n_pairs=len(self.pairs),
            n_images=len({n for n, _ in self.pairs}), n_pairs_with_mask=int(np.isfinite(self.committee_ap[:, 0]).sum()),
            consensus_map=_nan_none(self.consensus_ap()),
            members=[dict(name=n, score=_nan_none(float({"cosine": cos, "rbf": rbf}[similarity][j])),
                          score_cosine=_nan_none(float(cos[j])), score_rbf=_nan_none(float(rbf[j])),
                          map=_nan_none(float(ap[j]))) for j, n in enumerate(self.members)],
            committees=dict(n=int(self.committees.members.shape[0]), ap_pairs=int(self.ap_pairs.sum())),
            provenance=self.provenance,
        )


def _nan_none(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _class_ids(value: Any) -> list[int]:
    """Label entry -> sorted class ids: a multi-hot vector of length 20, or a list of ids."""
    arr = np.asarray(value)
    if arr.dtype != object and arr.ndim == 1 and arr.size == NUM_CLASSES and np.isin(arr, (0, 1)).all():
        return np.flatnonzero(arr).tolist()
    return sorted(int(c) for c in value)


def _check_files(members: Sequence[Member], names: Sequence[str], gt_dir: Path | None) -> None:
    for mb in members:
        if not Path(mb.map_dir).is_dir():
            raise MissingInputError(f"{mb.map_dir}: map folder of committee member {mb.name!r} not found")
        missing = [n for n in names if not (Path(mb.map_dir) / f"{n}.npz").is_file()]
        if missing:
            raise MissingInputError(f"{mb.map_dir}: {len(missing)} of {len(names)} map files of member {mb.name!r} "
                                    f"missing, e.g. {missing[0]}.npz; run its map stage on this list")
    if gt_dir is not None:
        missing = [n for n in names if not mask_path(gt_dir, n).is_file()]
        if missing:
            raise MissingInputError(f"{gt_dir}: {len(missing)} masks missing, e.g. {missing[0]}.png")


def stores_raw(map_dir: PathLike) -> bool:
    """Whether a map folder's record says its files hold the raw maps (``cam_store_raw=True``)."""
    meta = read_maps_meta(map_dir)
    return bool(meta and meta.get("raw"))


def load_member_maps(path: PathLike, source: str = "maps") -> tuple[np.ndarray, np.ndarray]:
    """``(classes, maps [K, H, W])`` of one member's map file: the normalised maps, or with
    ``source="raw"`` the signed raw maps (an :class:`InputError` when the file has none)."""
    classes, cams = load_maps(path)
    if source == "maps":
        return classes, cams
    if source != "raw":
        raise ValueError(f"source={source!r}: choose one of {', '.join(MAP_SOURCES)}")
    raw = load_raw(path)
    if raw is None:
        raise InputError(f"{path}: no raw maps (key 'raw'); make the maps with --options cam_store_raw=True, "
                         "or vote the normalised maps (source='maps')")
    if raw.shape != cams.shape:
        raise InputError(f"{path}: raw maps {raw.shape} do not match the maps {cams.shape}")
    return classes, raw


#: how the written consensus maps are scaled (recorded in ``consensus_meta.json``)
CONSENSUS_MAP_NORMALISATION = "min-max per class map to [0, 1] (constant: 0); pixel order, hence AP, as voted"


def consensus_map_file(votes: np.ndarray) -> np.ndarray:
    """The consensus maps ``votes`` [K, P] as written: each row min-max normalised to [0, 1], a
    constant row as zeros. Increasing, so each row ranks its pixels as the vote did (a signed
    ``l2`` vote keeps its negative evidence below the positive), and the AP is unchanged."""
    return minmax_terms(votes)


def _resize(cam: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if cam.shape == hw:
        return cam
    import cv2

    return cv2.resize(cam.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def build_consensus(
    members: Sequence[Member], names: Sequence[str], labels: Mapping[str, Any], gt_dir: PathLike | None,
    rule: str = "l2", committees: Committees | None = None, ap_pairs: int | None = None, seed: int = 0,
    out_dir: PathLike | None = None, progress: bool = True, source: str = "maps",
) -> ConsensusRun:
    """One pass over ``names``: read each member's map file once per image, vote per (image,
    ground-truth class) for the full committee and every sub-committee of ``committees``, score
    every member against each, and AP of the maps against the masks in ``gt_dir``.

    ``labels``: ``{image id: multi-hot [20] or class ids}`` (``load_cls_labels``). Sub-committee
    AP is computed on ``ap_pairs`` seeded random pairs (None: all); the full consensus and the
    members always on all pairs. ``out_dir``: also write the full consensus as map files
    (``<id>.npz``, float32, each class map min-max normalised to [0, 1] by :func:`consensus_map_file`,
    a constant map as zeros), for the JI stages; min-max is increasing, so the order of the pixels,
    hence the AP against the mask, is that of the vote (to float32 resolution), also for a signed
    (``raw``) vote.
    ``source``: vote the normalised maps (``maps``) or the signed raw maps (``raw``, stored with
    ``cam_store_raw=True``); AP then ranks the voted values.
    """
    VOTING_RULES.get(rule)
    if source not in MAP_SOURCES:
        raise ValueError(f"source={source!r}: choose one of {', '.join(MAP_SOURCES)}")
    if len(members) < 2:
        raise InputError(f"a consensus needs at least 2 committee members, got {len(members)}")
    if len({m.name for m in members}) != len(members):
        raise InputError(f"committee member names repeat: {[m.name for m in members]}")
    gt = None if gt_dir is None else Path(gt_dir)
    missing = [n for n in names if n not in labels]
    if missing:
        raise InputError(f"{len(missing)} listed images have no labels, e.g. {missing[0]}")
    _check_files(members, names, gt)
    committees = committees or plan_committees(len(members), sizes=())
    if committees.members.shape[1] != len(members):
        raise ValueError(f"committees are over {committees.members.shape[1]} members, the run has {len(members)}")
    weights = committees.weights()
    n_t = weights.shape[0]
    image_classes = {n: _class_ids(labels[n]) for n in names}
    n_pairs = sum(len(c) for c in image_classes.values())
    ap_mask = np.ones(n_pairs, dtype=bool)
    if ap_pairs is not None and ap_pairs < n_pairs:
        ap_mask[:] = False
        ap_mask[np.random.default_rng(seed).choice(n_pairs, size=int(ap_pairs), replace=False)] = True
    m = len(members)
    cos = np.full((n_pairs, m, n_t), np.nan)
    dist = np.full((n_pairs, m, n_t), np.nan)
    member_ap = np.full((n_pairs, m), np.nan)
    committee_ap = np.full((n_pairs, n_t), np.nan)
    pairs: list[tuple[str, int]] = []
    for name in tqdm(names, desc=f"consensus ({m} members)", unit="image", disable=not progress):
        classes = image_classes[name]
        if not classes:
            continue
        loaded = [load_member_maps(Path(mb.map_dir) / f"{name}.npz", source) for mb in members]
        mask = load_mask(gt, name) if gt is not None else None
        hw = mask.shape if mask is not None else loaded[0][1].shape[1:]
        consensus_maps = []
        for cls in classes:
            p = len(pairs)
            pairs.append((name, cls))
            stack = np.empty((m, hw[0] * hw[1]), dtype=np.float64)
            for j, (mcls, cams) in enumerate(loaded):
                hit = np.flatnonzero(mcls == cls)
                if hit.size == 0:
                    raise InputError(f"{Path(members[j].map_dir) / (name + '.npz')}: no map of class {cls} "
                                     f"(the image's label); make maps with cam_classes=gt or all")
                stack[j] = _resize(cams[hit[0]], hw).reshape(-1)
            terms = member_terms(stack, rule)
            for t0 in range(0, n_t, _COMMITTEE_CHUNK):
                cons = weights[t0:t0 + _COMMITTEE_CHUNK] @ terms
                cos[p, :, t0:t0 + len(cons)] = cosine_scores(terms, cons)
                dist[p, :, t0:t0 + len(cons)] = distances(terms, cons)
                if mask is not None:
                    n_ap = len(cons) if ap_mask[p] else (1 if t0 == 0 else 0)
                    if t0 == 0:  # the members' own maps join the first committees' sort
                        aps = pixel_ap(mask, cls, np.concatenate([stack, cons[:n_ap]]))
                        member_ap[p], committee_ap[p, :n_ap] = aps[:m], aps[m:]
                    elif n_ap:
                        committee_ap[p, t0:t0 + n_ap] = pixel_ap(mask, cls, cons[:n_ap])
                if t0 == 0:
                    consensus_maps.append(cons[0])
        if out_dir is not None:
            save_maps(Path(out_dir) / f"{name}.npz", np.asarray(classes),
                      consensus_map_file(np.stack(consensus_maps)).reshape(len(classes), *hw), dtype="float32")
    provenance = dict(
        rule=rule, source=source, members=[dict(name=mb.name, map_dir=str(mb.map_dir),
                                 maps_sha256=sha256_files(Path(mb.map_dir) / f"{n}.npz" for n in names))
                            for mb in members],
        gt_dir=None if gt is None else str(gt), n_listed=len(names), seed=seed,
        ap_pairs=None if ap_pairs is None else int(ap_pairs))
    run = ConsensusRun([mb.name for mb in members], rule, pairs, cos[:len(pairs)], dist[:len(pairs)],
                       member_ap[:len(pairs)], committee_ap[:len(pairs)], committees, ap_mask[:len(pairs)],
                       provenance)
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "consensus_meta.json",
                          dict(method="consensus", normalisation=CONSENSUS_MAP_NORMALISATION, dtype="float32",
                               **provenance))
    return run


def images_all_correct(per_sample_csvs: Sequence[PathLike]) -> list[str]:
    """Images every member classifies exactly right (``prediction == label`` in each member's
    per-sample CSV): the §2.4 option of restricting the consensus to them. Order of the first CSV."""
    keep: list[str] | None = None
    for path in per_sample_csvs:
        frame = pd.read_csv(path, dtype={"label": str, "prediction": str}, keep_default_na=False)
        for col in ("name_image", "label", "prediction"):
            if col not in frame.columns:
                raise InputError(f"{path}: per-sample CSV lacks column {col!r}")
        ok = set(frame.loc[frame["label"].str.split().map(sorted) == frame["prediction"].str.split().map(sorted),
                           "name_image"])
        keep = [n for n in (frame["name_image"].tolist() if keep is None else keep) if n in ok]
    return keep or []
