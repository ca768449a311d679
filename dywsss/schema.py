"""The typed schema of the config: every key's type, range or choices, checked before any work.

:data:`KEY_TYPES` is the one table of what each key accepts (the defaults stay
in ``config/_base_.py``); :func:`validate_config` checks every key present in
a config against it and raises one :class:`~dywsss.errors.ConfigError` listing
every bad key at once; stages add their own checks (timm model names, registered
methods, files named by ``pretrained``/``resume``) to the same message, e.g.
``config: cam_scales=(): needs at least one value; cam_flip='no': expected True or False``.
Booleans accept only True/False (``true``/``false`` on the command line), never
``no``, ``1`` or ``yes``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, Strict, StrictBool, StrictInt, TypeAdapter, ValidationError

from .errors import ConfigError

Int = StrictInt
PosInt = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Float = Annotated[float, Strict()]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0)]
UnitFloat = Annotated[float, Strict(), Field(ge=0, le=1)]
OpenUnitFloat = Annotated[float, Strict(), Field(gt=0, lt=1)]
Text = Annotated[str, Strict()]
Name = Annotated[str, Strict(), Field(min_length=1)]
Path_ = Name

#: Every documented key: type, range, choices. A key absent here is accepted as is.
KEY_TYPES: dict[str, Any] = {
    # environment
    "num_workers": Annotated[StrictInt, Field(ge=-1)],
    "local_rank": NonNegInt,
    "random_seed": NonNegInt,
    "deterministic": StrictBool,
    "device": Annotated[str, Strict(), Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")],
    "work_dir_root": Path_,
    # dataset
    "dataset": Text,
    "list_root": Path_, "voc12_root": Path_, "img_dir": Name, "gt_dir": Path_, "cls_label": Path_,
    "allow_pickle": StrictBool,
    "train_list": Path_, "val_list": Path_, "infer_list": Path_, "eval_list": Path_,
    "num_classes": Literal[20],
    # model
    "network": Name,
    "pretrained": StrictBool | Name,
    "pretrain": None | Name,
    "model_kwargs": dict[str, Any],
    # train
    "train_multi_scale": StrictBool,
    "finetune": StrictBool,
    "batch_size": PosInt,
    "max_epoches": PosInt,
    "max_steps_per_epoch": NonNegInt,
    "warmup_epochs": NonNegFloat,
    "lr_warmup": Literal["step", "epoch"],
    "finetune_bn": Literal["train", "frozen"],
    "val_drop_last": StrictBool,
    "vit_map_protocol": Literal["original", "toolkit"],
    "crop_size": PosInt,
    "resize_long": None | tuple[PosInt, PosInt],
    "color_jitter": None | dict[Literal["brightness", "contrast", "saturation", "hue"], NonNegFloat],
    "cut_p": UnitFloat,
    "cut_s": Annotated[float, Strict(), Field(gt=0.02, le=1)],
    "optimizer": dict[str, Any],
    "lr_scheduler": None | dict[str, Any],
    "amp": StrictBool,
    "channels_last": StrictBool,
    "compile": StrictBool,
    "resume": StrictBool | Name,
    "save_every_steps": NonNegInt,
    "adv_train": Literal["none", "pgd_l2", "pgd_linf", "advprop_l2", "advprop_linf"],
    "adv_eps": NonNegFloat,
    "adv_steps": PosInt,
    "adv_step_size": None | PosFloat,
    "adv_random_start": StrictBool,
    "adv_clean_loss": StrictBool,
    "log_interval": PosInt,
    "session_name": Text,
    # maps
    "gen_mask_for_multi_crop": StrictBool,
    "weights": Name,
    "cam_method": Name,
    "cam_scales": Annotated[tuple[Annotated[float, Strict(), Field(gt=0, le=8)], ...], Field(min_length=1)],
    "cam_flip": StrictBool,
    "cam_classes": Literal["gt", "pred", "all"],
    "cam_dtype": Literal["float16", "float32"],
    "cam_batch_size": PosInt,
    "cam_store_raw": StrictBool,
    "probe": Annotated[str, Strict()],
    "probe_hidden": NonNegInt,
    "probe_loss": Literal["bce", "ce"],
    "probe_bce_off_value": UnitFloat | Literal["1/C"],
    "probe_recipe": Literal["adam", "sgd"],
    "probe_lr": None | PosFloat,
    "probe_warmup_epochs": None | NonNegFloat,
    "probe_epochs": PosInt,
    "probe_batch_size": PosInt,
    "probe_augment": StrictBool,
    "probe_cache": StrictBool,
    "probe_cache_dir": Text,
    "attr_batch_size": PosInt,
    "perturbation_score": Literal["prob", "logit"],
    "ig_steps": PosInt,
    "ig_baseline": Literal["zero", "black"],
    "smoothgrad_samples": PosInt,
    "smoothgrad_sd": PosFloat,
    "occlusion_window": PosInt,
    "occlusion_stride": PosInt,
    "rise_masks": PosInt,
    "rise_grid": PosInt,
    "rise_p": Annotated[float, Strict(), Field(gt=0, le=1)],
    "lime_samples": PosInt,
    "lime_kernel_width": PosFloat,
    "overwrite": StrictBool,
    "map_tag": Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9._+-]*$")],
    # per-sample, ECE, VICE
    "loss_input": Literal["center_crop", "full_image"],
    "pred_threshold": OpenUnitFloat,
    "ji_definition": Literal["reference", "paper"],
    "eval_thresh": Annotated[float, Strict(), Field(ge=0, lt=1)],
    "ece_bins": PosInt,
    "ece_binning": Literal["width", "count"],
    "vice_bins": PosInt,
    "bootstrap": NonNegInt,
    "fignote": Text,
    "map_metrics": Annotated[tuple[Name, ...], Field(min_length=1)],
    "insdel_steps": PosInt,
    "insdel_batch_size": PosInt,
    "pg_tolerance": NonNegFloat,
    "gridpg_grid": Literal[2, 3],
    "gridpg_n_grids": PosInt,
    "gridpg_min_conf": UnitFloat,
    "gridpg_max_per_class": PosInt,
    "gridpg_smooth": Literal["mean5", "none"],
    "gridpg_seed": None | NonNegInt,
    "gridpg_batch_size": PosInt,
    "gridpg_n_examples": NonNegInt,
    "sanity_n_images": Annotated[StrictInt, Field(ge=3)],
    "sanity_seed": None | NonNegInt,
    "sanity_tolerance": OpenUnitFloat,
    "sanity_n_examples": NonNegInt,
}
_ADAPTERS = {key: TypeAdapter(tp) for key, tp in KEY_TYPES.items()}

_UNION_TAGS = frozenset({"bool", "str", "constrained-str", "none", "int", "float", "function-after", "dict"})
#: What a key with a pattern accepts, in words.
PATTERN_HINTS = {"device": "expected auto, cpu, cuda or cuda:N",
                 "map_tag": "use letters, digits and . _ + - only (it becomes part of folder names)"}
#: Keys that take True/False or a file path.
BOOL_OR_PATH = ("pretrained", "resume")


def _union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part)


def _phrase(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    where = " ".join(f"item {p}" if isinstance(p, int) else f"{p!r}" for p in err["loc"] if not _union_tag(p))
    if kind == "bool_type":
        text = "expected True or False"
    elif kind in ("int_type", "int_from_float"):
        text = "expected an integer"
    elif kind in ("float_type",):
        text = "expected a number"
    elif kind == "greater_than_equal":
        text = f"must be >= {ctx['ge']}"
    elif kind == "greater_than":
        text = f"must be > {ctx['gt']}"
    elif kind == "less_than_equal":
        text = f"must be <= {ctx['le']}"
    elif kind == "less_than":
        text = f"must be < {ctx['lt']}"
    elif kind == "literal_error":
        text = f"expected one of {ctx['expected']}"
    elif kind == "too_short":
        text = "needs at least one value"
    elif kind == "string_pattern_mismatch":
        text = "does not have the expected form"
    elif kind in ("string_too_short",):
        text = "must not be empty"
    else:
        text = err["msg"][0].lower() + err["msg"][1:]
    return f"{where} {text}".strip() if where and kind != "too_short" else text


def _type_problem(key: str, value: Any) -> str | None:
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        # for unions, report the most specific member's complaint (the last non-None one)
        errs = [e for e in exc.errors() if e["type"] != "none_required"]
        if any(e["loc"] for e in errs):  # an item's own error says more than the length check after it
            errs = [e for e in errs if e["type"] != "too_short"] or errs
        phrases = list(dict.fromkeys(_phrase(e) for e in errs)) or ["invalid value"]
        if key in BOOL_OR_PATH:
            phrases = ["expected True, False or a file path"]
        elif key in PATTERN_HINTS and any(e["type"] == "string_pattern_mismatch" for e in errs):
            phrases = [PATTERN_HINTS[key]]
        elif any(e["type"] == "bool_type" for e in errs):
            phrases = ["expected True or False"]
        return f"{key}={value!r}: {' and '.join(phrases[:2])}"
    return None


def _extra_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Cross-key and structural rules the type table cannot state."""
    out = []
    rl = cfg.get("resize_long")
    if isinstance(rl, (tuple, list)) and len(rl) == 2 and all(isinstance(v, int) for v in rl) and rl[0] > rl[1]:
        out.append(f"resize_long={tuple(rl)!r}: needs (lo, hi) with lo <= hi")
    cj = cfg.get("color_jitter")
    if isinstance(cj, Mapping) and isinstance(cj.get("hue"), (int, float)) and cj["hue"] > 0.5:
        out.append(f"color_jitter.hue={cj['hue']!r}: must be <= 0.5")
    opt = cfg.get("optimizer")
    if isinstance(opt, Mapping):
        lr = opt.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0:
            out.append(f"optimizer.lr={lr!r}: must be a number >= 0")
    if cfg.get("lr_warmup") == "epoch" and isinstance(cfg.get("warmup_epochs"), float) and \
            cfg["warmup_epochs"] != int(cfg["warmup_epochs"]):
        out.append(f"warmup_epochs={cfg['warmup_epochs']!r}: lr_warmup=epoch needs a whole number of epochs")
    if "session_name" in cfg and isinstance(cfg["session_name"], str) and ("/" in cfg["session_name"] or
                                                                         cfg["session_name"] in (".", "..")):
        out.append(f"session_name={cfg['session_name']!r}: must be a plain folder name (no '/')")
    return out


