#!/usr/bin/env python
"""Convert a folder of .npz map files into the original's pickled ``<name>.npy`` dicts.

    python scripts/maps_to_npy.py work_dirs/S/test/cam_val_best work_dirs/S/test/cam_val_best_npy

Only for tools that need the old format: reading those files back requires
allow_pickle=True, which can run code stored in a file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from dywsss.cli import run_main
from dywsss.mapfile import load_maps, save_legacy_npy


def convert(src: Path, dst: Path) -> int:
    """Write ``dst/<name>.npy`` ({class id: float32 HxW}) for every ``src/<name>.npz``; return the count."""
    files = sorted(src.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{src}: no .npz map files")
    for path in tqdm(files, unit="file", desc="npz -> npy"):
        classes, cams = load_maps(path)
        save_legacy_npy(dst / f"{path.stem}.npy", classes, cams)
    return len(files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="folder of <name>.npz map files")
    p.add_argument("dst", type=Path, help="output folder for <name>.npy")
    args = p.parse_args()
    n = convert(args.src, args.dst)
    print(f"{args.dst} ({n} files)")


if __name__ == "__main__":
    run_main(main)
