"""Stage 4: the per-sample CSV (loss, confidence, labels, predictions, per-image JI and map metrics).

The classifier, rebuilt from the checkpoint's architecture record, runs on the
original's validation input (``loss_input = center_crop``: the ``crop_size``
centre crop of the unresized image, zero padded; ``full_image`` resizes the
whole image instead); its logits give the loss (Eq. 7) and the rest of the row
(:func:`dywsss.metrics.per_sample.per_sample_table`), joined with the per-image
JI of the map files of stage 2 and, in the same pass over the map files and masks, the
map metrics of ``map_metrics`` (EPG, EPG on boxes, pointing game, AP against the mask,
Gini; :mod:`dywsss.metrics.map_metrics`), with their dataset means in
``map_metrics.json``. Insertion/deletion (``map_metrics`` with ``insertion``/``deletion``)
need the network: they run on the same input batches as the loss.

The stage refuses maps made from other weights than the ones it evaluates
(their ``maps_meta.json`` records the weights' sha256, every map file the
record's stamp) and writes ``per_sample.meta.json`` beside the CSV: the
weights and their sha256, the architecture, the maps' record, the hashes of
the list, labels and masks, and the settings.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from mmengine.config import Config
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import SessionPaths, data_path, session_paths
from ..data.datasets import VOCClassification
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, prediction_transform
from ..data.voc import check_inputs, label_matrix, load_cls_labels, mask_path
from ..errors import ConfigError, MissingInputError, StaleError
from ..io import check_writable
from ..mapfile import check_stamps, meta_stamp, read_maps_meta
from ..metrics.map_eval import evaluate_maps, write_map_metrics_json
from ..metrics.map_metrics import DEFAULT_MAP_METRICS, MAP_METRICS, check_metric_names
from ..metrics.per_sample import per_sample_table, write_csv_meta, write_per_sample_csv
from ..models.spec import ModelSpec, TrainedModel, load_session_model
from ..provenance import file_record, library_versions, sha256_file, sha256_files, short_hash
from ..recipe import recipe_of
from ..schema import config_problems, network_problems, raise_problems, session_problems
from ..session import StageLock
from .dist import env_world
from .runtime import resolve_num_workers, select_device

COMPAT_DIR = "miou_loss_csv"


def compute_logits(model: nn.Module, names: Sequence[str], labels: np.ndarray, cfg: Config,
                   device: torch.device, spec: ModelSpec | None = None,
                   faithfulness: Sequence[str] = (), map_dir: Path | None = None) -> tuple[np.ndarray, dict]:
    """Logits float32 [N, 20] of the listed images on the prediction input, in list order, and (for the
    ``faithfulness`` modes ``insertion``/``deletion``) their per-image columns from the same batches."""
    from ..metrics.faithfulness import batch_faithfulness

    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if spec is None else (spec.mean, spec.std)
    dataset = VOCClassification(names, cfg.voc12_root, dict(zip(names, labels)),
                                prediction_transform(cfg.loss_input, int(cfg.crop_size), mean, std), img_dir=cfg.img_dir)
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), shuffle=False,
                        num_workers=resolve_num_workers(cfg.num_workers))
    model.eval()
    out, cols = [], {}
    for batch in tqdm(loader, desc="per-sample logits" + (" + insertion/deletion" if faithfulness else ""),
                      unit="batch"):
        x = batch["img"].to(device)
        with torch.no_grad():
            out.append(model(x).float().cpu())
        if faithfulness:
            classes = [np.flatnonzero(r > 0.5).tolist() for r in batch["label"].numpy()]
            got = batch_faithfulness(model, x, batch["name"], map_dir, classes, cfg.loss_input, int(cfg.crop_size),
                                     steps=int(cfg.get("insdel_steps", 100)), modes=list(faithfulness),
                                     batch_size=int(cfg.get("insdel_batch_size", 64)), allow_pickle=cfg.allow_pickle)
            for k, v in got.items():
                cols.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    logits = torch.cat(out).numpy() if out else np.zeros((0, labels.shape[1]), np.float32)
    return logits, {k: np.concatenate(v) for k, v in cols.items()}


def compat_csv_path(cfg: Config) -> Path:
    """The original's file: ``miou_loss_csv/miou_loss_<session>_<weights stem>_<list stem>.csv`` (cwd)."""
    tag = f"_{cfg.map_tag}" if cfg.get("map_tag") else ""
    return Path(COMPAT_DIR) / f"miou_loss_{cfg.session_name}_{Path(cfg.weights).stem}_{Path(cfg.eval_list).stem}{tag}.csv"


