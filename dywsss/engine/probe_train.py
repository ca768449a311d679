"""Train a probe head on a frozen backbone ("How to Probe", beyond-spec §1.2, §1.6-1.7).

``train_probe(cfg)`` builds the backbone (``network``, ``pretrained``), freezes it,
attaches the head ``probe`` (:data:`dywsss.models.probes.PROBE_HEADS`) and trains
only the head with the loss ``probe_loss`` (:data:`dywsss.metrics.probe_losses.PROBE_LOSSES`)
and the recipe ``probe_recipe`` (:data:`PROBE_RECIPES`):

- ``adam`` (default; the paper, with the lr of the authors' ImageNet code): Adam,
  lr 1e-3, no weight decay, linear warm-up over 5 epochs, then cosine to 0, per step.
- ``sgd`` (the authors' VOC/COCO code): SGD, momentum 0.9, no weight decay, base lr 3
  with the code's ×10 multiplier on every parameter named ``head`` — all the trainable
  ones, so the effective lr is 30 —, one warm-up epoch from 1e-7 of the lr, ×0.1 every 6 epochs.

Without augmentation (``probe_augment=False``, the default) the backbone's feature maps
of the un-augmented centre crops are cached once (:mod:`dywsss.engine.feature_cache`)
and the head trains on the cache in seconds; with ``probe_augment=True`` (or
``probe_cache=False``) the training features are recomputed from the images every step,
with the toolkit's training augmentation when ``probe_augment`` is on. The batches of
epoch e are the same in both cases (``EpochBatchSampler`` seeded with ``random_seed``).

Outputs (``work_dirs/<session>/``): ``model/last.pth`` (every epoch) and ``model/best.pth``
(lowest validation loss) in the training stage's checkpoint format plus ``arch`` and
``probe`` records, ``log/metrics.csv`` (one row per epoch), ``log/probe.json`` (settings,
caches, timings, final and best metrics, provenance) and ``config.py``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from mmengine.config import Config
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import data_path, session_paths
from ..data.transforms import train_transform, val_transform
from ..data.datasets import VOCClassification
from ..data.voc import check_data, load_cls_labels, read_image_list
from ..errors import ConfigError
from ..io import atomic_path, check_writable, write_json_atomic
from ..metrics.classification import mean_average_precision, mean_ml_accuracy
from ..metrics.probe_losses import ProbeLoss, get_probe_loss, resolve_off_value
from ..models.builder import build_model_from_cfg
from ..models.checkpoint import (
    capture_rng_state, link_checkpoint, load_checkpoint, model_state, restore_rng_state, save_checkpoint,
)
from ..models.lite import LITE_VALUES
from ..models.probes import ProbeModel, build_probe_model, head_kwarg_names
from ..models.spec import describe_model
from ..schema import config_problems, file_key_problems, network_problems, raise_problems, session_problems
from ..session import StageLock, prepare_training_session, save_run_config
from ..provenance import sha256_file
from ..registry import Registry
from . import dist
from .feature_cache import FeatureCache, backbone_fingerprint, default_cache_dir, feature_cache
from .runtime import env_info, resolve_num_workers, seed_everything, select_device, set_deterministic
from .train import EpochBatchSampler, SeededAugmentation, TrainingDivergedError, build_optimizer


# ------------------------------------------------------------------ recipes
@dataclass(frozen=True)
class ProbeRecipe:
    """Optimizer and per-step LR schedule: linear warm-up from ``warmup_start`` x lr, then cosine or step decay."""

    optimizer: Mapping[str, Any]
    warmup_epochs: float
    schedule: str                # "cosine" (to 0 at the last step) | "step" (x gamma every step_epochs)
    warmup_start: float = 1e-3
    step_epochs: int = 6
    gamma: float = 0.1


PROBE_RECIPES: Registry[ProbeRecipe] = Registry("probe recipe")
PROBE_RECIPES.register("adam")(ProbeRecipe(dict(type="Adam", lr=1e-3, weight_decay=0.0), warmup_epochs=5,
                                           schedule="cosine"))
#: lr 3 x the code's head multiplier 10 (every trainable parameter is in the head).
PROBE_RECIPES.register("sgd")(ProbeRecipe(dict(type="SGD", lr=30.0, momentum=0.9, weight_decay=0.0),
                                          warmup_epochs=1, schedule="step", warmup_start=1e-7, step_epochs=6,
                                          gamma=0.1))


def lr_factor(step: int, steps_per_epoch: int, epochs: int, recipe: ProbeRecipe) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): warm-up, then the recipe's decay."""
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))
    factor = 1.0
    if step < warm:
        factor = recipe.warmup_start + (1.0 - recipe.warmup_start) * step / warm
    if recipe.schedule == "cosine":
        if step >= warm:
            total = max(1, epochs * steps_per_epoch - warm)
            factor = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / total)))
    elif recipe.schedule == "step":
        factor *= recipe.gamma ** ((step // steps_per_epoch) // recipe.step_epochs)
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}")
    return factor


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class ProbeSettings:
    """The validated probe config keys (see docs/PROBES.md for each key)."""

    head: str
    head_kwargs: dict[str, Any]
    loss: str
    off_value: float
    recipe_name: str
    recipe: ProbeRecipe
    epochs: int
    batch_size: int
    augment: bool
    cache: bool
    cache_root: str

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["recipe"] = dict(asdict(self.recipe), optimizer=dict(self.recipe.optimizer))
        return out


def _number(cfg: Mapping[str, Any], key: str, default: Any, kind: type, low: float, high: float = math.inf,
            allow_none: bool = False) -> Any:
    value = cfg.get(key, default)
    if value is None and allow_none:
        return None
    try:
        ok = not isinstance(value, bool) and (kind is float or float(value) == int(value))
        number = kind(value) if ok else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high or (kind is float and not math.isfinite(number)):
        upper = "" if math.isinf(high) else f" and <= {high:g}"
        raise ConfigError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'} >= {low:g}{upper}"
                          + (" or None" if allow_none else ""))
    return number


