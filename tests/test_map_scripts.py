"""scripts/sanity_checks.py and scripts/gridpg.py as commands, on a saved checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys

import timm
import torch
from PIL import Image

from test_maps_engine import REPO


def options(root, work):
    return ["network=resnet18", f"voc12_root={root / 'VOC2012'}", f"gt_dir={root / 'VOC2012/SegmentationClassAug'}",
            f"cls_label={root / 'cls_labels.json'}", f"eval_list={root / 'val.txt'}", f"list_root={root}",
            f"work_dir_root={work}", "session_name=s", "weights=best.pth", "num_workers=0", "device=cpu",
            "crop_size=32", "pretrained=False"]


def test_scripts_on_a_checkpoint(demo_voc, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20)
    (tmp_path / "s" / "model").mkdir(parents=True)
    torch.save(model.state_dict(), tmp_path / "s" / "model" / "best.pth")
    opts = options(demo_voc, tmp_path)
    run = subprocess.run([sys.executable, "scripts/sanity_checks.py", "config/resnet50.py", "--options", *opts,
                          "--n-images", "3", "--examples", "2"], cwd=REPO, capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    ev = tmp_path / "s" / "eval" / "val_best"
    s = json.loads((ev / "sanity.json").read_text())
    assert len(s["provenance"]["weights"]["sha256"]) == 64 and s["n_images"] == 3
    assert run.stdout.count("[sanity] ") == len(s["verdicts"]) + 1
    for png in ("sanity_cascade.png", "sanity_metrics.png"):
        with Image.open(ev / png) as im:
            assert im.format == "PNG"
    # an untrained model classifies nothing with confidence: GridPG says so in one line
    run = subprocess.run([sys.executable, "scripts/gridpg.py", "config/resnet50.py", "--options", *opts,
                          "--n-grids", "2"], cwd=REPO, capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode != 0 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]  # above it only the progress bar
    assert last.startswith("error: GridPG 2x2 needs confident single-class images of 4 classes, but only 0")
