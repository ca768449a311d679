"""Map files: ``<name>.npz`` with ``classes`` int [K] (0-based VOC ids) and ``cams`` [K, H, W] in [0, 1].

The original code stored ``<name>.npy`` pickled dicts {class id: HxW float32};
reading those needs an explicit ``allow_pickle=True`` and warns, because
unpickling can execute code from the file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .io import load_npz, save_npz_atomic

NUM_CLASSES = 20


def save_maps(path: str | os.PathLike, classes: np.ndarray, cams: np.ndarray, dtype: str = "float16") -> Path:
    """Write one image's maps atomically; ``cams`` must be [K, H, W] with K == len(classes)."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    cams = np.asarray(cams)
    if cams.ndim != 3 or cams.shape[0] != classes.size:
        raise ValueError(f"{path}: cams must be [K, H, W] with K={classes.size}, got {cams.shape}")
    return save_npz_atomic(path, classes=classes, cams=cams.astype(dtype))


def load_maps(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(classes int64 [K], cams float32 [K, H, W])`` from an .npz (or opt-in legacy .npy)."""
    path = Path(path)
    if path.suffix == ".npy":
        classes, cams = _load_legacy_npy(path, allow_pickle)
    else:
        data = load_npz(path)
        if "classes" not in data or "cams" not in data:
            raise ValueError(f"{path}: map file lacks 'classes' and 'cams' arrays (has {sorted(data)})")
        classes, cams = data["classes"].astype(np.int64).reshape(-1), data["cams"].astype(np.float32)
    _validate(path, classes, cams)
    return classes, cams


def _load_legacy_npy(path: Path, allow_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    if not allow_pickle:
        raise ValueError(
            f"{path}: the original's .npy map files are pickled dicts; loading them can run code "
            "stored in the file. Pass --allow-pickle (allow_pickle=True) if you trust the file."
        )
    warnings.warn(f"{path}: reading a pickled .npy map file (allow_pickle=True)", stacklevel=3)
    obj = np.load(path, allow_pickle=True).item()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict {{class id: HxW map}}, got {type(obj).__name__}")
    keys = sorted(int(k) for k in obj)
    if not keys:
        return np.zeros(0, np.int64), np.zeros((0, 1, 1), np.float32)
    cams = np.stack([np.asarray(obj[k], dtype=np.float32) for k in keys])
    return np.asarray(keys, np.int64), cams


def _validate(path: Path, classes: np.ndarray, cams: np.ndarray) -> None:
    if cams.ndim != 3 or cams.shape[0] != classes.size:
        raise ValueError(f"{path}: cams must be [K, H, W] with K={classes.size}, got {cams.shape}")
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: class indices must be in 0..{NUM_CLASSES - 1}, got {classes.tolist()}")
    if len(set(classes.tolist())) != classes.size:
        raise ValueError(f"{path}: repeated class indices {classes.tolist()}")
    if cams.size and not np.isfinite(cams).all():
        raise ValueError(f"{path}: maps contain NaN or inf")
    # float16 storage rounds; a hair outside [0, 1] from the original's -1e-5 offset is allowed
    if cams.size and (cams.min() < -1e-3 or cams.max() > 1 + 1e-3):
        raise ValueError(f"{path}: map values outside [0, 1] (min {cams.min():.4g}, max {cams.max():.4g})")


def save_legacy_npy(path: str | os.PathLike, classes: np.ndarray, cams: np.ndarray) -> Path:
    """Write the original's pickled ``{class id: HxW float32}`` format, for tools that need it."""
    from .io import atomic_path

    obj = {int(c): np.asarray(m, dtype=np.float32) for c, m in zip(classes, cams)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, obj, allow_pickle=True)
    return Path(path)
