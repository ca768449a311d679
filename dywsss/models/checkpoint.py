"""Training checkpoints (docs/DESIGN.md): save atomically, load without pickle.

A checkpoint is a dict with ``model`` (state dict), ``optimizer``, ``scheduler``,
``scaler``, ``epoch`` (finished epochs), ``step`` (finished optimizer steps),
``epoch_step`` (steps done in the unfinished epoch; 0 at epoch ends), ``rng``,
``val_loss``, ``best_val_loss`` and ``config`` (text). Everything in it is a
tensor, number, string, None, list or dict so that ``torch.load(weights_only=True)``
reads it; the RNG states are stored as tensors.
"""
from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io import atomic_path
from .builder import read_state_dict_file, unwrap_model

STRIP_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
#: AdvProp's auxiliary BatchNorms (``dywsss.engine.adversarial``): trained, saved, never used for evaluation.
AUX_BN = "aux_bn"


def is_aux_key(key: str) -> bool:
    return AUX_BN in key.split(".")


def strip_advprop(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without AdvProp's auxiliary BatchNorms: loads into the plain model (main BNs kept)."""
    return {k: v for k, v in state_dict.items() if not is_aux_key(k)}


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary name, then rename (a crash never leaves a partial file)."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def link_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` the same file as ``src`` (hard link, else copy), atomically replacing ``dst``.

    Checkpoints are only ever replaced by rename, never written in place, so
    sharing an inode between ``epoch_XXX.pth``, ``best.pth`` and ``last.pth`` is safe.
    """
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return Path(dst)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our training checkpoints; error naming the file if it is not one."""
    ckpt = read_state_dict_file(path)
    missing = [k for k in ("model", "epoch", "step") if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not a training checkpoint (no {', '.join(missing)}; keys: {', '.join(list(ckpt)[:8])})")
    return ckpt


def _strip(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(sd)
    for prefix in STRIP_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def state_dict_of(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a training checkpoint (its ``model`` entry) or of a plain state dict, unprefixed."""
    sd = obj["model"] if isinstance(obj.get("model"), Mapping) else obj
    return _strip({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})


def strict_load(model: nn.Module, sd: Mapping[str, torch.Tensor], path: str | os.PathLike) -> nn.Module:
    """Load every weight of ``model`` from ``sd``; a mismatch names the file and the keys."""
    target = unwrap_model(model)
    own = target.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(keys[:6])}" + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        raise InputError(f"{path}: weights do not fit {type(target).__name__} ({'; '.join(parts)}); "
                         "is it a checkpoint of this network?")
    target.load_state_dict(dict(sd), strict=True)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a training checkpoint (dict with ``model``) or a plain state dict into ``model``, strictly."""
    return strict_load(model, state_dict_of(read_state_dict_file(path)), path)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the plain model (no ``module.`` / ``_orig_mod.`` prefixes), on the CPU."""
    return {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}


# ------------------------------------------------------------------ RNG states
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states, as tensors and numbers."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = dict(
        python_version=int(version),
        python=torch.tensor(py_state, dtype=torch.int64),
        python_gauss=gauss,
        numpy_name=str(np_name),
        numpy=torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        numpy_pos=int(np_pos),
        numpy_has_gauss=int(np_has_gauss),
        numpy_gauss=float(np_gauss),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when both sides have them)."""
    random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state((state["numpy_name"], state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]),
                         int(state["numpy_has_gauss"]), float(state["numpy_gauss"])))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda])
