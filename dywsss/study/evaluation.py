"""Evaluate a trained run on other data (OOD trees) with the existing stages, without retraining.

:func:`evaluation_stages` takes the stage plan of ``dywsss.stages.study_stages`` for
the run's config pointed at the tree (``voc12_root``, ``gt_dir``, ``cls_label``,
``eval_list`` / ``infer_list``) and keeps the evaluation stages: maps, JI curve,
per-sample CSV, ECE_ML, VICE. They write to the session's
``test/cam_<tree list>_<weights>/`` and ``eval/<tree list>_<weights>/`` (the tree's
list has its own name, so nothing of the clean evaluation is touched) and record
their commands in ``log/stages_<tree list>.json``, so each tree skips and resumes
on its own and the clean run's record is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..data.corruptions import OODTree, read_ood_manifest
from ..stages import Stage, run_stages, study_stages

PathLike = str | os.PathLike
EVAL_STAGES = ("maps", "ji_curve", "per_sample", "ece", "vice")


def evaluation_stages(config: PathLike, session: str, options: Sequence[str], tree: OODTree,
                      weights: str | None = None) -> tuple[list[Stage], Path]:
    """The evaluation stages of ``session`` on ``tree`` and their record file."""
    plan = study_stages(config, session, [*options, *tree.options()], str(tree.list_file), weights)
    stages = [s for s in plan.stages if s.name in EVAL_STAGES]
    return stages, plan.root / "log" / f"stages_{tree.name}.json"


def evaluate_on_trees(config: PathLike, session: str, options: Sequence[str], trees: Sequence[PathLike],
                      weights: str | None = None, force: bool = False, dry_run: bool = False) -> list[str]:
    """Run the evaluation stages on each tree (checked up front); returns ``tree:stage`` of those run."""
    loaded = [read_ood_manifest(t) for t in trees]
    ran = []
    for tree in loaded:
        stages, stamps = evaluation_stages(config, session, options, tree, weights)
        print(f"[eval] {tree.root} (list {tree.list_file.name})")
        ran += [f"{tree.name}:{s}" for s in run_stages(stages, stamps, force=force, dry_run=dry_run)]
    return ran
