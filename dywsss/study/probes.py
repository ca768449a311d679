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
* ``<evaluation cell>_gridpg``: ``scripts/run_stages.py`` with the same options for the session's ``gridpg``
  and ``report`` stages only, after it: GridPG, then the report again (the evaluation cell's report was built
  before GridPG). GridPG is a cell of its own because it can fail where the rest succeeds (too few
  confidently classified classes for a weak probe): its failure empties the GridPG column of that row only,
  and the report without GridPG stands.

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
    #: The stages of a probe session (``scripts/run_stages.py``), in order; filled by :func:`load_probe_study`.
    stage_names: tuple[str, ...] = ()
    #: ``pred_threshold`` of the sessions (a class is predicted when its probability exceeds it).
    pred_threshold: float = 0.5

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

    def probe_config_options(self, probe: Probe, method: str) -> list[str]:
        """The options of the evaluation's config, as every stage of its session loads it."""
        return self.session_options(probe, method) + [f"session_name={probe.name}"]

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
    """Check everything before any work: names, every probe's config (the backbone config with ``options``
    and the probe keys; :func:`dywsss.engine.probe_train.probe_train_problems`), ``map_metrics`` (must hold
    ``epg``), each (head, method) (:func:`dywsss.engine.maps.map_stage_problems` and the method's explainer
    built on the probe's architecture), the ``--out`` of ``demo_args`` against the config's data paths, and
    the data as the stages check it (every listed image, the evaluation masks) unless ``demo_args`` makes
    it. ``options`` given twice for a key keep the later value. Errors are one line each, naming the value."""
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
    options = merge_options(options)
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
        cfg = load_config(config, parse_options(study.probe_config_options(probe, study.methods_for(probe)[0])))
        raise_problems([f"probe {probe.name}: {p}" for p in probe_train_problems(cfg) + _metric_problems(cfg)])
    assert cfg is not None
    first = study.probes()[0]
    plan = study_stages(config, first.name, study.session_options(first, study.methods_for(first)[0]))
    known = tuple(s.name for s in plan.stages)
    bad = [s for s in skip_stages if s not in OPTIONAL_STAGES]
    if bad:
        raise ConfigError(f"--skip {' '.join(bad)}: the study reads what that stage writes; only "
                          f"{', '.join(OPTIONAL_STAGES)} can be left out (stages: {', '.join(known)})")
    if demo_args is not None:
        raise_problems(demo_out_problems(cfg, data_out(demo_args)))
    raise_problems(method_problems(study))
    if demo_args is None or demo_set_present(data_out(demo_args)):
        raise_problems(_data_problems(cfg))
        check_study_data(cfg)
    return ProbeStudy(**{**study.__dict__, "eval_list": str(cfg.get("eval_list") or cfg.get("infer_list")),
                         "weights": str(cfg.get("weights", "best.pth")), "notes": tuple(skipped),
                         "stage_names": known, "pred_threshold": float(cfg.get("pred_threshold", 0.5))})


def merge_options(options: Sequence[str]) -> tuple[str, ...]:
    """``key=value`` options with one entry per key, the later value winning (``--options`` given twice, e.g.
    ``bash run.sh probes --options ...`` after run.sh's own), in the order the keys first appear."""
    bad = [o for o in options if "=" not in o]
    if bad:
        raise ConfigError(f"--options takes key=value pairs, got {bad[0]!r}")
    merged: dict[str, str] = {}
    for o in options:
        key, value = o.split("=", 1)
        merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


def _metric_problems(cfg: Any) -> list[str]:
    """``map_metrics`` must name known metrics and hold ``epg`` (the probe table's EPG column and VICE (EPG))."""
    from ..metrics.map_metrics import DEFAULT_MAP_METRICS, check_metric_names

    try:
        names = check_metric_names(cfg.get("map_metrics", DEFAULT_MAP_METRICS))
    except ConfigError as exc:
        return [str(exc)]
    if "epg" in names:
        return []
    return [f"map_metrics={tuple(names)!r}: the probe study reads epg (its EPG and VICE (EPG) columns); "
            f"add it, e.g. --options map_metrics=[{','.join(['epg', *names])}]"]


