"""Content hashes that tie every output to the exact weights and inputs it came from.

``sha256_file`` hashes a file's bytes (cached per path, size and mtime within a
process, so the several stages of one command hash a checkpoint once);
``sha256_files`` hashes a set of files in a fixed order (a list's images, a
mask folder); ``short_hash`` is the 12-character form shown in reports and tables.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

PathLike = str | os.PathLike
SHORT = 12
_CHUNK = 1 << 20
_cache: dict[tuple[str, int, int], str] = {}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes; errors name the file."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        from .errors import MissingInputError

        raise MissingInputError(f"{path}: not found (needed for its sha256)") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def sha256_files(paths: Iterable[PathLike]) -> str:
    """One hash over several files (names and contents, in the given order)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


def short_hash(digest: str | None) -> str:
    """The first 12 hex digits (``-`` for unknown)."""
    return digest[:SHORT] if digest else "-"


#: Packages whose versions every output records.
RECORDED_PACKAGES: tuple[str, ...] = ("torch", "torchvision", "timm", "numpy", "scipy", "pillow", "grad-cam", "captum",
                                      "zennit", "scikit-image", "scikit-learn", "mmengine-lite")


def library_versions(packages: Iterable[str] = RECORDED_PACKAGES) -> dict[str, str]:
    """Installed version of each distribution; ``not installed`` when absent."""
    from importlib import metadata

    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_record(path: PathLike) -> dict[str, str]:
    """``{"path": ..., "sha256": ...}`` of one input file."""
    return {"path": str(path), "sha256": sha256_file(path)}


def png_metadata(provenance: Mapping[str, Any]) -> dict[str, str]:
    """PNG text chunks (matplotlib ``savefig(metadata=...)``) carrying the provenance as JSON."""
    return {"Software": "dywsss", "Source": json.dumps(dict(provenance), sort_keys=True, default=str)}


def read_png_provenance(path: PathLike) -> dict:
    """The provenance a figure was saved with ({} when it has none)."""
    from PIL import Image

    with Image.open(path) as im:
        text = im.info.get("Source")
    return json.loads(text) if text else {}