def config_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Every key of ``cfg`` that breaks :data:`KEY_TYPES` or a cross-key rule, as ``key=value: why``."""
    problems = [p for key, value in cfg.items() if (p := _type_problem(key, value))]
    return problems + _extra_problems(cfg)


def session_problems(cfg: Mapping[str, Any]) -> list[str]:
    return [] if cfg.get("session_name") else ["session_name='': pass --options session_name=NAME"]


def network_problems(cfg: Mapping[str, Any]) -> list[str]:
    """``network`` must be a timm model name (close names suggested)."""
    name = cfg.get("network")
    if not isinstance(name, str):
        return []
    import timm

    if timm.is_model(name):
        return []
    import difflib

    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    return [f"network={name!r}: not a timm model" + (f" (similar: {', '.join(close)})" if close else "")]


def file_key_problems(cfg: Mapping[str, Any], keys: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Keys whose string value names a file that does not exist (values in ``keep`` are names, not files)."""
    keep = set(keep) | {"true", "false", "none", "True", "False", "None"}
    return [f"{key}={cfg[key]!r}: file not found" for key in keys
            if isinstance(cfg.get(key), str) and cfg[key] and cfg[key] not in keep and not Path(cfg[key]).is_file()]


def raise_problems(problems: Iterable[str]) -> None:
    """One :class:`ConfigError` listing all ``problems`` (nothing when there are none)."""
    problems = list(dict.fromkeys(problems))
    if problems:
        raise ConfigError(f"config: {'; '.join(problems)}")


def validate_config(cfg: Mapping[str, Any], *extra: list[str]) -> None:
    """Check every key's type and range, plus ``extra`` problem lists a stage found; raise once."""
    raise_problems(config_problems(cfg) + [p for problems in extra for p in problems])
