"""The original's pipeline switches: one config, stages chosen by boolean keys."""
from __future__ import annotations

from typing import Iterable

from mmengine.config import Config

from .cli import run_main
from .config import config_from_argv, session_paths
from .errors import ConfigError
from .schema import raise_problems


def run_pipeline(cfg: Config) -> None:
    """Run the stages switched on in ``cfg`` (``train_multi_scale``, ``gen_mask_for_multi_crop``).

    Training trains the probe ``cfg.probe`` on the frozen backbone
    (:func:`dywsss.engine.probe_train.train_probe`) when ``probe`` is set, else the whole
    network (:func:`dywsss.engine.train.train`). Every switched-on stage's config checks
    run first, so a bad map setting is reported before training starts.
    """
    train_on, maps_on = bool(cfg.get("train_multi_scale")), bool(cfg.get("gen_mask_for_multi_crop"))
    if not (train_on or maps_on):
        raise ConfigError(
            "nothing to do: pass --options train_multi_scale=True (train) "
            "and/or gen_mask_for_multi_crop=True (maps)"
        )
    from .engine.maps import generate_maps, map_stage_problems

    probe = bool(cfg.get("probe"))
    if probe:
        from .engine.probe_train import probe_train_problems as train_problems, train_probe as train
    else:
        from .engine.train import train, train_problems

    raise_problems((train_problems(cfg) if train_on else []) + (map_stage_problems(cfg) if maps_on else []))
    paths = session_paths(cfg)
    if train_on:
        best = train(cfg)
        print(f"[train] {'probe ' + str(cfg.probe) + ' ' if probe else ''}checkpoints in {paths.model_dir} "
              f"(best: {best})")
    if maps_on:
        out = generate_maps(cfg)
        print(f"[maps] map files in {out}")


def main(description: str, argv: Iterable[str] | None = None) -> None:
    run_main(lambda: run_pipeline(config_from_argv(description, argv)))