def check_maps_for(map_dir: Path, names: Sequence[str], weights_sha256: str | None, cfg: Config) -> dict:
    """The maps' record, after checking they were made from these weights (all files stamped alike)."""
    redo = (f"rerun the map stage: run_resnet50.py/run_transformer.py ... --options gen_mask_for_multi_crop=True "
            f"overwrite=True infer_list={cfg.eval_list} weights={cfg.weights}")
    if not map_dir.is_dir():
        raise MissingInputError(f"{map_dir}: no map files; run the map stage first (gen_mask_for_multi_crop=True "
                                f"infer_list={cfg.eval_list} weights={cfg.weights})")
    meta = read_maps_meta(map_dir)
    if meta is None or "weights_sha256" not in meta:
        warnings.warn(f"{map_dir}: no weights record in maps_meta.json (maps from an older version or another tool); "
                      "cannot check that they come from the evaluated weights", stacklevel=2)
        return {"dir": str(map_dir), "record": "none"}
    if weights_sha256 is not None and meta["weights_sha256"] != weights_sha256:
        raise StaleError(f"{map_dir}: maps were made from weights sha256 {short_hash(meta['weights_sha256'])}, but "
                         f"{cfg.weights} is now {short_hash(weights_sha256)} (retrained?); {redo}")
    stamp = meta_stamp(meta)
    check_stamps(map_dir, list(names), stamp)
    return {"dir": str(map_dir), "meta_sha256": sha256_file(map_dir / "maps_meta.json"), "stamp": stamp,
            "method": meta.get("method"), "weights_sha256": meta["weights_sha256"]}