def _flag(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{key}={value!r}: expected True or False")


def probe_settings(cfg: Mapping[str, Any]) -> ProbeSettings:
    """Read and check every probe key; any bad value is a one-line :class:`ConfigError`, before any work."""
    head = cfg.get("probe") or ""
    if not isinstance(head, str) or not head:
        raise ConfigError(f"probe={head!r}: set --options probe=NAME (linear, mlp2, mlp3, bcos_mlp2, bcos_mlp3, ...)")
    accepted = head_kwarg_names(head)          # ConfigError for an unknown head
    loss = str(cfg.get("probe_loss", "bce"))
    get_probe_loss(loss)                        # ConfigError for an unknown loss
    hidden = _number(cfg, "probe_hidden", 0, int, 0)
    head_kwargs: dict[str, Any] = {}
    if "hidden" in accepted:
        head_kwargs["hidden"] = hidden
    elif hidden:
        raise ConfigError(f"probe_hidden={hidden}: probe={head} has no hidden layer (use 0)")
    recipe_name = str(cfg.get("probe_recipe", "adam"))
    try:
        recipe = PROBE_RECIPES.get(recipe_name)
    except KeyError as exc:
        raise ConfigError(f"probe_recipe={recipe_name!r}: {exc}") from None
    lr = _number(cfg, "probe_lr", None, float, 0.0, allow_none=True)
    if lr is not None and lr <= 0:
        raise ConfigError(f"probe_lr={lr!r}: expected a number > 0 or None (the recipe's lr)")
    warm = _number(cfg, "probe_warmup_epochs", None, float, 0.0, allow_none=True)
    recipe = ProbeRecipe(
        optimizer={**recipe.optimizer, **({"lr": lr} if lr is not None else {})},
        warmup_epochs=recipe.warmup_epochs if warm is None else warm, schedule=recipe.schedule,
        warmup_start=recipe.warmup_start, step_epochs=recipe.step_epochs, gamma=recipe.gamma)
    return ProbeSettings(
        head=head, head_kwargs=head_kwargs, loss=loss,
        off_value=resolve_off_value(cfg.get("probe_bce_off_value", 0.0), int(cfg.get("num_classes", 20))),
        recipe_name=recipe_name, recipe=recipe,
        epochs=_number(cfg, "probe_epochs", 50, int, 1),
        batch_size=_number(cfg, "probe_batch_size", 64, int, 1),
        augment=_flag(cfg, "probe_augment", False), cache=_flag(cfg, "probe_cache", True),
        cache_root=str(cfg.get("probe_cache_dir") or ""),
    )


def probe_train_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Everything wrong with the config for training a probe, as one list (reported at once, before any work):
    the schema, session, network and file keys as for training, then the probe keys (:func:`probe_settings`)."""
    out = config_problems(cfg)
    if out:
        return out
    out = session_problems(cfg) + network_problems(cfg)
    out += file_key_problems(cfg, ("pretrain", "pretrained", "resume"), keep=LITE_VALUES)
    try:
        probe_settings(cfg)
    except ConfigError as exc:
        out.append(str(exc))
    return out


# ------------------------------------------------------------ feature sources
Batch = tuple[torch.Tensor, torch.Tensor]


class FeatureSource(Protocol):
    labels: np.ndarray

    def __len__(self) -> int: ...

    def batches(self, sampler: EpochBatchSampler) -> Iterator[Batch]:
        """(features float32 [B, D, h, w], labels [B, C]) for every batch of the sampler's epoch."""
        ...

    def ordered(self, batch_size: int) -> Iterator[Batch]:
        """All samples in list order (evaluation)."""
        ...


class CachedFeatures:
    """Batches read from a :class:`FeatureCache` (float16 on disk, float32 out)."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        self.labels = cache.labels

    def __len__(self) -> int:
        return len(self.cache)

    def _rows(self, idx: list[int]) -> Batch:
        return self.cache.batch(idx), torch.from_numpy(self.labels[idx])

    def batches(self, sampler: EpochBatchSampler) -> Iterator[Batch]:
        for pairs in sampler:
            yield self._rows([i for _, i in pairs])

    def ordered(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            yield self._rows(list(range(start, min(start + batch_size, len(self)))))


class LiveFeatures:
    """Features recomputed from the images by the frozen backbone (with the dataset's transform).

    Sample i of epoch e is transformed with its own RNG seeded by (seed, e, i), as in the
    training stage. ``feature_dtype=torch.float16`` rounds the features the way the cache
    stores them (used to check that training on the cache is the same computation).
    """

    def __init__(self, model: ProbeModel, dataset: VOCClassification, device: torch.device, seed: int,
                 num_workers: int = 0, feature_dtype: torch.dtype | None = None) -> None:
        self.model, self.dataset, self.device = model, dataset, device
        self.seed, self.num_workers, self.feature_dtype = int(seed), int(num_workers), feature_dtype
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.model.forward_features(images.to(self.device)).float()
        return f.to(self.feature_dtype).float() if self.feature_dtype is not None else f

    def batches(self, sampler: EpochBatchSampler) -> Iterator[Batch]:
        loader = DataLoader(SeededAugmentation(self.dataset, self.seed), batch_sampler=sampler,
                            num_workers=self.num_workers)
        for batch in loader:
            yield self._features(batch["img"]), batch["label"]

    def ordered(self, batch_size: int) -> Iterator[Batch]:
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=self.num_workers)
        for batch in loader:
            yield self._features(batch["img"]), batch["label"]


# ------------------------------------------------------------------ fitting
@dataclass
class ProbeResult:
    epochs: int
    steps: int
    train_seconds: float
    final: dict[str, float]
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_path: Path | None = None


def evaluate_probe(model: ProbeModel, source: FeatureSource, loss: ProbeLoss, off_value: float,
                   device: torch.device, batch_size: int = 256) -> dict[str, Any]:
    """Mean per-image loss, mAP and mean ML-accuracy (p > 0.5 of the loss's probabilities) over ``source``."""
    model.eval()
    logits = []
    with torch.no_grad():
        for feats, _ in source.ordered(batch_size):
            logits.append(model.forward_head(feats.to(device)).float().cpu())
    z = torch.cat(logits)
    y = torch.from_numpy(np.asarray(source.labels, dtype=np.float32))
    probs = loss.probs(z).double().numpy()
    return dict(loss=float(loss.per_image(z, y, off_value).mean()), mAP=mean_average_precision(probs, y.numpy()),
                ml_acc=mean_ml_accuracy(probs, y.numpy()), logits=z)


@dataclass
class _Writer:
    """Checkpoints and the per-epoch CSV of one probe run (None root: keep nothing on disk)."""

    root: Path | None
    record: dict[str, Any]

    def save(self, model: ProbeModel, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, step: int,
             metrics: Mapping[str, float], best_val_loss: float, improved: bool) -> Path | None:
        if self.root is None:
            return None
        last, best = self.root / "model" / "last.pth", self.root / "model" / "best.pth"
        save_checkpoint(last, dict(
            model=model_state(model), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            epoch=epoch, step=step, epoch_step=0, rng=capture_rng_state(), val_loss=metrics["val_loss"],
            best_val_loss=best_val_loss, val_mAP=metrics["val_mAP"], **self.record))
        if improved:
            link_checkpoint(last, best)
        return best

    def csv(self, history: list[dict[str, float]]) -> None:
        if self.root is None:
            return
        with atomic_path(self.root / "log" / "metrics.csv") as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)


def fit_probe(model: ProbeModel, train: FeatureSource, val: FeatureSource, settings: ProbeSettings,
              device: torch.device, seed: int, out_dir: Path | None = None, record: Mapping[str, Any] | None = None,
              resume: Mapping[str, Any] | None = None, progress: bool = True,
              log: Callable[[str], None] = tqdm.write) -> ProbeResult:
    """Train ``model.head`` for ``settings.epochs`` on ``train``, validating on ``val`` after each epoch.

    ``record`` goes into every checkpoint (``network``, ``config``, ``arch``, ``probe``, provenance);
    ``resume`` is a checkpoint of this run to continue from (epoch boundary).
    """
    loss = get_probe_loss(settings.loss)
    params = [p for p in model.head.parameters()]
    optimizer = build_optimizer(params, settings.recipe.optimizer)
    sampler = EpochBatchSampler(len(train), settings.batch_size, seed)
    spe = sampler.steps_per_epoch()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, spe, settings.epochs, settings.recipe))
    writer = _Writer(out_dir, dict(record or {}))
    epoch, step, best_loss, history = 0, 0, math.inf, []
    best: dict[str, float] = {}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        restore_rng_state(resume["rng"])
        epoch, step = int(resume["epoch"]), int(resume["step"])
        best_loss = float(resume.get("best_val_loss") or math.inf)
        history = list(resume.get("history") or [])
    t_start = time.perf_counter()
    bar = tqdm(total=settings.epochs * spe, initial=epoch * spe, disable=not progress, dynamic_ncols=True,
               desc=f"probe {settings.head}/{settings.loss}", leave=False)
    while epoch < settings.epochs:
        t0 = time.perf_counter()
        model.train()
        sampler.set_epoch(epoch)
        losses = []
        for feats, labels in train.batches(sampler):
            logits = model.forward_head(feats.to(device))
            value = loss.per_image(logits.float(), labels.to(device), settings.off_value).mean()
            if not torch.isfinite(value):
                raise TrainingDivergedError(
                    f"probe loss is {float(value):.4g} at step {step + 1} (epoch {epoch + 1}, lr "
                    f"{optimizer.param_groups[0]['lr']:.3g}); lower probe_lr or use probe_recipe=adam")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(value.detach()))
            bar.update(1)
        epoch += 1
        ev = evaluate_probe(model, val, loss, settings.off_value, device)
        row = dict(epoch=epoch, step=step, lr=optimizer.param_groups[0]["lr"], train_loss=float(np.mean(losses)),
                   val_loss=ev["loss"], val_mAP=ev["mAP"], val_ml_acc=ev["ml_acc"],
                   epoch_seconds=round(time.perf_counter() - t0, 3))
        history.append(row)
        improved = row["val_loss"] < best_loss
        if improved:
            best_loss, best = row["val_loss"], dict(row)
        writer.record["history"] = history
        writer.save(model, optimizer, scheduler, epoch, step, row, best_loss, improved)
        writer.csv(history)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_mAP=f"{row['val_mAP']:.3f}", refresh=False)
    bar.close()
    if history and not best:
        best = min(history, key=lambda r: r["val_loss"])
    final = history[-1] if history else {}
    log(f"[probe] {settings.head}/{settings.loss}: {epoch} epochs, val mAP {final.get('val_mAP', float('nan')):.4f} "
        f"(best val loss {best.get('val_loss', float('nan')):.4f} at epoch {best.get('epoch', 0)})")
    return ProbeResult(epochs=epoch, steps=step, train_seconds=time.perf_counter() - t_start, final=dict(final),
                       best=dict(best), history=history,
                       best_path=None if out_dir is None else out_dir / "model" / "best.pth")


