"""Map files: ``<name>.npz`` with ``classes`` int [K] (0-based VOC ids) and ``cams`` [K, H, W] in [0, 1].

Each file made by the map stage also holds ``stamp``: the sha256 of its folder's
``maps_meta.json`` record (method, settings, weights hash) at the time it was
written, so a folder whose files come from different weights or settings (an
interrupted ``overwrite=True``) is detected: :func:`check_stamps`.

The original code stored ``<name>.npy`` pickled dicts {class id: HxW float32};
reading those needs an explicit ``allow_pickle=True`` and warns, because
unpickling can execute code from the file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, StaleError
from .io import load_npz, save_npz_atomic

NUM_CLASSES = 20
STAMP_KEY = "stamp"
META_FILE = "maps_meta.json"
#: Recorded in ``maps_meta.json`` but not part of what a map file depends on: the list and labels decide
#: which files exist and their classes (checked per file), the weights' path may move, versions inform.
UNSTAMPED = ("versions", "inputs", "weights_file", "recipe")


def meta_stamp(meta: dict) -> str:
    """The hash every map file of a folder carries: method, settings, weights sha256, architecture."""
    from .provenance import sha256_json

    return sha256_json({k: v for k, v in meta.items() if k not in UNSTAMPED})


def read_maps_meta(map_dir: str | os.PathLike) -> dict | None:
    """A folder's ``maps_meta.json`` (None when there is none)."""
    from .io import read_json_object

    path = Path(map_dir) / META_FILE
    return read_json_object(path, "a valid maps_meta.json") if path.is_file() else None


def maps_provenance(map_dir: str | os.PathLike, names: list[str] | tuple[str, ...]) -> dict:
    """What a folder of maps came from, after checking every listed file carries its record's stamp.

    ``{"dir", "record", "stamp", "weights_sha256", "method"}``; for folders without a
    record (older versions, other tools) ``record: "none"`` and nothing is checked.
    """
    meta = read_maps_meta(map_dir)
    if meta is None:
        return {"dir": str(map_dir), "record": "none"}
    stamp = meta_stamp(meta)
    if "weights_sha256" in meta or meta.get("method") == "centred_blob":
        check_stamps(map_dir, names, stamp)
    from .provenance import sha256_file, short_hash

    weights = Path(meta.get("weights_file") or "")
    if meta.get("weights_sha256") and weights.is_file() and sha256_file(weights) != meta["weights_sha256"]:
        raise StaleError(f"{map_dir}: maps from weights sha256 {short_hash(meta['weights_sha256'])}, but {weights} is "
                         f"now {short_hash(sha256_file(weights))} (retrained?); rerun the map stage with "
                         "--options overwrite=True")

    return {"dir": str(map_dir), "record": META_FILE, "meta_sha256": sha256_file(Path(map_dir) / META_FILE),
            "stamp": stamp, "weights_sha256": meta.get("weights_sha256"), "method": meta.get("method")}


def save_maps(path: str | os.PathLike, classes: np.ndarray, cams: np.ndarray, dtype: str = "float16",
              stamp: str | None = None, **extra: np.ndarray) -> Path:
    """Write one image's maps atomically; ``cams`` must be [K, H, W] with K == len(classes).

    ``stamp`` (the folder record's hash) and ``extra`` arrays (e.g. ``raw`` signed maps) are stored beside.
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    cams = np.asarray(cams)
    if cams.ndim != 3 or cams.shape[0] != classes.size:
        raise ValueError(f"{path}: cams must be [K, H, W] with K={classes.size}, got {cams.shape}")
    if stamp is not None:
        extra[STAMP_KEY] = np.asarray(stamp)
    return save_npz_atomic(path, classes=classes, cams=cams.astype(dtype), **extra)


def load_raw(path: str | os.PathLike) -> np.ndarray | None:
    """The signed, unnormalised maps (``raw`` [K, H, W] float32, ``cam_store_raw=True``), None when not stored."""
    data = load_npz(path)
    return data["raw"].astype(np.float32) if "raw" in data else None


def read_stamp(path: str | os.PathLike) -> str | None:
    """The ``stamp`` of a map file (only that member is read), None when it has none or is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data[STAMP_KEY]) if STAMP_KEY in data.files else None
    except Exception:  # a truncated or foreign file has no valid stamp
        return None