def method_problems(study: ProbeStudy) -> list[str]:
    """Each (head, method) of the study as the map stage would find it: :func:`dywsss.engine.maps.map_stage_problems`
    on the evaluation's config, then the method's explainer built on the probe's architecture (the backbone
    without weights, the head untrained: what a method can explain depends on the architecture only), so that
    a method the probe cannot use fails here rather than after training."""
    from ..config import load_config
    from ..engine.maps import map_stage_problems
    from ..engine.probe_train import probe_settings
    from ..explain import EXPLAINERS
    from ..models.builder import build_model_from_cfg
    from ..models.probes import build_probe_model

    problems: list[str] = []
    seen: set[str] = set()
    for probe in study.probes():
        if probe.head in seen:  # the loss does not change the architecture
            continue
        seen.add(probe.head)
        model = None
        for method in study.methods_for(probe):
            cfg = load_config(study.config, parse_options(study.probe_config_options(probe, method)))
            found = map_stage_problems(cfg)
            if not found:
                if model is None:
                    settings = probe_settings(cfg)
                    model = build_probe_model(build_model_from_cfg(cfg, load_pretrained=False), settings.head,
                                              int(cfg.get("num_classes", 20)), **settings.head_kwargs).eval()
                try:
                    EXPLAINERS.get(method)(model, cfg)
                except ConfigError as exc:
                    found = [str(exc)]
            problems += [f"probe {probe.head}, cam_method={method}: {p}" for p in found]
    return problems


def demo_tree(out: Path) -> Any:
    """The paths ``scripts/make_demo_voc.py --out OUT`` writes (:class:`dywsss.data.demo.DemoTree`)."""
    from ..data.demo import DemoTree

    return DemoTree(out, out / "VOC2012", out / "train_aug.txt", out / "val.txt", out / "cls_labels.json")


def demo_set_present(out: Path) -> bool:
    tree = demo_tree(out)
    return all(p.is_file() for p in (tree.train_list, tree.val_list, tree.cls_labels))


def demo_out_problems(cfg: Any, out: Path) -> list[str]:
    """With ``--demo-data``, the config must read the set where ``--out`` puts it: ``voc12_root``, ``gt_dir``,
    ``cls_label`` and every list; one problem naming each key that reads elsewhere and what --out writes."""
    from ..config import data_path

    def same(a: Any, b: Path) -> bool:
        return Path(str(a or "")).resolve() == b.resolve()

    tree = demo_tree(out)
    wrong = [f"{k}={cfg.get(k)}" for k, want in (("voc12_root", tree.voc12_root), ("gt_dir", tree.gt_dir),
                                                  ("cls_label", tree.cls_labels)) if not same(cfg.get(k), want)]
    for key in ("train_list", "val_list", "eval_list" if cfg.get("eval_list") else "infer_list"):
        path = data_path(cfg, cfg.get(key))
        if not same(path.parent, out):
            wrong.append(f"{key}={cfg.get(key)}" + (f" ({path})" if str(path) != str(cfg.get(key)) else ""))
    if not wrong:
        return []
    return [f"--demo-data --out {out} writes the demo set to {out}/ (VOC2012/, train_aug.txt, val.txt, "
            f"cls_labels.json), but the config reads {', '.join(wrong)}: give the --out the config reads, or "
            f"--options list_root, voc12_root, gt_dir, cls_label, train_list, val_list, eval_list under {out}"]


def _data_problems(cfg: Any) -> list[str]:
    from ..config import data_path

    files = [data_path(cfg, cfg.train_list), data_path(cfg, cfg.val_list),
             data_path(cfg, cfg.get("eval_list") or cfg.infer_list), Path(cfg.cls_label)]
    return [f"{f}: not found (make the data first, or pass --demo-data)" for f in files if not Path(f).is_file()]


