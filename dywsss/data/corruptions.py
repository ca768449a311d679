"""Out-of-distribution evaluation sets: seeded image corruptions in the style of ImageNet-C (beyond-spec §3.4).

Four corruptions of Hendrycks & Dietterich (ICLR 2019), with their five severities
and parameters (pixel values in [0, 1]):

================  ==========================================  =============================
corruption        operation                                    severity 1, 2, 3, 4, 5
================  ==========================================  =============================
gaussian_noise    ``clip(x + N(0, s^2))``, per pixel/channel   s = 0.08, 0.12, 0.18, 0.26, 0.38
gaussian_blur     Gaussian filter (scikit-image), per channel  sigma = 1, 2, 3, 4, 6 pixels
contrast          ``clip((x - mean_c) * f + mean_c)``          f = 0.4, 0.3, 0.2, 0.1, 0.05
jpeg              JPEG re-encoding (Pillow)                    quality = 25, 18, 15, 10, 7
================  ==========================================  =============================

``mean_c`` is the per-channel mean of the image. The parameters are those of
ImageNet-C at 224 px and are used unchanged at every image size (blur sigma in
pixels). Randomness (only the noise uses it) comes from
``numpy.random.default_rng([seed, id hash, corruption hash, severity])``, so an
image's corruption depends on nothing but (seed, image id, corruption, severity):
the same arguments give the same bytes, whatever else is in the list.

:func:`make_ood_voc` writes a new VOC-layout tree from any list: the corrupted
images (JPEG, quality ``jpeg_quality``, 95 by default; the ``jpeg`` corruption
writes its own encoding), the masks, annotations and labels of the listed images
unchanged (copied, or linked with ``link=True``), the list under the name
``<list stem>_<corruption>_s<severity>.txt`` (so its evaluation folders do not collide
with the clean list's in the same session) and ``manifest.json`` (source tree,
list sha256, corruption, severity, parameter, seed). Every stage runs on it with
``voc12_root``, ``gt_dir``, ``cls_label`` and ``eval_list`` pointed at it
(:func:`read_ood_manifest` gives the paths).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import ConfigError, InputError, MissingInputError
from ..io import atomic_path, read_json_object, write_json_atomic, write_text_atomic
from ..provenance import sha256_file
from ..registry import Registry
from .labels import write_cls_labels
from .voc import image_path, load_cls_labels, load_image, read_image_list

PathLike = str | os.PathLike
Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

SEVERITIES = (1, 2, 3, 4, 5)
#: parameter per severity (index severity - 1)
PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "jpeg": (25, 18, 15, 10, 7),
}
CORRUPTIONS: Registry[Corruption] = Registry("corruption")
MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")
MANIFEST = "manifest.json"
DEFAULT_JPEG_QUALITY = 95


def parameter(name: str, severity: int) -> float:
    """The parameter of ``name`` at ``severity`` (1..5); errors name the bad value."""
    if name not in PARAMETERS:
        CORRUPTIONS.get(name)  # raises with the known names
        raise ConfigError(f"corruption {name!r} has no parameter table")
    if severity not in SEVERITIES:
        raise ConfigError(f"severity {severity!r}: choose one of 1..5")
    return PARAMETERS[name][severity - 1]


def _to_unit(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


@CORRUPTIONS.register("gaussian_noise")
def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(image)
    return _to_uint8(np.clip(x + rng.normal(0.0, parameter("gaussian_noise", severity), size=x.shape), 0, 1))


@CORRUPTIONS.register("gaussian_blur")
def gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.filters import gaussian

    return _to_uint8(np.clip(gaussian(_to_unit(image), sigma=parameter("gaussian_blur", severity),
                                      channel_axis=2), 0, 1))


@CORRUPTIONS.register("contrast")
def contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(image)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8(np.clip((x - mean) * parameter("contrast", severity) + mean, 0, 1))


def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


@CORRUPTIONS.register("jpeg")
def jpeg(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    with Image.open(io.BytesIO(_jpeg_bytes(image, int(parameter("jpeg", severity))))) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def corruption_rng(seed: int, image_id: str, corruption: str, severity: int) -> np.random.Generator:
    """The generator of one (seed, image, corruption, severity): independent of every other image."""
    return np.random.default_rng([int(seed), _hash_int(image_id), _hash_int(corruption), int(severity)])


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int, image_id: str) -> np.ndarray:
    """One corrupted uint8 [H, W, 3] image, deterministic in (seed, image_id, corruption, severity)."""
    fn = CORRUPTIONS.get(corruption)
    parameter(corruption, severity)
    return fn(image, severity, corruption_rng(seed, image_id, corruption, severity))


def encode_corrupted(image: np.ndarray, corruption: str, severity: int, seed: int, image_id: str,
                     jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """The JPEG file of a corrupted image; the ``jpeg`` corruption is its own encoding (no re-encoding)."""
    if corruption == "jpeg":
        return _jpeg_bytes(image, int(parameter("jpeg", severity)))
    return _jpeg_bytes(corrupt_image(image, corruption, severity, seed, image_id), jpeg_quality)


# ------------------------------------------------------------------ the tree
@dataclass(frozen=True)
class OODTree:
    """Paths of an evaluation tree (corrupted or shifted) as its manifest records them."""

    root: Path
    list_file: Path
    voc12_root: Path
    gt_dir: Path
    cls_label: Path
    manifest: dict

    @property
    def name(self) -> str:
        """The list stem: names the evaluation's folders (``eval/<name>_<weights>``)."""
        return self.list_file.stem

    def options(self) -> list[str]:
        """``--options`` that point every stage at this tree."""
        lst = str(self.list_file)
        return [f"voc12_root={self.voc12_root}", f"gt_dir={self.gt_dir}", f"cls_label={self.cls_label}",
                f"eval_list={lst}", f"infer_list={lst}"]


