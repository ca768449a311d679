#!/usr/bin/env python
"""Write centred-blob baseline maps (one centred Gaussian per ground-truth class) for the infer list.

    python scripts/make_blob_maps.py config/demo.py --options session_name=S infer_list=val.txt

They go to work_dirs/S/test/cam_<list>_blob/; score them with evaluation.py like any maps.
Maps that know nothing about the image but "objects sit in the middle" are the floor a
model's maps must beat.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.config import config_from_argv  # noqa: E402
from dywsss.engine.maps import generate_blob_maps  # noqa: E402


def main() -> None:
    out = generate_blob_maps(config_from_argv(__doc__.splitlines()[0]))
    print(f"[blob] baseline maps in {out}")


if __name__ == "__main__":
    run_main(main)
