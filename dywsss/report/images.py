"""Figures embedded in the self-contained report pages (``data:`` URIs)."""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .summary import PRODUCER, RunNotFinished

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_data_uri(data: bytes | str | os.PathLike | np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI from PNG bytes, a PNG file or a uint8 RGB array."""
    if isinstance(data, np.ndarray):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(data)).save(buf, format="PNG", optimize=False)
        raw = buf.getvalue()
    elif isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    else:
        path = Path(data)
        if not path.is_file():
            raise RunNotFinished(f"{path}: figure not found (written by {PRODUCER.get(path.name, 'a stage')})")
        raw = path.read_bytes()
        if not raw.startswith(PNG_MAGIC):
            raise InputError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
