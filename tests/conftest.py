"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from dywsss.data.demo import make_demo_voc

DEMO_TRAIN, DEMO_VAL = 24, 12


@pytest.fixture(scope="session")
def demo_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic VOC tree (24 train / 12 val images, 64-96 px, seed 0); returns its root.

    Layout: ``root/VOC2012/{JPEGImages,SegmentationClass,SegmentationClassAug,Annotations,
    ImageSets/Segmentation}``, ``root/{train_aug,train,val}.txt``, ``root/cls_labels.json``.
    Treat it as read-only: it is shared by every test of the session.
    """
    root = tmp_path_factory.mktemp("demo_voc")
    make_demo_voc(root, n_train=DEMO_TRAIN, n_val=DEMO_VAL, seed=0, min_side=64, max_side=96, progress=False)
    return root
