"""A study config: models, methods, metrics, consensus, OOD sets and how to run them (docs/STUDIES.md).

A study file is an mmengine config (``config/studies/demo_study.py``); every key
below is optional except ``study_name`` and ``models``. It is read and checked
here, before anything runs: each model's base config is loaded with the study's
``options`` and its own overrides (so an unknown key or a missing file is
reported up front, naming the model), methods are resolved per model (CNN or
ViT), names are checked.

Each model is one session (``runs/<model>/``): its first method is the run's own
(``cam_method``, no ``map_tag``); every other method ``m`` is evaluated in the same
session with ``cam_method=<m's cam_method> map_tag=m`` (its maps in
``test/cam_<list>_<weights>_m/``, its metrics in ``eval/<list>_<weights>_m/``).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmengine.config import Config, DictAction

from ..config import ConfigKeyError, data_path, load_config
from ..errors import ConfigError, MissingInputError
from ..schema import network_problems
from ..recipe import TRANSFORMER_MARKERS

PathLike = str | os.PathLike
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
FAMILIES = ("cnn", "vit")
BACKENDS = ("local", "submitit")
# characters mmengine's --options parser (DictAction) would split or strip
_UNSAFE = re.compile(r"[\s,\[\]()'\"]")
#: stages of scripts/run_stages.py a study may leave out (nothing the study reads depends on them)
OPTIONAL_STAGES = ("blob_maps", "blob_curve", "gridpg", "sanity")
#: options the study runner sets itself (fignote: ``<model>/<method>``, the label of every figure)
RUNNER_KEYS = ("session_name", "work_dir_root", "cam_method", "map_tag", "fignote")
#: options that fix the network's input size: a joined run is evaluated at its own unless the model says otherwise
INPUT_SIZE_KEYS = ("crop_size", "resize_long")
#: where the consensus reads each member's map: auto (raw when every member stored it), raw, maps
CONSENSUS_SOURCES = ("auto", "raw", "maps")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study: ``config`` + ``options`` to train, or an existing ``session`` folder.

    ``options`` are the study's common options followed by the model's own; ``probe`` is the
    probe head (``probe`` key) when the model is a probe on a frozen backbone, else "".
    """

    name: str
    config: Path
    options: tuple[str, ...]
    family: str
    methods: tuple[str, ...]
    eval_list: str
    weights: str
    session: Path | None = None
    probe: str = ""

    @property
    def trains(self) -> bool:
        return self.session is None

    @property
    def own_method(self) -> str:
        """The method the session itself runs (no ``map_tag``); the others are tagged."""
        return self.methods[0]


@dataclass(frozen=True)
class ConsensusSpec:
    enabled: bool = True
    rule: str = "l2"
    similarity: str | None = None
    sizes: tuple[int, ...] | None = None
    trials: int = 10
    seed: int = 0
    ap_pairs: int | None = None
    swap_evaluated: tuple[str, ...] = ()
    swap_extra: tuple[int, int] = (1, 3)
    swap_trials: int = 0
    write_maps: bool = True
    source: str = "auto"


@dataclass(frozen=True)
class OODSpec:
    """Corrupted copies of ``source`` (list, voc12_root, cls_label) and/or a demo generator shift."""

    source: dict[str, str] = field(default_factory=dict)
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = ()
    seed: int = 0
    jpeg_quality: int = 95
    shift_args: str | None = None
    trees: tuple[Path, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.corruptions and self.severities) or self.shift_args is not None or bool(self.trees)


@dataclass(frozen=True)
class ReportSpec:
    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0
    primary_method: str | None = None
    metrics: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExecutionSpec:
    backend: str = "local"
    jobs: int = 0
    threads_per_cell: int = 0
    submitit: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: Path
    root: Path
    python: str
    models: tuple[ModelSpec, ...]
    methods: dict[str, dict[str, str]]
    data_args: str | None
    consensus: ConsensusSpec
    ood: OODSpec
    report: ReportSpec
    execution: ExecutionSpec
    skip_stages: tuple[str, ...] = ()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def ood_dir(self) -> Path:
        return self.root / "ood"

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def cam_method(self, model: ModelSpec, method: str) -> str:
        """The ``cam_method`` value of a study method for a model's family."""
        return self.methods[method][model.family]

    def session_dir(self, model: ModelSpec) -> Path:
        """The model's one session: ``runs/<model>/`` (every method of the model lives there)."""
        return self.runs_dir / model.name

    def map_tag(self, model: ModelSpec, method: str) -> str:
        """``map_tag`` of a method in the model's session: "" for its own method, else the method's name."""
        if method not in model.methods:
            raise KeyError(f"model {model.name!r} has no method {method!r}")
        return "" if method == model.own_method else method

    def cell_name(self, model: ModelSpec, method: str) -> str:
        return f"{model.name}_{method}"


