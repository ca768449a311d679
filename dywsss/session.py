"""A session (``work_dirs/<session_name>/``) is safe: one run of a stage at a time, no silent overwrite.

* :class:`StageLock`: a lock file per stage and target in ``<session>/locks/``.
  A second concurrent run stops at once with a message naming the holder (pid,
  host, start time). The lock is an OS file lock (``flock``), so it is released
  when its process ends, however it ends: a lock left by a killed run is
  simply taken over (with a note).
* :func:`prepare_training_session`: training into a session that already has
  checkpoints refuses unless ``resume=True`` (continue) or ``overwrite=True``
  (the old run is moved aside to ``<session>/archive/<UTC time>/``, never deleted).
* :func:`save_run_config`: the merged config is written when a stage starts
  its work (after validation), as ``config.py`` and as
  ``log/configs/<stage>_<UTC time>.py`` so every run's config is kept.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import SessionPaths
from .errors import SessionError
from .io import write_text_atomic

LOCK_DIR = "locks"
ARCHIVE_DIR = "archive"
#: What a retrained run moves aside: everything made from the old weights.
RUN_OUTPUTS = ("model", "log", "test", "eval", "config.py", "report.html")


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class StageLock:
    """``with StageLock(paths, "train"):`` -- exclusive, non-blocking, released when the process ends."""

    def __init__(self, paths: SessionPaths, name: str, enabled: bool = True) -> None:
        self.path = paths.root / LOCK_DIR / f"{name}.lock"
        self.name = name
        self.enabled = enabled
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def __enter__(self) -> StageLock:
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        previous = self._holder()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self._holder()
            raise SessionError(
                f"{self.path}: the {self.name} stage of this session is already running (pid {h.get('pid', '?')} on "
                f"{h.get('host', '?')}, started {h.get('start', '?')}: {h.get('command', '?')}); wait for it to "
                "finish or stop that process"
            ) from None
        if previous.get("pid"):
            print(f"[lock] {self.path}: taking over from a run that ended without releasing it "
                  f"(pid {previous.get('pid')} on {previous.get('host')}, started {previous.get('start')})",
                  file=sys.stderr)
        record = dict(pid=os.getpid(), host=socket.gethostname(), start=utc_stamp(), command=" ".join(sys.argv))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # released cleanly: nothing to report to the next holder
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def existing_checkpoints(paths: SessionPaths) -> list[Path]:
    return sorted(paths.model_dir.glob("*.pth")) if paths.model_dir.is_dir() else []


def move_run_aside(paths: SessionPaths) -> Path:
    """Move the session's run outputs (:data:`RUN_OUTPUTS`) to ``archive/<UTC time>/``; return that folder."""
    dest = paths.root / ARCHIVE_DIR / utc_stamp()
    dest.mkdir(parents=True)
    for name in RUN_OUTPUTS:
        src = paths.root / name
        if src.exists():
            shutil.move(str(src), str(dest / name))
    return dest


def prepare_training_session(paths: SessionPaths, resume: Any, overwrite: bool) -> Path | None:
    """Refuse to train over existing checkpoints unless asked; with ``overwrite`` move the old run aside.

    Returns the archive folder when a run was moved aside, else None.
    """
    found = existing_checkpoints(paths)
    resuming = resume not in (None, False, "", "false", "False")
    if resuming and overwrite:
        raise SessionError("resume and overwrite are both set: choose resume=True (continue the run) or "
                           "overwrite=True (move it aside and start afresh)")
    if resuming and resume is True and found and not (paths.model_dir / "last.pth").is_file():
        raise SessionError(f"{paths.model_dir}: resume=True but there is no last.pth beside "
                           f"{', '.join(p.name for p in found[:3])}; pass resume=PATH of the checkpoint to continue "
                           "from, or overwrite=True")
    if not found or resuming:
        return None
    if not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (f" (+{len(found) - 4} more)" if len(found) > 4 else "")
        raise SessionError(
            f"{paths.model_dir}: the session already holds checkpoints ({names}); pass --options resume=True to "
            f"continue that run, or overwrite=True to move it aside to {paths.root / ARCHIVE_DIR}/ and start afresh, "
            "or choose another session_name"
        )
    dest = move_run_aside(paths)
    print(f"[train] overwrite=True: moved the previous run to {dest}", file=sys.stderr)
    return dest


def save_run_config(pretty_text: str, paths: SessionPaths, stage: str) -> Path:
    """Write the merged config as ``config.py`` and keep a copy ``log/configs/<stage>_<UTC time>.py``."""
    write_text_atomic(paths.log_dir / "configs" / f"{stage}_{utc_stamp()}.py", pretty_text)
    return write_text_atomic(paths.config_file, pretty_text)
