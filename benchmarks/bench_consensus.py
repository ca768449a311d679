#!/usr/bin/env python
"""Consensus with committee robustness: one pass over the map files for all committees, against one
pass per committee (each re-reading every member's files), on synthetic map folders.

    python benchmarks/bench_consensus.py [--members 6] [--images 40] [--side 160] [--trials 5]

Prints both times and their ratio (same run, same machine), and checks the scores agree.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.mapfile import save_maps  # noqa: E402
from dywsss.metrics.consensus import Committees, Member, build_consensus, plan_committees  # noqa: E402


def make_folders(root: Path, members: int, images: int, side: int) -> tuple[list[Member], list[str], dict, Path]:
    rng = np.random.default_rng(0)
    names = [f"img_{i:04d}" for i in range(images)]
    labels = {n: sorted(rng.choice(20, size=int(rng.integers(1, 3)), replace=False).tolist()) for n in names}
    gt = root / "gt"
    gt.mkdir()
    for n in names:
        mask = np.zeros((side, side), np.uint8)
        for c in labels[n]:
            y, x = rng.integers(0, side // 2, 2)
            mask[y:y + side // 3, x:x + side // 3] = c + 1
        Image.fromarray(mask, mode="L").save(gt / f"{n}.png")
    out = []
    for j in range(members):
        folder = root / f"m{j}"
        for n in names:
            save_maps(folder / f"{n}.npz", np.array(labels[n]), rng.random((len(labels[n]), side, side)))
        out.append(Member(f"m{j}", folder))
    return out, names, labels, gt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--side", type=int, default=160)
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        members, names, labels, gt = make_folders(Path(tmp), args.members, args.images, args.side)
        plan = plan_committees(args.members, trials=args.trials, seed=0)
        ap_pairs = 0  # sub-committee AP off in both: this measures reading, voting and scoring
        t0 = time.perf_counter()
        one = build_consensus(members, names, labels, gt, committees=plan, ap_pairs=ap_pairs, progress=False)
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        per = []
        for t in range(plan.members.shape[0]):  # baseline: one pass per committee
            single = Committees(plan.members[t:t + 1], plan.kind[t:t + 1], plan.evaluated[t:t + 1])
            per.append(build_consensus(members, names, labels, gt if t == 0 else None, committees=single,
                                       progress=False).cos[:, :, 0])
        t_per = time.perf_counter() - t0
        assert np.allclose(np.stack(per, axis=-1), one.cos)
        print(f"{args.members} members, {args.images} images {args.side}x{args.side}, "
              f"{plan.members.shape[0]} committees")
        print(f"  one pass per committee: {t_per:.2f} s")
        print(f"  one pass for all:       {t_one:.2f} s   ({t_per / t_one:.1f}x faster)")


if __name__ == "__main__":
    main()