# ------------------------------------------------------------------ parsing
def format_option(key: str, value: Any, where: str) -> str:
    """``key=value`` as mmengine's ``--options`` parses it back to ``value``."""
    def text(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return str(v)
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            inner = ",".join(text(x) for x in v)
            return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
        if isinstance(v, (str, os.PathLike)):
            s = str(v)
            if not s or _UNSAFE.search(s) or s in ("True", "False", "None") or _is_number(s):
                raise ConfigError(f"{where}: option {key}={s!r} cannot pass through --options "
                                  "(empty, a number/bool-like string, or spaces, commas, brackets or quotes)")
            return s
        raise ConfigError(f"{where}: option {key}={v!r}: only numbers, bools, None, strings, lists and tuples pass "
                          "through --options; use dotted keys (optimizer.lr=0.01) for dicts")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", str(key)):
        raise ConfigError(f"{where}: bad option key {key!r}")
    return f"{key}={text(value)}"


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings parsed as ``--options`` parses them (mmengine's DictAction)."""
    if not options:
        return {}
    parser = argparse.ArgumentParser()
    parser.add_argument("--options", nargs="+", action=DictAction)
    return dict(parser.parse_args(["--options", *options]).options)


def _options(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        return tuple(format_option(k, v, where) for k, v in raw.items())
    if isinstance(raw, (list, tuple)) and all(isinstance(o, str) and "=" in o for o in raw):
        return tuple(raw)
    raise ConfigError(f"{where}: options must be a dict {{key: value}} or a list of 'key=value' strings, got {raw!r}")


def _family(network: str) -> str:
    return "vit" if any(m in network.lower() for m in TRANSFORMER_MARKERS) else "cnn"


def _methods(raw: Any, path: Path) -> dict[str, dict[str, str]]:
    if raw is None:
        raw = {"cam": {"cnn": "cam", "vit": "transformer_attribution"}}
    if isinstance(raw, (list, tuple)):
        raw = {m: m for m in raw}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{path}: methods must be a list of cam_method names or a dict "
                          "{study method: cam_method | dict(cnn=..., vit=...)}")
    from ..explain import EXPLAINERS

    out = {}
    for name, value in raw.items():
        if not NAME_RE.match(str(name)):
            raise ConfigError(f"{path}: method name {name!r}: use letters, digits, _ . + -")
        if isinstance(value, str):
            out[str(name)] = {f: value for f in FAMILIES}
        elif isinstance(value, Mapping) and set(value) <= set(FAMILIES) and value:
            out[str(name)] = {f: str(value[f]) for f in value}
        else:
            raise ConfigError(f"{path}: methods.{name}: expected a cam_method name or dict(cnn=..., vit=...), "
                              f"got {value!r}")
        unknown = sorted({v for v in out[str(name)].values() if v not in EXPLAINERS})
        if unknown:
            raise ConfigError(f"{path}: methods.{name}: {', '.join(map(repr, unknown))} is not an attribution method "
                              f"(known: {', '.join(EXPLAINERS.names())})")
    return out


def _model(raw: Any, i: int, path: Path, methods: Mapping[str, Mapping[str, str]],
           eval_list: str | None, weights: str | None, common: tuple[str, ...] = ()) -> ModelSpec:
    where = f"{path}: models[{i}]"
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"{where}: each model is a dict with a 'name' and a 'config' (or a 'session')")
    name = str(raw["name"])
    where = f"{path}: model {name!r}"
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: name must use letters, digits, _ . + - (it names folders)")
    unknown = set(raw) - {"name", "config", "options", "session", "methods"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                          "(known: name, config, options, session, methods)")
    session = Path(raw["session"]) if raw.get("session") else None
    if session is not None:
        if "config" in raw:
            raise ConfigError(f"{where}: give either config (to train) or session (an existing run), not both")
        if not (session / "config.py").is_file() or not (session / "model").is_dir():
            raise MissingInputError(f"{session}: not a finished run (needs config.py and model/); model {name!r}")
        config = session / "config.py"
    else:
        if "config" not in raw:
            raise ConfigError(f"{where}: needs 'config' (a base config file) or 'session' (an existing run)")
        config = Path(raw["config"])
    merged: dict[str, str] = {}  # the model's own options override the study's
    for o in (*common, *_options(raw.get("options"), where)):
        merged.pop(o.split("=", 1)[0], None)
        merged[o.split("=", 1)[0]] = o
    options = tuple(merged.values())
    for o in options:
        if o.split("=", 1)[0] in RUNNER_KEYS:
            raise ConfigError(f"{where}: option {o.split('=', 1)[0]} is set by the study runner "
                              f"({', '.join(RUNNER_KEYS)}; fignote=<model>/<method>)")
    cfg = _load_model_config(config, options, where)
    if session is not None:
        _check_input_size(session, cfg, parse_options(_options(raw.get("options"), where)), where)
    problems = network_problems(cfg)
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")
    family = _family(str(cfg.network))
    chosen = tuple(raw.get("methods") or methods)
    bad = [m for m in chosen if m not in methods]
    if bad:
        raise ConfigError(f"{where}: methods {bad} are not among the study's methods {list(methods)}")
    missing = [m for m in chosen if family not in methods[m]]
    if missing:
        raise ConfigError(f"{where}: method {missing[0]!r} has no cam_method for {family} models "
                          f"(give dict({family}=...) or leave it out with methods=[...])")
    for i, m in enumerate(chosen):  # each method's cell config, as the runner will pass it
        _load_model_config(config, (*options, f"cam_method={methods[m][family]}", *((f"map_tag={m}",) if i else ())),
                           f"{where}, method {m!r}")
    lst = str(eval_list or cfg.get("eval_list") or cfg.get("infer_list"))
    return ModelSpec(name, config, options, family, chosen, str(data_path(cfg, lst)), str(weights or cfg.weights),
                     session, str(cfg.get("probe") or ""))


def _plain(v: Any) -> Any:
    """Lists as tuples (mmengine keeps a tuple option as a tuple, a saved config may hold a list)."""
    return tuple(_plain(x) for x in v) if isinstance(v, (list, tuple)) else v


def _check_input_size(session: Path, cfg: Config, own: Mapping[str, Any], where: str) -> None:
    """A joined run keeps the input size it was trained at: a study option that changes ``crop_size`` or
    ``resize_long`` from the run's ``config.py`` is refused unless the model's own options set it."""
    saved = _load_model_config(session / "config.py", (), where)
    for key in INPUT_SIZE_KEYS:
        if key not in own and _plain(cfg.get(key)) != _plain(saved.get(key)):
            raise ConfigError(f"{where}: the study's option {key}={_plain(cfg.get(key))} contradicts the joined run's "
                              f"{session / 'config.py'} ({key}={_plain(saved.get(key))}); the model was trained at that "
                              f"input size: drop it from the study's options or set {key} in this model's own options")


def _load_model_config(config: Path, options: Sequence[str], where: str) -> Config:
    """A model's merged and validated config; errors name the model (and method)."""
    try:
        return load_config(config, parse_options(options))
    except (ConfigKeyError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except FileNotFoundError as exc:
        raise MissingInputError(f"{where}: {exc}") from None


def _tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def load_study(path: PathLike, work_dir: PathLike | None = None) -> StudySpec:
    """Read and check a study config; see docs/STUDIES.md for the keys."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: study config not found")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises SyntaxError, KeyError, ...
        raise ConfigError(f"{path}: unreadable study config ({exc})") from None
    name = str(cfg.get("study_name") or "")
    if not NAME_RE.match(name):
        raise ConfigError(f"{path}: study_name {name!r}: set it (letters, digits, _ . + -); it names work_dirs/<study>")
    known = {"study_name", "work_dir", "python", "data", "models", "methods", "eval_list", "weights", "consensus",
             "ood", "report", "execution", "metrics", "options", "skip_stages"}
    unknown = sorted(k for k in cfg.keys() if k not in known and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    methods = _methods(cfg.get("methods"), path)
    raw_models = cfg.get("models") or []
    if not raw_models:
        raise ConfigError(f"{path}: models is empty")
    common = _options(cfg.get("options"), f"{path}: options")
    models = tuple(_model(m, i, path, methods, cfg.get("eval_list"), cfg.get("weights"), common)
                   for i, m in enumerate(raw_models))
    names = [m.name for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: model names repeat: {', '.join(dup)}")
    root = Path(work_dir or cfg.get("work_dir") or Path("work_dirs") / name)
    data = cfg.get("data") or {}
    spec = StudySpec(
        name=name, path=path, root=root, python=str(cfg.get("python") or sys.executable), models=models,
        methods=methods, data_args=data.get("demo_args"), consensus=_consensus(cfg.get("consensus") or {}, path, names),
        ood=_ood(cfg.get("ood") or {}, path), report=_report(cfg.get("report") or {}, cfg.get("metrics"), path, methods),
        execution=_execution(cfg.get("execution") or {}, path), skip_stages=_skip_stages(cfg.get("skip_stages"), path),
    )
    _check_metrics(spec)
    return spec


def _check_metrics(spec: StudySpec) -> None:
    """Each name of the study's ``metrics`` must be a column ``models.csv`` can have (a typo is an error
    here, before any work; a known column that has no values when collecting is a note there)."""
    if spec.report.metrics is None:
        return
    from ..report.study import MODEL_COLUMNS, known_columns

    stems = [stem for _, stem in ood_trees(spec)]
    known = known_columns(list(spec.methods), stems)
    bad = [m for m in spec.report.metrics if m not in known]
    if bad:
        per_method = [c.rsplit(":", 1)[0] for c in known_columns(list(spec.methods)[:1]) if ":" in c]
        model_level = [*MODEL_COLUMNS, *(f"ood_map:{s}" for s in stems)]
        raise ConfigError(f"{spec.path}: metrics: {', '.join(map(repr, bad))} cannot be a models.csv column; "
                          f"available: {', '.join(model_level)}, and <q>:<method> for method in "
                          f"{', '.join(spec.methods)} and q in {', '.join(per_method)}")


def _skip_stages(raw: Any, path: Path) -> tuple[str, ...]:
    skip = tuple(str(s) for s in _tuple(raw if raw is not None else ()) if s)
    bad = [s for s in skip if s not in OPTIONAL_STAGES]
    if bad:
        raise ConfigError(f"{path}: skip_stages {bad}: only {', '.join(OPTIONAL_STAGES)} may be left out "
                          "(the study reads the other stages' outputs)")
    return skip


def _checked(raw: Mapping, allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(allowed)})")


def _consensus(raw: Mapping, path: Path, names: Sequence[str]) -> ConsensusSpec:
    from ..metrics.consensus import SIMILARITIES, VOTING_RULES

    where = f"{path}: consensus"
    _checked(raw, ("enabled", "rule", "similarity", "sizes", "trials", "seed", "ap_pairs", "swap", "write_maps",
                   "source"), where)
    rule = str(raw.get("rule", "l2"))
    if rule not in VOTING_RULES:
        raise ConfigError(f"{where}.rule={rule!r}: choose one of {', '.join(VOTING_RULES.names())}")
    sim = raw.get("similarity")
    if sim is not None and sim not in SIMILARITIES:
        raise ConfigError(f"{where}.similarity={sim!r}: choose one of {', '.join(SIMILARITIES)} (or None: the rule's)")
    swap = raw.get("swap") or {}
    _checked(swap, ("evaluated", "extra", "trials"), f"{where}.swap")
    evaluated = tuple(str(n) for n in swap.get("evaluated", ()))
    bad = [n for n in evaluated if n not in names]
    if bad:
        raise ConfigError(f"{where}.swap.evaluated: {bad} are not model names ({', '.join(names)})")
    sizes = raw.get("sizes")
    source = str(raw.get("source", "auto"))
    if source not in CONSENSUS_SOURCES:
        raise ConfigError(f"{where}.source={source!r}: choose one of {', '.join(CONSENSUS_SOURCES)} (raw: the signed "
                          "attributions the map stage stores with cam_store_raw=True; maps: the normalised maps)")
    return ConsensusSpec(
        enabled=bool(raw.get("enabled", True)), rule=rule, similarity=sim,
        sizes=None if sizes is None else tuple(int(s) for s in _tuple(sizes)), trials=int(raw.get("trials", 10)),
        seed=int(raw.get("seed", 0)), ap_pairs=None if raw.get("ap_pairs") is None else int(raw["ap_pairs"]),
        swap_evaluated=evaluated, swap_extra=tuple(int(v) for v in swap.get("extra", (1, 3))),
        swap_trials=int(swap.get("trials", 10 if evaluated else 0)), write_maps=bool(raw.get("write_maps", True)),
        source=source,
    )


def _ood(raw: Mapping, path: Path) -> OODSpec:
    from ..data.corruptions import CORRUPTIONS, SEVERITIES

    where = f"{path}: ood"
    _checked(raw, ("source", "corruptions", "severities", "seed", "jpeg_quality", "shift", "trees"), where)
    corruptions = tuple(str(c) for c in _tuple(raw.get("corruptions", ())) if c)
    for c in corruptions:
        if c not in CORRUPTIONS:
            raise ConfigError(f"{where}.corruptions: {c!r} unknown (known: {', '.join(CORRUPTIONS.names())})")
    severities = tuple(int(s) for s in _tuple(raw.get("severities", ())) if s is not None)
    if any(s not in SEVERITIES for s in severities):
        raise ConfigError(f"{where}.severities={list(severities)}: each must be in 1..5")
    if bool(corruptions) != bool(severities):
        given, absent = ("corruptions", "severities") if corruptions else ("severities", "corruptions")
        raise ConfigError(f"{where}.{given}={list(corruptions or severities)} without {absent}: every corruption is "
                          f"made at every severity, so give both (or neither)")
    source = dict(raw.get("source") or {})
    if corruptions:
        _checked(source, ("list", "voc12_root", "cls_label"), f"{where}.source")
        missing = [k for k in ("list", "voc12_root", "cls_label") if k not in source]
        if missing:
            raise ConfigError(f"{where}.source: needs {', '.join(missing)} (the clean tree to corrupt)")
    shift = raw.get("shift")
    shift_args = None
    if shift:
        _checked(shift, ("demo_args",), f"{where}.shift")
        shift_args = str(shift["demo_args"])
        if "--out" not in shlex.split(shift_args):
            raise ConfigError(f"{where}.shift.demo_args: must name --out (the shifted tree's folder)")
    return OODSpec(source={k: str(v) for k, v in source.items()}, corruptions=corruptions, severities=severities,
                   seed=int(raw.get("seed", 0)), jpeg_quality=int(raw.get("jpeg_quality", 95)), shift_args=shift_args,
                   trees=tuple(Path(t) for t in _tuple(raw.get("trees", ())) if t))


def _report(raw: Mapping, metrics: Any, path: Path, methods: Mapping[str, Any]) -> ReportSpec:
    where = f"{path}: report"
    _checked(raw, ("n_boot", "level", "seed", "primary_method"), where)
    primary = raw.get("primary_method")
    if primary is not None and primary not in methods:
        raise ConfigError(f"{where}.primary_method={primary!r}: not among the methods {list(methods)}")
    level = float(raw.get("level", 0.95))
    if not 0 < level < 1:
        raise ConfigError(f"{where}.level={level}: must be in (0, 1)")
    return ReportSpec(n_boot=int(raw.get("n_boot", 2000)), level=level, seed=int(raw.get("seed", 0)),
                      primary_method=primary, metrics=None if metrics is None else tuple(str(m) for m in metrics))


def _execution(raw: Mapping, path: Path) -> ExecutionSpec:
    where = f"{path}: execution"
    _checked(raw, ("backend", "jobs", "threads_per_cell", "submitit"), where)
    backend = str(raw.get("backend", "local"))
    if backend not in BACKENDS:
        raise ConfigError(f"{where}.backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    return ExecutionSpec(backend=backend, jobs=int(raw.get("jobs", 0)),
                         threads_per_cell=int(raw.get("threads_per_cell", 0)), submitit=dict(raw.get("submitit") or {}))


def data_out(demo_args: str) -> Path:
    """The ``--out`` folder of ``scripts/make_demo_voc.py`` arguments (its default: data/demo)."""
    args = shlex.split(demo_args)
    return Path(args[args.index("--out") + 1]) if "--out" in args else Path("data/demo")


def _shift_list_stem(demo_args: str) -> str:
    """The list stem of the shifted demo set (``val_<shift tag>``), from ``scripts/make_demo_voc.py`` arguments."""
    import argparse

    from ..data.demo import DemoShift

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--hue-shift", type=float, default=0.0)
    p.add_argument("--background", default="clutter")
    known, _ = p.parse_known_args(shlex.split(demo_args))
    shift = DemoShift(known.hue_shift, known.background)
    if shift.is_identity:
        raise ConfigError(f"ood.shift.demo_args={demo_args!r}: no shift (give --hue-shift and/or --background)")
    return f"val_{shift.tag}"


def ood_trees(spec: StudySpec) -> list[tuple[Path, str]]:
    """Every OOD tree of the study with its list stem (known before the tree exists): corrupted
    copies, the shifted demo set, and existing trees listed in ``ood.trees`` (read from their manifest)."""
    from ..data.corruptions import ood_list_name, read_ood_manifest

    trees = [(spec.ood_dir / f"{c}_s{s}", Path(ood_list_name(spec.ood.source["list"], c, s)).stem)
             for c in spec.ood.corruptions for s in spec.ood.severities]
    if spec.ood.shift_args is not None:
        trees.append((data_out(spec.ood.shift_args), _shift_list_stem(spec.ood.shift_args)))
    return trees + [(t, read_ood_manifest(t).name) for t in spec.ood.trees]
