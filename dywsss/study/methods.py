"""Compare attribution methods on one trained model with the existing stages (issue 12).

For a trained session ``work_dirs/<S>`` and methods ``a, b, c``, each method runs the
evaluation stages of :func:`dywsss.stages.study_stages` (maps, JI curve, per-sample
loss and map metrics, ECE_ML, VICE of every metric) with ``cam_method=<m>
map_tag=<m>``: its maps go to ``test/cam_<list>_<weights>_<m>/``, its metrics to
``eval/<list>_<weights>_<m>/``, its stage record to ``log/stages_<m>.json``. So a
finished method is skipped by the stage runner, an interrupted one resumes, and
nothing of the trained stages (or of the session's own, untagged evaluation) is
touched. Every method's ``map_metrics`` includes EPG, PG, insertion and deletion
(with the config's ``insdel_steps``). Then :func:`dywsss.report.compare.collect_comparison`
reads the methods' outputs through ``load_run`` (which refuses stale ones) and
:func:`dywsss.report.compare.write_comparison` writes ``compare_methods.*``.

Everything is checked before any work: the session, its weights, the method names,
the options (keys and values, as every stage does), and each method's explainer is
built on the trained network, so a method the network cannot use (``lrp`` on a ViT,
``guided_backprop`` without ReLUs, ``cam`` and the Grad-CAM family on a ViT, whose
features are tokens) or a bad method parameter is a one-line ``ConfigError`` naming it.
The table is read from the evaluation the stages wrote: the list and weights of the
stages' plan (``--list``/``--weights``, ``--options eval_list=... weights=...`` or the
config's), never guessed from the session.

Option routing, so that changing one method's parameter redoes only that method:
a method parameter (a key that a compared method's explainer reports in its
``meta()``, e.g. ``rise_masks``) reaches only the methods that use it, and the
metric settings (:data:`METRIC_KEYS`) reach only the metric stages, not the maps.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ConfigError, MissingInputError
from ..report.compare import REQUIRED_MAP_METRICS, Comparison, collect_comparison, write_comparison
from ..stages import Stage, run_stages, study_stages
from .evaluation import EVAL_STAGES

PathLike = str | os.PathLike
#: Settings read only by the per-sample and VICE stages: kept out of the map stage's command, so that
#: changing them redoes the metrics but not the maps.
METRIC_KEYS: frozenset[str] = frozenset({"map_metrics", "insdel_steps", "insdel_batch_size", "pg_tolerance",
                                         "bootstrap", "vice_bins"})
#: The session's saved config.py records the pipeline switches of its training run; these keep the map
#: stage from training again (train_multi_scale) or redoing finished maps (overwrite).
SESSION_RESETS: tuple[str, ...] = ("train_multi_scale=False", "resume=False", "overwrite=False")


@dataclass(frozen=True)
class MethodPlan:
    """The evaluation stages of one method and where they record and write."""

    method: str
    tag: str
    stages: list[Stage]
    stamp_file: Path
    cam_dir: Path
    eval_dir: Path
    #: The evaluation list and the weights file (name in ``model/``) its stages use.
    list_file: Path
    weights: str


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"a,b,c"`` -> registered method names, in order; a one-line ConfigError for an unknown or repeated name."""
    from ..explain import EXPLAINERS

    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ConfigError("--methods: name at least one attribution method, e.g. --methods cam,gradcam,gradient")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--methods: {', '.join(repeated)} named twice")
    for n in names:
        if n not in EXPLAINERS:
            EXPLAINERS.get(n)  # raises UnknownNameError: "unknown attribution method 'x'; did you mean ...?"
    return names


def parse_options(options: Sequence[str]) -> dict[str, str]:
    """``key=value`` strings -> {key: value text} (the value as typed; the config loader parses it)."""
    out = {}
    for o in options:
        if "=" not in o:
            raise ConfigError(f"--options takes key=value pairs, got {o!r}")
        key, value = o.split("=", 1)
        if key in ("cam_method", "map_tag", "session_name", "work_dir_root"):
            raise ConfigError(f"--options {key}=...: set by compare_methods (the methods come from --methods, "
                              "the session from SESSION)")
        out[key] = value
    return out


