"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", §3-4).

* Cascading model-parameter randomisation: starting from the trained network,
  re-initialise its parameters group by group from the output downward: the
  classifier (``head``), the layers between the last stage and the head (``neck``:
  e.g. conv_head/bn2, the final norm), each stage or block from the last to the first
  (``layer4``..``layer1``, ``blocks.6``..``blocks.0``, ViT ``blocks.N``..``blocks.0``), then
  the ``stem`` (what comes before the first stage, with the model's own parameters such as
  pos_embed / cls_token). Re-initialisation is each module's ``reset_parameters()`` (torch's
  default initialisation; BatchNorm also resets its running statistics), seeded, and
  ``trunc_normal(std=0.02)`` for parameters no module resets.
* After each step the maps of the configured method are regenerated (the map stage's
  pipeline: scales, flip, min-max normalisation) for a fixed, seeded subset of the list,
  and compared with the original maps: Spearman rank correlation and SSIM (scikit-image,
  data range 1) per (image, class) map, the share of all-zero maps; the per-image JI (reference definition at
  ``eval_thresh``), EPG against the mask, and VICE of the randomised model (its loss on the
  per-sample input against that JI).
* Random-logit test: the original model's maps for a random class absent from the image,
  compared with the map of one of its true classes (Spearman, SSIM) and scored by EPG
  against that true class's mask.

A metric that barely moves under full randomisation measures image priors, not the model;
:func:`verdicts` says so in one line per metric ("barely": JI and EPG change by less than
``tolerance`` relative to their original value, VICE by less than ``tolerance`` in absolute terms).
"""
from __future__ import annotations

import copy
import platform
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.config import Config
from scipy import stats
from skimage.metrics import structural_similarity
from torch import nn
from tqdm import tqdm

from ..config import data_path, prefixed_settings, session_paths
from ..data.voc import CLASS_NAMES, image_path, label_matrix, load_cls_labels, load_image, load_mask, read_image_list
from ..errors import ConfigError, InputError
from ..explain import EXPLAINERS
from ..io import write_json_atomic
from ..metrics.classification import per_sample_loss
from ..metrics.map_metrics import ClassMap, ImageMasks, energy_pointing_game, prepare_map
from ..metrics.segmentation import confusion_matrix, image_ji, maps_to_mask
from ..metrics.vice import vice
from ..provenance import file_record, sha256_file, sha256_files

STAGE_CONTAINERS = ("blocks", "stages")
STAGE_NAME = re.compile(r"^layer\d+$")
#: Spearman of fully randomised vs original maps above which the maps "still look the same".
SIMILAR_MAPS = 0.5


@dataclass
class SanitySettings:
    """Config keys ``sanity_<field>`` give the defaults."""

    n_images: int = 32
    seed: int = 0
    tolerance: float = 0.1  # relative change under which a metric "barely moves"
    n_examples: int = 3

    @classmethod
    def from_cfg(cls, cfg: Config, **overrides: Any) -> "SanitySettings":
        base = cls(seed=int(cfg.get("random_seed", 0)))  # the seed defaults to random_seed
        values = prefixed_settings(cfg, "sanity_", base, overrides)
        out = cls(**values)
        if int(out.n_images) < 3:
            raise ConfigError(f"sanity_n_images={out.n_images!r}: expected an integer >= 3 (VICE needs 3 images)")
        if not 0 < float(out.tolerance) < 1:
            raise ConfigError(f"sanity_tolerance={out.tolerance!r}: expected a fraction in (0, 1)")
        if int(out.n_examples) < 0:
            raise ConfigError(f"sanity_n_examples={out.n_examples!r}: expected an integer >= 0")
        return out


# ------------------------------------------------------------------ cascading groups
@dataclass
class ParamGroup:
    """Modules (and loose parameters) re-initialised together in one cascade step."""

    name: str
    modules: list[nn.Module] = field(default_factory=list)
    params: list[nn.Parameter] = field(default_factory=list)

    def numel(self) -> int:
        seen = {id(p): p for m in self.modules for p in m.parameters()}
        seen.update({id(p): p for p in self.params})
        return sum(p.numel() for p in seen.values())


def cascade_groups(model: nn.Module) -> list[ParamGroup]:
    """The model's parameter groups from the output to the input: head, neck, stages (last first), stem.

    Works for timm CNNs (``layerN`` children, or ``blocks`` / ``stages`` sequences) and ViTs
    (``blocks``); the model's own parameters (pos_embed, cls_token) go with the stem.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    stem, neck, stages = ParamGroup("stem"), ParamGroup("neck"), []
    for name, child in model.named_children():
        if child is head or not any(True for _ in child.parameters()):
            continue
        if name in STAGE_CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            stages += [ParamGroup(f"{name}.{i}", [m]) for i, m in enumerate(child) if any(True for _ in m.parameters())]
        elif STAGE_NAME.match(name):
            stages.append(ParamGroup(name, [child]))
        else:
            (neck if stages else stem).modules.append(child)
    stem.params = list(model.parameters(recurse=False))
    if not stages:
        raise InputError(f"{type(model).__name__}: no stages found (children named layerN, blocks or stages); "
                         "cannot cascade")
    groups = [ParamGroup("head", [head])] if head is not None and any(True for _ in head.parameters()) else []
    groups += [neck] if neck.modules else []
    return groups + stages[::-1] + ([stem] if stem.modules or stem.params else [])


