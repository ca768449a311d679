"""The probe study ("How to Probe", beyond-spec §1): a grid of probes on one frozen backbone, each explained
by the methods that fit it, with accuracy, calibration, localisation and VICE side by side.

    from dywsss.study.probes import load_probe_study, run_probe_study
    study = load_probe_study("config/probe_demo.py", "probe_study", options=["probe_epochs=10"])
    state, outputs = run_probe_study(study)

Cells (:class:`dywsss.study.cells.Cell`, run by :func:`dywsss.study.runner.run_cells`: in parallel, a
failing cell reported and the others run on, finished cells skipped on a rerun):

* ``data``: the demo set (``scripts/make_demo_voc.py``), when ``demo_args`` is given and the set is not there;
* ``<head>_<loss>``: ``scripts/run_stages.py CONFIG --session <head>_<loss> --options ... probe=<head>
  probe_loss=<loss> cam_method=<first method>``: the training stage trains the probe (the backbone's
  feature cache, ``<study>/feature_cache``, is shared by every probe), then maps, JI curve, per-sample
  loss and map metrics, ECE_ML, VICE and the report of the probe's first method;
* ``<head>_<loss>_<method>``: the same session with ``cam_method=<method> map_tag=<method>`` (after the
  probe's first cell: its training stage is then up to date and skipped);
* ``<evaluation cell>_gridpg``: ``scripts/gridpg.py`` for that evaluation, after it. GridPG is a cell of its
  own because it can fail where the rest succeeds (too few confidently classified classes for a weak
  probe): its failure empties the GridPG column of that row only.

Collected into ``work_dirs/<study>/`` (:func:`collect_probe_study`): ``probe_table.{md,csv,tex}`` (one
row per probe and method), ``bce_vs_ce.{md,csv,tex}`` (BCE minus CE per head and method, with
intervals), ``figures/<metric>.png``, ``summary.md`` (the answer in numbers, failures) and
``probe_study.json`` (everything, with the sha256 of every file each row read).
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, InputError, MissingInputError, StaleError
from ..registry import Registry
from .cells import Cell
from .spec import NAME_RE, data_out, parse_options

PathLike = str | os.PathLike
HEAD_GRID = ("linear", "mlp2", "mlp3", "bcos_mlp2", "bcos_mlp3")
LOSS_GRID = ("bce", "ce")
DEFAULT_METHODS = ("cam", "gradcam", "bcos")
#: Stages left out of every probe session by default (sanity checks cost minutes per probe and method).
DEFAULT_SKIP = ("sanity",)
#: Stages that may be left out: those whose outputs the study does not read, and GridPG (its column is then empty).
OPTIONAL_STAGES = ("sanity", "blob_maps", "blob_curve", "report", "gridpg")
#: Keys the study sets itself for every session.
RESERVED_KEYS = ("session_name", "work_dir_root", "probe", "probe_loss", "cam_method", "map_tag", "fignote")

#: Which probe heads a method explains (a predicate on the head's name); methods not registered here
#: explain every head. CAM (Eq. 5) needs the classifier to act on the features, which only the linear
#: probe does (CAM refuses MLP heads); ``bcos`` is the B-cos heads' own explanation.
METHOD_SCOPE: Registry[Callable[[str], bool]] = Registry("probe-study method scope")
METHOD_SCOPE.register("cam")(lambda head: head == "linear")
METHOD_SCOPE.register("bcos")(lambda head: head.startswith("bcos_"))


def explains(method: str, head: str) -> bool:
    """Whether the probe study runs ``method`` on a probe with head ``head`` (:data:`METHOD_SCOPE`)."""
    return METHOD_SCOPE.get(method)(head) if method in METHOD_SCOPE else True


@dataclass(frozen=True)
class Probe:
    head: str
    loss: str

    @property
    def name(self) -> str:
        return f"{self.head}_{self.loss}"


@dataclass(frozen=True)
class ProbeStudy:
    """A checked probe study (:func:`load_probe_study`)."""

    name: str
    config: Path
    heads: tuple[str, ...]
    losses: tuple[str, ...]
    methods: tuple[str, ...]
    options: tuple[str, ...]
    root: Path
    eval_list: str
    weights: str
    skip_stages: tuple[str, ...] = DEFAULT_SKIP
    demo_args: str | None = None
    python: str = sys.executable
    n_boot: int = 2000
    n_permutations: int = 9999
    level: float = 0.95
    seed: int = 0
    jobs: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def probes(self) -> list[Probe]:
        """Every probe of the grid that at least one method explains, heads first."""
        return [Probe(h, loss) for h in self.heads for loss in self.losses if self.methods_for(Probe(h, loss))]

    def methods_for(self, probe: Probe) -> list[str]:
        return [m for m in self.methods if explains(m, probe.head)]

    def tag(self, probe: Probe, method: str) -> str:
        """``map_tag`` of an evaluation: "" for the probe's first method (the session's own), else the method."""
        return "" if method == self.methods_for(probe)[0] else method

    def cell_name(self, probe: Probe, method: str) -> str:
        return probe.name if not self.tag(probe, method) else f"{probe.name}_{method}"

    def session_dir(self, probe: Probe) -> Path:
        return self.runs_dir / probe.name

    def session_options(self, probe: Probe, method: str) -> list[str]:
        tag = self.tag(probe, method)
        cache = [] if any(o.startswith("probe_cache_dir=") for o in self.options) else [
            f"probe_cache_dir={self.root / 'feature_cache'}"]
        from ..models.probes import head_kwarg_names

        opts = list(self.options)
        if "hidden" not in head_kwarg_names(probe.head):  # probe_hidden (config or options) sizes MLP heads only
            opts = [o for o in opts if not o.startswith("probe_hidden=")] + ["probe_hidden=0"]
        return [*opts, *cache, f"work_dir_root={self.runs_dir}", f"probe={probe.head}",
                f"probe_loss={probe.loss}", f"cam_method={method}", *([f"map_tag={tag}"] if tag else []),
                f"fignote={probe.name}"]

    def record(self) -> dict[str, Any]:
        from ..provenance import sha256_file

        return dict(study=self.name, config=str(self.config), config_sha256=sha256_file(self.config),
                    heads=list(self.heads), losses=list(self.losses), methods=list(self.methods),
                    options=list(self.options), skip_stages=list(self.skip_stages), eval_list=self.eval_list,
                    weights=self.weights, demo_args=self.demo_args, n_boot=self.n_boot,
                    n_permutations=self.n_permutations, level=self.level, seed=self.seed)


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    if not names:
        raise ConfigError(f"--{kind}: give at least one")
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"--{kind}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    if len(set(names)) < len(names):
        raise ConfigError(f"--{kind}: {', '.join(names)} repeats a name")
    return tuple(names)


def load_probe_study(
    config: PathLike, name: str, heads: Sequence[str] = HEAD_GRID, losses: Sequence[str] = LOSS_GRID,
    methods: Sequence[str] = DEFAULT_METHODS, options: Sequence[str] = (), work_dir: PathLike | None = None,
    demo_args: str | None = None, skip_stages: Sequence[str] = DEFAULT_SKIP, python: str = sys.executable,
    n_boot: int = 2000, n_permutations: int = 9999, level: float = 0.95, seed: int = 0, jobs: int = 0,
) -> ProbeStudy:
    """Check everything before any work: names, the methods, every probe's config (the backbone config with
    ``options`` and the probe keys; :func:`dywsss.engine.probe_train.probe_train_problems`), and the data
    files unless ``demo_args`` makes them. Errors are one-line :class:`ConfigError` s naming the value."""
    from ..config import load_config
    from ..engine.probe_train import probe_train_problems
    from ..explain import EXPLAINERS
    from ..metrics.probe_losses import PROBE_LOSSES
    from ..models.probes import PROBE_HEADS
    from ..schema import raise_problems
    from ..stages import study_stages

    if not NAME_RE.match(str(name)):
        raise ConfigError(f"--study {name!r}: use letters, digits and _.+- (it names work_dirs/<study>)")
    heads = _check_names("heads", heads, PROBE_HEADS.names())
    losses = _check_names("losses", losses, PROBE_LOSSES.names())
    methods = _check_names("methods", methods, EXPLAINERS.names())
    bad = [o for o in options if "=" not in o]
    if bad:
        raise ConfigError(f"--options takes key=value pairs, got {bad[0]!r}")
    reserved = [o.split("=", 1)[0] for o in options if o.split("=", 1)[0] in RESERVED_KEYS]
    if reserved:
        raise ConfigError(f"--options {reserved[0]}=...: the probe study sets {', '.join(RESERVED_KEYS)} itself")
    config = Path(config)
    root = Path(work_dir) if work_dir else Path("work_dirs") / name
    study = ProbeStudy(name, config, heads, losses, methods, tuple(options), root, "", "", tuple(skip_stages),
                       demo_args, python, int(n_boot), int(n_permutations), float(level), int(seed), int(jobs))
    if not study.probes():
        raise ConfigError(f"--methods {' '.join(methods)}: no method explains any of the heads {' '.join(heads)}")
    skipped = [f"{h}: no method of {', '.join(methods)} explains it" for h in heads
               if not study.methods_for(Probe(h, losses[0]))]
    cfg = None
    for probe in study.probes():
        method = study.methods_for(probe)[0]
        opts = study.session_options(probe, method) + [f"session_name={probe.name}"]
        cfg = load_config(config, parse_options(opts))
        problems = probe_train_problems(cfg)
        if demo_args is None:
            problems += _data_problems(cfg)
        raise_problems([f"probe {probe.name}: {p}" for p in problems])
    assert cfg is not None
    plan = study_stages(config, study.probes()[0].name, study.session_options(study.probes()[0],
                                                                               study.methods_for(study.probes()[0])[0]))
    known = [s.name for s in plan.stages]
    bad = [s for s in skip_stages if s not in OPTIONAL_STAGES]
    if bad:
        raise ConfigError(f"--skip {' '.join(bad)}: the study reads what that stage writes; only "
                          f"{', '.join(OPTIONAL_STAGES)} can be left out (stages: {', '.join(known)})")
    return ProbeStudy(**{**study.__dict__, "eval_list": str(cfg.get("eval_list") or cfg.get("infer_list")),
                         "weights": str(cfg.get("weights", "best.pth")), "notes": tuple(skipped)})


def _data_problems(cfg: Any) -> list[str]:
    from ..config import data_path

    files = [data_path(cfg, cfg.train_list), data_path(cfg, cfg.val_list),
             data_path(cfg, cfg.get("eval_list") or cfg.infer_list), Path(cfg.cls_label)]
    return [f"{f}: not found (make the data first, or pass --demo-data)" for f in files if not Path(f).is_file()]


# ------------------------------------------------------------------ cells
def _eval_outputs(study: ProbeStudy, probe: Probe, method: str) -> tuple[Path, ...]:
    from ..config import SessionPaths

    paths = SessionPaths(study.session_dir(probe))
    tag = study.tag(probe, method)
    ev = paths.eval_dir(study.eval_list, study.weights, tag)
    files = ["per_sample.csv", "ji_curve.json", "ece.json", "vice.json", "map_metrics.json", "vice_epg.json"]
    return (paths.model_dir / "last.pth", *(ev / f for f in files))


def gridpg_on(study: ProbeStudy) -> bool:
    return "gridpg" not in study.skip_stages


def probe_cells(study: ProbeStudy) -> list[Cell]:
    """The study's cells in dependency order (module docstring)."""
    from ..stages import REPO

    run_stages = str(REPO / "scripts" / "run_stages.py")
    logs = study.root / "logs"
    cells: list[Cell] = []
    data_dep: tuple[str, ...] = ()
    out = data_out(study.demo_args) if study.demo_args is not None else None
    if out is not None and not all(p.is_file() for p in (out / "train_aug.txt", out / "val.txt",
                                                          out / "cls_labels.json")):
        # only when the set is missing: remaking it would touch every image and so make every run
        # and feature cache of that set stale
        cells.append(Cell("data", (study.python, str(REPO / "scripts" / "make_demo_voc.py"),
                                   *shlex.split(study.demo_args)),
                          (out / "train_aug.txt", out / "val.txt", out / "cls_labels.json"), logs / "data.log",
                          meta=dict(kind="data")))
        data_dep = ("data",)
    skip = ("--skip", *dict.fromkeys([*study.skip_stages, "gridpg"]))  # GridPG runs as its own cell
    for probe in study.probes():
        for i, method in enumerate(study.methods_for(probe)):
            name = study.cell_name(probe, method)
            opts = study.session_options(probe, method)
            cmd = (study.python, run_stages, str(study.config), "--session", probe.name, "--list", study.eval_list,
                   "--weights", study.weights, *skip, "--options", *opts)
            deps = data_dep if i == 0 else (probe.name,)
            meta = dict(kind="probe", probe=probe.name, head=probe.head, loss=probe.loss, method=method,
                        tag=study.tag(probe, method), session=str(study.session_dir(probe)))
            outputs = _eval_outputs(study, probe, method)
            cells.append(Cell(name, cmd, outputs, logs / f"{name}.log", deps,
                              meta=dict(meta, trains="yes" if i == 0 else "no")))
            if gridpg_on(study):
                grid_cmd = (study.python, str(REPO / "scripts" / "gridpg.py"), str(study.config), "--options", *opts,
                            f"session_name={probe.name}", f"weights={study.weights}", f"eval_list={study.eval_list}",
                            f"infer_list={study.eval_list}")
                cells.append(Cell(f"{name}_gridpg", grid_cmd, (outputs[1].with_name("gridpg.json"),),
                                  logs / f"{name}_gridpg.log", (name,), meta=dict(meta, kind="gridpg")))
    return cells