def probe_outputs(spec: ModelSpec | None, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For a probe model: (its probabilities, its own per-image loss) as it was trained (sigmoid and BCE with
    its off-target value, or softmax and CE); None for other models (sigmoid, Eq. 7)."""
    if spec is None or not spec.head or "loss" not in spec.head:
        return None
    from ..metrics.probe_losses import get_probe_loss, resolve_off_value

    loss = get_probe_loss(spec.head["loss"])
    x, y = torch.from_numpy(np.asarray(logits, np.float64)), torch.from_numpy(np.asarray(labels, np.float64))
    off = resolve_off_value(spec.head.get("off_value"), spec.num_classes)
    return loss.probs(x).numpy(), loss.per_image(x, y, off).numpy()


def per_sample_problems(cfg: Config) -> list[str]:
    out = config_problems(cfg) + session_problems(cfg) + network_problems(cfg)
    try:
        check_metric_names(cfg.get("map_metrics", DEFAULT_MAP_METRICS))
    except ConfigError as exc:
        out.append(str(exc))
    return out


def compute_per_sample(cfg: Config, model: nn.Module | None = None) -> Path:
    """Write ``eval/<list>_<weights>/per_sample.csv`` (and the original's copy), each with its record; return it.

    The maps are read from ``test/cam_<eval_list stem>_<weights stem>/`` (stage 2
    run with ``infer_list`` = this ``eval_list``). ``model`` (optional) replaces
    loading ``model/<weights>`` (tests; the weights are then recorded as unknown).
    """
    raise_problems(per_sample_problems(cfg))
    paths = session_paths(cfg)
    list_file = data_path(cfg, cfg.eval_list)
    names, _ = check_inputs(cfg.voc12_root, list_file, cfg.cls_label, cfg.img_dir, gt_dir=cfg.gt_dir,
                            allow_pickle=cfg.allow_pickle)
    labels = label_matrix(names, load_cls_labels(cfg.cls_label, allow_pickle=cfg.allow_pickle), source=cfg.cls_label)
    weights = paths.weights_file(cfg.weights)
    if model is None and not weights.is_file():
        raise MissingInputError(f"{weights}: weights not found (weights={cfg.weights!r}); train first or pass weights=PATH")
    weights_sha = sha256_file(weights) if model is None else None
    map_dir = paths.cam_dir(cfg.eval_list, cfg.weights, cfg.get("map_tag", ""))
    maps = check_maps_for(map_dir, names, weights_sha, cfg)
    out = paths.eval_dir(cfg.eval_list, cfg.weights, cfg.get("map_tag", "")) / "per_sample.csv"
    metrics = check_metric_names(cfg.get("map_metrics", DEFAULT_MAP_METRICS))
    model_metrics = [m for m in metrics if MAP_METRICS.get(m).needs == "model"]
    with StageLock(paths, f"per_sample_{out.parent.name}"):
        check_writable(out.parent)
        classes = [np.flatnonzero(r > 0.5).tolist() for r in labels]
        ev = evaluate_maps(names, map_dir, cfg.gt_dir, classes, metrics, t=float(cfg.eval_thresh),
                           annotations_dir=Path(cfg.voc12_root) / "Annotations",
                           pg_tolerance=float(cfg.get("pg_tolerance", 15.0)), allow_pickle=cfg.allow_pickle)
        device = select_device(cfg.get("device", "auto"), env_world()[2])
        trained: TrainedModel | None = load_session_model(cfg, device) if model is None else None
        net = trained.model if trained is not None else model.to(device).eval()
        logits, model_cols = compute_logits(net, names, labels, cfg, device, None if trained is None else trained.spec,
                                            model_metrics, map_dir)
        extra = {k: v for k, v in ev.columns().items() if k not in ("ji_reference", "ji_paper")} | model_cols
        probe = probe_outputs(trained.spec if trained is not None else None, logits, labels)
        if probe is not None:
            extra["probe_loss"] = probe[1]
        table = per_sample_table(names, logits, labels, ev.ji_reference, ev.ji_paper, cfg.ji_definition,
                                 float(cfg.pred_threshold), extra, None if probe is None else probe[0])
        record = _record(cfg, trained, maps, list_file, names)
        record["settings"]["outputs"] = "sigmoid" if probe is None else f"probe ({trained.spec.head['loss']})"
        record["settings"].update(map_metrics=metrics, pg_tolerance=float(cfg.get("pg_tolerance", 15.0)),
                                  insdel_steps=int(cfg.get("insdel_steps", 100)) if model_metrics else None)
        for path in (out, compat_csv_path(cfg)):
            write_per_sample_csv(table, path)
            write_csv_meta(path, record)
        write_map_metrics_json(out.parent / "map_metrics.json", ev, model_cols,
                               provenance=dict(csv=str(out), csv_sha256=sha256_file(out),
                                               weights_sha256=record["weights"]["sha256"], maps_stamp=maps.get("stamp")))
    return out


def _record(cfg: Config, trained: TrainedModel | None, maps: dict, list_file: Path, names: Sequence[str]) -> dict:
    weights = (dict(path=str(trained.path), sha256=trained.sha256) if trained is not None
               else dict(path=None, sha256=None, note="model passed in by the caller"))
    return dict(
        weights=weights, arch=None if trained is None else trained.spec.to_dict(),
        arch_recorded=None if trained is None else trained.recorded, maps=maps,
        inputs=dict(list=file_record(list_file), labels=file_record(cfg.cls_label), gt_dir=str(cfg.gt_dir),
                    masks_sha256=sha256_files(mask_path(cfg.gt_dir, n) for n in names)),
        settings=dict(ji_definition=cfg.ji_definition, eval_thresh=float(cfg.eval_thresh), loss_input=cfg.loss_input,
                      crop_size=int(cfg.crop_size), pred_threshold=float(cfg.pred_threshold)),
        recipe=recipe_of(cfg),
        versions=library_versions(),
    )