def check_study_data(cfg: Any) -> None:
    """The data as the stages will check it, before any work: every image of the training and validation lists
    (:func:`dywsss.data.voc.check_data`, the training stage's check) and every image of the evaluation list with
    its mask (:func:`dywsss.data.voc.check_inputs` with ``gt_dir``, the map and per-sample stages' check).
    Raises their one-line :class:`InputError` / :class:`MissingInputError`."""
    from ..config import data_path
    from ..data.voc import check_data, check_inputs

    img_dir, pickle = cfg.get("img_dir", "JPEGImages"), bool(cfg.get("allow_pickle", False))
    evaluation = data_path(cfg, cfg.get("eval_list") or cfg.infer_list)
    for lst in dict.fromkeys([data_path(cfg, cfg.train_list), data_path(cfg, cfg.val_list)]):
        if lst.resolve() != evaluation.resolve():  # checked below, with its masks
            check_data(cfg.voc12_root, lst, cfg.cls_label, img_dir=img_dir, allow_pickle=pickle)
    check_inputs(cfg.voc12_root, evaluation, cfg.cls_label, img_dir, gt_dir=cfg.gt_dir, allow_pickle=pickle)


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
    if out is not None and not demo_set_present(out):
        # only when the set is missing: remaking it would touch every image and so make every run
        # and feature cache of that set stale
        tree = demo_tree(out)
        cells.append(Cell("data", (study.python, str(REPO / "scripts" / "make_demo_voc.py"),
                                   *shlex.split(study.demo_args)),
                          (tree.train_list, tree.val_list, tree.cls_labels), logs / "data.log",
                          meta=dict(kind="data")))
        data_dep = ("data",)
    skip = ("--skip", *dict.fromkeys([*study.skip_stages, "gridpg"]))  # GridPG runs as its own cell
    grid_skip = _gridpg_cell_skips(study)
    for probe in study.probes():
        for i, method in enumerate(study.methods_for(probe)):
            name = study.cell_name(probe, method)
            opts = study.session_options(probe, method)
            session = ("--session", probe.name, "--list", study.eval_list, "--weights", study.weights)
            cmd = (study.python, run_stages, str(study.config), *session, *skip, "--options", *opts)
            deps = data_dep if i == 0 else (probe.name,)
            meta = dict(kind="probe", probe=probe.name, head=probe.head, loss=probe.loss, method=method,
                        tag=study.tag(probe, method), session=str(study.session_dir(probe)))
            outputs = _eval_outputs(study, probe, method)
            cells.append(Cell(name, cmd, outputs, logs / f"{name}.log", deps,
                              meta=dict(meta, trains="yes" if i == 0 else "no")))
            if gridpg_on(study):
                # the session's GridPG stage, then its report again (the session cell's report was built before
                # GridPG ran); when GridPG fails, that report, without GridPG, stands
                tag = study.tag(probe, method)
                report = study.session_dir(probe) / (f"report_{tag}.html" if tag else "report.html")
                grid_cmd = (study.python, run_stages, str(study.config), *session, "--skip", *grid_skip,
                            "--options", *opts)
                grid_out = (outputs[1].with_name("gridpg.json"), *(() if "report" in study.skip_stages else (report,)))
                cells.append(Cell(f"{name}_gridpg", grid_cmd, grid_out, logs / f"{name}_gridpg.log", (name,),
                                  meta=dict(meta, kind="gridpg")))
    return cells


def _gridpg_cell_skips(study: ProbeStudy) -> list[str]:
    """Every stage of a probe session but ``gridpg`` and ``report`` (unless the study leaves the report out)."""
    names = study.stage_names
    if not names:  # a ProbeStudy made by hand: the plan's stages
        from ..stages import study_stages

        first = study.probes()[0]
        names = tuple(s.name for s in study_stages(study.config, first.name,
                                                   study.session_options(first, study.methods_for(first)[0])).stages)
    return [s for s in names if s != "gridpg" and (s != "report" or "report" in study.skip_stages)]


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
        ROW_SOURCES, ProbeEval, answer_lines, bce_vs_ce, ce_cap_note, comparison_table, format_frames, not_comparable,
        read_probe_eval, row_table,
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
    for pair in not_comparable(comparisons):
        log(f"[probes] BCE vs CE {pair}")
    answer = answer_lines(comparisons, study.level)
    ce_note = ce_cap_note(rows, study.losses, study.pred_threshold)
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
    summary = _summary_md(study, rows, failures, answer, out, ce_note)
    write_text_atomic(out / "summary.md", summary)
    paths["summary"] = str(out / "summary.md")
    write_json_atomic(out / "probe_study.json", dict(
        study=study.record(), answer=answer, failures=failures, notes=list(study.notes), ce_note=ce_note,
        rows=[{k: v for k, v in r.items()} for r in rows], row_sources=ROW_SOURCES,
        comparisons=comparisons.to_dict(orient="records"), outputs=paths, versions=library_versions()))
    paths["json"] = str(out / "probe_study.json")
    return dict(rows=rows, failures=failures, comparisons=comparisons, answer=answer, paths=paths, ce_note=ce_note)


def _summary_md(study: ProbeStudy, rows: list, failures: list, answer: list[str], out: Path,
                ce_note: str | None = None) -> str:
    lines = [f"# Probe study {study.name}", "",
             f"Backbone config `{study.config}` with `{' '.join(study.options) or '(no options)'}`; heads "
             f"{', '.join(study.heads)}; losses {', '.join(study.losses)}; methods {', '.join(study.methods)}; "
             f"{len(rows)} (probe, method) evaluations finished, {len(failures)} not.", "",
             "## BCE vs CE", "", *[f"- {a}" for a in answer], ""]
    if ce_note:
        lines += ["## Reading a CE probe", "", ce_note, ""]
    if failures:
        lines += ["## Not finished", "", *[f"- {f['probe']}/{f['method']}: {f['status']} ({f['reason']}); "
                                           f"log `{f['log']}`" for f in failures], ""]
    for stem, title in (("probe_table", "Probes"), ("bce_vs_ce", "BCE minus CE")):
        lines += [f"## {title}", "", (out / f"{stem}.md").read_text(), ""]
    return "\n".join(lines)