def check_stamps(map_dir: str | os.PathLike, names: list[str] | tuple[str, ...], stamp: str) -> None:
    """Refuse a folder whose listed map files were not all written under the record ``stamp``."""
    stale = [n for n in names if read_stamp(Path(map_dir) / f"{n}.npz") != stamp]
    if stale:
        raise StaleError(
            f"{map_dir}: {len(stale)} of {len(names)} map files (e.g. {stale[0]}.npz) were not made with the "
            "settings and weights its maps_meta.json records (an interrupted overwrite, or files copied in): "
            "rerun the map stage for this list and weights to finish them"
        )


def load_maps(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(classes int64 [K], cams float32 [K, H, W])`` from an .npz (or opt-in legacy .npy)."""
    path = Path(path)
    if path.suffix == ".npy":
        classes, cams = _load_legacy_npy(path, allow_pickle)
    else:
        data = load_npz(path)
        if "classes" not in data or "cams" not in data:
            raise InputError(f"{path}: map file lacks 'classes' and 'cams' arrays (has {sorted(data)})")
        if not np.issubdtype(data["classes"].dtype, np.integer):
            raise InputError(f"{path}: 'classes' must hold integer class ids, got {data['classes'].dtype} "
                             f"{data['classes'].reshape(-1).tolist()[:5]}")
        classes, cams = data["classes"].astype(np.int64).reshape(-1), data["cams"].astype(np.float32)
    _validate(path, classes, cams)
    return classes, cams


def _load_legacy_npy(path: Path, allow_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    if not allow_pickle:
        raise InputError(
            f"{path}: the original's .npy map files are pickled dicts; loading them can run code "
            "stored in the file. Pass --allow-pickle (allow_pickle=True) if you trust the file."
        )
    warnings.warn(f"{path}: reading a pickled .npy map file (allow_pickle=True)", stacklevel=3)
    obj = np.load(path, allow_pickle=True).item()
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a pickled dict {{class id: HxW map}}, got {type(obj).__name__}")
    if any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) for k in obj):
        raise InputError(f"{path}: class keys must be integers, got {list(obj)[:5]}")
    keys = sorted(int(k) for k in obj)
    if not keys:
        return np.zeros(0, np.int64), np.zeros((0, 1, 1), np.float32)
    cams = np.stack([np.asarray(obj[k], dtype=np.float32) for k in keys])
    return np.asarray(keys, np.int64), cams


def _validate(path: Path, classes: np.ndarray, cams: np.ndarray) -> None:
    if cams.ndim != 3 or cams.shape[0] != classes.size:
        raise InputError(f"{path}: cams must be [K, H, W] with K={classes.size}, got {cams.shape}")
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise InputError(f"{path}: class indices must be in 0..{NUM_CLASSES - 1}, got {classes.tolist()}")
    if len(set(classes.tolist())) != classes.size:
        raise InputError(f"{path}: repeated class indices {classes.tolist()}")
    if cams.size and not np.isfinite(cams).all():
        raise InputError(f"{path}: maps contain NaN or inf")
    # float16 storage rounds; a hair outside [0, 1] from the original's -1e-5 offset is allowed
    if cams.size and (cams.min() < -1e-3 or cams.max() > 1 + 1e-3):
        raise InputError(f"{path}: map values outside [0, 1] (min {cams.min():.4g}, max {cams.max():.4g})")


def save_legacy_npy(path: str | os.PathLike, classes: np.ndarray, cams: np.ndarray) -> Path:
    """Write the original's pickled ``{class id: HxW float32}`` format, for tools that need it."""
    from .io import atomic_path

    obj = {int(c): np.asarray(m, dtype=np.float32) for c, m in zip(classes, cams)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, obj, allow_pickle=True)
    return Path(path)