def run_probe_study(study: ProbeStudy, force: bool = False, dry_run: bool = False, collect_only: bool = False,
                    log: Callable[[str], None] = print, runner: Callable[..., Any] | None = None
                    ) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Run the cells (skipping finished ones), then collect; returns ``({cell: status}, outputs)``.
    ``runner`` replaces :func:`dywsss.study.cells.run_cell` (``(cell, env) -> CellResult``)."""
    from .cells import run_cell
    from .runner import StudyStatus, run_cells

    cells = probe_cells(study)
    for note in study.notes:
        log(f"[study] {note}; left out")
    if dry_run:
        for c in cells:
            log(f"[{c.name}] after {', '.join(c.depends) or '-'}\n  $ {shlex.join(c.command)}")
        return {c.name: "pending" for c in cells}, None
    study.root.mkdir(parents=True, exist_ok=True)
    status = StudyStatus.open(study.root / "status.json", study.record())
    status.cells = {k: v for k, v in status.cells.items() if k in {c.name for c in cells}}
    state: dict[str, str] = {}
    if not collect_only:
        state = run_cells(cells, status, study.jobs, 0, None, force, log, runner=runner or run_cell)
    status.save()
    return state, collect_probe_study(study, status.cells, log)


# ------------------------------------------------------------------ collection
#: Figures: metric -> (axis label, percent?, interval columns or None).
FIGURES: dict[str, tuple[str, bool, tuple[str, str] | None]] = {
    "epg": ("EPG %", True, None), "gridpg": ("GridPG %", True, None), "best_miou": ("best mIoU %", True, None),
    "ji": ("mean JI %", True, None), "vice": ("VICE (JI)", False, ("vice_ci_low", "vice_ci_high")),
    "vice_epg": ("VICE (EPG)", False, ("vice_epg_ci_low", "vice_epg_ci_high")),
    "vice_probe": ("VICE, probe loss (JI)", False, ("vice_probe_ci_low", "vice_probe_ci_high")),
    "vice_probe_epg": ("VICE, probe loss (EPG)", False, ("vice_probe_epg_ci_low", "vice_probe_epg_ci_high")),
}
READ_ERRORS = (MissingInputError, StaleError, InputError, ValueError, KeyError, OSError)


def collect_probe_study(study: ProbeStudy, cells: dict[str, dict] | None = None,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Read every finished (probe, method), compare BCE with CE, write the tables, figures, ``summary.md`` and
    ``probe_study.json``; returns ``{"rows", "failures", "paths", "answer"}``. A cell that failed or was blocked
    in this run is reported as such (not read, so no older numbers stand in for it)."""
    import pandas as pd

    from ..io import write_json_atomic, write_text_atomic
    from ..provenance import library_versions
    from ..report.probes import (
        ROW_SOURCES, ProbeEval, answer_lines, bce_vs_ce, comparison_table, format_frames, read_probe_eval, row_table,
    )
    from ..report.table import FORMATS
    from ..viz.probe_plot import plot_probe_metric
    from ..viz.reliability import figure_provenance

    cells = cells or {}
    rows, failures = [], []
    for probe in study.probes():
        for method in study.methods_for(probe):
            name = study.cell_name(probe, method)
            entry = cells.get(name) or {}
            where = dict(probe=probe.name, head=probe.head, loss=probe.loss, method=method, cell=name,
                         log=str(study.root / "logs" / f"{name}.log"))
            if entry.get("status") in ("failed", "blocked"):
                why = entry.get("error") or f"exit status {entry.get('rc')}"
                failures.append(dict(where, status=entry["status"], reason=why))
                continue
            ev = ProbeEval(study.session_dir(probe), probe.head, probe.loss, method, study.tag(probe, method),
                           study.eval_list, study.weights)
            grid = cells.get(f"{name}_gridpg") or {}
            with_gridpg = gridpg_on(study) and grid.get("status") not in ("failed", "blocked")
            if gridpg_on(study) and not with_gridpg:
                failures.append(dict(where, cell=f"{name}_gridpg", log=str(study.root / "logs" / f"{name}_gridpg.log"),
                                     status=f"GridPG {grid['status']}",
                                     reason=grid.get("error") or f"exit status {grid.get('rc')}"))
            try:
                rows.append(read_probe_eval(ev, study.n_boot, study.level, study.seed, with_gridpg=with_gridpg))
            except READ_ERRORS as exc:
                failures.append(dict(where, status="unreadable", reason=f"{type(exc).__name__}: {exc}"))
    for f in failures:
        log(f"[probes] {f['probe']}/{f['method']}: {f['status']} ({f['reason']}); log: {f['log']}")
    comparisons = bce_vs_ce(rows, study.n_boot, study.n_permutations, study.level, study.seed)
    answer = answer_lines(comparisons, study.level)
    out = study.root
    paths: dict[str, Any] = {}
    suffix = {"md": "md", "csv": "csv", "latex": "tex"}
    for stem, display, numeric in (("probe_table", row_table(rows, False), row_table(rows, True)),
                                   ("bce_vs_ce", comparison_table(comparisons, False),
                                    comparison_table(comparisons, True))):
        for fmt in FORMATS:
            path = out / f"{stem}.{suffix[fmt]}"
            write_text_atomic(path, format_frames(display, numeric, fmt))
            paths[f"{stem}.{fmt}"] = str(path)
    provenance = dict(study=study.record(), rows=[dict(probe=r["probe"], method=r["method"],
                                                       weights_sha256=r["weights_sha256"], sources=r["sources"])
                                                  for r in rows])
    frame = pd.DataFrame(rows)
    figures = {}
    if not frame.empty:
        with figure_provenance(provenance):
            for metric, (label, percent, interval) in FIGURES.items():
                figures[metric] = str(plot_probe_metric(frame, metric, out / "figures" / f"{metric}.png", label,
                                                        percent=percent, interval=interval,
                                                        methods=[m for m in study.methods if m in set(frame.method)]))
    paths["figures"] = figures
    summary = _summary_md(study, rows, failures, answer, out)
    write_text_atomic(out / "summary.md", summary)
    paths["summary"] = str(out / "summary.md")
    write_json_atomic(out / "probe_study.json", dict(
        study=study.record(), answer=answer, failures=failures, notes=list(study.notes),
        rows=[{k: v for k, v in r.items()} for r in rows], row_sources=ROW_SOURCES,
        comparisons=comparisons.to_dict(orient="records"), outputs=paths, versions=library_versions()))
    paths["json"] = str(out / "probe_study.json")
    return dict(rows=rows, failures=failures, comparisons=comparisons, answer=answer, paths=paths)


def _summary_md(study: ProbeStudy, rows: list, failures: list, answer: list[str], out: Path) -> str:
    lines = [f"# Probe study {study.name}", "",
             f"Backbone config `{study.config}` with `{' '.join(study.options) or '(no options)'}`; heads "
             f"{', '.join(study.heads)}; losses {', '.join(study.losses)}; methods {', '.join(study.methods)}; "
             f"{len(rows)} (probe, method) evaluations finished, {len(failures)} not.", "",
             "## BCE vs CE", "", *[f"- {a}" for a in answer], ""]
    if failures:
        lines += ["## Not finished", "", *[f"- {f['probe']}/{f['method']}: {f['status']} ({f['reason']}); "
                                           f"log `{f['log']}`" for f in failures], ""]
    for stem, title in (("probe_table", "Probes"), ("bce_vs_ce", "BCE minus CE")):
        lines += [f"## {title}", "", (out / f"{stem}.md").read_text(), ""]
    return "\n".join(lines)
