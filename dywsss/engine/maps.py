"""Stage 2: one ``.npz`` of class maps per image (spec, stage 2; DESIGN.md "Map files").

For every image of ``cfg.infer_list`` the explainer (``cfg.cam_method``) is run
on the image at each scale of ``cfg.cam_scales`` (aspect kept; or at the
explainer's fixed ``input_size``, as for ViTs) and, with ``cfg.cam_flip``, on its
horizontal flip (flipped back). The raw maps are upsampled bilinearly to the
image size, summed, clamped at 0 and min-max normalised per class
(:func:`normalize_maps`). Which classes are kept follows ``cfg.cam_classes``.

Images of equal size are batched together and all needed classes of an image
are explained at once; maps stay on the device until written. Under torchrun
the list's size-grouped batches are dealt out ``rank::world_size``, so each
image is computed in the same batch as in one process and the files do not
depend on the number of processes. A rerun skips images whose file is complete (readable, right classes and size,
written under the folder's current record) and redoes the rest; ``overwrite=True`` redoes everything.

Provenance: the network is rebuilt from the checkpoint's architecture record
(:func:`dywsss.models.spec.load_trained_model`); ``maps_meta.json`` records the
method and its settings, the weights file and its sha256, the architecture,
the list's and labels' sha256 and the library versions. Every map file carries
the hash of that record (``stamp``), so maps of other weights or settings are
never mixed into a folder: the stage refuses (unless ``overwrite=True``) and
later stages check the stamps.
"""
from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import SessionPaths, data_path, session_paths
from ..data.datasets import VOCImages, collate_images
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, prediction_transform
from ..data.voc import NUM_CLASSES, check_inputs, image_path, image_size, label_matrix, load_cls_labels
from ..errors import ConfigError, MissingInputError, StaleError
from ..explain import EXPLAINERS
from ..io import check_writable, write_json_atomic
from ..metrics.probe_losses import output_probs
from ..mapfile import META_FILE, UNSTAMPED, load_maps, meta_stamp, read_maps_meta, read_stamp, save_maps
from ..models.spec import ModelSpec, TrainedModel, load_session_model
from ..provenance import file_record, library_versions, short_hash
from ..recipe import recipe_of
from ..schema import config_problems, network_problems, raise_problems, session_problems
from ..session import StageLock
from .dist import barrier, env_world, is_dist
from .runtime import resolve_num_workers, select_device

CLASS_MODES = ("gt", "pred", "all")
#: The original's offset in the min-max normalisation (spec, stage 2).
NORM_EPS = 1e-5
_MAX_PENDING_WRITES = 32


