#!/usr/bin/env python
"""Train a probe head on a frozen backbone (How to Probe; docs/PROBES.md).

    python scripts/train_probe.py config/probe_demo.py --options probe=mlp2 probe_loss=ce session_name=S

Heads: linear, mlp2, mlp3, bcos_linear, bcos_mlp2, bcos_mlp3; losses: bce, ce; recipes: adam
(default), sgd. The backbone's feature maps are cached once under work_dirs/feature_cache/ and
reused by every probe of the same backbone, list and input size. Writes work_dirs/S/model/
{best,last}.pth, log/metrics.csv and log/probe.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.config import config_from_argv  # noqa: E402


def main() -> int:
    from dywsss.engine.probe_train import train_probe

    best = train_probe(config_from_argv(__doc__.splitlines()[0]))
    print(f"[probe] best checkpoint: {best}")
    return 0


if __name__ == "__main__":
    run_main(main)
