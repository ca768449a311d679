"""Studies across many models: expand a study config into cells, run them, collect the results.

    from dywsss.study import run_study
    run_study("config/studies/demo_study.py")

See docs/STUDIES.md. Modules: :mod:`.spec` (the study config), :mod:`.cells` (cell kinds,
registered by name), :mod:`.runner` (local pool or submitit job arrays, skip/resume),
:mod:`.evaluation` (evaluation stages on OOD trees), :mod:`.collect` (tables, consensus,
cross-model report), :mod:`.methods` (several attribution methods on one trained session,
``scripts/compare_methods.py``, docs/METHODS.md), :mod:`.probes` (the probe study: a grid of
probes on one frozen backbone, ``scripts/probe_study.py``, docs/PROBES.md).
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Callable

from ..provenance import sha256_file
from .cells import CELL_BUILDERS, Cell, CellResult, expand, run_cell
from .runner import StudyStatus, make_submitit_executor, run_cells
from .spec import StudySpec, load_study

PathLike = str | os.PathLike

__all__ = ["CELL_BUILDERS", "Cell", "CellResult", "StudySpec", "StudyStatus", "expand", "load_study",
           "make_submitit_executor", "run_cell", "run_cells", "run_study"]


def _load() -> list[float] | None:
    """The 1/5/15-minute load averages (the machine may be shared), None where unknown."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_study(path: PathLike, jobs: int | None = None, backend: str | None = None, force: bool = False,
              dry_run: bool = False, collect_only: bool = False, only: list[str] | None = None,
              work_dir: PathLike | None = None, log: Callable[[str], None] = print) -> tuple[dict[str, str], Path | None]:
    """Run a study end to end; returns ``({cell: status}, report path)``.

    ``only``: run just these cells (and nothing that depends on them); ``collect_only``: skip
    running, just collect what is there; ``dry_run``: print the cells and their commands.
    """
    from .collect import collect_study

    spec = load_study(path, work_dir)
    cells = expand(spec)
    if only:
        unknown = sorted(set(only) - {c.name for c in cells})
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"--only: unknown cell(s) {', '.join(unknown)}; cells: {', '.join(c.name for c in cells)}")
        cells = [c for c in cells if c.name in only]
        cells = [Cell(c.name, c.command, c.outputs, c.log, tuple(d for d in c.depends if d in only), c.links,
                      c.derive, c.meta, c.cwd) for c in cells]
    header = dict(study=spec.name, config=str(spec.path), config_sha256=sha256_file(spec.path),
                  backend=backend or spec.execution.backend)
    if dry_run:
        import shlex

        for c in cells:
            log(f"[{c.name}] after {', '.join(c.depends) or '-'}\n  $ {shlex.join(c.command)}")
        return {c.name: "pending" for c in cells}, None
    spec.root.mkdir(parents=True, exist_ok=True)
    status = StudyStatus.open(spec.root / "status.json", header)
    if not only:  # cells no longer in the study are dropped from the record
        status.cells = {k: v for k, v in status.cells.items() if k in {c.name for c in cells}}
    state: dict[str, str] = {}
    if not collect_only:
        executor = None
        if (backend or spec.execution.backend) == "submitit":
            executor = make_submitit_executor(spec.root / "submitit", spec.execution.submitit)
        threads = spec.execution.threads_per_cell
        if executor is not None and threads <= 0:  # a job's threads: its allocation's CPUs, when they are set
            threads = int(spec.execution.submitit.get("cpus_per_task") or 0)
        t0, load0 = time.perf_counter(), _load()
        state = run_cells(cells, status, jobs if jobs is not None else spec.execution.jobs, threads, executor, force,
                          log)
        ran = [status.cells[n] for n, s in state.items() if s in ("done", "failed")]
        status.header["invocation"] = dict(
            finished=_dt.datetime.now().isoformat(timespec="seconds"), wall_seconds=round(time.perf_counter() - t0, 1),
            cells_run=len(ran), cpu_seconds=round(sum(e.get("cpu_seconds") or 0.0 for e in ran), 1),
            cores=os.cpu_count(), load_start=load0, load_end=_load())
        inv = status.header["invocation"]
        log(f"[study] {inv['cells_run']} cell(s) ran in {inv['wall_seconds'] / 60:.1f} min "
            f"({inv['cpu_seconds'] / 60:.1f} CPU min on {inv['cores']} cores; load average {load0} -> {inv['load_end']})")
    status.save()
    report = collect_study(spec, dict(status.header, cells=status.cells), log)
    return state, report
