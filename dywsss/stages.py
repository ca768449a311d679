"""A make-like runner for the pipeline's stages, and the VICE study as a table of stages.

A stage is a command with its input and output files. It is skipped when all
its outputs exist, pass the stage's completeness check and are newer than its
newest input, and its command equals the one recorded when it last succeeded.
Otherwise it runs: from scratch when there is nothing yet, with its
``resume_args`` when an interrupted run left part of its outputs, with its
``fresh_args`` when outputs are stale or the command changed. So a rerun
after an interruption does only the remaining work.
"""
from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

from .errors import ConfigError
from .io import write_json_atomic
from .recipe import TRANSFORMER_MARKERS, describe_recipe

PathLike = str | os.PathLike
PathSpec = Sequence[Path] | Callable[[], Sequence[Path]]
REPO = Path(__file__).resolve().parents[1]


VICE_OUTPUTS = ("vice.json", "vice_bins.png", "loss_vs_ji.png", "vice_metrics.json", "loss_vs_metrics.png")
GRIDPG_OUTPUTS = ("gridpg.json", "gridpg.csv", "gridpg.png")
SANITY_OUTPUTS = ("sanity.json", "sanity_cascade.png", "sanity_metrics.png")
COMPARE_OUTPUTS = ("compare_methods.json", "compare_methods.png")
#: ``key=value`` arguments left out of a stage's recorded command (:attr:`Stage.key`): they set only how
#: fast a stage runs (batch sizes, loader workers), never what it computes (batched equals one-at-a-time is
#: tested: tests/test_maps_engine.py, test_attribution_common.py, test_faithfulness.py; GridPG's batches are
#: explainer calls), so changing them redoes no finished stage. (Training draws its augmentation per loader
#: worker, so another ``num_workers`` would be another draw of the same recipe: no reason to retrain either.)
SPEED_ONLY_KEYS: frozenset[str] = frozenset({"cam_batch_size", "attr_batch_size", "insdel_batch_size",
                                             "gridpg_batch_size", "num_workers"})
#: Keys that only the stages after training read (maps, metrics, figures): the training stage's record leaves
#: them out, so choosing another method, metric or bootstrap size never retrains a model.
EVAL_ONLY_KEYS: frozenset[str] = frozenset({
    "infer_list", "eval_list", "weights", "gen_mask_for_multi_crop", "attr_batch_size", "perturbation_score",
    "vit_map_protocol", "map_tag", "loss_input", "pred_threshold", "ji_definition", "eval_thresh", "ece_bins",
    "ece_binning", "vice_bins", "bootstrap", "fignote", "map_metrics", "pg_tolerance",
})
EVAL_ONLY_PREFIXES: tuple[str, ...] = ("cam_", "ig_", "smoothgrad_", "occlusion_", "rise_", "lime_", "insdel_",
                                       "gridpg_", "sanity_")


class StageError(RuntimeError):
    """A stage's command failed (``returncode``: its exit status) or did not write its outputs."""

    def __init__(self, message: str, returncode: int = 1) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class Stage:
    """One step: ``command`` reads ``inputs`` and writes ``outputs`` (lists or callables giving them).

    ``check`` returns a reason when the outputs exist but are unfinished (e.g. a
    checkpoint of an interrupted training), else None.
    """

    name: str
    command: tuple[str, ...]
    inputs: PathSpec = ()
    outputs: PathSpec = ()
    check: Callable[[], str | None] | None = None
    resume_args: tuple[str, ...] = ()
    fresh_args: tuple[str, ...] = ()
    ignored: Callable[[str], bool] | None = None  # further ``key=value`` arguments its record leaves out

    def input_paths(self) -> list[Path]:
        return [Path(p) for p in (self.inputs() if callable(self.inputs) else self.inputs)]

    def output_paths(self) -> list[Path]:
        return [Path(p) for p in (self.outputs() if callable(self.outputs) else self.outputs)]

    @property
    def key(self) -> list[str]:
        """The command as recorded: without the interpreter, which may differ between shells, and without
        the ``key=value`` arguments of :data:`SPEED_ONLY_KEYS` (and those ``ignored`` names)."""
        return [a for a in self.command[1:] if not (_option_key(a) in SPEED_ONLY_KEYS
                                                    or (self.ignored is not None and self.ignored(_option_key(a))))]


def _option_key(arg: str) -> str:
    return arg.split("=", 1)[0] if "=" in arg and not arg.startswith("-") else ""


