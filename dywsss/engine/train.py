"""Stage 1: train a multi-label classifier on VOC (spec, stage 1).

``train(cfg)`` runs the original recipe by default: mean BCE-with-logits over
the 20 classes, SGD with momentum and weight decay, MultiStepLR stepped per
epoch, validation loss on ``val_list`` after each epoch, ``best.pth`` = the
lowest validation loss, ``epoch_XXX.pth`` each epoch and ``last.pth``.

Reproducibility and resume: the sample order of epoch ``e`` comes from a
generator seeded with ``random_seed + e`` (``DistributedSampler``), and every
sample's augmentation from its own generator seeded with
``(random_seed, e, index)``. Neither depends on the number of DataLoader
workers or on where a run was interrupted, so a run resumed from a mid-epoch
checkpoint (``save_every_steps``), with model, optimizer, scheduler, scaler,
step counters and the global RNG states restored, ends with the same weights
as an uninterrupted one (single process on CPU with ``deterministic=True``;
under torchrun, ranks other than 0 continue with fresh dropout streams).

Under torchrun each process trains on its shard (DistributedDataParallel);
the validation loss is reduced over ranks and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from ..config import SessionPaths, data_path, session_paths
from ..data.datasets import VOCClassification
from ..data.transforms import train_transform, val_transform
from ..data.voc import check_data, load_cls_labels
from ..errors import ConfigError, InputError, MissingInputError, UserError
from ..io import check_writable, write_json_atomic
from ..metrics.classification import multilabel_bce
from ..models.builder import build_model_from_cfg, classifier_module_name, is_vit, unwrap_model
from ..models.lite import LITE_VALUES
from ..models.spec import ModelSpec, build_from_spec, describe_model, read_spec
from ..provenance import file_record
from ..recipe import recipe_of, recipe_settings
from ..schema import config_problems, file_key_problems, network_problems, raise_problems, session_problems
from ..session import StageLock, prepare_training_session, save_run_config
from ..models.checkpoint import (
    capture_rng_state,
    link_checkpoint,
    load_checkpoint,
    model_state,
    restore_rng_state,
    save_checkpoint,
    state_dict_of,
    strict_load,
)
from . import dist
from .adversarial import AdvTrainConfig, adversarial_loss, convert_advprop
from .runtime import env_info, resolve_num_workers, seed_everything, select_device, set_deterministic, worker_init_fn

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam,
}


class TrainingDivergedError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------- loss
def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The training objective: Eq. 7 (:func:`multilabel_bce`) in float32, reduced over images.

    ``reduction='mean'`` averages over images too (= ``nn.MultiLabelSoftMarginLoss``);
    ``'none'`` returns the per-image loss [B].
    """
    per_image = multilabel_bce(logits.float(), labels.float())
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return per_image.sum()
    return per_image.mean()


# ------------------------------------------------------- optimizer, schedule
class ConfigTypeError(ConfigError, TypeError):
    """An optimizer or scheduler key that its class does not take."""


def _checked_kwargs(cls: type, spec: Mapping[str, Any], key: str, skip: tuple[str, ...]) -> dict[str, Any]:
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    accepted = [p for p in inspect.signature(cls).parameters if p not in skip]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigTypeError(
            f"{key}.{unknown[0]}: not an argument of {cls.__name__} (accepted: {', '.join(accepted)})"
        )
    return kwargs


