"""Frozen-backbone feature maps, computed once per image and memory-mapped (beyond-spec §1.6).

A cache directory holds ``features.npy`` (float16 [N, D, h, w], rows in list order,
read with ``np.load(mmap_mode="r")``, no pickle) and ``manifest.json``. The manifest's
``key`` is everything the features depend on:

- ``backbone_weights_sha256``: sha256 over the backbone's state dict (names, dtypes,
  shapes and bytes of every tensor, in sorted name order);
- ``backbone_arch_sha256``: sha256 of the backbone's ``repr`` (layer types and settings
  that are not in the state dict, e.g. BatchNorm eps);
- ``input_size`` and ``transform`` (the un-augmented centre crop of ``val_transform``, with
  its mean/std), ``dtype``;
- ``list_sha256``, ``labels_sha256`` (file bytes) and ``images_fingerprint`` (sha256 of the
  listed images' names, sizes and modification times).

A cache whose key differs from the requested one is never read: it is rebuilt, with a
message naming what changed. Building writes ``features.partial.npy`` and, per process,
``done.<rank>.npy`` (the finished row indices, written after the rows are flushed), so an
interrupted build resumes where it stopped; the finished file is renamed into place and
the manifest written last. One process builds a cache at a time (a lock file
``.<cache folder>.lock`` beside it): a second process asking for it waits and then opens it. Under torchrun, rank r computes rows r, r + world_size, ...
of the list (those not done yet); rank 0 finalises after a barrier. Features are
computed in float32 (no autocast) and rounded once to float16.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, val_transform
from ..data.datasets import VOCClassification
from ..data.voc import image_path, label_matrix, load_cls_labels, read_image_list
from ..errors import InputError
from ..io import atomic_path, read_json_object, write_json_atomic
from ..provenance import sha256_file, sha256_json
from . import dist

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
FEATURES = "features.npy"
PARTIAL = "features.partial.npy"
PARTIAL_MANIFEST = "manifest.partial.json"
FLOAT16_MAX = float(np.finfo(np.float16).max)

PathLike = str | os.PathLike


# ------------------------------------------------------------------ the key
def state_dict_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict: every tensor's name, dtype, shape and bytes, names sorted."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def backbone_fingerprint(backbone: nn.Module) -> dict[str, str]:
    """``backbone_weights_sha256`` (state dict) and ``backbone_arch_sha256`` (``repr``: eps, activations...)."""
    return dict(backbone_weights_sha256=state_dict_sha256(backbone),
                backbone_arch_sha256=hashlib.sha256(repr(backbone).encode()).hexdigest())


def images_fingerprint(voc12_root: PathLike, names: Sequence[str], img_dir: str = "JPEGImages") -> str:
    """sha256 over each listed image's name, byte size and mtime (cheap: no image is read)."""
    h = hashlib.sha256()
    for name in names:
        st = image_path(voc12_root, name, img_dir).stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(backbone: nn.Module, list_file: PathLike, label_file: PathLike, voc12_root: PathLike,
              names: Sequence[str], input_size: int, img_dir: str = "JPEGImages") -> dict[str, Any]:
    """Everything the cached features depend on (see the module docstring)."""
    return dict(
        format=CACHE_FORMAT,
        **backbone_fingerprint(backbone),
        input_size=int(input_size),
        transform=dict(name="center_crop", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        dtype="float16",
        list_sha256=sha256_file(list_file),
        labels_sha256=sha256_file(label_file),
        images_fingerprint=images_fingerprint(voc12_root, names, img_dir),
    )


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    names = dict(backbone_weights_sha256="backbone weights", backbone_arch_sha256="backbone architecture",
                 input_size="input size", list_sha256="image list", labels_sha256="label file",
                 images_fingerprint="image files")
    changed = [names.get(k, k) for k in new if old.get(k) != new.get(k)]
    return ", ".join(changed) or "unknown"


# ------------------------------------------------------------------ reading
@dataclass
class FeatureCache:
    """An opened cache: ``features`` float16 [N, D, h, w] (read-only memmap) and ``labels`` float32 [N, C]."""

    root: Path
    names: list[str]
    features: np.ndarray
    labels: np.ndarray
    manifest: dict[str, Any]
    built: bool = False          # True when this call (re)computed features
    seconds: float = 0.0         # time spent building in this call

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Rows ``indices`` (any order) as float32 [B, D, h, w]."""
        return torch.from_numpy(np.asarray(self.features[np.asarray(indices, dtype=np.int64)], dtype=np.float32))


def _open(root: Path, key: dict[str, Any], names: list[str], labels: np.ndarray) -> FeatureCache | None:
    """The cache at ``root`` if complete and made with ``key``; None if absent. Raises nothing for stale ones."""
    manifest_file, features_file = root / MANIFEST, root / FEATURES
    if not (manifest_file.is_file() and features_file.is_file()):
        return None
    try:
        manifest = read_json_object(manifest_file)
        features = np.load(features_file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return None
    if manifest.get("key") != key or manifest.get("names") != names:
        return None
    if list(features.shape) != manifest.get("shape") or features.dtype != np.float16:
        return None
    return FeatureCache(root, names, features, labels, manifest)


def _stale_reason(root: Path, key: dict[str, Any], names: list[str]) -> str | None:
    """Why an existing cache at ``root`` cannot be used (None when there is none)."""
    if not (root / MANIFEST).is_file():
        return "incomplete cache (no manifest)" if (root / FEATURES).is_file() else None
    try:
        old = read_json_object(root / MANIFEST)
    except ValueError:
        return "unreadable manifest"
    if old.get("key") != key:
        return f"{_describe_change(old.get('key') or {}, key)} changed"
    if old.get("names") != names:
        return "image list changed"
    return "feature file does not match its manifest"


# ---------------------------------------------------------------- building
@dataclass
class _Build:
    root: Path
    key: dict[str, Any]
    names: list[str]
    shape: tuple[int, ...]
    rank: int
    world: int
    done_own: set[int] = field(default_factory=set)

    @property
    def partial(self) -> Path:
        return self.root / PARTIAL

    def done_file(self, rank: int) -> Path:
        return self.root / f"done.{rank}.npy"

    def done_all(self) -> set[int]:
        done: set[int] = set()
        for f in self.root.glob("done.*.npy"):
            done.update(np.load(f, allow_pickle=False).tolist())
        return done

    def mark_done(self, rows: Sequence[int]) -> None:
        self.done_own.update(int(r) for r in rows)
        with atomic_path(self.done_file(self.rank)) as tmp:
            np.save(tmp, np.fromiter(sorted(self.done_own), dtype=np.int64))


def _clear(root: Path, keep_partial: bool = False) -> None:
    for f in [root / MANIFEST, root / FEATURES, *([] if keep_partial else
              [root / PARTIAL, root / PARTIAL_MANIFEST, *root.glob("done.*.npy")])]:
        if f.exists():
            f.unlink()


def _prepare_partial(b: _Build, log: Callable[[str], None]) -> None:
    """Rank 0: reuse a matching partial build (resume) or start a fresh partial file."""
    pm = b.root / PARTIAL_MANIFEST
    full = [len(b.names), *b.shape]
    same = False
    if pm.is_file() and b.partial.is_file():
        try:
            head = np.load(b.partial, mmap_mode="r", allow_pickle=False)
            same = (read_json_object(pm) == dict(key=b.key, names=b.names, shape=full)
                    and list(head.shape) == full and head.dtype == np.float16)
            del head
        except (ValueError, OSError):
            same = False
    if same:
        log(f"[features] resuming the build in {b.root}")
        return
    _clear(b.root)
    b.root.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(b.partial, mode="w+", dtype=np.float16, shape=tuple(full))
    del mm
    write_json_atomic(pm, dict(key=b.key, names=b.names, shape=full))


def _to_float16(feats: torch.Tensor, names: Sequence[str]) -> np.ndarray:
    arr = feats.detach().float().cpu()
    if not torch.isfinite(arr).all():
        raise ValueError(f"backbone features are NaN/inf for image(s) among {', '.join(names[:4])}")
    if arr.abs().max() > FLOAT16_MAX:
        raise ValueError(f"backbone features exceed the float16 range (max |x| = {float(arr.abs().max()):.3g}) "
                         f"for image(s) among {', '.join(names[:4])}; the float16 cache cannot hold them")
    return arr.numpy().astype(np.float16)


def _compute_rows(model: nn.Module, b: _Build, rows: list[int], dataset: VOCClassification, device: torch.device,
                  batch_size: int, num_workers: int, progress: bool) -> None:
    mm = np.load(b.partial, mmap_mode="r+", allow_pickle=False)
    loader = DataLoader(Subset(dataset, rows), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    bar = tqdm(total=len(rows), desc=f"features {b.root.name}", disable=not progress, dynamic_ncols=True,
               leave=False)
    pos = 0
    with torch.no_grad():
        for batch in loader:
            chunk = rows[pos:pos + len(batch["name"])]
            feats = model.forward_features(batch["img"].to(device))
            mm[chunk] = _to_float16(feats, batch["name"])
            mm.flush()                      # rows on disk before they are marked done
            b.mark_done(chunk)
            pos += len(chunk)
            bar.update(len(chunk))
    bar.close()
    del mm


def _feature_shape(model: nn.Module, dataset: VOCClassification, device: torch.device) -> tuple[int, int, int]:
    with torch.no_grad():
        f = model.forward_features(dataset[0]["img"][None].to(device))
    if f.ndim != 4:
        raise ValueError(f"forward_features gave shape {tuple(f.shape)}; the cache needs [B, D, h, w] feature maps")
    return tuple(int(s) for s in f.shape[1:])  # type: ignore[return-value]


def _finalise(b: _Build, seconds: float, extra: dict[str, Any]) -> None:
    missing = len(b.names) - len(b.done_all())
    if missing:
        raise RuntimeError(f"{b.root}: {missing} feature rows were not computed by any process")
    os.replace(b.partial, b.root / FEATURES)
    manifest = dict(key=b.key, key_sha256=sha256_json(b.key), shape=[len(b.names), *b.shape], dtype="float16",
                    names=b.names, build_seconds=round(seconds, 3), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    versions=dict(torch=torch.__version__), **extra)
    write_json_atomic(b.root / MANIFEST, manifest)
    for f in [b.root / PARTIAL_MANIFEST, *b.root.glob("done.*.npy")]:
        f.unlink()


def feature_cache(
    model: nn.Module,
    list_file: PathLike,
    label_file: PathLike,
    voc12_root: PathLike,
    cache_dir: PathLike,
    input_size: int,
    img_dir: str = "JPEGImages",
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    info: dict[str, Any] | None = None,
) -> FeatureCache | None:
    """Open the feature cache of ``list_file`` at ``cache_dir``, building (or rebuilding) it when needed.

    ``model`` has ``forward_features`` (a :class:`dywsss.models.probes.ProbeModel`, or a timm
    model); its ``backbone`` attribute, when present, is what is hashed. Images go through
    ``val_transform(input_size)`` (the un-augmented centre crop). ``rank``/``world_size``
    default to the torchrun environment. Returns None only for a shard of a sharded build
    run without a process group (single-process testing) while other shards are missing.
    ``info`` is stored in the manifest (e.g. the network name).
    """
    root = Path(cache_dir)
    env_rank, env_world, _ = dist.env_world()
    rank = env_rank if rank is None else int(rank)
    world = env_world if world_size is None else int(world_size)
    device = torch.device(device)
    names = read_image_list(list_file)
    label_dict = load_cls_labels(label_file)
    labels = label_matrix(names, label_dict, source=label_file)
    backbone = getattr(model, "backbone", model)
    key = cache_key(backbone, list_file, label_file, voc12_root, names, input_size, img_dir)
    found = _open(root, key, names, labels)
    if found is not None:
        return found
    build = _Build(root, key, names, (), rank, world)
    if dist.is_dist():  # the ranks of one job build together (barriers); no lock between them
        return _build(model, build, labels, label_dict, voc12_root, input_size, img_dir, batch_size, num_workers,
                      device, progress, log, dict(info=info or {}, list_file=str(list_file),
                                                  label_file=str(label_file), world_size=world))
    with _build_lock(root, log):
        found = _open(root, key, names, labels)  # another process may have built it while this one waited
        if found is not None:
            return found
        return _build(model, build, labels, label_dict, voc12_root, input_size, img_dir, batch_size, num_workers,
                      device, progress, log, dict(info=info or {}, list_file=str(list_file),
                                                  label_file=str(label_file), world_size=world))


@contextlib.contextmanager
def _build_lock(root: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Exclusive lock on ``.<root name>.lock`` beside ``root`` while one process builds the cache; another
    process asking for the same cache (two probes of one backbone started together) waits for it, then
    opens what it built. Released when the process ends, however it ends."""
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(root.parent / f".{root.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[features] {root}: another process is building this cache; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _build(model: nn.Module, b: _Build, labels: np.ndarray, label_dict: dict, voc12_root: PathLike, input_size: int,
           img_dir: str, batch_size: int, num_workers: int, device: torch.device, progress: bool,
           log: Callable[[str], None], extra: dict[str, Any]) -> FeatureCache | None:
    """Compute (or finish) this rank's rows of the cache ``b`` and, on rank 0, finalise it."""
    t0 = time.perf_counter()
    root, key, names, rank, world = b.root, b.key, b.names, b.rank, b.world
    model.eval()
    dataset = VOCClassification(names, voc12_root, label_dict, val_transform(int(input_size)),
                                img_dir=img_dir)
    b.shape = _feature_shape(model, dataset, device)
    if rank == 0 or not dist.is_dist():
        reason = _stale_reason(root, key, names)
        if reason:
            log(f"[features] {root}: stale cache not reused ({reason}); rebuilding")
        _prepare_partial(b, log)
    dist.barrier()
    if not b.partial.is_file():
        raise RuntimeError(f"{b.partial}: partial feature file missing (rank 0 did not prepare it)")
    own = b.done_file(rank)
    if own.is_file():
        b.done_own = set(np.load(own, allow_pickle=False).tolist())
    done = b.done_all()
    dist.barrier()  # every rank has read the done set before anyone adds to it
    mine = [i for i in range(rank, len(names), world) if i not in done]  # rank r: rows r, r + world, ...
    _compute_rows(model, b, mine, dataset, device, batch_size, num_workers, progress and rank == 0)
    dist.barrier()
    if rank == 0 or not dist.is_dist():
        if len(b.done_all()) < len(names) and not dist.is_dist():
            log(f"[features] {root}: shard {rank}/{world} done; waiting for the other shards")
            return None
        _finalise(b, time.perf_counter() - t0, extra)
    dist.barrier()
    opened = _open(root, key, names, labels)
    if opened is None:
        raise RuntimeError(f"{root}: the feature cache just built cannot be opened")
    opened.built, opened.seconds = True, time.perf_counter() - t0
    return opened


def default_cache_dir(cache_root: PathLike, network: str, backbone: nn.Module, input_size: int,
                      list_file: PathLike) -> Path:
    """``<cache_root>/<network>_<weights sha256[:12]>_<size>px/<list stem>``: one folder per backbone and list."""
    sha = state_dict_sha256(getattr(backbone, "backbone", backbone))[:12]
    return Path(cache_root) / f"{network}_{sha}_{int(input_size)}px" / Path(list_file).stem


def read_manifest(cache_dir: PathLike) -> dict[str, Any]:
    """The manifest of a finished cache (errors name the file)."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no feature-cache manifest (build the cache first)")
    return read_json_object(path)
