"""mmengine configs with ``--options a.b=c`` overrides, checked against the file's keys."""
from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from mmengine.config import Config, DictAction

from .errors import ConfigError, MissingInputError

# Dicts whose members are keyword arguments of a class chosen by ``type``: an
# override may add a member (e.g. ``optimizer.betas`` for AdamW); the builder
# then checks it against the class signature.
OPEN_DICTS = ("optimizer", "lr_scheduler", "model_kwargs")


class ConfigKeyError(ConfigError, KeyError):
    """An override names a key that the config does not have."""


def _dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, name + "."))
    return keys


def check_override_keys(cfg: Config, options: Mapping[str, Any], source: str = "") -> None:
    """Raise :class:`ConfigKeyError` for an override key the config lacks, naming close keys."""
    known = _dotted_keys(cfg.to_dict())
    for key in options:
        if key in known:
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else None
        if parent in OPEN_DICTS and parent in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        where = f" in {source}" if source else ""
        raise ConfigKeyError(f"--options {key}=...: no such key{where}.{hint}")


def load_config(path: str | os.PathLike, options: Mapping[str, Any] | None = None, validate: bool = True) -> Config:
    """Read a config file and apply ``options`` (from ``--options``) after checking their keys.

    With ``validate`` every key's type and range is checked (:mod:`dywsss.schema`):
    all bad keys are reported at once in one :class:`ConfigError`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: config file not found")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises SyntaxError, KeyError, ImportError, ...
        raise ConfigError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from exc
    if options:
        check_override_keys(cfg, options, source=str(path))
        cfg.merge_from_dict(dict(options))
    if validate:
        from .schema import validate_config

        validate_config(cfg)
    return cfg


def prefixed_settings(cfg: Mapping[str, Any], prefix: str, defaults: Any, overrides: Mapping[str, Any]) -> dict:
    """Field values of the dataclass instance ``defaults`` read from the config keys ``<prefix><field>``:
    a missing or ``None`` key keeps the default; a non-``None`` entry of ``overrides`` (command-line
    flags) wins over both."""
    values = {}
    for field in defaults.__dataclass_fields__:
        value = cfg.get(f"{prefix}{field}")
        values[field] = getattr(defaults, field) if value is None else value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", help="config file, e.g. config/resnet50.py")
    parser.add_argument(
        "--options", "--cfg-options", nargs="+", action=DictAction, default=None,
        help="override config keys: key=value a.b=value (keys must exist)",
    )
    add_debug_arg(parser)
    return parser


def add_debug_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a user error too (also: DYWSSS_DEBUG=1)")
    return parser


def config_from_argv(description: str, argv: Iterable[str] | None = None) -> Config:
    """Parse ``CONFIG [--options k=v ...]`` and load the config; a bad key or value raises :class:`ConfigError`."""
    parser = add_config_args(argparse.ArgumentParser(description=description))
    args = parser.parse_args(None if argv is None else list(argv))
    return load_config(args.config, args.options)


def data_path(cfg: Config, value: str) -> Path:
    """Resolve a list path the way the original does: bare names live in ``voc12/``."""
    p = Path(value)
    if p.parent == Path(".") and not p.exists():
        return Path(cfg.get("list_root", "voc12")) / p
    return p


@dataclass(frozen=True)
class SessionPaths:
    """Where one run writes: ``work_dirs/<session_name>/...``."""

    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "log" / "tensorboard"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"

    @property
    def config_file(self) -> Path:
        return self.root / "config.py"

    def weights_file(self, weights: str) -> Path:
        w = Path(weights)
        return w if w.is_absolute() or w.exists() else self.model_dir / w

    def cam_dir(self, list_file: str | os.PathLike, weights: str, tag: str = "") -> Path:
        """``test/cam_<list stem>_<weights stem>[_<tag>]`` (``map_tag`` keeps several methods apart)."""
        return self.test_dir / f"cam_{Path(list_file).stem}_{Path(weights).stem}{_suffix(tag)}"

    def eval_dir(self, list_file: str | os.PathLike, weights: str, tag: str = "") -> Path:
        """``eval/<list stem>_<weights stem>[_<tag>]``."""
        return self.root / "eval" / f"{Path(list_file).stem}_{Path(weights).stem}{_suffix(tag)}"


def _suffix(tag: str) -> str:
    return f"_{tag}" if tag else ""


def session_paths(cfg: Config) -> SessionPaths:
    name = cfg.get("session_name") or ""
    if not name:
        raise ConfigError("session_name is empty: pass --options session_name=NAME")
    return SessionPaths(Path(cfg.get("work_dir_root", "work_dirs")) / name)