def build_optimizer(params: Sequence[nn.Parameter], spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Optimizer from the ``optimizer`` config dict (type SGD | AdamW | Adam, other keys its arguments)."""
    name = spec.get("type", "SGD")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.type={name!r}: expected one of {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    kwargs = _checked_kwargs(cls, spec, "optimizer", ("params",))
    if "lr" not in kwargs:
        raise ConfigError("optimizer.lr is required")
    params = list(params)
    if not params:
        raise ConfigError("no trainable parameters (finetune=True but the classifier is frozen too?)")
    return cls(params, **kwargs)


LR_WARMUPS = ("step", "epoch")


def build_scheduler(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any] | None, warmup_epochs: float = 0,
                    lr_warmup: str = "step") -> torch.optim.lr_scheduler.LRScheduler:
    """Epoch-wise LR schedule from ``lr_scheduler`` (any ``torch.optim.lr_scheduler`` class; None: constant).

    ``lr_warmup="epoch"`` with ``warmup_epochs`` W > 0 is the original's
    ``GradualWarmupScheduler(multiplier=1, total_epoch=W)`` around it: epoch e <= W
    trains at ``lr * e / W`` (epoch 0 at lr 0), and the wrapped schedule starts
    counting at epoch W + 1, so its milestones are shifted by W + 1. With
    ``lr_warmup="step"`` the warmup is applied per optimizer step by the training
    loop (:func:`warmup_factor`) and the schedule counts from epoch 0.
    """
    spec = dict(spec or dict(type="ConstantLR", factor=1.0, total_iters=0))
    name = spec.get("type", "MultiStepLR")
    cls = getattr(torch.optim.lr_scheduler, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)):
        raise ConfigError(f"lr_scheduler.type={name!r}: not a torch.optim.lr_scheduler class (e.g. MultiStepLR)")
    if lr_warmup not in LR_WARMUPS:
        raise ConfigError(f"lr_warmup={lr_warmup!r}: expected one of {', '.join(LR_WARMUPS)}")
    if lr_warmup == "step" or not warmup_epochs:
        return cls(optimizer, **_checked_kwargs(cls, spec, "lr_scheduler", ("optimizer",)))
    if float(warmup_epochs) != int(warmup_epochs):
        raise ConfigError(f"warmup_epochs={warmup_epochs!r}: lr_warmup=epoch needs a whole number of epochs")
    total = int(warmup_epochs)
    warm = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: epoch / total)
    after = cls(optimizer, **_checked_kwargs(cls, spec, "lr_scheduler", ("optimizer",)))
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, after], milestones=[total + 1])


def check_optim_config(cfg: Mapping[str, Any]) -> None:
    """Build ``optimizer`` and ``lr_scheduler`` on a dummy parameter so a bad key fails before training."""
    dummy = build_optimizer([nn.Parameter(torch.zeros(1))], cfg["optimizer"])
    build_scheduler(dummy, cfg.get("lr_scheduler"), cfg.get("warmup_epochs", 0), cfg.get("lr_warmup", "step"))


def train_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Everything wrong with the config for training, as one list (reported at once)."""
    out = config_problems(cfg)
    if out:
        return out
    out = session_problems(cfg) + network_problems(cfg)
    out += file_key_problems(cfg, ("pretrain", "pretrained", "resume"), keep=LITE_VALUES)
    for check in (check_optim_config, AdvTrainConfig.from_cfg):
        try:
            check(cfg)
        except ConfigError as exc:
            out.append(str(exc))
    return out


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup: the LR multiplier at optimizer step ``step`` (0-based), 1 after ``warmup_steps``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def _set_lr(optimizer: torch.optim.Optimizer, lrs: Sequence[float], factor: float = 1.0) -> None:
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr * factor


# ----------------------------------------------------------------------- data
class SeededAugmentation(Dataset):
    """Wrap a dataset so that item ``(epoch, index)`` is augmented with its own seeded RNG.

    The augmentation of a sample then depends only on (seed, epoch, index),
    not on workers, ranks or resume points; the global RNG is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def sample_seed(self, epoch: int, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(1, np.uint64)[0] >> 1)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.sample_seed(epoch, index))
            return self.dataset[index]


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` for one rank: the epoch's shuffled shard, optionally resumed.

    Shuffling is ``DistributedSampler``'s (seed + epoch, padded to equal shard
    sizes, so every rank runs the same number of steps). The last partial batch
    is dropped unless it is the only one; ``max_steps`` > 0 caps the epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 max_steps: int = 0) -> None:
        self.sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.batch_size = int(batch_size)
        self.max_steps = int(max_steps)
        self.epoch, self.skip = 0, 0

    def steps_per_epoch(self) -> int:
        full = self.sampler.num_samples // self.batch_size
        steps = full if full > 0 else 1
        return min(steps, self.max_steps) if self.max_steps > 0 else steps

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` without its first ``skip`` batches."""
        self.sampler.set_epoch(epoch)
        self.epoch, self.skip = int(epoch), int(skip)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = list(self.sampler)
        bs = self.batch_size
        for step in range(self.skip, self.steps_per_epoch()):
            yield [(self.epoch, i) for i in idx[step * bs:(step + 1) * bs]]

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.skip


def check_training_data(cfg: Config) -> dict[str, Path]:
    """Check dataset root, lists, labels and image files of both splits; raise before any training."""
    files = dict(train_list=data_path(cfg, cfg.train_list), val_list=data_path(cfg, cfg.val_list),
                 cls_label=Path(cfg.cls_label))
    problems = []
    for split in ("train_list", "val_list"):
        try:
            check_data(cfg.voc12_root, files[split], files["cls_label"], img_dir=cfg.get("img_dir", "JPEGImages"),
                       allow_pickle=bool(cfg.get("allow_pickle", False)))
        except MissingInputError:
            raise
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError(" | ".join(problems))
    return files


def validation_names(names: Sequence[str], batch_size: int, drop_last: bool) -> list[str]:
    """The images that decide ``best.pth``: all, or (``val_drop_last``, the original's loader with
    ``drop_last=True``) the first ``floor(N / batch_size) * batch_size`` of the list (1440 of VOC's 1449)."""
    names = list(names)
    return names[: len(names) // batch_size * batch_size] if drop_last else names


def build_loaders(cfg: Config, files: Mapping[str, Path], rank: int, world: int,
                  pin_memory: bool) -> tuple[DataLoader, EpochBatchSampler, DataLoader]:
    """Training loader (seeded per sample, sharded) and this rank's validation loader."""
    from ..data.voc import read_image_list

    labels = load_cls_labels(files["cls_label"], allow_pickle=bool(cfg.get("allow_pickle", False)))
    img_dir = cfg.get("img_dir", "JPEGImages")
    train_set = VOCClassification(read_image_list(files["train_list"]), cfg.voc12_root, labels,
                                  train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter,
                                                  float(cfg.cut_p), float(cfg.cut_s)), img_dir=img_dir)
    val_names = validation_names(read_image_list(files["val_list"]), int(cfg.batch_size),
                                 bool(cfg.get("val_drop_last", False)))
    val_set = VOCClassification(val_names[rank::world], cfg.voc12_root, labels, val_transform(cfg.crop_size),
                                img_dir=img_dir)
    workers = resolve_num_workers(cfg.num_workers)
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                  worker_init_fn=worker_init_fn)
    batches = EpochBatchSampler(len(train_set), cfg.batch_size, int(cfg.random_seed), rank, world,
                                int(cfg.get("max_steps_per_epoch", 0) or 0))
    train_loader = DataLoader(SeededAugmentation(train_set, int(cfg.random_seed)), batch_sampler=batches,
                              generator=torch.Generator().manual_seed(int(cfg.random_seed)), **common)
    val_loader = DataLoader(val_set, batch_size=int(cfg.batch_size), shuffle=False, **common)
    return train_loader, batches, val_loader