# ------------------------------------------------------------ normalisation
def normalize_maps(summed: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Per-class min-max normalisation of the original code (spec, stage 2).

    ``summed`` [K, H, W] are the scale/flip sums, clamped at 0. With ``m`` and
    ``M`` the min and max of one class map ``s``: pixels with ``s < m + 1e-5`` are
    set to 0, then the map becomes ``(s - m - 1e-5) / (M - m + 1e-5)``. The
    original stops there, which leaves the zeroed pixels at ``-(m + 1e-5) / (M - m
    + 1e-5)``, a hair below 0 when ``m`` is 0; ``clamp=True`` (what the map files
    hold) clips the result to [0, 1]. The maximum is ``(M - m - 1e-5) / (M - m +
    1e-5) < 1``.
    """
    s = summed.float()
    m = s.amin(dim=(-2, -1), keepdim=True)
    M = s.amax(dim=(-2, -1), keepdim=True)
    s = torch.where(s < m + NORM_EPS, torch.zeros_like(s), s)
    out = (s - m - NORM_EPS) / (M - m + NORM_EPS)
    return out.clamp_(0.0, 1.0) if clamp else out


# ------------------------------------------------------------ one batch
def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Input size at ``scale``, aspect kept (at least 1 pixel a side)."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_batch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a normalised batch; antialiased when shrinking (as PIL does)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _run_explainer(explainer: Any, x: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    if explainer.batched:
        return explainer.explain(x, classes)
    return [explainer.explain(x[i:i + 1], [c])[0] for i, c in enumerate(classes)]


def explain_batch(
    explainer: Any,
    images: torch.Tensor,
    classes: Sequence[Sequence[int]],
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    clamp: bool = True,
) -> list[torch.Tensor]:
    """Normalised maps [K_i, H, W] for a batch of equal-size images [B, 3, H, W] (see :func:`explain_batch_raw`)."""
    return explain_batch_raw(explainer, images, classes, scales, flip, clamp)[0]


def explain_batch_raw(
    explainer: Any,
    images: torch.Tensor,
    classes: Sequence[Sequence[int]],
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    clamp: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Normalised maps and raw maps, each [K_i, H, W], for equal-size images [B, 3, H, W].

    The explainer runs once per scale on the images and (``flip``) their mirror
    images together; each raw map is upsampled to (H, W) and mirrored back where
    needed. The stored map: the sum over scales and flips, clamped at 0 (for
    signed methods: the positive part of the summed attribution) and normalised.
    The raw map (``cam_store_raw``): the mean over passes of the upsampled map
    times (h w) / (H W), h x w the pass's input size, so each pass keeps its total
    attribution (for IG: logit(x) - logit(baseline)), unnormalised and signed.
    """
    B, _, H, W = images.shape
    sums = [images.new_zeros((len(c), H, W), dtype=torch.float32) for c in classes]
    raws = [images.new_zeros((len(c), H, W), dtype=torch.float32) for c in classes]
    fixed = getattr(explainer, "input_size", None)
    sizes = [tuple(fixed)] if fixed else [scaled_size(H, W, s) for s in scales]
    for size in sizes:
        x = resize_batch(images, size)
        if flip:
            x, run_classes = torch.cat([x, x.flip(-1)]), list(classes) * 2
        else:
            run_classes = list(classes)
        area = size[0] * size[1] / (H * W)
        for j, raw in enumerate(_run_explainer(explainer, x, run_classes)):
            if raw.shape[0] == 0:
                continue
            up = F.interpolate(raw[None].float(), size=(H, W), mode="bilinear", align_corners=False)[0]
            up = up.flip(-1) if j >= B else up
            sums[j % B] += up
            raws[j % B] += up * area
    passes = len(sizes) * (2 if flip else 1)
    return [normalize_maps(s.clamp_(min=0), clamp=clamp) for s in sums], [r / passes for r in raws]


def explain_batch_original_vit(explainer: Any, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                               device: torch.device, mean: Sequence[float] = IMAGENET_MEAN,
                               std: Sequence[float] = IMAGENET_STD) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Maps by the original ViT protocol (vice-spec stage 2; ``vit_map_protocol=original``).

    Each uint8 image is resized to the explainer's input size with PIL bilinear
    (torchvision ``Resize`` on a PIL image), then scaled to [0, 1] and normalised
    (``ToTensor``, ``Normalize``); each raw relevance map is upsampled bilinearly
    (``align_corners=False``) to the input size, min-max normalised there without
    an epsilon (a constant map, 0/0 in the original, becomes 0), then upsampled
    bilinearly to the image size. One pass, no flip, no further normalisation.
    Returns the maps and the raw maps (as :func:`explain_batch_raw`).
    """
    from PIL import Image

    h_in, w_in = explainer.input_size
    resized = [np.asarray(Image.fromarray(im).resize((w_in, h_in), Image.BILINEAR)) for im in images]
    x = to_device_batch(resized, device, False, mean, std)
    maps, raws = [], []
    for image, raw in zip(images, _run_explainer(explainer, x, classes)):
        size = tuple(image.shape[:2])
        if raw.shape[0] == 0:
            maps.append(raw.new_zeros((0, *size), dtype=torch.float32))
            raws.append(maps[-1])
            continue
        up = F.interpolate(raw[None].float(), size=(h_in, w_in), mode="bilinear", align_corners=False)[0]
        lo, hi = up.amin(dim=(-2, -1), keepdim=True), up.amax(dim=(-2, -1), keepdim=True)
        norm = torch.nan_to_num((up - lo) / (hi - lo), nan=0.0, posinf=0.0, neginf=0.0)
        maps.append(F.interpolate(norm[None], size=size, mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0))
        full = F.interpolate(raw[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        raws.append(full * (h_in * w_in / (size[0] * size[1])))
    return maps, raws


def select_classes(mode: str, labels: np.ndarray, probs: np.ndarray | None = None,
                   threshold: float = 0.5) -> list[list[int]]:
    """Per image, the class ids to keep: ``gt`` labels, ``pred`` (p > threshold) or ``all``."""
    if mode == "gt":
        return [np.flatnonzero(row > 0.5).tolist() for row in labels]
    if mode == "pred":
        if probs is None:
            raise ConfigError("cam_classes='pred' needs the predicted probabilities")
        return [np.flatnonzero(row > threshold).tolist() for row in probs]
    if mode == "all":
        return [list(range(NUM_CLASSES)) for _ in labels]
    raise ConfigError(f"cam_classes={mode!r}: expected one of {', '.join(CLASS_MODES)}")


def to_device_batch(images: Sequence[np.ndarray], device: torch.device, channels_last: bool = False,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Equal-size uint8 HxWx3 images -> normalised float32 [B, 3, H, W] on ``device``.

    Same arithmetic as :func:`dywsss.data.transforms.normalize_image`, done on the device.
    """
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(tuple(mean), device=device).view(1, 3, 1, 1)
    std = torch.tensor(tuple(std), device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def use_channels_last(cfg: Config, model: nn.Module) -> bool:
    """``cfg.channels_last`` for CNNs (faster convolutions with oneDNN / cuDNN); never for ViTs."""
    from ..models.builder import is_vit

    return bool(cfg.get("channels_last", False)) and not is_vit(model)


# ------------------------------------------------------------ files
def map_file_ok(path: Path, classes: Sequence[int] | None, size: tuple[int, int], stamp: str | None = None) -> bool:
    """True when ``path`` loads, has maps of ``size``, (unless None) exactly ``classes`` and the folder's ``stamp``."""
    if not path.is_file():
        return False
    if stamp is not None and read_stamp(path) != stamp:
        return False
    try:
        got, cams = load_maps(path)
    except (ValueError, OSError):
        return False
    if classes is not None and got.tolist() != list(classes):
        return False
    return tuple(cams.shape[1:]) == tuple(size)


def maps_meta(cfg: Config, explainer: Any, trained: TrainedModel | None = None, inputs: dict | None = None) -> dict:
    """What made the map files of a directory (``maps_meta.json``): method, settings, weights, inputs."""
    fixed = getattr(explainer, "input_size", None)
    meta = dict(
        method=cfg.cam_method,
        network=cfg.network if trained is None else trained.spec.network,
        weights=str(cfg.weights),
        scales=None if fixed else [float(s) for s in cfg.cam_scales],
        input_size=list(fixed) if fixed else None,
        flip=bool(cfg.cam_flip),
        classes=cfg.cam_classes,
        dtype=cfg.cam_dtype,
        normalization="minmax (spec stage 2), clamped to [0, 1]",
    )
    if fixed:
        meta["vit_map_protocol"] = cfg.get("vit_map_protocol", "toolkit")
        if original_vit_protocol(cfg, explainer):
            meta["normalization"] = "original ViT protocol: minmax at the input size (no epsilon), then bilinear"
    meta["recipe"] = recipe_of(cfg)
    if cfg.get("cam_store_raw", False):
        meta["raw"] = "mean over passes of the signed map, area-rescaled to image pixels, float32 (key 'raw')"
    method_meta = getattr(explainer, "meta", None)
    if callable(method_meta):
        meta["method_params"] = method_meta()
    if cfg.cam_classes == "pred":
        meta.update(pred_threshold=float(cfg.pred_threshold), pred_input=cfg.loss_input)
    if trained is not None:
        meta.update(weights_file=str(trained.path), weights_sha256=trained.sha256, arch=trained.spec.to_dict(),
                    arch_recorded=trained.recorded)
    if inputs:
        meta["inputs"] = inputs
    meta["versions"] = library_versions()
    return meta


def check_meta(out_dir: Path, meta: dict, overwrite: bool) -> None:
    """Refuse to mix map files of different settings or weights in one directory (unless ``overwrite``)."""
    path = out_dir / META_FILE
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise StaleError(f"{path}: unreadable ({exc}); delete it or pass --options overwrite=True") from exc
    diff = {k: (old.get(k), v) for k, v in meta.items() if k not in UNSTAMPED and old.get(k) != v}
    if diff:
        what = "; ".join(_describe_change(k, a, b) for k, (a, b) in diff.items())
        raise StaleError(
            f"{out_dir}: holds maps made with other settings or weights ({what}). Pass --options overwrite=True "
            "to redo them, or use another session_name / weights."
        )


def _describe_change(key: str, old: Any, new: Any) -> str:
    if key == "weights_sha256":
        return f"weights sha256 {short_hash(old)} there, {short_hash(new)} now (the checkpoint changed)"
    if key in ("arch", "inputs", "method_params"):
        return f"{key} differs"
    return f"{key}: {old!r} there, {new!r} now"


# ------------------------------------------------------------ model
def original_vit_protocol(cfg: Config, explainer: Any) -> bool:
    """True when the explainer takes a fixed input (ViTs) and the config asks for the original protocol."""
    return bool(getattr(explainer, "input_size", None)) and cfg.get("vit_map_protocol", "toolkit") == "original"


def map_stage_problems(cfg: Config) -> list[str]:
    """Everything wrong with the config for the map stage, before any work."""
    out = config_problems(cfg) + session_problems(cfg) + network_problems(cfg)
    if isinstance(cfg.get("cam_method"), str) and cfg.cam_method not in EXPLAINERS:
        out.append(f"cam_method={cfg.cam_method!r}: not a registered method (known: {', '.join(EXPLAINERS.names())})")
    return out


def size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of equal image size (list order kept within a size)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        by_size.setdefault(tuple(s), []).append(i)
    batches = []
    for idx in by_size.values():
        batches += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    return sorted(batches, key=lambda b: b[0])


# ------------------------------------------------------------ the stage
def planned_batches(cfg: Config, names: Sequence[str], labels: np.ndarray, out_dir: Path, rank: int = 0,
                    world: int = 1, sizes: Sequence[tuple[int, int]] | None = None,
                    stamp: str | None = None) -> list[list[int]]:
    """This rank's batches (indices into ``names``), less the images whose file is complete.

    The whole list is cut into batches of equal image size first and rank r
    takes batches ``r::world``, so every image meets the same batch neighbours
    as in one process: the files do not depend on the number of processes,
    bit for bit (batch-size dependent kernels make batched and unbatched
    maps agree only to float32 rounding).
    """
    if sizes is None:
        sizes = [image_size(image_path(cfg.voc12_root, n, cfg.img_dir)) for n in names]
    batches = size_batches(sizes, int(cfg.cam_batch_size))[rank::world]
    if cfg.overwrite:
        return batches
    # with cam_classes=pred the classes are known only after a forward pass: check readability and size
    known = None if cfg.cam_classes == "pred" else select_classes(cfg.cam_classes, labels)
    todo = [[i for i in b if not map_file_ok(out_dir / f"{names[i]}.npz", None if known is None else known[i],
                                             sizes[i], stamp)] for b in batches]
    return [b for b in todo if b]


def write_maps(cfg: Config, model: nn.Module, explainer: Any, names: Sequence[str], labels: np.ndarray,
               batches: Sequence[Sequence[int]], out_dir: Path, device: torch.device, progress: bool = True,
               spec: ModelSpec | None = None, stamp: str | None = None) -> None:
    """Explain the images of ``batches`` (indices into ``names``, equal size within a batch) and
    write one map file each; the writes overlap the compute."""
    dataset = VOCImages(names, cfg.voc12_root, dict(zip(names, labels)), img_dir=cfg.img_dir)
    loader = DataLoader(dataset, batch_sampler=[list(b) for b in batches], collate_fn=collate_images,
                        num_workers=resolve_num_workers(cfg.num_workers))
    channels_last = use_channels_last(cfg, model)
    store_raw = bool(cfg.get("cam_store_raw", False))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    pending: list[Future] = []
    with tqdm(total=sum(map(len, batches)), unit="img", desc=f"maps {cfg.cam_method}", disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=2) as writer:
        for batch in loader:
            probs = predict_probs(model, batch["image"], cfg, device, spec) if cfg.cam_classes == "pred" else None
            classes = select_classes(cfg.cam_classes, batch["label"].numpy(), probs, float(cfg.pred_threshold))
            if original_vit_protocol(cfg, explainer):
                maps, raws = explain_batch_original_vit(explainer, batch["image"], classes, device, *_norm(spec))
            else:
                x = to_device_batch(batch["image"], device, channels_last, *_norm(spec))
                maps, raws = explain_batch_raw(explainer, x, classes, cfg.cam_scales, bool(cfg.cam_flip))
            for name, cls, m, r in zip(batch["name"], classes, maps, raws):
                cams = m.to(getattr(torch, cfg.cam_dtype)).cpu().numpy()
                extra = dict(raw=r.cpu().numpy().astype(np.float32)) if store_raw else {}
                pending.append(writer.submit(save_maps, out_dir / f"{name}.npz", np.asarray(cls), cams, cfg.cam_dtype,
                                             stamp, **extra))
            bar.update(len(batch["name"]))
            if len(pending) > _MAX_PENDING_WRITES:
                pending = _wait(pending)
        _wait(pending)


def _norm(spec: ModelSpec | None) -> tuple[Sequence[float], Sequence[float]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if spec is None else (spec.mean, spec.std)


def generate_maps(cfg: Config, model: nn.Module | None = None) -> Path:
    """Write ``test/cam_<list stem>_<weights stem>/<name>.npz`` for ``cfg.infer_list``; return the folder.

    Checks the config and every listed image before any work; ``model`` (optional)
    replaces loading ``model/<weights>`` (tests, benchmarks; its weights are then
    recorded as unknown).
    """
    raise_problems(map_stage_problems(cfg))
    rank, world, local_rank = env_world()
    if is_dist():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    paths = session_paths(cfg)
    list_file = data_path(cfg, cfg.infer_list)
    names, sizes = check_inputs(cfg.voc12_root, list_file, cfg.cls_label, cfg.img_dir,
                                allow_pickle=cfg.allow_pickle, progress=rank == 0)
    labels = label_matrix(names, load_cls_labels(cfg.cls_label, allow_pickle=cfg.allow_pickle), source=cfg.cls_label)
    out_dir = paths.cam_dir(cfg.infer_list, cfg.weights, cfg.get("map_tag", ""))
    device = select_device(cfg.get("device", "auto"), local_rank)
    trained = load_session_model(cfg, device) if model is None else None
    model = trained.model if trained is not None else model.to(device).eval()
    explainer = EXPLAINERS.get(cfg.cam_method)(model, cfg)
    if original_vit_protocol(cfg, explainer) and cfg.cam_flip:
        raise ConfigError("vit_map_protocol='original' is one pass without flip: set cam_flip=False "
                          "(or vit_map_protocol=toolkit)")
    inputs = dict(list=file_record(list_file), labels=file_record(cfg.cls_label))
    meta = maps_meta(cfg, explainer, trained, inputs)
    with StageLock(paths, f"maps_{out_dir.name}", enabled=rank == 0):
        check_meta(out_dir, meta, bool(cfg.overwrite))
        if rank == 0:
            check_writable(out_dir)
            write_json_atomic(out_dir / META_FILE, meta)
        stamp = meta_stamp(meta)
        batches = planned_batches(cfg, names, labels, out_dir, rank, world, sizes, stamp)
        todo = sum(map(len, batches))
        if rank == 0 and world == 1 and todo < len(names):
            print(f"[maps] {len(names) - todo} of {len(names)} map files already complete in {out_dir}; skipped")
        write_maps(cfg, model, explainer, names, labels, batches, out_dir, device, progress=rank == 0 and todo > 0,
                   spec=None if trained is None else trained.spec, stamp=stamp)
        barrier()  # a no-op unless a process group is up
    return out_dir


def _wait(futures: list[Future]) -> list[Future]:
    """Wait for the writes (re-raising their errors); return an empty list."""
    for f in futures:
        f.result()
    return []


def predict_probs(model: nn.Module, images: Sequence[np.ndarray], cfg: Config, device: torch.device,
                  spec: ModelSpec | None = None) -> np.ndarray:
    """Class probabilities [B, 20] on the per-sample stage's input (``cfg.loss_input``): sigmoid, or as a
    probe was trained (softmax for a CE probe; :func:`dywsss.metrics.probe_losses.output_probs`)."""
    tf = prediction_transform(cfg.loss_input, int(cfg.crop_size), *_norm(spec))
    with torch.no_grad():
        logits = model(torch.stack([tf(im) for im in images]).to(device))
    return output_probs(logits.float(), spec.head if spec is not None else None).cpu().numpy()


# ------------------------------------------------------------ baseline
def centred_blob_maps(height: int, width: int, num_maps: int, sigma: float = 0.25) -> np.ndarray:
    """A centred Gaussian blob per class, [num_maps, H, W] in [0, 1] (peak 1 at the centre).

    The reference point for map quality: maps that know nothing about the
    image except that objects tend to sit in the middle. ``sigma`` is a
    fraction of each side.
    """
    y = (np.arange(height) + 0.5 - height / 2) / (sigma * height)
    x = (np.arange(width) + 0.5 - width / 2) / (sigma * width)
    blob = np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)
    return np.broadcast_to(blob, (num_maps, height, width)).copy()


def generate_blob_maps(cfg: Config, sigma: float = 0.25) -> Path:
    """Write centred-blob maps for the ground-truth classes of ``cfg.infer_list`` to ``test/cam_<list>_blob/``."""
    raise_problems(config_problems(cfg) + session_problems(cfg))
    list_file = data_path(cfg, cfg.infer_list)
    names, sizes = check_inputs(cfg.voc12_root, list_file, cfg.cls_label, cfg.img_dir, allow_pickle=cfg.allow_pickle)
    labels = label_matrix(names, load_cls_labels(cfg.cls_label, allow_pickle=cfg.allow_pickle), source=cfg.cls_label)
    out_dir = session_paths(cfg).cam_dir(cfg.infer_list, "blob")
    meta = dict(method="centred_blob", sigma=sigma, classes="gt", dtype=cfg.cam_dtype,
                inputs=dict(list=file_record(list_file), labels=file_record(cfg.cls_label)))
    stamp = meta_stamp(meta)
    write_json_atomic(out_dir / META_FILE, meta)
    for name, cls, (h, w) in zip(names, select_classes("gt", labels), sizes):
        save_maps(out_dir / f"{name}.npz", np.asarray(cls), centred_blob_maps(h, w, len(cls), sigma), cfg.cam_dtype, stamp)
    return out_dir
