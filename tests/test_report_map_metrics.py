"""HTML fragments of the map-quality report sections, read back from the files the stages write."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from dywsss.io import write_json_atomic
from dywsss.report.map_metrics import map_quality_sections, read_outputs
from test_vice_metrics import write_run
from test_eval_scripts import load_script


class Values(HTMLParser):
    """data-key -> data-value of every element; checks that tags balance."""

    def __init__(self):
        super().__init__()
        self.values, self.stack = {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-key" in a:
            self.values[a["data-key"]] = a.get("data-value")
        if tag not in ("img", "br", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def parse(page: str) -> dict:
    p = Values()
    p.feed(page)
    assert p.stack == []
    return p.values


def test_sections_show_the_stored_numbers(tmp_path):
    csv = tmp_path / "per_sample.csv"
    write_run(csv, 0)
    load_script("compute_VICE.py").main(["--dir_csv", str(csv), "--metric", "all", "--bootstrap", "100"])
    write_json_atomic(tmp_path / "map_metrics.json", {"metrics": {
        "epg": {"mean": 0.41, "definition": "energy", "higher_is_better": True},
        "gini": {"mean": 0.7, "definition": "compactness", "higher_is_better": True}}})
    write_json_atomic(tmp_path / "gridpg.json", {"gridpg": 0.62, "n_grids": 10, "n_cells": 40, "n_skipped": 1,
                                                 "settings": {"grid": 2, "method": "cam", "min_conf": 0.95,
                                                              "smooth": "mean5"}})
    steps = [{"step": "original", "spearman": 1.0, "ssim": 1.0, "ji": 0.3, "epg": 0.4, "vice": 0.2},
             {"step": "head", "spearman": 0.2, "ssim": 0.3, "ji": 0.1, "epg": None, "vice": None}]
    write_json_atomic(tmp_path / "sanity.json", {"steps": steps, "verdicts": {"ji": "JI changes <a lot>"},
                                                 "random_logit": {"spearman": 0.1}, "n_images": 8,
                                                 "settings": {"method": "cam"}})
    page = map_quality_sections(tmp_path)
    values = parse(page)
    for section in ("map-metrics", "per-class-vice", "partial-vice", "gridpg", "sanity"):
        assert f'id="{section}"' in page
    vices = read_outputs(tmp_path)["vices"]
    assert set(vices) == {"miou", "deletion", "epg"}  # vice_metrics.json is the table, not a metric
    for col in ("miou", "deletion", "epg"):
        s = json.loads((tmp_path / ("vice.json" if col == "miou" else f"vice_{col}.json")).read_text())
        assert float(values[f"{col}.vice"]) == s["vice"]
        assert float(values[f"{col}.partial_vice"]) == s["partial"]["partial_vice"]
        assert float(values[f"{col}.partial"]) == s["partial"]["partial_vice"]
    assert float(values["epg.mean"]) == 0.41  # the dataset mean comes from map_metrics.json
    assert float(values["deletion.mean"]) == pytest.approx(json.loads((tmp_path / "vice_deletion.json")
                                                                      .read_text())["mean"])
    assert values["gini.mean"] == "0.7"  # scored, no VICE file yet: still listed
    person = json.loads((tmp_path / "vice.json").read_text())["per_class"]["person"]["vice"]
    assert float(values["miou.person"]) == person
    assert values["gridpg"] == "0.62" and values["sanity.head.ji"] == "0.1"
    assert values["sanity.head.epg"] == "None"
    assert "JI changes &lt;a lot&gt;" in page  # escaped
    assert re.search(r'data-figure="loss_vs_metrics"><img src="data:image/png;base64,', page)
    assert 'data-figure="gridpg"' not in page  # no gridpg.png: no figure, the numbers stay


def test_nothing_written_gives_no_section(tmp_path):
    assert map_quality_sections(tmp_path) == ""