def eval_only(key: str) -> bool:
    """True for a key only the stages after training read (:data:`EVAL_ONLY_KEYS`, :data:`EVAL_ONLY_PREFIXES`)."""
    return key in EVAL_ONLY_KEYS or key.startswith(EVAL_ONLY_PREFIXES)


@dataclass(frozen=True)
class Decision:
    """What to do with a stage: ``skip``, ``run``, ``resume`` or ``redo``, and why."""

    action: str
    reason: str


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def decide(stage: Stage, recorded: Sequence[str] | None = None, force: bool = False) -> Decision:
    """Compare a stage's outputs with its inputs and its last recorded command."""
    outs = stage.output_paths()
    existing = [p for p in outs if p.exists()]
    if force:
        return Decision("redo", "forced")
    if not outs or not existing:
        return Decision("run", "no outputs yet")
    if recorded is not None and list(recorded) != stage.key:
        return Decision("redo", "its command changed since it last ran")
    ins = [p for p in stage.input_paths() if p.exists()]
    if ins:
        newest = max(ins, key=_mtime)
        oldest = min(existing, key=_mtime)
        if _mtime(oldest) < _mtime(newest):
            return Decision("redo", f"{newest} is newer than {oldest}")
    if len(existing) < len(outs):
        missing = [p for p in outs if not p.exists()]
        return Decision("resume", f"{len(missing)} of {len(outs)} outputs missing, e.g. {missing[0]}")
    reason = stage.check() if stage.check else None
    if reason:
        return Decision("resume", reason)
    return Decision("skip", "up to date")


