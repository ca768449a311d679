"""A study's cells: one subprocess each, with its outputs, log, dependencies and preparation.

Cell kinds (registered in :data:`CELL_BUILDERS`, expanded in this order):

* ``data``: the demo data (``scripts/make_demo_voc.py``), when the study has ``data.demo_args``;
* ``ood_data``: one corrupted tree per (corruption, severity) (``scripts/make_ood_voc.py``) and the
  demo generator shift (``scripts/make_demo_voc.py --hue-shift/--background``);
* ``probe``: a probe model's head on its frozen backbone (``scripts/train_probe.py``);
* ``session``: one per (model, method), all in the model's one session ``runs/<model>/``
  (``scripts/run_stages.py``): the model's first method is the session's own and trains; every
  other method ``m`` runs the map-to-report stages with ``cam_method=.. map_tag=m`` (maps in
  ``test/cam_<list>_<weights>_m/``, metrics in ``eval/<list>_<weights>_m/``, ``report_m.html``)
  once the first is done. An existing run joins with its ``model/`` linked in and its
  ``config.py`` derived (nothing retrains);
* ``ood_eval``: per model, the evaluation stages on every OOD tree (``scripts/run_eval_stages.py``)
  with the model's own method.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..config import SessionPaths
from ..io import write_text_atomic
from ..registry import Registry
from ..stages import REPO
from .spec import ModelSpec, StudySpec, data_out, ood_trees, parse_options

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``command`` (run in ``cwd``, output to ``log``) must leave ``outputs``.

    ``links``: (link, target) symlinks made before it runs; ``derive``: (source config,
    destination, overrides) configs written before it runs. ``meta``: what it stands
    for (kind, model, method, session), for the collection step and the status file.
    """

    name: str
    command: tuple[str, ...]
    outputs: tuple[Path, ...]
    log: Path
    depends: tuple[str, ...] = ()
    links: tuple[tuple[Path, Path], ...] = ()
    derive: tuple[tuple[Path, Path, tuple[str, ...]], ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def missing_outputs(self) -> list[Path]:
        return [p for p in self.outputs if not Path(p).exists()]


@dataclass(frozen=True)
class CellResult:
    """How a cell ended: exit status, wall seconds, CPU seconds (user + system of the cell's process
    tree, None where the platform cannot tell) and, when it failed, why."""

    name: str
    rc: int
    seconds: float
    error: str = ""
    cpu_seconds: float | None = None


def _script(rel: str) -> str:
    return str(REPO / rel)


# ------------------------------------------------------------- preparation
def derive_config(source: Path, dest: Path, overrides: Sequence[str]) -> bool:
    """Write ``source`` config with ``key=value`` ``overrides`` to ``dest`` (only when it changes)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(source))
    if overrides:
        cfg.merge_from_dict(parse_options(overrides))
    text = cfg.pretty_text
    if dest.is_file() and dest.read_text() == text:
        return False
    write_text_atomic(dest, text)
    return True


def make_link(link: Path, target: Path) -> None:
    """A relative symlink ``link -> target``; an existing link is replaced, anything else is an error."""
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(Path(target).resolve(), link.parent.resolve())
    if link.is_symlink():
        if os.readlink(link) == rel:
            return
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link}: exists and is not a link; the study wants it to point to {target}")
    link.symlink_to(rel, target_is_directory=True)


def run_cell(cell: Cell, env: Mapping[str, str] | None = None) -> CellResult:
    """Prepare and run one cell, its stdout and stderr going to ``cell.log``. Picklable (submitit)."""
    t0 = time.perf_counter()
    cell.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        for link, target in cell.links:
            make_link(Path(link), Path(target))
        for source, dest, overrides in cell.derive:
            if not Path(source).is_file():
                raise FileNotFoundError(f"{source}: config to derive {dest} from is missing")
            derive_config(Path(source), Path(dest), overrides)
    except (OSError, ValueError) as exc:
        with open(cell.log, "a") as fh:
            fh.write(f"[study] preparing cell {cell.name} failed: {exc}\n")
        return CellResult(cell.name, 1, time.perf_counter() - t0, f"preparation failed: {exc}")
    with open(cell.log, "a") as fh:
        fh.write(f"[study] {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cell.command)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(list(cell.command), stdout=fh, stderr=subprocess.STDOUT, cwd=cell.cwd,
                                    env=None if env is None else {**os.environ, **env})
        except OSError as exc:
            fh.write(f"[study] cannot start: {exc}\n")
            return CellResult(cell.name, 127, time.perf_counter() - t0, f"cannot start: {exc}")
        rc, cpu = _wait(proc)
    error = ""
    if rc == 0 and cell.missing_outputs():
        missing = cell.missing_outputs()
        error = f"exit status 0 but {len(missing)} output(s) missing, e.g. {missing[0]}"
        rc = 1
    return CellResult(cell.name, rc, time.perf_counter() - t0, error, cpu)


def _wait(proc: subprocess.Popen) -> tuple[int, float | None]:
    """Exit status and CPU seconds (user + system, the process and the children it waited for)."""
    if not hasattr(os, "wait4"):  # not POSIX: no per-process resource usage
        return proc.wait(), None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------- expansion
CELL_BUILDERS: Registry[Callable[[StudySpec], list[Cell]]] = Registry("study cell kind")
#: expansion order of the built-in kinds (a dependency's kind comes first); others follow by name
KIND_ORDER = ("data", "ood_data", "probe", "session", "ood_eval")


def _log(spec: StudySpec, name: str) -> Path:
    return spec.root / "logs" / f"{name}.log"


@CELL_BUILDERS.register("data")
def data_cells(spec: StudySpec) -> list[Cell]:
    if not spec.data_args:
        return []
    out = data_out(spec.data_args)
    return [Cell("data", (spec.python, _script("scripts/make_demo_voc.py"), *shlex.split(spec.data_args)),
                 (out / "train_aug.txt", out / "val.txt", out / "cls_labels.json"), _log(spec, "data"),
                 meta=dict(kind="data"))]


@CELL_BUILDERS.register("ood_data")
def ood_data_cells(spec: StudySpec) -> list[Cell]:
    deps = ("data",) if spec.data_args else ()
    cells = []
    src = spec.ood.source
    for c in spec.ood.corruptions:
        for s in spec.ood.severities:
            name = f"ood_data_{c}_s{s}"
            cmd = (spec.python, _script("scripts/make_ood_voc.py"), "--list", src["list"], "--voc12-root",
                   src["voc12_root"], "--cls-label", src["cls_label"], "--out", str(spec.ood_dir), "--corruption", c,
                   "--severity", str(s), "--seed", str(spec.ood.seed), "--jpeg-quality", str(spec.ood.jpeg_quality))
            cells.append(Cell(name, cmd, (spec.ood_dir / f"{c}_s{s}" / "manifest.json",), _log(spec, name), deps,
                              meta=dict(kind="ood_data", tree=str(spec.ood_dir / f"{c}_s{s}"))))
    if spec.ood.shift_args is not None:
        out = data_out(spec.ood.shift_args)
        cells.append(Cell("ood_data_shift", (spec.python, _script("scripts/make_demo_voc.py"),
                                             *shlex.split(spec.ood.shift_args)),
                          (out / "manifest.json",), _log(spec, "ood_data_shift"), deps,
                          meta=dict(kind="ood_data", tree=str(out))))
    return cells


def session_outputs(spec: StudySpec, model: ModelSpec, method: str) -> tuple[Path, ...]:
    """The files a finished method cell leaves: its report and the summaries the study reads."""
    paths = SessionPaths(spec.session_dir(model))
    tag = spec.map_tag(model, method)
    ev = paths.eval_dir(model.eval_list, model.weights, tag)
    report = paths.root / (f"report_{tag}.html" if tag else "report.html")
    return (report, ev / "per_sample.csv", ev / "ji_curve.json", ev / "ece.json", ev / "vice.json")


def _study_options(spec: StudySpec, model: ModelSpec, method: str) -> list[str]:
    """What the runner sets: where the session lives, the method, its map tag, the figures' label."""
    tag = spec.map_tag(model, method)
    return [f"work_dir_root={spec.runs_dir}", f"cam_method={spec.cam_method(model, method)}",
            *([f"map_tag={tag}"] if tag else []), f"fignote={model.name}/{method}"]


def _list_args(spec: StudySpec, model: ModelSpec) -> list[str]:
    return ["--list", model.eval_list, "--weights", model.weights]


def _probe_cell_name(model: ModelSpec) -> str:
    return f"{model.name}_probe"


@CELL_BUILDERS.register("probe")
def probe_cells(spec: StudySpec) -> list[Cell]:
    """A probe model (``probe`` set) trains its head on the frozen backbone first (``scripts/train_probe.py``,
    checkpoints in ``runs/<model>/model/``); its method cells then leave the training stage out.
    ``resume=True``: a rerun of a finished probe continues (and so keeps) its checkpoints."""
    cells = []
    data_dep = ("data",) if spec.data_args else ()
    for model in spec.models:
        if not (model.probe and model.trains):
            continue
        model_dir = spec.session_dir(model) / "model"
        cmd = (spec.python, _script("scripts/train_probe.py"), str(model.config), "--options", *model.options,
               *_study_options(spec, model, model.own_method), f"session_name={model.name}", "resume=True")
        cells.append(Cell(_probe_cell_name(model), cmd, (model_dir / "best.pth", model_dir / "last.pth"),
                          _log(spec, _probe_cell_name(model)), data_dep,
                          meta=dict(kind="probe", model=model.name, session=str(spec.session_dir(model)),
                                    probe=model.probe)))
    return cells


@CELL_BUILDERS.register("session")
def session_cells(spec: StudySpec) -> list[Cell]:
    """One cell per (model, method), all in the model's session ``runs/<model>/``.

    The own method's cell trains (unless the model is a probe, trained by its probe cell, or an
    existing run, whose ``model/`` is linked in with its ``config.py`` derived) and evaluates; the
    other methods' cells wait for it and run the map-to-report stages with ``map_tag=<method>``,
    leaving the training stage out.
    """
    cells = []
    data_dep = ("data",) if spec.data_args else ()
    skip = list(spec.skip_stages)
    for model in spec.models:
        session = spec.session_dir(model)
        own = spec.cell_name(model, model.own_method)
        for method in model.methods:
            name = spec.cell_name(model, method)
            tagged = method != model.own_method
            trains_here = model.trains and not model.probe and not tagged
            skips = skip + ([] if trains_here else ["train"])
            cmd = (spec.python, _script("scripts/run_stages.py"), str(model.config), "--session", model.name,
                   *_list_args(spec, model), *(("--skip", *skips) if skips else ()),
                   "--options", *model.options, *_study_options(spec, model, method))
            meta = dict(kind="session", model=model.name, method=method, session=str(session),
                        cam_method=spec.cam_method(model, method), map_tag=spec.map_tag(model, method),
                        trains="yes" if trains_here else "no")
            links: tuple = ()
            derive: tuple = ()
            if tagged:
                deps: tuple[str, ...] = (own,)
            elif model.probe and model.trains:
                deps = (*data_dep, _probe_cell_name(model))
            elif not model.trains:  # an existing run: its model/ linked in, its config.py with the study's settings
                deps = data_dep
                links = ((session / "model", model.session / "model"),)
                derive = ((model.session / "config.py", session / "config.py",
                           tuple([f"session_name={model.name}", *_study_options(spec, model, method)])),)
                meta["model_from"] = str(model.session)
            else:
                deps = data_dep
            cells.append(Cell(name, cmd, session_outputs(spec, model, method), _log(spec, name), deps, links, derive,
                              meta))
    return cells


@CELL_BUILDERS.register("ood_eval")
def ood_eval_cells(spec: StudySpec) -> list[Cell]:
    """Per model, the evaluation stages on every OOD tree with the model's own method, in its session."""
    trees = ood_trees(spec)
    if not trees:
        return []
    tree_deps = tuple(c.name for c in ood_data_cells(spec))
    cells = []
    for model in spec.models:
        method = model.own_method
        session = spec.session_dir(model)
        name = f"{model.name}_ood"
        outputs = tuple(SessionPaths(session).eval_dir(f"{stem}.txt", model.weights) / "ece.json"
                        for _, stem in trees)
        cmd = (spec.python, _script("scripts/run_eval_stages.py"), str(model.config), "--session", model.name,
               "--weights", model.weights, "--options", *model.options, *_study_options(spec, model, method),
               "--ood", *(str(t) for t, _ in trees))
        cells.append(Cell(name, cmd, outputs, _log(spec, name), (spec.cell_name(model, method), *tree_deps),
                          meta=dict(kind="ood_eval", model=model.name, method=method, session=str(session),
                                    trees=" ".join(str(t) for t, _ in trees))))
    return cells


def expand(spec: StudySpec, kinds: Sequence[str] | None = None) -> list[Cell]:
    """All cells of a study, in dependency order (every dependency before its dependants)."""
    cells: list[Cell] = []
    order = list(KIND_ORDER) + [k for k in CELL_BUILDERS.names() if k not in KIND_ORDER]
    for kind in kinds or order:
        cells += CELL_BUILDERS.get(kind)(spec)
    names = [c.name for c in cells]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"study cells repeat: {', '.join(dup)}")
    return cells