# ----------------------------------------------------------------------- model
FINETUNE_BN = ("train", "frozen")


def set_train_mode(model: nn.Module, finetune: bool, finetune_bn: str = "train") -> None:
    """Train mode. With ``finetune`` only the classifier has gradients; ``finetune_bn="train"`` (the
    original) keeps the whole network in train mode, so BatchNorm statistics adapt to VOC, while
    ``"frozen"`` keeps the backbone in eval mode (its statistics stay those of pre-training)."""
    if finetune_bn not in FINETUNE_BN:
        raise ConfigError(f"finetune_bn={finetune_bn!r}: expected one of {', '.join(FINETUNE_BN)}")
    if not finetune or finetune_bn == "train":
        model.train()
        return
    model.eval()
    plain = unwrap_model(model)
    plain.get_submodule(classifier_module_name(plain)).train()


def freeze_backbone(model: nn.Module) -> list[str]:
    """``requires_grad=False`` for everything but the classifier; returns the trainable names."""
    head = classifier_module_name(model) + "."
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(head))
    return [n for n, p in model.named_parameters() if p.requires_grad]


def validation_loss(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool,
                    channels_last: bool) -> float:
    """Mean per-image loss over the whole validation list (summed over ranks, then divided)."""
    return validate(model, loader, device, amp, channels_last)[0]


