"""Run a study's cells: in parallel on one machine, or as submitit job arrays; skip finished cells.

A cell is skipped when the status file records it finished with the same
command, all its outputs exist, and none of its dependencies ran in this
invocation (a dependency that ran may have changed its inputs; the cell then
runs, and the stage runner inside it redoes only what is stale). A failing cell
is recorded with its exit status and log, its dependants are marked
``blocked``, and every other cell still runs.

Local: a thread pool of ``jobs`` workers, each running one cell subprocess at a
time; a cell starts as soon as its dependencies are done. ``jobs`` defaults to
the number of GPUs (each worker gets its own ``CUDA_VISIBLE_DEVICES``) or, on
CPU, to ``max(1, cores // threads_per_cell)``; ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` are set to ``threads_per_cell`` (default ``cores // jobs``).

submitit: cells are grouped into dependency levels and each level is one
``executor.map_array`` job array (SLURM where it exists; ``cluster="local"`` or
``"debug"`` run it here, as the tests do). Each job gets the same thread variables
(``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` = ``threads_per_cell``) when
``threads_per_cell`` > 0, else the job's own environment.
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..io import read_json_object, write_json_atomic
from .cells import Cell, CellResult, run_cell

PathLike = str | os.PathLike
FINISHED = ("done", "up_to_date")


@dataclass
class StudyStatus:
    """The study status file (``status.json``): one entry per cell, rewritten after every change."""

    path: Path
    header: dict
    cells: dict[str, dict]
    _lock: threading.Lock

    @classmethod
    def open(cls, path: PathLike, header: Mapping[str, Any]) -> "StudyStatus":
        path = Path(path)
        cells: dict[str, dict] = {}
        if path.is_file():
            try:
                cells = dict(read_json_object(path).get("cells") or {})
            except ValueError:
                cells = {}  # a broken status file only costs reruns
        return cls(path, dict(header), cells, threading.Lock())

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.cells.setdefault(name, {}).update(fields)
            self.save()

    def save(self) -> None:
        write_json_atomic(self.path, dict(self.header, updated=_dt.datetime.now().isoformat(timespec="seconds"),
                                          counts=self.counts(), cells=self.cells))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.cells.values():
            out[entry.get("status", "pending")] = out.get(entry.get("status", "pending"), 0) + 1
        return out


def _is_finished(cell: Cell, entry: Mapping[str, Any] | None) -> bool:
    return bool(entry) and entry.get("status") in FINISHED and entry.get("command") == list(cell.command) \
        and not cell.missing_outputs()


def _check_graph(cells: Sequence[Cell]) -> None:
    names = {c.name for c in cells}
    seen: set[str] = set()
    for c in cells:
        bad = [d for d in c.depends if d not in names]
        if bad:
            raise ValueError(f"cell {c.name}: depends on unknown cell(s) {', '.join(bad)}")
        later = [d for d in c.depends if d not in seen]
        if later:
            raise ValueError(f"cell {c.name}: dependency {later[0]} is listed after it (cells must be in order)")
        seen.add(c.name)


def resolve_jobs(jobs: int, threads_per_cell: int) -> tuple[int, int, list[str]]:
    """(workers, threads per cell, GPU ids per worker) for this machine."""
    cores = os.cpu_count() or 1
    gpus: list[str] = []
    try:
        import torch

        gpus = [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # torch absent or CUDA broken: CPU
        gpus = []
    if jobs <= 0:
        jobs = len(gpus) if gpus else max(1, cores // max(1, threads_per_cell or 1))
    threads = threads_per_cell if threads_per_cell > 0 else max(1, cores // jobs)
    return jobs, threads, gpus


def _env(threads: int, gpu: str | None) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def run_cells(
    cells: Sequence[Cell], status: StudyStatus, jobs: int = 0, threads_per_cell: int = 0,
    executor: Any | None = None, force: bool = False, log: Callable[[str], None] = print,
    runner: Callable[..., CellResult] = run_cell,
) -> dict[str, str]:
    """Run ``cells`` (in dependency order) and return ``{name: final status}``.

    ``executor``: a ``submitit`` executor (job arrays per dependency level); None runs
    them here with a thread pool. Both give every cell ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS`` (submitit: only when ``threads_per_cell`` > 0). ``force``
    reruns finished cells too.
    """
    _check_graph(cells)
    by_name = {c.name: c for c in cells}
    state: dict[str, str] = {}
    ran: set[str] = set()
    for c in cells:
        status.update(c.name, command=list(c.command), log=str(c.log), depends=list(c.depends),
                      outputs=[str(p) for p in c.outputs], meta=dict(c.meta))

    def ready(c: Cell) -> str | None:
        """``run``, ``skip``, ``blocked`` when decidable now, else None (a dependency is pending)."""
        if any(d not in state for d in c.depends):
            return None
        failed = [d for d in c.depends if state[d] in ("failed", "blocked")]
        if failed:
            return "blocked"
        if not force and not any(d in ran for d in c.depends) and _is_finished(c, status.cells.get(c.name)):
            return "skip"
        return "run"

    def record(result: CellResult) -> None:
        ok = result.rc == 0
        state[result.name] = "done" if ok else "failed"
        ran.add(result.name)
        cpu = None if result.cpu_seconds is None else round(result.cpu_seconds, 1)
        status.update(result.name, status=state[result.name], rc=result.rc, seconds=round(result.seconds, 1),
                      cpu_seconds=cpu, error=result.error, finished=_dt.datetime.now().isoformat(timespec="seconds"))
        if ok:
            log(f"[{result.name}] done in {result.seconds:.0f} s" + ("" if cpu is None else f" ({cpu:.0f} CPU s)"))
        else:
            why = f" ({result.error})" if result.error else ""
            log(f"[{result.name}] FAILED, exit status {result.rc}{why}; log: {by_name[result.name].log}")

    def settle() -> list[Cell]:
        """Mark skipped/blocked cells until nothing changes; return the cells to run now."""
        while True:
            changed, runnable = False, []
            for c in cells:
                if c.name in state or c.name in started:
                    continue
                decision = ready(c)
                if decision == "skip":
                    state[c.name] = "up_to_date"
                    status.update(c.name, status="up_to_date")
                    log(f"[{c.name}] up to date, skipped")
                    changed = True
                elif decision == "blocked":
                    state[c.name] = "blocked"
                    bad = [d for d in c.depends if state[d] in ("failed", "blocked")]
                    status.update(c.name, status="blocked", rc=None, error=f"depends on {', '.join(bad)}")
                    log(f"[{c.name}] blocked: depends on {', '.join(bad)}")
                    changed = True
                elif decision == "run":
                    runnable.append(c)
            if not changed:
                return runnable

    started: set[str] = set()
    if executor is None:
        jobs, threads, gpus = resolve_jobs(jobs, threads_per_cell)
        free = list(gpus[:jobs]) if gpus else [None] * jobs
        log(f"[study] {len(cells)} cells, {jobs} at a time, {threads} thread(s) each"
            + (f", GPUs {', '.join(gpus[:jobs])}" if gpus else ""))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            pending: dict[Future, tuple[Cell, str | None]] = {}
            while True:
                for c in settle():
                    if not free:
                        break
                    slot = free.pop()
                    started.add(c.name)
                    status.update(c.name, status="running", started=_dt.datetime.now().isoformat(timespec="seconds"))
                    log(f"[{c.name}] running; log: {c.log}")
                    pending[pool.submit(runner, c, _env(threads, slot))] = (c, slot)
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    c, slot = pending.pop(fut)
                    free.append(slot)
                    try:
                        record(fut.result())
                    except Exception as exc:  # the runner itself broke: report, keep going
                        record(CellResult(c.name, 1, 0.0, f"runner error: {exc}"))
    else:
        env = _env(threads_per_cell, None) if threads_per_cell > 0 else None  # GPUs: the scheduler's
        while True:
            level = settle()
            if not level:
                break
            for c in level:
                started.add(c.name)
                status.update(c.name, status="submitted")
            log(f"[study] submitting {len(level)} cell(s) as one job array: {', '.join(c.name for c in level)}"
                + (f"; {threads_per_cell} thread(s) each" if env else ""))
            jobs_ = executor.map_array(runner, level, [env] * len(level))
            for c, job in zip(level, jobs_):
                try:
                    record(job.result())
                except Exception as exc:  # the job died (timeout, node failure): report, keep going
                    record(CellResult(c.name, 1, 0.0, f"job {getattr(job, 'job_id', '?')} failed: {exc}"))
    for c in cells:  # unreachable cells (should not happen with a checked graph)
        state.setdefault(c.name, "pending")
    return state


def make_submitit_executor(folder: PathLike, parameters: Mapping[str, Any]) -> Any:
    """A ``submitit.AutoExecutor`` (``cluster`` from ``parameters``: None = SLURM when present, else
    local; ``"local"``/``"debug"`` force those) with the remaining ``parameters`` applied."""
    import submitit

    params = dict(parameters)
    cluster = params.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    if params:
        executor.update_parameters(**params)
    return executor