# ------------------------------------------------------------------ the run
def _data_files(cfg: Config) -> dict[str, Path]:
    files = dict(train_list=data_path(cfg, cfg.train_list), val_list=data_path(cfg, cfg.val_list),
                 cls_label=Path(cfg.cls_label))
    for split in ("train_list", "val_list"):
        check_data(cfg.voc12_root, files[split], files["cls_label"], img_dir=cfg.get("img_dir", "JPEGImages"))
    return files


def _source(cfg: Config, model: ProbeModel, list_file: Path, label_file: Path, device: torch.device,
            augment: bool, cached: bool, cache_root: Path, caches: dict[str, Any]) -> FeatureSource | None:
    """The cached or recomputed features of one list; ``caches`` collects each cache's record."""
    img_dir = cfg.get("img_dir", "JPEGImages")
    crop = int(cfg.crop_size)
    workers = resolve_num_workers(cfg.get("num_workers", 0))
    if cached:
        cache = feature_cache(model, list_file, label_file, cfg.voc12_root,
                              default_cache_dir(cache_root, cfg.network, model, crop, list_file), crop,
                              img_dir=img_dir, batch_size=max(1, int(cfg.get("batch_size", 32))),
                              num_workers=workers, device=device, progress=dist.is_main(),
                              info=dict(network=str(cfg.network)))
        if cache is None:
            return None
        caches[list_file.stem] = dict(dir=str(cache.root), key_sha256=cache.manifest.get("key_sha256"),
                                      built=cache.built, build_seconds=round(cache.seconds, 3))
        return CachedFeatures(cache)
    transform = (train_transform(crop, cfg.resize_long, cfg.color_jitter, float(cfg.get("cut_p", 0.0)),
                                 float(cfg.get("cut_s", 0.25))) if augment else val_transform(crop))
    dataset = VOCClassification(read_image_list(list_file), cfg.voc12_root, load_cls_labels(label_file), transform,
                                img_dir=img_dir)
    return LiveFeatures(model, dataset, device, int(cfg.random_seed), workers)