@torch.no_grad()
def reinitialize(group: ParamGroup, seed: int) -> None:
    """Re-initialise a group in place, seeded: ``reset_parameters()`` where a module has it
    (BatchNorm also resets its running statistics), ``trunc_normal(std=0.02)`` for the rest."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        covered: set[int] = set()
        for top in group.modules:
            for m in top.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                    covered.update(id(p) for p in m.parameters(recurse=False))
        loose = [p for top in group.modules for p in top.parameters() if id(p) not in covered] + group.params
        for p in loose:
            nn.init.trunc_normal_(p, std=0.02)
    finally:
        torch.random.set_rng_state(gen_state)


# ------------------------------------------------------------------ per-step measurements
@dataclass
class SubsetData:
    names: list[str]
    images: list[np.ndarray]     # uint8 [H, W, 3]
    masks: list[np.ndarray]      # uint8 [H, W]
    classes: list[list[int]]     # ground-truth classes
    labels: np.ndarray           # multi-hot [n, 20]
    inputs: torch.Tensor         # the per-sample stage's input [n, 3, s, s]


def image_maps(model: nn.Module, cfg: Config, data: SubsetData, classes: Sequence[Sequence[int]],
               device: torch.device) -> list[np.ndarray]:
    """Normalised maps [K_i, H, W] per image, the map stage's pipeline (one image per call)."""
    from .maps import explain_batch, to_device_batch

    explainer = EXPLAINERS.get(cfg.cam_method)(model, cfg)
    out = []
    for img, cls in zip(data.images, classes):
        x = to_device_batch([img], device)
        m = explain_batch(explainer, x, [list(cls)], cfg.cam_scales, bool(cfg.cam_flip))[0]
        out.append(m.float().cpu().numpy())
    return out


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman rank correlation, SSIM) of two maps in [0, 1]; NaN Spearman for a constant map."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = float("nan")
    else:
        rho = float(stats.spearmanr(a.ravel(), b.ravel()).statistic)
    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    ssim = float(structural_similarity(a, b, data_range=1.0, win_size=win)) if win >= 3 else float("nan")
    return rho, ssim


