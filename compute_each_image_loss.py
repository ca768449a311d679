#!/usr/bin/env python
"""Per-sample loss, confidence, predictions and per-image JI (stage 4), as the original script.

    python compute_each_image_loss.py config/resnet50.py --options "network=resnet50" "session_name=S" "weights=best.pth" "eval_list=val.txt"

Needs the session's weights and the map files of the same list and weights (stage 2).
"""
from dywsss.cli import run_main
from dywsss.config import config_from_argv
from dywsss.engine.per_sample import compat_csv_path, compute_per_sample


def main() -> None:
    cfg = config_from_argv(__doc__.splitlines()[0])
    out = compute_per_sample(cfg)
    print(f"[per-sample] {out} (record: {out.with_suffix('.meta.json').name})")
    print(f"[per-sample] {compat_csv_path(cfg)} (the original's file name)")


if __name__ == "__main__":
    run_main(main)