def train_probe(cfg: Config) -> Path:
    """Train the probe ``cfg.probe`` on the frozen ``cfg.network``; returns the path of ``model/best.pth``."""
    raise_problems(probe_train_problems(cfg))
    settings = probe_settings(cfg)
    paths = session_paths(cfg)
    files = _data_files(cfg)
    use_cuda = select_device(cfg.get("device", "auto")).type == "cuda"
    info = dist.init_distributed(use_cuda)
    try:
        with StageLock(paths, "train", enabled=info.is_main):
            if info.is_main:
                check_writable(paths.root)
                prepare_training_session(paths, cfg.get("resume"), bool(cfg.get("overwrite", False)))
            return _train_probe(cfg, settings, paths.root, files, info)
    finally:
        dist.cleanup(info)


def _train_probe(cfg: Config, settings: ProbeSettings, root: Path, files: Mapping[str, Path],
                 info: dist.DistInfo) -> Path:
    device = select_device(cfg.get("device", "auto"), info.local_rank)
    set_deterministic(bool(cfg.get("deterministic", False)))
    seed = int(cfg.random_seed)
    seed_everything(seed)
    backbone = build_model_from_cfg(cfg)
    model = build_probe_model(backbone, settings.head, int(cfg.get("num_classes", 20)), **settings.head_kwargs)
    model.to(device)
    cache_root = Path(settings.cache_root or Path(cfg.get("work_dir_root", "work_dirs")) / "feature_cache")
    caches: dict[str, Any] = {}
    t0 = time.perf_counter()
    train_src = _source(cfg, model, files["train_list"], files["cls_label"], device, settings.augment,
                        settings.cache and not settings.augment, cache_root, caches)
    val_src = _source(cfg, model, files["val_list"], files["cls_label"], device, False, settings.cache,
                      cache_root, caches)
    cache_seconds = time.perf_counter() - t0
    best_path = root / "model" / "best.pth"
    if not info.is_main or train_src is None or val_src is None:
        return best_path  # the head trains on rank 0 alone (seconds on the cache); no barrier to time out
    arch = describe_model(model, cfg).to_dict()
    provenance = dict(**backbone_fingerprint(model.backbone),
                      pretrained=str(cfg.get("pretrain") or cfg.get("pretrained")),
                      **{k: dict(path=str(v), sha256=sha256_file(v)) for k, v in files.items()})
    record = dict(network=str(cfg.network), config=cfg.pretty_text, arch=arch, probe=settings.record(),
                  provenance=provenance)
    resume = _resume_checkpoint(cfg, root, arch)
    save_run_config(cfg.pretty_text, session_paths(cfg), "probe")
    result = fit_probe(model, train_src, val_src, settings, device, seed, root, record, resume=resume,
                       progress=info.is_main)
    write_json_atomic(root / "log" / "probe.json", dict(
        probe=settings.record(), arch=arch, caches=caches, cache_seconds=round(cache_seconds, 3),
        train_seconds=round(result.train_seconds, 3), epochs=result.epochs, steps=result.steps,
        final=result.final, best=result.best, provenance=provenance,
        env=env_info(device, seed, info.world_size, network=cfg.network)))
    return best_path


def _resume_checkpoint(cfg: Config, root: Path, arch: Mapping[str, Any]) -> dict[str, Any] | None:
    resume = cfg.get("resume", False)
    if resume in (None, False, "", "false", "False"):
        return None
    path = root / "model" / "last.pth" if resume is True or str(resume).lower() == "true" else Path(str(resume))
    if not path.is_file():
        tqdm.write(f"[probe] resume: {path} not found, starting from scratch")
        return None
    ckpt = load_checkpoint(path)
    if ckpt.get("arch") != dict(arch):
        raise ConfigError(f"resume: {path} holds a different probe ({ckpt.get('arch')}); "
                          "use another session_name or resume=False")
    return ckpt