def session_config(session: Path, config: PathLike | None) -> Path:
    """The config the stages read: ``config`` or the session's saved ``config.py``; errors name the file."""
    if not session.is_dir():
        raise MissingInputError(f"{session}: session directory not found (work_dirs/<session_name> of a trained run)")
    path = Path(config) if config else session / "config.py"
    if not path.is_file():
        raise MissingInputError(f"{path}: config not found" + ("" if config else
                                "; the session has not been trained, or pass --config CONFIG"))
    return path


def _load(config: Path, session: Path, options: Mapping[str, str]) -> Any:
    """The merged, validated config with ``options`` (values parsed as on the command line)."""
    import argparse

    from ..config import add_config_args, load_config

    strings = [*_base_options(session), *(f"{k}={v}" for k, v in options.items())]
    parsed = add_config_args(argparse.ArgumentParser()).parse_args([str(config), "--options", *strings]).options
    return load_config(config, parsed)


def _base_options(session: Path) -> list[str]:
    return [*SESSION_RESETS, f"work_dir_root={session.parent}", f"session_name={session.name}"]


def metric_list(cfg: Any, options: Mapping[str, str]) -> str:
    """``map_metrics=[...]``: the configured (or given) metrics plus any of EPG, PG, insertion, deletion missing."""
    from ..metrics.map_metrics import check_metric_names

    given = list(check_metric_names(cfg.get("map_metrics")))
    return "map_metrics=[" + ",".join(given + [m for m in REQUIRED_MAP_METRICS if m not in given]) + "]"


def method_parameter_keys(cfg: Any, methods: Sequence[str]) -> dict[str, set[str]]:
    """Build each method's explainer on the session's trained network (CPU) and return the config keys it
    reports as its parameters; a method the network or the config cannot use is a ConfigError naming it."""
    from ..explain import EXPLAINERS
    from ..models.spec import load_session_model

    trained = load_session_model(cfg, "cpu")
    known = set(cfg.to_dict())
    keys = {}
    for m in methods:
        mcfg = cfg.copy()
        mcfg.cam_method = m
        try:
            explainer = EXPLAINERS.get(m)(trained.model, mcfg)
        except ConfigError as exc:
            raise ConfigError(f"--methods {m}: {exc}") from None
        meta = getattr(explainer, "meta", None)
        keys[m] = {k for k in (meta() if callable(meta) else {}) if k in known}
        del explainer
    return keys


def route_options(options: Mapping[str, str], method: str, param_keys: Mapping[str, set[str]]) -> list[str]:
    """The user's options one method receives: all but the parameters of the *other* compared methods."""
    others = set().union(*(k for m, k in param_keys.items() if m != method)) - param_keys.get(method, set())
    return [f"{k}={v}" for k, v in options.items() if k not in others]


def plan_methods(session: PathLike, methods: Sequence[str], config: PathLike | None = None,
                 options: Sequence[str] = (), list_file: str | None = None, weights: str | None = None,
                 check_explainers: bool = True) -> list[MethodPlan]:
    """The stages of every method (nothing runs); raises before any work on a bad session, name or option."""
    session = Path(session)
    config = session_config(session, config)
    methods = parse_methods(methods)
    opts = parse_options(options)
    cfg = _load(config, session, {**opts, **({"weights": weights} if weights else {})})  # all problems at once
    param_keys = method_parameter_keys(cfg, methods) if check_explainers else {m: set() for m in methods}
    metrics = metric_list(cfg, opts)
    plans = []
    for m in methods:
        mine = [*_base_options(session), *route_options(opts, m, param_keys),
                f"cam_method={m}", f"map_tag={m}"]
        map_opts = [o for o in mine if o.split("=", 1)[0] not in METRIC_KEYS]
        maps_plan = study_stages(config, session.name, map_opts, list_file, weights)
        metric_plan = study_stages(config, session.name, [*mine, metrics], list_file, weights)
        stages = [s for s in maps_plan.stages if s.name in ("maps", "ji_curve")] + \
                 [s for s in metric_plan.stages if s.name in EVAL_STAGES and s.name not in ("maps", "ji_curve")]
        plans.append(MethodPlan(m, m, stages, maps_plan.stamp_file, maps_plan.cam_dir, maps_plan.eval_dir,
                                maps_plan.list_file, maps_plan.weights))
    return plans