def ood_list_name(list_file: PathLike, corruption: str, severity: int) -> str:
    return f"{Path(list_file).stem}_{corruption}_s{severity}.txt"


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link:
        dst.symlink_to(src.resolve())
    else:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def _check_source(list_file: Path, voc12_root: Path, cls_label: Path) -> tuple[list[str], dict[str, list[int]]]:
    if not voc12_root.is_dir():
        raise MissingInputError(f"{voc12_root}: dataset root (VOC2012/) not found")
    names = read_image_list(list_file)
    labels = load_cls_labels(cls_label)
    missing = [n for n in names if n not in labels]
    if missing:
        raise InputError(f"{cls_label}: {len(missing)} listed images of {list_file} have no labels, e.g. {missing[0]}")
    absent = [n for n in names if not image_path(voc12_root, n).is_file()]
    if absent:
        raise MissingInputError(f"{image_path(voc12_root, absent[0])}: image not found "
                                f"({len(absent)} of {len(names)} listed images missing)")
    return names, {n: np.flatnonzero(labels[n]).tolist() for n in names}


def make_ood_voc(
    list_file: PathLike, voc12_root: PathLike, cls_label: PathLike, out: PathLike, corruption: str, severity: int,
    seed: int = 0, jpeg_quality: int = DEFAULT_JPEG_QUALITY, link: bool = False, progress: bool = True,
) -> OODTree:
    """Write the corrupted VOC-layout tree of ``list_file`` under ``out`` (see the module docstring)."""
    CORRUPTIONS.get(corruption)
    value = parameter(corruption, severity)
    if not 1 <= int(jpeg_quality) <= 100:
        raise ConfigError(f"jpeg_quality={jpeg_quality}: must be in 1..100")
    list_file, voc12_root, cls_label, out = Path(list_file), Path(voc12_root), Path(cls_label), Path(out)
    names, labels = _check_source(list_file, voc12_root, cls_label)
    voc = out / "VOC2012"
    for name in tqdm(names, desc=f"{corruption} s{severity}", unit="image", disable=not progress, leave=False):
        image = load_image(image_path(voc12_root, name))
        data = encode_corrupted(image, corruption, severity, seed, name, jpeg_quality)
        with atomic_path(image_path(voc, name)) as tmp:
            tmp.write_bytes(data)
        for sub, suffix in [(d, ".png") for d in MASK_DIRS] + [("Annotations", ".xml")]:
            src = voc12_root / sub / f"{name}{suffix}"
            if src.is_file():
                _place(src, voc / sub / f"{name}{suffix}", link)
    ids = "".join(f"{n}\n" for n in names)
    list_name = ood_list_name(list_file, corruption, severity)
    write_text_atomic(voc / "ImageSets" / "Segmentation" / list_name, ids)
    write_text_atomic(out / list_name, ids)
    write_cls_labels(out / "cls_labels.json", labels)
    gt_sub = next((d for d in MASK_DIRS if (voc12_root / d).is_dir()), MASK_DIRS[0])
    manifest = dict(
        kind="corruption", corruption=corruption, severity=int(severity), parameter=value, seed=int(seed),
        jpeg_quality=int(jpeg_quality), linked=bool(link), n_images=len(names),
        list=list_name, voc12_root="VOC2012", gt_dir=f"VOC2012/{gt_sub}", cls_label="cls_labels.json",
        source=dict(list=str(list_file), list_sha256=sha256_file(list_file), voc12_root=str(voc12_root),
                    cls_label=str(cls_label), cls_label_sha256=sha256_file(cls_label)),
    )
    write_json_atomic(out / MANIFEST, manifest)
    return read_ood_manifest(out)


def read_ood_manifest(root: PathLike) -> OODTree:
    """The tree described by ``root/manifest.json``; paths in it are relative to ``root``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; make the tree with scripts/make_ood_voc.py "
                                "(or scripts/make_demo_voc.py --shift ...)")
    try:
        data = read_json_object(path)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    missing = [k for k in ("list", "voc12_root", "gt_dir", "cls_label") if k not in data]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}")
    return OODTree(root, root / data["list"], root / data["voc12_root"], root / data["gt_dir"],
                   root / data["cls_label"], data)


def manifest_text(tree: OODTree) -> str:
    """One line describing a tree, for logs and reports."""
    m = tree.manifest
    if m.get("kind") == "corruption":
        return f"{m['corruption']} severity {m['severity']} (parameter {m['parameter']}, seed {m['seed']})"
    return json.dumps({k: v for k, v in m.items() if k not in ("source",)}, sort_keys=True)