def validate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool,
             channels_last: bool) -> tuple[float, float]:
    """(mean per-image loss, mAP) over the whole validation list, all ranks together.

    The loss is summed over ranks and divided; mAP is computed on the gathered
    probabilities (classes without a positive image are left out).
    """
    import warnings

    from ..metrics.classification import mean_average_precision

    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    probs, labels = [], []
    with torch.no_grad():
        for batch in loader:
            x = _to_device(batch["img"], device, channels_last)
            with _autocast(device, amp):
                logits = model(x)
            y = batch["label"].to(device)
            loss = multilabel_loss(logits, y, reduction="none")
            total += torch.stack([loss.double().sum(), torch.tensor(float(len(loss)), dtype=torch.float64, device=device)])
            probs.append(torch.sigmoid(logits.float()).cpu())
            labels.append(y.cpu())
    dist.all_reduce_sum(total)
    p = torch.cat(dist.all_gather_tensors(torch.cat(probs) if probs else torch.zeros(0, 20))).double().numpy()
    y = torch.cat(dist.all_gather_tensors(torch.cat(labels) if labels else torch.zeros(0, 20))).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small demo split may miss a class; mAP leaves it out
        m_ap = mean_average_precision(p, y) if len(p) and y.any() else float("nan")
    return float(total[0] / total[1].clamp_min(1)), m_ap


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast (``amp=True``) on CUDA or CPU; the original trains and validates in fp32 (``amp=False``)."""
    if amp:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ the run
METRICS_CSV = "metrics.csv"
METRICS_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_mAP", "seconds")


def write_epoch_metrics(path: Path, row: Mapping[str, float]) -> Path:
    """Add one epoch's row to ``log/metrics.csv`` (rows of later epochs, left by a run this one resumes
    from an earlier checkpoint, are dropped); written atomically. ``lr`` is the lr of the epoch's first
    step, ``train_loss`` the mean over the epoch's steps (those run since a mid-epoch resume)."""
    import pandas as pd

    from ..io import atomic_path

    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=list(METRICS_COLUMNS))
    old = old[old["epoch"] < row["epoch"]] if len(old) else old
    table = pd.concat([old, pd.DataFrame([dict(row)])], ignore_index=True)[list(METRICS_COLUMNS)]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