def _run_one(plan: MethodPlan, force: bool, dry_run: bool, log_file: Path | None,
             env: Mapping[str, str] | None) -> list[str]:
    prefix = f"[{plan.method}] "
    if log_file is None:
        return run_stages(plan.stages, plan.stamp_file, force=force, dry_run=dry_run,
                          log=lambda s: print(prefix + s, flush=True))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as fh:
        def log(s: str) -> None:
            fh.write(s + "\n")
            fh.flush()
            print(prefix + s.splitlines()[0], flush=True)

        return run_stages(plan.stages, plan.stamp_file, force=force, dry_run=dry_run, log=log, stdout=fh,
                          env={**os.environ, **(env or {})})


def run_method_plans(plans: Sequence[MethodPlan], jobs: int = 1, force: Iterable[str] | bool = (),
                     dry_run: bool = False) -> dict[str, list[str]]:
    """Run each method's stages (``jobs`` methods at a time; with more than one, each method's stage output
    goes to ``<session>/log/compare_<method>.log``); returns {method: stages run}. A dry run only prints what
    would run, one method after the other, and writes nothing."""
    forced = {p.method for p in plans} if force is True else set(force or ())
    unknown = forced - {p.method for p in plans}
    if unknown:
        raise ConfigError(f"--force: {', '.join(sorted(unknown))} not among --methods")
    if dry_run or jobs <= 1 or len(plans) <= 1:
        return {p.method: _run_one(p, p.method in forced, dry_run, None, None) for p in plans}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {p.method: pool.submit(_run_one, p, p.method in forced, dry_run,
                                         p.stamp_file.parent / f"compare_{p.tag}.log", env) for p in plans}
        return {m: f.result() for m, f in futures.items()}


def compare_methods(session: PathLike, methods: Sequence[str] | str, config: PathLike | None = None,
                    options: Sequence[str] = (), jobs: int = 1, force: Iterable[str] | bool = (),
                    dry_run: bool = False, list_file: str | None = None, weights: str | None = None,
                    refresh_report: bool = True, log: Callable[[str], None] = print) -> Comparison | None:
    """Run the methods' stages on the session, then write ``compare_methods.{csv,md,tex,png,json}`` into it
    and (when the session has a ``report.html``) refresh the report so it shows them. ``dry_run`` only prints
    what would run and returns None."""
    session = Path(session)
    plans = plan_methods(session, methods, config, options, list_file, weights)
    lst, wts = evaluation_of(plans)  # what the stages write, so what the table is read from
    ran = run_method_plans(plans, jobs, force, dry_run)
    if dry_run:
        return None
    for m, names in ran.items():
        log(f"[{m}] {'ran ' + ', '.join(names) if names else 'up to date, nothing ran'}")
    comparison = collect_comparison(session, {p.method: p.tag for p in plans}, lst, wts)
    title = f"{session.name}: {len(plans)} methods"
    for path in write_comparison(session, comparison, title):
        log(f"wrote {path}")
    if refresh_report and (session / "report.html").is_file():
        _refresh_report(session, comparison, log)
    return comparison


def evaluation_of(plans: Sequence[MethodPlan]) -> tuple[str, str]:
    """(list stem, weights stem) of the evaluation the plans' stages write, which the table is read from."""
    evals = {(p.list_file.stem, Path(p.weights).stem) for p in plans}
    if len(evals) != 1:
        raise ConfigError("--methods: the methods would be evaluated on different lists or weights "
                          f"({', '.join(sorted('/'.join(e) for e in evals))}); compare them on one")
    return evals.pop()


def _refresh_report(session: Path, comparison: Comparison, log: Callable[[str], None]) -> None:
    from ..errors import StaleError
    from ..report.html import write_report
    from ..report.summary import RunNotFinished

    try:
        path = write_report(session, comparison.record["list"], comparison.record["weights"])
    except (StaleError, RunNotFinished) as exc:
        log(f"report not refreshed ({exc}); the methods' table and figure are in {session}")
        return
    log(f"report: {path} (section 'Methods compared')")


__all__ = ["METRIC_KEYS", "MethodPlan", "compare_methods", "evaluation_of", "method_parameter_keys",
           "parse_methods", "plan_methods", "route_options", "run_method_plans"]