def _read_stamps(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a broken record only costs a rerun
    return data if isinstance(data, dict) else {}


def run_stages(
    stages: Sequence[Stage], stamp_file: PathLike, force: Iterable[str] | bool = (), dry_run: bool = False,
    log: Callable[[str], None] = print, cwd: PathLike | None = None, stdout: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Run the stages in order, skipping the up-to-date ones; returns the names of those run.

    ``force``: True for all stages or the names of stages to redo. Each
    successful stage's command is recorded in ``stamp_file`` (JSON). ``stdout``: a file
    that receives the commands' output (stdout and stderr; default: this process's);
    ``env``: their environment (default: this process's).
    """
    names = [s.name for s in stages]
    forced = set(names) if force is True else set(force or ())
    unknown = forced - set(names)
    if unknown:
        raise ConfigError(f"--force: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(names)}")
    stamp_file = Path(stamp_file)
    ran: list[str] = []
    for stage in stages:
        stamps = _read_stamps(stamp_file)
        d = decide(stage, stamps.get(stage.name, {}).get("command"), stage.name in forced)
        extra = {"resume": stage.resume_args, "redo": stage.fresh_args}.get(d.action, ())
        cmd = list(stage.command) + list(extra)
        if d.action == "skip":
            log(f"[{stage.name}] up to date, skipped")
            continue
        log(f"[{stage.name}] {d.action}: {d.reason}\n  $ {shlex.join(cmd)}")
        if dry_run:
            continue
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=cwd, stdout=stdout, stderr=None if stdout is None else subprocess.STDOUT,
                            env=None if env is None else dict(env)).returncode
        if rc != 0:
            raise StageError(f"stage {stage.name} failed (exit status {rc}): {shlex.join(cmd)}", rc)
        missing = [p for p in stage.output_paths() if not p.exists()]
        if missing:
            raise StageError(f"stage {stage.name} finished but did not write {missing[0]} "
                             f"({len(missing)} output(s) missing): {shlex.join(cmd)}")
        reason = stage.check() if stage.check else None
        if reason:
            raise StageError(f"stage {stage.name} finished but its outputs are incomplete: {reason}")
        stamps = _read_stamps(stamp_file)
        stamps[stage.name] = {"command": stage.key}
        write_json_atomic(stamp_file, stamps)
        ran.append(stage.name)
        log(f"[{stage.name}] done in {time.perf_counter() - t0:.0f} s")
    return ran


def without_stages(stages: Sequence[Stage], skip: Iterable[str]) -> list[Stage]:
    """``stages`` less those named in ``skip`` (e.g. ``sanity``); an unknown name is a :class:`ConfigError`."""
    skip = set(skip)
    names = [s.name for s in stages]
    unknown = skip - set(names)
    if unknown:
        raise ConfigError(f"--skip: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(names)}")
    return [s for s in stages if s.name not in skip]


# ---------------------------------------------------------------- the study
def config_files(path: PathLike) -> list[Path]:
    """A config file and, recursively, the files its ``_base_`` names (mmengine inheritance)."""
    path = Path(path)
    files = [path]
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise ConfigError(f"{path}: unreadable config ({exc})") from exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            bases = ast.literal_eval(node.value)
            for base in [bases] if isinstance(bases, str) else bases:
                files += config_files(path.parent / base)
    return files


def _list_names(list_file: Path) -> list[str]:
    if not list_file.is_file():
        return []
    return [Path(line.split()[0]).stem for line in list_file.read_text().splitlines() if line.strip()]


def _checkpoint_check(path: Path, epochs: int) -> Callable[[], str | None]:
    def check() -> str | None:
        import torch

        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # truncated or foreign file
            return f"{path} is unreadable ({exc})"
        done = int(ckpt.get("epoch", 0)) if isinstance(ckpt, dict) else 0
        return None if done >= epochs else f"{path} holds {done} of {epochs} epochs"

    return check


def training_epochs(cfg: Any) -> int:
    """Epochs a finished training stage holds: ``probe_epochs`` for a probe (``probe`` set), else ``max_epoches``."""
    return int(cfg.get("probe_epochs", 50)) if cfg.get("probe") else int(cfg.max_epoches)


def _script(rel: str) -> str:
    """A repository script, relative to the working directory when that is shorter."""
    path = REPO / rel
    try:
        return os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)


def pipeline_script(network: str) -> str:
    """The original's driver: ``run_transformer.py`` for ViT-like networks, else ``run_resnet50.py``."""
    return "run_transformer.py" if any(m in network.lower() for m in TRANSFORMER_MARKERS) else "run_resnet50.py"


@dataclass(frozen=True)
class StudyPlan:
    """The stages of one run and where they write."""

    stages: list[Stage]
    root: Path
    stamp_file: Path
    cam_dir: Path
    eval_dir: Path
    report: Path
    #: The evaluation list and the weights file (name in ``model/``) the evaluation stages use.
    list_file: Path
    weights: str
    recipe: str = ""


def study_stages(
    config: PathLike, session: str | None = None, options: Sequence[str] = (), list_file: str | None = None,
    weights: str | None = None, demo_args: Sequence[str] | None = None, python: str = sys.executable,
) -> StudyPlan:
    """The VICE study of one config as stages (docs/DESIGN.md): demo data (when ``demo_args`` is
    given), train (the probe ``probe`` on the frozen backbone when that key is set), maps, JI curve, the centred-blob baseline's maps and JI curve, per-sample
    loss and map metrics, ECE_ML, VICE (of JI and of every map metric), GridPG, sanity checks, report.

    ``options`` are ``key=value`` overrides passed to every config-driven stage.
    """
    import argparse

    from .config import add_config_args, data_path, load_config, session_paths

    args = add_config_args(argparse.ArgumentParser()).parse_args([str(config), "--options", *options]
                                                                if options else [str(config)])
    overrides = dict(args.options or {})
    if session:
        overrides["session_name"] = session
    cfg = load_config(config, overrides)
    paths = session_paths(cfg)
    session = cfg.session_name
    opts = [o for o in options if not o.startswith("session_name=")] + [f"session_name={session}"]
    lst_value = list_file or cfg.get("eval_list") or cfg.get("infer_list")
    lst = data_path(cfg, lst_value)
    wts = weights or cfg.get("weights", "best.pth")
    wfile = paths.model_dir / wts
    tag = str(cfg.get("map_tag", ""))
    cam_dir, eval_dir = paths.cam_dir(lst, wts, tag), paths.eval_dir(lst, wts, tag)
    report = paths.root / (f"report_{tag}.html" if tag else "report.html")
    blob_dir = paths.cam_dir(lst, "blob")  # centred-blob baseline maps
    gt_dir = Path(cfg.gt_dir)
    label_file = Path(cfg.cls_label)
    driver = _script(pipeline_script(str(cfg.network)))
    cfg_inputs = config_files(config)
    cams = lambda: [cam_dir / f"{n}.npz" for n in _list_names(lst)]  # noqa: E731
    masks = lambda: [gt_dir / f"{n}.png" for n in _list_names(lst)]  # noqa: E731
    csv = eval_dir / "per_sample.csv"
    title = str(cfg.get("fignote") or cfg.network)
    list_opts = [f"weights={wts}", f"eval_list={lst_value}", f"infer_list={lst_value}"]

    stages = []
    if demo_args is not None:
        demo_outputs = [data_path(cfg, cfg.train_list), data_path(cfg, cfg.val_list), lst, label_file]
        stages.append(Stage("data", (python, _script("scripts/make_demo_voc.py"), *demo_args),
                            outputs=list(dict.fromkeys(demo_outputs))))
    data_inputs = [data_path(cfg, cfg.train_list), data_path(cfg, cfg.val_list), label_file]
    stages += [
        Stage("train", (python, driver, str(config), "--options", "train_multi_scale=True", *opts),
              inputs=cfg_inputs + data_inputs,
              outputs=[paths.model_dir / "best.pth", paths.model_dir / "last.pth"],
              check=_checkpoint_check(paths.model_dir / "last.pth", training_epochs(cfg)),
              resume_args=("resume=True",), fresh_args=("overwrite=True",), ignored=eval_only),
        Stage("maps", (python, driver, str(config), "--options", "gen_mask_for_multi_crop=True", *opts,
                       f"weights={wts}", f"infer_list={lst_value}"),
              inputs=[wfile, lst], outputs=cams, fresh_args=("overwrite=True",)),
        Stage("ji_curve", (python, _script("evaluation.py"), "--list", str(lst), "--predict_dir", str(cam_dir),
                           "--gt_dir", str(gt_dir), "--comment", f"{session}_{cam_dir.name}", "--type", "npz",
                           "--curve", "True", "--json", str(eval_dir / "ji_curve.json")),
              inputs=lambda: [lst, *cams(), *masks()], outputs=[eval_dir / "ji_curve.json"]),
        Stage("blob_maps", (python, _script("scripts/make_blob_maps.py"), str(config), "--options", *opts,
                            f"infer_list={lst_value}"),
              inputs=[lst, label_file], outputs=lambda: [blob_dir / f"{n}.npz" for n in _list_names(lst)]),
        Stage("blob_curve", (python, _script("evaluation.py"), "--list", str(lst), "--predict_dir", str(blob_dir),
                             "--gt_dir", str(gt_dir), "--comment", f"{session}_{blob_dir.name}", "--type", "npz",
                             "--curve", "True", "--json", str(eval_dir / "ji_curve_blob.json")),
              inputs=lambda: [lst, *(blob_dir / f"{n}.npz" for n in _list_names(lst)), *masks()],
              outputs=[eval_dir / "ji_curve_blob.json"]),
        Stage("per_sample", (python, _script("compute_each_image_loss.py"), str(config), "--options", *opts,
                             *list_opts),
              inputs=lambda: [*cfg_inputs, wfile, lst, label_file, *cams(), *masks()], outputs=[csv]),
        Stage("ece", (python, _script("compute_ECE.py"), str(config), "--options", *opts, *list_opts),
              inputs=[*cfg_inputs, csv], outputs=[eval_dir / "ece.json", eval_dir / "reliability.png"]),
        # without --json, compute_VICE.py writes vice.json, vice_bins.png, loss_vs_ji.png beside the CSV, and
        # with --metric all vice_<metric>.json, loss_vs_<metric>.png and vice_metrics.json for the map metrics
        Stage("vice", (python, _script("compute_VICE.py"), "--dir_csv", str(csv), "--plot_title", title,
                       "--bins", str(cfg.vice_bins), "--bootstrap", str(cfg.bootstrap), "--metric", "all"),
              inputs=[csv], outputs=[eval_dir / f for f in VICE_OUTPUTS]),
        Stage("gridpg", (python, _script("scripts/gridpg.py"), str(config), "--options", *opts, *list_opts),
              inputs=[*cfg_inputs, wfile, lst, label_file], outputs=[eval_dir / f for f in GRIDPG_OUTPUTS]),
        Stage("sanity", (python, _script("scripts/sanity_checks.py"), str(config), "--options", *opts, *list_opts),
              inputs=[*cfg_inputs, wfile, lst, label_file], outputs=[eval_dir / f for f in SANITY_OUTPUTS]),
        Stage("report", (python, _script("scripts/make_report.py"), str(paths.root), "--list", Path(lst).stem,
                         "--weights", Path(wts).stem, *(("--tag", tag) if tag else ())),
              inputs=[paths.config_file, csv, *(eval_dir / f for f in (
                  "ji_curve.json", "ji_curve_blob.json", "ece.json", "reliability.png", "map_metrics.json",
                  *VICE_OUTPUTS, *GRIDPG_OUTPUTS, *SANITY_OUTPUTS)),
                  # scripts/compare_methods.py's table and figure: a section of the report
                  *(paths.root / f for f in COMPARE_OUTPUTS)],
              outputs=[report]),
    ]
    stamps = paths.log_dir / (f"stages_{tag}.json" if tag else "stages.json")
    return StudyPlan(stages, paths.root, stamps, cam_dir, eval_dir, report, lst, wts,
                     describe_recipe(cfg))
