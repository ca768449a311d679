"""The map-metric modules, evaluation.py, compute_VICE.py and compute_ECE.py must not import torch
(start-up in a fraction of a second instead of 3.5 s; issue 11)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Modules of issue 11 that run without a model: none may import torch, directly or at module level.
TORCH_FREE = ("dywsss/metrics/map_metrics.py", "dywsss/metrics/map_eval.py", "dywsss/metrics/metric_vice.py",
              "dywsss/metrics/vice.py", "dywsss/metrics/segmentation.py", "dywsss/data/boxes.py",
              "dywsss/viz/map_metrics.py", "dywsss/report/map_metrics.py", "compute_VICE.py")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("rel", TORCH_FREE)
def test_module_source_never_imports_torch(rel):
    mods = imported_modules(ROOT / rel)
    assert not mods & {"torch", "torchvision", "timm", "captum", "zennit"}, f"{rel} imports {mods}"


BLOCKER = r"""
import importlib.abc, runpy, sys, traceback
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            frames = [f.filename for f in traceback.extract_stack()[:-1]
                      if "importlib" not in f.filename and not f.filename.startswith("<")]
            print("TORCH_IMPORTED_BY", frames[-1], flush=True)
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    print("EXIT", exc.code, flush=True)
"""


def _run_blocked(script: str, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-c", BLOCKER, script, *args], cwd=ROOT, capture_output=True, text=True)
    culprit = [line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("TORCH_IMPORTED_BY")]
    assert not culprit, f"{script}: torch imported by {culprit[0]}"
    assert "EXIT 0" in run.stdout or "EXIT None" in run.stdout, run.stdout[-1500:] + run.stderr[-1500:]
    return run


def _csv(tmp_path: Path, n: int = 30) -> Path:
    """A per-sample CSV of the full format (probabilities, labels), written here where torch may be imported."""
    rng = np.random.default_rng(0)
    loss = rng.gamma(2, 0.1, n)
    probs = rng.random((n, 20))
    df = pd.DataFrame({"name_image": [f"i{k}" for k in range(n)], "loss": loss,
                       "label": [str(k % 20) for k in range(n)], "miou": np.clip(0.6 - loss + rng.normal(0, 0.1, n), 0, 1),
                       "epg": rng.random(n), "deletion": rng.random(n), "fg_fraction": rng.random(n),
                       "n_objects": rng.integers(1, 4, n), **{f"p_{c:02d}": probs[:, c] for c in range(20)}})
    csv = tmp_path / "per_sample.csv"
    df.to_csv(csv, index=False)
    return csv


def test_compute_vice_and_compute_ece_run_without_torch(tmp_path):
    csv = _csv(tmp_path)
    _run_blocked("compute_VICE.py", "--dir_csv", str(csv), "--metric", "all", "--bootstrap", "50")
    assert (tmp_path / "vice_metrics.json").is_file()
    _run_blocked("compute_ECE.py", "--csv", str(csv))
    assert (tmp_path / "ece.json").is_file()


def test_evaluation_runs_without_torch(tmp_path):
    from PIL import Image

    from dywsss.mapfile import save_maps

    names = ["a", "b"]
    (tmp_path / "gt").mkdir()
    for k, name in enumerate(names):
        mask = np.zeros((12, 16), np.uint8)
        mask[2:8, 3:9] = k + 1
        Image.fromarray(mask, mode="L").save(tmp_path / "gt" / f"{name}.png")
        cams = np.zeros((1, 12, 16), np.float32)
        cams[0, 2:8, 3:9] = 0.9
        save_maps(tmp_path / "maps" / f"{name}.npz", np.array([k]), cams)
    (tmp_path / "list.txt").write_text("a\nb\n")
    _run_blocked("evaluation.py", "--list", str(tmp_path / "list.txt"), "--predict_dir", str(tmp_path / "maps"),
                 "--gt_dir", str(tmp_path / "gt"), "--json", str(tmp_path / "curve.json"))
    # background and the two classes are segmented exactly; the 18 classes absent from the masks count as 0
    assert json.loads((tmp_path / "curve.json").read_text())["best_miou"] == pytest.approx(3 / 21)
