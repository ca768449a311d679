"""The original's pipeline switches: one config, stages chosen by boolean keys."""
from __future__ import annotations

import os
from typing import Iterable

from mmengine.config import Config

from .config import config_from_argv, save_merged_config, session_paths


def run_pipeline(cfg: Config) -> None:
    """Run the stages switched on in ``cfg`` (``train_multi_scale``, ``gen_mask_for_multi_crop``)."""
    paths = session_paths(cfg)
    paths.root.mkdir(parents=True, exist_ok=True)
    ran = False
    if cfg.get("train_multi_scale"):
        from .engine.train import train

        if int(os.environ.get("RANK", "0")) == 0:
            save_merged_config(cfg, paths)
        best = train(cfg)
        print(f"[train] checkpoints in {paths.model_dir} (best: {best})")
        ran = True
    if cfg.get("gen_mask_for_multi_crop"):
        from .engine.maps import generate_maps

        out = generate_maps(cfg)
        print(f"[maps] map files in {out}")
        ran = True
    if not ran:
        raise SystemExit(
            "nothing to do: pass --options train_multi_scale=True (train) "
            "and/or gen_mask_for_multi_crop=True (maps)"
        )


def main(description: str, argv: Iterable[str] | None = None) -> None:
    run_pipeline(config_from_argv(description, argv))