def map_quality(maps: Sequence[np.ndarray], data: SubsetData, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image: JI (reference definition at ``t``) and EPG (mean over its classes)."""
    ji, epg = [], []
    for m, gt, cls in zip(maps, data.masks, data.classes):
        conf = confusion_matrix(gt, maps_to_mask(np.asarray(cls), m, t, shape=gt.shape))
        ji.append(float(image_ji(conf, "reference")))
        masks = ImageMasks(gt)
        vals = [energy_pointing_game(ClassMap(masks, c, prepare_map(m[k]))) for k, c in enumerate(cls)]
        vals = [v for v in vals if np.isfinite(v)]
        epg.append(float(np.mean(vals)) if vals else float("nan"))
    return np.array(ji), np.array(epg)


@torch.no_grad()
def subset_loss(model: nn.Module, data: SubsetData, device: torch.device) -> np.ndarray:
    """Per-sample loss (Eq. 7) of the subset on the per-sample input."""
    logits = model(data.inputs.to(device)).float().cpu().numpy()
    return per_sample_loss(logits, data.labels)


def step_record(name: str, n_params: int, maps: list[np.ndarray], original: list[np.ndarray], data: SubsetData,
                loss: np.ndarray, t: float, n_boot: int, seed: int) -> dict:
    """Everything measured after one cascade step (means over (image, class) maps / images)."""
    sims = np.array([map_similarity(a, b) for ma, mb in zip(original, maps) for a, b in zip(ma, mb)])
    ji, epg = map_quality(maps, data, t)
    ok = np.isfinite(ji)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a randomised model may give constant JI: VICE undefined
        v = vice(loss[ok], ji[ok], n_boot=n_boot, seed=seed)
    zero = [not m.any() for ms in maps for m in ms]
    return {"step": name, "n_params_randomised": int(n_params),
            "spearman": _nanmean(sims[:, 0]), "ssim": _nanmean(sims[:, 1]),
            "zero_maps": float(np.mean(zero)) if zero else None,
            "ji": _nanmean(ji), "epg": _nanmean(epg), "vice": _none(v.vice), "vice_ci": [_none(v.ci_low),
                                                                                      _none(v.ci_high)],
            "mean_loss": float(np.mean(loss))}


def _nanmean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def _none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def random_logit_test(model: nn.Module, cfg: Config, data: SubsetData, original: list[np.ndarray],
                      device: torch.device, rng: np.random.Generator) -> dict:
    """Maps of the original model for a random absent class vs those of a true class of the same image."""
    true_pick = [int(rng.choice(c)) for c in data.classes]
    absent = [int(rng.choice(sorted(set(range(20)) - set(c)))) for c in data.classes]
    rand_maps = image_maps(model, cfg, data, [[a] for a in absent], device)
    sims, epg_true, epg_rand = [], [], []
    for i, (m_orig, m_rand) in enumerate(zip(original, rand_maps)):
        k = data.classes[i].index(true_pick[i])
        sims.append(map_similarity(m_orig[k], m_rand[0]))
        masks = ImageMasks(data.masks[i])
        epg_true.append(energy_pointing_game(ClassMap(masks, true_pick[i], prepare_map(m_orig[k]))))
        epg_rand.append(energy_pointing_game(ClassMap(masks, true_pick[i], prepare_map(m_rand[0]))))
    sims = np.array(sims)
    return {"spearman": _nanmean(sims[:, 0]), "ssim": _nanmean(sims[:, 1]),
            "epg_true_class": _nanmean(np.array(epg_true)), "epg_random_class": _nanmean(np.array(epg_rand)),
            "definition": "maps of the trained model for a random class absent from the image, against the map "
                          "of one of its true classes; EPG of both against the true class's mask",
            "pairs": [{"name_image": n, "true_class": CLASS_NAMES[c], "random_class": CLASS_NAMES[a]}
                      for n, c, a in zip(data.names, true_pick, absent)]}


def verdicts(steps: Sequence[dict], random_logit: dict, tolerance: float) -> dict[str, str]:
    """One line per metric: does it move under full randomisation (first vs last step)?"""
    first, last = steps[0], steps[-1]
    out = {}
    # JI and EPG are scores >= 0: relative change; VICE is a correlation: absolute change
    for key, label, relative in (("ji", "JI", True), ("epg", "EPG", True), ("vice", "VICE", False)):
        a, b = first.get(key), last.get(key)
        if a is None or b is None:
            out[key] = f"{label}: undefined at the {'start' if a is None else 'end'} of the cascade"
            continue
        change = (b - a) / max(abs(a), 1e-12) if relative else b - a
        how = f"{100 * change:+.0f}%" if relative else f"{change:+.3f}"
        if abs(change) < tolerance:
            out[key] = (f"{label} barely moves under full randomisation ({a:.3f} -> {b:.3f}, {how}): "
                        "it measures image priors, not the model")
        else:
            out[key] = f"{label} changes under full randomisation ({a:.3f} -> {b:.3f}, {how}): " \
                       "it depends on the model's weights"
    rho = last.get("spearman")
    if (last.get("zero_maps") or 0) > 0.5:
        out["maps"] = (f"{100 * last['zero_maps']:.0f}% of the maps of the fully randomised model are all zero: "
                       "Spearman and EPG are undefined for them, and the reference JI then scores the background "
                       "alone (a missed class is dropped), so it can even rise")
    elif rho is not None:
        out["maps"] = (f"maps of the fully randomised model still rank pixels like the original ones (Spearman "
                       f"{rho:.2f}): the method reflects the image more than the model" if rho > SIMILAR_MAPS else
                       f"maps change under randomisation (Spearman {rho:.2f} with the originals at the end)")
    et, er = random_logit.get("epg_true_class"), random_logit.get("epg_random_class")
    if et is not None and er is not None:
        similar = er >= et * (1 - tolerance)
        out["random_logit"] = (f"maps for a random absent class localise the true object as well as the true "
                               f"class's maps (EPG {er:.3f} vs {et:.3f}): the maps do not depend on the class"
                               if similar else f"maps for a random absent class localise the object less "
                                               f"(EPG {er:.3f} vs {et:.3f} for the true class)")
    return out


# ------------------------------------------------------------------ the stage
@dataclass
class SanityResult:
    json_path: Path
    summary: dict
    data: SubsetData
    step_maps: list[list[np.ndarray]]  # per step (original first), the maps of the example images
    step_names: list[str]


def load_subset(cfg: Config, settings: SanitySettings) -> SubsetData:
    """A seeded subset of ``eval_list`` (images with at least one class and one absent class)."""
    from ..data.transforms import prediction_transform

    names = read_image_list(data_path(cfg, cfg.eval_list))
    labels = label_matrix(names, load_cls_labels(cfg.cls_label, allow_pickle=cfg.allow_pickle), source=cfg.cls_label)
    usable = np.flatnonzero((labels.sum(1) > 0) & (labels.sum(1) < labels.shape[1]))
    if usable.size < 3:
        raise InputError(f"{cfg.eval_list}: sanity checks need at least 3 labelled images, found {usable.size}")
    rng = np.random.default_rng(settings.seed)
    pick = np.sort(rng.choice(usable, size=min(int(settings.n_images), usable.size), replace=False))
    tf = prediction_transform(cfg.loss_input, int(cfg.crop_size))
    chosen = [names[i] for i in pick]
    images = [load_image(image_path(cfg.voc12_root, n, cfg.img_dir)) for n in chosen]
    return SubsetData(
        names=chosen, images=images,
        masks=[load_mask(cfg.gt_dir, n, expect_shape=im.shape) for n, im in zip(chosen, images)],
        classes=[np.flatnonzero(labels[i] > 0.5).tolist() for i in pick], labels=labels[pick],
        inputs=torch.stack([tf(im) for im in images]),
    )


def run_sanity_checks(cfg: Config, model: nn.Module | None = None, settings: SanitySettings | None = None,
                      progress: bool = True) -> SanityResult:
    """Cascading randomisation and the random-logit test; writes ``eval/<list>_<weights>/sanity.json``.

    The figures are drawn from the result by :mod:`dywsss.viz.sanity` (``scripts/sanity_checks.py``).
    """
    from ..models.spec import load_session_model
    from .runtime import select_device

    s = settings or SanitySettings.from_cfg(cfg)
    EXPLAINERS.get(cfg.cam_method)  # an unknown method fails before any work
    device = select_device(cfg.get("device", "auto"))
    weights_path = session_paths(cfg).weights_file(cfg.weights)
    model = load_session_model(cfg, device).model if model is None else model.to(device).eval()
    data = load_subset(cfg, s)
    t, n_boot = float(cfg.eval_thresh), int(cfg.get("bootstrap", 1000))
    original = image_maps(model, cfg, data, data.classes, device)
    n_ex = min(int(s.n_examples), len(data.names))
    steps = [step_record("original", 0, original, original, data, subset_loss(model, data, device), t, n_boot, s.seed)]
    step_maps, names = [[m for m in original[:n_ex]]], ["original"]
    logit = random_logit_test(model, cfg, data, original, device, np.random.default_rng(s.seed))

    randomised = copy.deepcopy(model).eval()
    groups = cascade_groups(randomised)
    done = 0
    for k, group in enumerate(tqdm(groups, desc="sanity cascade", disable=not progress, leave=False)):
        reinitialize(group, s.seed + 1 + k)
        randomised.eval()
        done += group.numel()
        maps = image_maps(randomised, cfg, data, data.classes, device)
        steps.append(step_record(group.name, done, maps, original, data, subset_loss(randomised, data, device), t,
                                 n_boot, s.seed))
        step_maps.append(maps[:n_ex])
        names.append(group.name)

    summary = {
        "steps": steps,
        "random_logit": logit,
        "verdicts": verdicts(steps, logit, float(s.tolerance)),
        "n_images": len(data.names),
        "names": data.names,
        "definition": "cascading re-initialisation from the head downward (Adebayo et al. 2018); per step the maps "
                      "are regenerated and compared with the original ones (Spearman, SSIM), scored (JI reference "
                      "at eval_thresh, EPG against the mask) and correlated with the randomised model's loss (VICE)",
        "settings": {**asdict(s), "method": cfg.cam_method, "scales": list(cfg.cam_scales), "flip": bool(cfg.cam_flip),
                     "ji_threshold": t, "bootstrap": n_boot, "loss_input": cfg.loss_input,
                     "reinitialisation": "reset_parameters() per module (BatchNorm running statistics reset); "
                                         "trunc_normal(std=0.02) for parameters without one",
                     "groups": [{"name": g.name, "n_params": g.numel()} for g in groups]},
        "provenance": {
            "weights": {"path": str(weights_path),
                        "sha256": sha256_file(weights_path) if weights_path.is_file() else None},
            "list": file_record(data_path(cfg, cfg.eval_list)), "labels": file_record(cfg.cls_label),
            "images_sha256": sha256_files([image_path(cfg.voc12_root, n, cfg.img_dir) for n in data.names]),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        },
    }
    out = write_json_atomic(session_paths(cfg).eval_dir(cfg.eval_list, cfg.weights, cfg.get("map_tag", "")) / "sanity.json",
                            summary)
    return SanityResult(out, summary, data, step_maps, names)
