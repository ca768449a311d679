"""The map-metric modules and compute_VICE.py must not import torch (fast start-up, issue 11)."""
from __future__ import annotations

import ast
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
#: Files the lead is restructuring so that they stop importing torch (their chains are reported, not failed).
PENDING = ("dywsss/data/voc.py", "dywsss/metrics/classification.py", "dywsss/metrics/per_sample.py",
           "dywsss/metrics/__init__.py")


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
sys.argv = ["compute_VICE.py"] + sys.argv[1:]
try:
    runpy.run_path("compute_VICE.py", run_name="__main__")
except SystemExit as exc:
    print("EXIT", exc.code, flush=True)
"""


def test_compute_vice_runs_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    loss = rng.gamma(2, 0.1, n)
    df = pd.DataFrame({"name_image": [f"i{k}" for k in range(n)], "loss": loss,
                       "label": ["14"] * n, "miou": np.clip(0.6 - loss + rng.normal(0, 0.1, n), 0, 1),
                       "epg": rng.random(n), "deletion": rng.random(n), "fg_fraction": rng.random(n),
                       "n_objects": rng.integers(1, 4, n)})
    csv = tmp_path / "per_sample.csv"
    df.to_csv(csv, index=False)
    run = subprocess.run([sys.executable, "-c", BLOCKER, "--dir_csv", str(csv), "--metric", "all",
                          "--bootstrap", "50"], cwd=ROOT, capture_output=True, text=True)
    culprit = [line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("TORCH_IMPORTED_BY")]
    if culprit:
        rel = str(Path(culprit[0]).resolve().relative_to(ROOT)) if culprit[0].startswith(str(ROOT)) else culprit[0]
        assert rel not in TORCH_FREE, f"{rel} imports torch"
        assert rel in PENDING or not rel.startswith("dywsss"), f"unexpected torch import from {rel}"
        pytest.xfail(f"torch is still imported by {rel} (the lead's import restructuring is pending)")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "vice_metrics.json").is_file()
