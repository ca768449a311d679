"""The frozen-backbone feature cache: content, reuse, staleness, resume and sharding."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from dywsss.data.transforms import val_transform
from dywsss.data.voc import image_path, load_image, read_image_list
from dywsss.engine import feature_cache as fc
from dywsss.models.probes import build_probe_model

torch.set_num_threads(1)
SIZE = 64


def probe(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_probe_model(timm.create_model("resnet18", num_classes=20), "linear", 20).eval()


def build(model, demo: Path, cache_dir: Path, list_file: Path | None = None, size: int = SIZE,
          label_file: Path | None = None, messages: list[str] | None = None, **kw) -> fc.FeatureCache | None:
    return fc.feature_cache(model, list_file or demo / "val.txt", label_file or demo / "cls_labels.json",
                            demo / "VOC2012", cache_dir, size, batch_size=5, progress=False,
                            log=(messages.append if messages is not None else lambda m: None), **kw)


def test_cache_holds_the_backbone_features(demo_voc, tmp_path):
    model = probe()
    cache = build(model, demo_voc, tmp_path / "c")
    names = read_image_list(demo_voc / "val.txt")
    assert cache.built and cache.names == names and cache.features.dtype == np.float16
    assert isinstance(cache.features, np.memmap) and not cache.features.flags.writeable
    transform = val_transform(SIZE)
    with torch.no_grad():  # one image at a time, in a different order from the build's batches
        for i in (7, 0, len(names) - 1):
            x = transform(load_image(image_path(demo_voc / "VOC2012", names[i])))[None]
            expected = model.backbone.forward_features(x)[0].numpy()
            np.testing.assert_allclose(cache.features[i].astype(np.float32), expected, rtol=2 ** -10, atol=1e-6)
    labels = json.loads((demo_voc / "cls_labels.json").read_text())
    assert [np.flatnonzero(r).tolist() for r in cache.labels] == [labels[n] for n in names]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["key"]["input_size"] == SIZE and manifest["shape"] == [len(names), 512, 2, 2]
    assert manifest["key"]["backbone_weights_sha256"] == fc.state_dict_sha256(model.backbone)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["features.npy", "manifest.json"]
    again = build(model, demo_voc, tmp_path / "c")
    assert not again.built and np.array_equal(again.features, cache.features)


def test_stale_cache_is_rebuilt(demo_voc, tmp_path):
    model, where, msgs = probe(), tmp_path / "c", []
    first = np.array(build(model, demo_voc, where, messages=msgs).features)
    # backbone weights change
    with torch.no_grad():
        model.backbone.conv1.weight[0, 0, 0, 0] += 0.5
    changed = build(model, demo_voc, where, messages=msgs)
    assert changed.built and "backbone weights changed" in msgs[-1]
    assert not np.array_equal(np.array(changed.features), first)
    # a BatchNorm buffer is part of the weights too
    model.backbone.bn1.running_var[0] += 1.0
    assert build(model, demo_voc, where, messages=msgs).built and "backbone weights" in msgs[-1]
    # the list changes (fewer images)
    names = read_image_list(demo_voc / "val.txt")
    short = tmp_path / "val_short.txt"
    short.write_text("\n".join(names[:8]) + "\n")
    smaller = build(model, demo_voc, where, list_file=short, messages=msgs)
    assert smaller.built and "image list" in msgs[-1] and smaller.features.shape[0] == 8
    # the input size changes
    bigger = build(model, demo_voc, where, list_file=short, size=96, messages=msgs)
    assert bigger.built and "input size changed" in msgs[-1] and bigger.features.shape[2:] == (3, 3)
    # the label file changes
    labels = json.loads((demo_voc / "cls_labels.json").read_text())
    labels[names[0]] = sorted(set(labels[names[0]]) ^ {19})
    new_labels = tmp_path / "labels.json"
    new_labels.write_text(json.dumps(labels))
    relabelled = build(model, demo_voc, where, list_file=short, size=96, label_file=new_labels, messages=msgs)
    assert relabelled.built and "label file changed" in msgs[-1]
    assert relabelled.labels[0, 19] != bigger.labels[0, 19]
    # nothing changes: reused, no message
    n = len(msgs)
    assert not build(model, demo_voc, where, list_file=short, size=96, label_file=new_labels, messages=msgs).built
    assert len(msgs) == n


def test_interrupted_build_resumes(demo_voc, tmp_path, monkeypatch):
    model = probe()
    reference = np.array(build(model, demo_voc, tmp_path / "ref").features)
    real = fc._to_float16
    calls = {"n": 0}

    def failing(feats, names):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # interrupted during the second batch
        return real(feats, names)

    monkeypatch.setattr(fc, "_to_float16", failing)
    with pytest.raises(KeyboardInterrupt):
        build(model, demo_voc, tmp_path / "c")
    left = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert left == ["done.0.npy", "features.partial.npy", "manifest.partial.json"]
    assert np.load(tmp_path / "c" / "done.0.npy").tolist() == [0, 1, 2, 3, 4]
    monkeypatch.setattr(fc, "_to_float16", real)
    seen: list[int] = []
    original = model.forward_features
    model.forward_features = lambda x: (seen.append(len(x)), original(x))[1]
    messages: list[str] = []
    resumed = build(model, demo_voc, tmp_path / "c", messages=messages)
    assert any("resuming" in m for m in messages)
    assert sum(seen) == 1 + len(reference) - 5  # one probe image for the shape, then the 7 missing rows
    np.testing.assert_array_equal(np.array(resumed.features)[:5], reference[:5])
    np.testing.assert_allclose(np.array(resumed.features, dtype=np.float32), reference.astype(np.float32),
                               rtol=2 ** -10, atol=1e-6)


def test_sharded_build_equals_single_process(demo_voc, tmp_path):
    model = probe()
    single = build(model, demo_voc, tmp_path / "one")
    assert build(model, demo_voc, tmp_path / "two", rank=1, world_size=2) is None  # odd rows only
    assert not (tmp_path / "two" / "manifest.json").exists()
    both = build(model, demo_voc, tmp_path / "two", rank=0, world_size=2)
    assert both.built and both.names == single.names
    np.testing.assert_allclose(np.array(both.features, dtype=np.float32), np.array(single.features, dtype=np.float32),
                               rtol=2 ** -10, atol=1e-6)
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["key"] == single.manifest["key"]


def test_state_dict_hash_sees_every_tensor():
    model = probe()
    h = fc.state_dict_sha256(model.backbone)
    assert h == fc.state_dict_sha256(model.backbone) == fc.state_dict_sha256(probe().backbone)
    with torch.no_grad():
        w = model.backbone.layer4[1].conv2.weight
        w[0, 0, 0, 0] = torch.nextafter(w[0, 0, 0, 0], torch.tensor(1.0))  # one ulp
    assert fc.state_dict_sha256(model.backbone) != h