@dataclass
class TrainState:
    epoch: int = 0          # finished epochs
    step: int = 0           # finished optimizer steps
    epoch_step: int = 0     # steps done in the current (unfinished) epoch
    val_loss: float | None = None
    best_val_loss: float = math.inf
    last_checkpoint: Path | None = None


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from, read once, with its architecture record (checked against the config)."""

    path: Path
    ckpt: dict[str, Any]
    spec: ModelSpec


def _resume_point(cfg: Config, paths: SessionPaths) -> ResumePoint | None:
    path = _resume_path(cfg, paths)
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    return ResumePoint(path, ckpt, read_spec(ckpt, cfg, path)[0])


def _resume_path(cfg: Config, paths: SessionPaths) -> Path | None:
    resume = cfg.get("resume", False)
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() == "true":
        last = paths.model_dir / "last.pth"
        return last if last.is_file() else None
    path = Path(str(resume))
    if not path.is_file():
        raise MissingInputError(f"resume={resume}: checkpoint not found")
    return path


class _RunLog:
    """Text log (rank 0: file + console above the progress bar) and TensorBoard scalars."""

    def __init__(self, paths: SessionPaths, main: bool) -> None:
        self.main = main
        self.logger = logging.getLogger(f"dywsss.train.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.writer = None
        if main:
            paths.log_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(paths.log_dir / "train.log")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.logger.addHandler(handler)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(paths.tensorboard_dir))

    def info(self, msg: str) -> None:
        if self.main:
            self.logger.info(msg)
            tqdm.write(msg)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
        if self.writer is not None:
            self.writer.close()


def train(cfg: Config) -> Path:
    """Run stage 1 for ``cfg``; returns the path of ``best.pth`` (on every rank).

    Before any work: every config key and every listed image and label is checked
    (all problems in one message), a resume checkpoint must agree with the config,
    the session is locked against a second training, and checkpoints already there
    are kept unless ``resume=True`` (continue) or ``overwrite=True`` (moved aside).
    Only then is ``config.py`` written.
    """
    raise_problems(train_problems(cfg))
    files = check_training_data(cfg)
    paths = session_paths(cfg)
    resume = _resume_point(cfg, paths)  # a checkpoint contradicting the config fails here, before any write
    use_cuda = select_device(cfg.get("device", "auto")).type == "cuda"
    info = dist.init_distributed(use_cuda)
    try:
        if info.is_main:
            check_writable(paths.root)
        with StageLock(paths, "train", enabled=info.is_main):
            if info.is_main:
                prepare_training_session(paths, cfg.get("resume"), bool(cfg.get("overwrite", False)))
                save_run_config(cfg.pretty_text, paths, "train")
            dist.barrier()
            return _train(cfg, info, files, resume)
    finally:
        dist.cleanup(info)


def _train(cfg: Config, info: dist.DistInfo, files: Mapping[str, Path], resume: ResumePoint | None) -> Path:
    paths = session_paths(cfg)
    device = select_device(cfg.get("device", "auto"), info.local_rank)
    set_deterministic(bool(cfg.get("deterministic", False)))
    seed = int(cfg.random_seed)
    seed_everything(seed)
    log = _RunLog(paths, info.is_main)
    try:
        return _fit(cfg, info, paths, files, device, seed, log, resume)
    finally:
        log.close()


def _fit(cfg: Config, info: dist.DistInfo, paths: SessionPaths, files: Mapping[str, Path],
         device: torch.device, seed: int, log: _RunLog, resume: ResumePoint | None) -> Path:
    if cfg.get("resume") and resume is None:
        log.info(f"resume=True but {paths.model_dir / 'last.pth'} does not exist: starting from scratch")
    if resume is None:
        model = build_model_from_cfg(cfg)
        spec = describe_model(model, cfg)
    else:
        model, spec = build_from_spec(resume.spec), resume.spec
    resume_from = None if resume is None else resume.path
    adv = AdvTrainConfig.from_cfg(cfg)
    if adv.advprop:  # auxiliary BatchNorms for the adversarial examples (evaluation drops them)
        convert_advprop(model)
    finetune = bool(cfg.get("finetune", False))
    trainable = freeze_backbone(model) if finetune else [n for n, _ in model.named_parameters()]
    channels_last = bool(cfg.get("channels_last", True)) and not is_vit(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.get("lr_scheduler"), cfg.get("warmup_epochs", 0),
                                cfg.get("lr_warmup", "step"))
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no loss scaling; kept for the format
    amp = bool(cfg.get("amp", False))

    train_loader, batches, val_loader = build_loaders(cfg, files, info.rank, info.world_size, device.type == "cuda")
    steps_per_epoch = batches.steps_per_epoch()
    state = TrainState()
    if resume is not None:
        state = _restore(resume.ckpt, model, optimizer, scheduler, scaler, steps_per_epoch, info.world_size, resume_from)
        log.info(f"resumed from {resume_from}: epoch {state.epoch}, step {state.step} (+{state.epoch_step} in epoch)")
        if info.rank > 0:  # the checkpoint holds rank 0's RNG; other ranks need their own streams
            seed_everything(seed + info.rank + 7919 * state.step)
    else:
        seed_everything(seed + info.rank)  # ranks draw different dropout masks
    config_text = cfg.pretty_text
    inputs = {k: file_record(v) for k, v in files.items()}

    net: nn.Module = model
    if cfg.get("compile", False):
        net = torch.compile(net)
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    if info.is_main:
        write_json_atomic(paths.log_dir / "env.json", env_info(
            device, seed, info.world_size, network=cfg.network, batch_size=int(cfg.batch_size),
            steps_per_epoch=steps_per_epoch, amp_bf16=amp, channels_last=channels_last,
            compile=bool(cfg.get("compile", False)), finetune=finetune, trainable_params=len(trainable),
            num_params=sum(p.numel() for p in model.parameters()), arch=spec.to_dict(), inputs=inputs,
            recipe=recipe_of(cfg), recipe_settings=recipe_settings(cfg), val_images=len(val_loader.dataset),
            num_workers=resolve_num_workers(cfg.num_workers), resumed_from=str(resume_from) if resume_from else None))
        log.info(f"training {cfg.network} on {device} x{info.world_size}: {steps_per_epoch} steps/epoch, "
                 f"{cfg.max_epoches} epochs, batch {cfg.batch_size}/rank, finetune={finetune}; recipe: {recipe_of(cfg)}")

    ctx = _Loop(cfg, info, paths, device, net, model, optimizer, scheduler, scaler, train_loader, batches,
                val_loader, log, amp, channels_last, finetune, steps_per_epoch, config_text, state, spec, inputs, adv)
    try:
        ctx.run()
    except torch.OutOfMemoryError as exc:
        bs = int(cfg.batch_size)
        raise ConfigError(
            f"out of memory with batch_size={bs} at epoch {state.epoch + 1}, step {state.step + 1}: reduce "
            f"the batch size, e.g. --options batch_size={max(1, bs // 2)} (and optimizer.lr in proportion)"
        ) from exc
    dist.barrier()
    return paths.model_dir / "best.pth"


def _restore(ckpt: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
             steps_per_epoch: int, world: int, path: Path) -> TrainState:
    epoch_step = int(ckpt.get("epoch_step", 0))
    if epoch_step and (ckpt.get("steps_per_epoch"), ckpt.get("world_size")) != (steps_per_epoch, world):
        raise ConfigError(
            f"{path}: a mid-epoch checkpoint of a run with {ckpt.get('steps_per_epoch')} steps/epoch on "
            f"{ckpt.get('world_size')} process(es); this run has {steps_per_epoch} on {world}. Keep batch_size, "
            "max_steps_per_epoch and the process count, or resume from an epoch_XXX.pth"
        )
    strict_load(model, state_dict_of(ckpt), path)
    if ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("rng"):
        restore_rng_state(ckpt["rng"])
    best = ckpt.get("best_val_loss")
    return TrainState(epoch=int(ckpt["epoch"]), step=int(ckpt["step"]), epoch_step=epoch_step,
                      val_loss=ckpt.get("val_loss"), best_val_loss=math.inf if best is None else float(best),
                      last_checkpoint=path)


@dataclass
class _Loop:
    cfg: Config
    info: dist.DistInfo
    paths: SessionPaths
    device: torch.device
    net: nn.Module              # what is called: possibly compiled / DDP-wrapped
    model: nn.Module            # the plain model (state dicts)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    batches: EpochBatchSampler
    val_loader: DataLoader
    log: _RunLog
    amp: bool
    channels_last: bool
    finetune: bool
    steps_per_epoch: int
    config_text: str
    state: TrainState
    spec: ModelSpec
    inputs: dict
    adv: AdvTrainConfig
    epoch_t0: float = 0.0           # when the current epoch started (this process)
    epoch_lr: float = 0.0           # the lr of the epoch's first step
    epoch_losses: list = field(default_factory=list)  # training losses of this epoch's steps (since a resume)

    def run(self) -> None:
        max_epochs = int(self.cfg.max_epoches)
        while self.state.epoch < max_epochs:
            self.train_epoch()
            self.end_epoch()

    # ---------------------------------------------------------------- epoch
    def train_epoch(self) -> None:
        st = self.state
        self.batches.set_epoch(st.epoch, skip=st.epoch_step)
        set_train_mode(self.net, self.finetune, str(self.cfg.get("finetune_bn", "train")))
        step_warmup = self.cfg.get("lr_warmup", "step") == "step"
        warm_steps = int(float(self.cfg.get("warmup_epochs", 0)) * self.steps_per_epoch) if step_warmup else 0
        self.epoch_t0, self.epoch_losses = time.perf_counter(), []
        self.epoch_lr = self.scheduler.get_last_lr()[0] * warmup_factor(st.step, warm_steps)
        every = int(self.cfg.get("save_every_steps", 0) or 0)
        interval = max(1, int(self.cfg.get("log_interval", 20)))
        bar = tqdm(total=self.steps_per_epoch, initial=st.epoch_step, disable=not self.info.is_main,
                   desc=f"epoch {st.epoch + 1}/{self.cfg.max_epoches}", dynamic_ncols=True, leave=False)
        t0, seen, running = time.perf_counter(), 0, []
        for batch in self.train_loader:
            loss = self.train_step(batch, warmup_factor(st.step, warm_steps))
            st.step += 1
            st.epoch_step += 1
            seen += len(batch["label"]) * self.info.world_size
            running.append(loss)
            self.epoch_losses.append(loss)
            ips = seen / max(time.perf_counter() - t0, 1e-9)
            lr = self.optimizer.param_groups[0]["lr"]  # train_step already applied the warmup factor
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
            bar.update(1)
            if st.step % interval == 0:
                self.log.scalar("train/loss", float(np.mean(running)), st.step)
                self.log.scalar("train/lr", lr, st.step)
                self.log.scalar("train/images_per_s", ips, st.step)
                running = []
            if every and st.step % every == 0 and st.epoch_step < self.steps_per_epoch:
                self.save(self.paths.model_dir / "last.pth")
        bar.close()
        if self.info.is_main and seen:
            self.log.info(f"epoch {st.epoch + 1}: {seen} images in {time.perf_counter() - t0:.1f}s "
                          f"({seen / max(time.perf_counter() - t0, 1e-9):.1f} img/s), last loss {running[-1] if running else loss:.4f}")

    def train_step(self, batch: Mapping[str, Any], factor: float) -> float:
        x = _to_device(batch["img"], self.device, self.channels_last)
        y = batch["label"].to(self.device, non_blocking=True)
        scheduled = self.scheduler.get_last_lr()
        _set_lr(self.optimizer, scheduled, factor)
        with _autocast(self.device, self.amp):
            if self.adv.enabled:  # PGD or AdvProp examples (engine.adversarial), random starts from the global RNG
                loss = adversarial_loss(self.net, x, y, self.adv, multilabel_loss, self.spec.mean, self.spec.std)
            else:
                loss = multilabel_loss(self.net(x), y)
        bad = dist.all_reduce_max((~torch.isfinite(loss.detach())).float().reshape(1))
        if bad.item():
            self.diverged(loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        _set_lr(self.optimizer, scheduled)  # the scheduler keeps stepping from the un-warmed LR
        return float(loss.detach())

    def diverged(self, loss: torch.Tensor) -> None:
        st = self.state
        where = (f"last good checkpoint: {st.last_checkpoint}" if st.last_checkpoint else
                 "no checkpoint written yet (it diverged before the first save)")
        raise TrainingDivergedError(
            f"loss is {float(loss.detach()):.4g} (NaN/inf) at step {st.step + 1} (epoch {st.epoch + 1}, "
            f"step {st.epoch_step + 1} of {self.steps_per_epoch}); {where}. Lower optimizer.lr, use "
            f"warmup_epochs, or check the data; resume with --options resume=PATH"
        )

    def end_epoch(self) -> None:
        st = self.state
        self.scheduler.step()
        # the plain model: ranks may hold different numbers of val batches, which DDP's forward would not allow
        dist.broadcast_buffers(self.model)
        st.val_loss, val_map = validate(self.model, self.val_loader, self.device, self.amp, self.channels_last)
        st.epoch += 1
        st.epoch_step = 0
        improved = st.val_loss < st.best_val_loss
        if improved:
            st.best_val_loss = st.val_loss
        self.log.scalar("val/loss", st.val_loss, st.epoch)
        self.log.scalar("val/mAP", val_map, st.epoch)
        self.log.scalar("train/epoch_lr", self.epoch_lr, st.epoch)
        if self.info.is_main:
            write_epoch_metrics(self.paths.log_dir / METRICS_CSV, dict(
                epoch=st.epoch, lr=self.epoch_lr,
                train_loss=float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan"),
                val_loss=st.val_loss, val_mAP=val_map, seconds=time.perf_counter() - self.epoch_t0))
        epoch_file = self.paths.model_dir / f"epoch_{st.epoch:03d}.pth"
        self.save(epoch_file)
        if self.info.is_main:
            link_checkpoint(epoch_file, self.paths.model_dir / "last.pth")
            if improved:
                link_checkpoint(epoch_file, self.paths.model_dir / "best.pth")
            self.log.info(f"epoch {st.epoch}: val loss {st.val_loss:.4f} (best {st.best_val_loss:.4f})"
                          f"{' -> best.pth' if improved else ''}; wrote {epoch_file}")
        st.last_checkpoint = epoch_file
        dist.barrier()

    def save(self, path: Path) -> None:
        st = self.state
        if self.info.is_main:
            save_checkpoint(path, dict(
                model=model_state(self.model), optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                epoch=st.epoch, step=st.step, epoch_step=st.epoch_step, steps_per_epoch=self.steps_per_epoch,
                world_size=self.info.world_size, rng=capture_rng_state(), val_loss=st.val_loss,
                best_val_loss=None if math.isinf(st.best_val_loss) else st.best_val_loss,
                network=str(self.cfg.network), config=self.config_text, arch=self.spec.to_dict(), inputs=self.inputs,
                recipe=recipe_of(self.cfg), recipe_settings=recipe_settings(self.cfg), adv_train=self.adv.mode,
            ))
        st.last_checkpoint = path
