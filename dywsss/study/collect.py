"""Collect a study's results into ``work_dirs/<study>/``: tables, consensus, cross-model report, HTML.

Outputs (docs/STUDIES.md):

* ``tables/<method>.{md,csv,tex}`` (``dywsss.report.table``), ``tables/ood_<tree>.{md,csv,tex}``;
* ``models.csv``: one row per model (``dywsss.report.study`` lists the columns);
* ``consensus/<method>/``: ``summary.json`` (rule, similarity, RBF sigma, member scores and mAP,
  consensus mAP, correlations of the consensus score with mAP / ML-accuracy / best mIoU,
  provenance), ``member_scores.csv``, ``per_image.csv`` (consensus score per image and member),
  ``per_sample/<model>.csv`` (the member's per-sample CSV with a ``consensus_score`` column),
  ``committees.csv`` and figures, ``maps/`` (the consensus as map files), ``run.npz`` (the pass,
  reused while its inputs are unchanged);
* ``cross_model.json``, ``correlations.csv``, ``figures/scatter_matrix.png``;
* ``report.html`` linking every run's ``report.html``.
"""
from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.voc import load_cls_labels, read_image_list
from ..errors import StaleError
from ..io import load_npz, read_json_object, save_npz_atomic, write_json_atomic, write_text_atomic
from ..metrics.consensus import Committees, ConsensusRun, Member, build_consensus, plan_committees, stores_raw
from ..metrics.vice import vice as vice_stat
from ..provenance import file_record, sha256_file, sha256_files, sha256_json
from ..report.study import (
    accuracy_answers,
    default_columns,
    html_table,
    label,
    pairwise_correlations,
    relative,
    render_study_html,
)
from ..report.summary import RunNotFinished, RunSummary, load_run
from ..report.table import FORMATS, format_table, row_of
from ..viz.study_plot import plot_committee_size, plot_committee_swap, plot_scatter_matrix, plot_score_vs_metric
from .cells import ood_trees
from .spec import ModelSpec, StudySpec

PathLike = str | os.PathLike
TABLE_SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}


def _runs(spec: StudySpec, notes: list[str]) -> dict[tuple[str, str], RunSummary]:
    """Every finished (model, method) evaluation: the model's session with the method's ``map_tag``
    (checked by :func:`load_run`: a stale chain is a note, not a number)."""
    runs = {}
    for model in spec.models:
        for method in model.methods:
            try:
                runs[(model.name, method)] = load_run(spec.session_dir(model), Path(model.eval_list).name,
                                                      model.weights, spec.map_tag(model, method))
            except StaleError as exc:
                notes.append(f"{model.name}/{method}: stale, left out ({exc})")
            except (RunNotFinished, FileNotFoundError, ValueError) as exc:
                notes.append(f"{model.name}/{method}: not finished ({exc})")
    return runs


def write_tables(out: Path, stem: str, runs: Sequence[RunSummary]) -> Path | None:
    """``out/<stem>.{md,csv,tex}`` (``dywsss.report.table`` layout) of finished runs; None when there are none."""
    rows = [row_of(r) for r in runs]
    if not rows:
        return None
    for fmt in FORMATS:
        write_text_atomic(out / f"{stem}.{TABLE_SUFFIX[fmt]}", format_table(rows, fmt))
    return out / f"{stem}.csv"


def run_report_page(spec: StudySpec, model: ModelSpec, method: str) -> Path:
    """A (model, method)'s own report: ``report.html`` of the session, or ``report_<tag>.html``."""
    tag = spec.map_tag(model, method)
    return spec.session_dir(model) / (f"report_{tag}.html" if tag else "report.html")


def _map_metric_columns(run: RunSummary, method: str, notes: list[str]) -> tuple[dict[str, float], set[str]]:
    """``{<metric>:<method>: dataset mean, vice_<metric>:<method>: VICE}`` from the run's
    ``map_metrics.json`` and ``vice_metrics.json``, and the metrics where lower is better."""
    values: dict[str, float] = {}
    lower: set[str] = set()
    for fname in ("map_metrics.json", "vice_metrics.json"):
        path = run.eval_dir / fname
        if not path.is_file():
            notes.append(f"{run.paths.root.name}/{method}: no {fname} (an older per-sample or VICE stage)")
            continue
        metrics = (read_json_object(path).get("metrics") or {})
        for name, entry in metrics.items():
            if not isinstance(entry, dict):
                continue
            if fname == "map_metrics.json":
                if entry.get("mean") is not None:
                    values[f"{name}:{method}"] = float(entry["mean"])
                if entry.get("higher_is_better") is False:
                    lower.add(name)
            elif name != "miou" and entry.get("vice") is not None:  # miou's is vice.json's VICE
                values[f"vice_{name}:{method}"] = float(entry["vice"])
    return values, lower


# ----------------------------------------------------------------- consensus
def _save_pass(run: ConsensusRun, path: Path, fingerprint: str) -> None:
    save_npz_atomic(path, cos=run.cos, dist=run.dist, member_ap=run.member_ap, committee_ap=run.committee_ap,
                    committee_members=run.committees.members, committee_evaluated=run.committees.evaluated,
                    committee_kind=np.asarray(run.committees.kind), ap_pairs=run.ap_pairs,
                    pair_names=np.asarray([n for n, _ in run.pairs]), pair_classes=np.asarray([c for _, c in run.pairs]),
                    members=np.asarray(run.members), rule=np.asarray(run.rule), fingerprint=np.asarray(fingerprint),
                    provenance=np.asarray(json.dumps(run.provenance)))


def _load_pass(path: Path, fingerprint: str) -> ConsensusRun | None:
    if not path.is_file():
        return None
    try:
        d = load_npz(path)
    except ValueError:
        return None
    if str(d.get("fingerprint", "")) != fingerprint:
        return None
    committees = Committees(d["committee_members"].astype(bool), tuple(str(k) for k in d["committee_kind"]),
                            d["committee_evaluated"].astype(bool))
    pairs = [(str(n), int(c)) for n, c in zip(d["pair_names"], d["pair_classes"])]
    return ConsensusRun([str(m) for m in d["members"]], str(d["rule"]), pairs, d["cos"], d["dist"], d["member_ap"],
                        d["committee_ap"], committees, d["ap_pairs"].astype(bool), json.loads(str(d["provenance"])))


def _missing_maps(maps_dir: Path, run: ConsensusRun) -> list[str]:
    """The files of ``maps/`` (``consensus_meta.json`` and one map file per image of the pass) that are absent."""
    wanted = ["consensus_meta.json", *dict.fromkeys(f"{n}.npz" for n, _ in run.pairs)]
    return [f for f in wanted if not (maps_dir / f).is_file()]


def consensus_for_method(spec: StudySpec, method: str, runs: Mapping[tuple[str, str], RunSummary],
                         models: pd.DataFrame, notes: list[str], log: Callable[[str], None] = print) -> dict | None:
    """Build (or reuse) the consensus of ``method``'s committee and write its outputs; returns the summary."""
    cs = spec.consensus
    members = [m for m in spec.models if (m.name, method) in runs]
    if len(members) < 2:
        notes.append(f"consensus {method}: {len(members)} finished member(s), need 2")
        return None
    first = runs[(members[0].name, method)]
    lists = {m.eval_list for m in members}
    if len(lists) > 1:
        notes.append(f"consensus {method}: members evaluate different lists {sorted(lists)}; skipped")
        return None
    source, why = _consensus_source(cs.source, {m.name: runs[(m.name, method)].cam_dir for m in members})
    if source is None:
        notes.append(f"consensus {method}: {why}; skipped")
        return None
    cfg = first.cfg
    names = read_image_list(members[0].eval_list)
    label_file, gt_dir = Path(cfg.cls_label), Path(cfg.gt_dir)
    out = spec.root / "consensus" / method
    mem = [Member(m.name, runs[(m.name, method)].cam_dir) for m in members]
    index = {m.name: j for j, m in enumerate(members)}
    evaluated = [index[n] for n in cs.swap_evaluated if n in index]
    committees = plan_committees(len(mem), cs.sizes, cs.trials, cs.seed, evaluated, cs.swap_extra,
                                 cs.swap_trials if len(evaluated) else 0)
    settings = dict(rule=cs.rule, source=source, sizes=cs.sizes, trials=cs.trials, seed=cs.seed, ap_pairs=cs.ap_pairs,
                    swap=[evaluated, list(cs.swap_extra), cs.swap_trials], list=members[0].eval_list,
                    labels=sha256_file(label_file), gt_dir=str(gt_dir), write_maps=cs.write_maps)
    fingerprint = sha256_json(dict(settings, members=[(mb.name, sha256_files(Path(mb.map_dir) / f"{n}.npz"
                                                                            for n in names)) for mb in mem]))
    maps_dir = out / "maps"
    run = _load_pass(out / "run.npz", fingerprint)
    if run is not None and cs.write_maps and _missing_maps(maps_dir, run):
        log(f"[consensus] {method}: {maps_dir} incomplete ({_missing_maps(maps_dir, run)[0]} missing); rebuilding")
        run = None
    if run is None:
        log(f"[consensus] {method}: {len(mem)} members, {len(names)} images, voting the {source} maps ({why})")
        if maps_dir.is_dir():  # maps of other inputs or settings must not outlive this pass
            shutil.rmtree(maps_dir)
        run = build_consensus(mem, names, load_cls_labels(label_file), gt_dir, cs.rule, committees, cs.ap_pairs,
                              cs.seed, maps_dir if cs.write_maps else None, source=source)
        _save_pass(run, out / "run.npz", fingerprint)
    else:
        log(f"[consensus] {method}: inputs unchanged, reusing {out / 'run.npz'}")
    similarity = cs.similarity or run.default_similarity()
    scores = run.member_scores(similarity)
    per_image = run.per_image_scores(similarity)
    per_image.to_csv(out / "per_image.csv")
    member_rows = []
    vice_consensus = {}
    for j, m in enumerate(members):
        r = runs[(m.name, method)]
        sample = pd.read_csv(r.per_sample_csv)
        sample["consensus_score"] = sample["name_image"].map(per_image[m.name])
        (out / "per_sample").mkdir(parents=True, exist_ok=True)
        sample.to_csv(out / "per_sample" / f"{m.name}.csv", index=False)
        ok = sample["consensus_score"].notna()
        v = vice_stat(sample.loc[ok, "loss"].to_numpy(), sample.loc[ok, "consensus_score"].to_numpy(),
                      n_boot=spec.report.n_boot, seed=spec.report.seed)
        vice_consensus[m.name] = v.vice
        metrics = r.metrics()
        member_rows.append(dict(model=m.name, consensus_score=scores[j], mask_ap=run.member_mean_ap()[j],
                                vice_consensus=v.vice, vice_consensus_ci_low=v.ci_low, vice_consensus_ci_high=v.ci_high,
                                map=metrics["map"], acc_ml=metrics["acc_ml"], best_miou=metrics["best_miou"]))
        models.loc[m.name, f"consensus_score:{method}"] = scores[j]
        models.loc[m.name, f"mask_ap:{method}"] = run.member_mean_ap()[j]
        models.loc[m.name, f"vice_consensus:{method}"] = v.vice
    table = pd.DataFrame(member_rows)
    table.to_csv(out / "member_scores.csv", index=False)
    corr = run.correlations({k: table[k].to_numpy(float) for k in ("map", "acc_ml", "best_miou", "mask_ap")},
                            similarity, n_boot=spec.report.n_boot, seed=spec.report.seed)
    robustness = run.robustness(similarity)
    robustness.to_csv(out / "committees.csv", index=False)
    figures = {}
    if (robustness["kind"] == "size").any():
        figures["committee_size"] = plot_committee_size(robustness, out / "committee_size.png", run.member_mean_ap(),
                                                        title=f"Committee size ({method})")
    if (robustness["kind"] == "swap").any():
        figures["committee_swap"] = plot_committee_swap(robustness, out / "committee_swap.png",
                                                        title=f"Committee swap ({method})")
    figures["score_vs_map"] = plot_score_vs_metric(scores, table["map"], table["model"], out / "score_vs_map.png",
                                                   f"consensus score ({similarity})", "mAP", corr["map"].pearson,
                                                   title=f"Consensus score vs mAP ({method})")
    summary = dict(run.summary(similarity), method=method, source_reason=why,
                   correlations={k: c.summary() for k, c in corr.items()},
                   vice_consensus=vice_consensus, figures={k: str(v) for k, v in figures.items()},
                   fingerprint=fingerprint)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _consensus_source(wanted: str, map_dirs: Mapping[str, Path]) -> tuple[str | None, str]:
    """Which maps the committee votes (``raw`` or ``maps``) and why; None when ``raw`` is asked for
    but a member has none."""
    without = [name for name, d in map_dirs.items() if not stores_raw(d)]
    if wanted == "maps":
        return "maps", "consensus.source='maps'"
    if not without:
        return "raw", "every member stored its raw maps (cam_store_raw=True)"
    if wanted == "raw":
        return None, f"consensus.source='raw' but {', '.join(without)} stored no raw maps (cam_store_raw=True)"
    return "maps", f"{', '.join(without)} stored no raw maps; the normalised maps are voted"


# --------------------------------------------------------------------- all
def _model_frame(spec: StudySpec, runs: Mapping[tuple[str, str], RunSummary],
                 trees: Sequence[tuple[Path, str]], notes: list[str]) -> tuple[pd.DataFrame, dict, set[str]]:
    """models.csv (one row per model) from the runs; also the OOD runs and the lower-is-better metrics."""
    frame = pd.DataFrame(index=pd.Index([m.name for m in spec.models], name="model"))
    ood_runs: dict[tuple[str, str], RunSummary] = {}
    lower: set[str] = set()
    for model in spec.models:
        own = runs.get((model.name, model.own_method))
        if own is not None:  # clean accuracy and calibration do not depend on the method: the own one's
            met = own.metrics()
            for k in ("map", "acc_ml", "ece_ml"):
                frame.loc[model.name, k] = met[k]
        for method in model.methods:
            if (model.name, method) in runs:
                run = runs[(model.name, method)]
                met = run.metrics()
                frame.loc[model.name, f"best_miou:{method}"] = met["best_miou"]
                frame.loc[model.name, f"vice:{method}"] = met["vice"]
                values, low = _map_metric_columns(run, method, notes)
                lower |= low
                for col, v in values.items():
                    frame.loc[model.name, col] = v
        session = spec.session_dir(model)
        vals: dict[str, list[float]] = {"map": [], "acc_ml": [], "ece_ml": []}
        for _, stem in trees:
            try:
                r = load_run(session, f"{stem}.txt", model.weights)
            except StaleError as exc:
                notes.append(f"{model.name} on {stem}: stale, left out ({exc})")
                continue
            except (RunNotFinished, FileNotFoundError, ValueError) as exc:
                notes.append(f"{model.name} on {stem}: not evaluated ({exc})")
                continue
            ood_runs[(model.name, stem)] = r
            met = r.metrics()
            frame.loc[model.name, f"ood_map:{stem}"] = met["map"]
            for k in vals:
                vals[k].append(met[k])
        if trees and len(vals["map"]) == len(trees):  # a mean over some of the trees would not compare
            for k, v in vals.items():
                frame.loc[model.name, f"ood_{k}"] = float(np.mean(v))
    return frame, ood_runs, lower


def collect_study(spec: StudySpec, status: Mapping[str, Any] | None = None,
                  log: Callable[[str], None] = print) -> Path:
    """Write every study output from the finished runs (unfinished ones are listed as notes)."""
    root = spec.root
    notes: list[str] = []
    runs = _runs(spec, notes)
    trees = ood_trees(spec)
    tables_dir = root / "tables"
    table_files = {}
    for method in spec.methods:
        f = write_tables(tables_dir, method, [runs[(m.name, method)] for m in spec.models if (m.name, method) in runs])
        if f:
            table_files[method] = f
    models, ood_runs, lower = _model_frame(spec, runs, trees, notes)
    for _, stem in trees:
        f = write_tables(tables_dir, f"ood_{stem}", [ood_runs[(m.name, stem)] for m in spec.models
                                                      if (m.name, stem) in ood_runs])
        if f:
            table_files[f"ood_{stem}"] = f
    consensus: dict[str, dict] = {}
    if spec.consensus.enabled:
        for method in spec.methods:
            s = consensus_for_method(spec, method, runs, models, notes, log)
            if s:
                consensus[method] = s
    models.to_csv(root / "models.csv")
    methods = list(spec.methods)
    columns = list(spec.report.metrics or default_columns(models, methods))
    empty = [c for c in columns if c not in models.columns or not models[c].notna().any()]
    if spec.report.metrics is not None and empty:  # names load_study accepted, without a value yet
        notes.append(f"metrics: {', '.join(empty)} have no values in models.csv (unfinished or skipped runs); "
                     "left out of the correlations")
        log(f"[study] {notes[-1]}")
    columns = [c for c in columns if c not in empty]
    corr = pairwise_correlations(models, columns, spec.report.n_boot, spec.report.level, spec.report.seed)
    corr.to_csv(root / "correlations.csv", index=False)
    answers = accuracy_answers(models, methods, spec.report.n_boot, spec.report.level, spec.report.seed,
                               lower_is_better=lower)
    primary = spec.report.primary_method or methods[0]
    headline = next((a for a in answers if a.column == f"best_miou:{primary}"), answers[0] if answers else None)
    figures = {}
    # the figure shows the model-level quantities and the primary method's; every pair is in correlations.csv
    shown = [c for c in columns if ":" not in c or c.endswith(f":{primary}")]
    if len(shown) >= 2 and len(models) >= 2:
        pearson = {(r.x, r.y): r.pearson for r in corr.itertuples()} if len(corr) else {}
        pearson.update({(y, x): v for (x, y), v in list(pearson.items())})
        figures["scatter_matrix"] = plot_scatter_matrix(models, shown, root / "figures" / "scatter_matrix.png",
                                                        {c: label(c) for c in shown},
                                                        {k: (np.nan if v is None else v) for k, v in pearson.items()},
                                                        title=f"{spec.name}: {len(models)} models")
    inputs = [dict(model=m, method=meth, session=str(r.paths.root), map_tag=r.tag,
                   files=[file_record(r.eval_dir / f) for f in ("ece.json", "vice.json", "ji_curve.json")],
                   weights=file_record(r.weights_file) if r.weights_file.is_file() else None)
              for (m, meth), r in runs.items()]
    inputs += [dict(model=m, ood_list=stem, files=[file_record(r.eval_dir / "ece.json")])
               for (m, stem), r in ood_runs.items()]
    cross = dict(study=spec.name, config=str(spec.path), config_sha256=sha256_file(spec.path), columns=columns,
                 n_models=int(len(models)), n_boot=spec.report.n_boot, level=spec.report.level, seed=spec.report.seed,
                 headline=None if headline is None else headline.sentence,
                 answers=[dict(column=a.column, verdict=a.verdict, sentence=a.sentence, correlation=a.correlation,
                               higher_is_better=a.higher_is_better) for a in answers],
                 lower_is_better=sorted(lower), consensus={m: dict(source=c.get("source"), reason=c.get("source_reason"))
                                                           for m, c in consensus.items()},
                 invocation=(status or {}).get("invocation"),
                 ood_trees=[dict(path=str(t), list=stem) for t, stem in trees], inputs=inputs, notes=notes)
    write_json_atomic(root / "cross_model.json", cross)
    report = _render(spec, runs, models, corr, answers, headline, consensus, table_files, figures, status, notes)
    log(f"[study] report: {report}")
    return report


def _img(path: Path, root: Path) -> str:
    return f'<img src="{relative(path, root)}" alt="{path.stem}">'


def _render(spec: StudySpec, runs: Mapping[tuple[str, str], RunSummary], models: pd.DataFrame, corr: pd.DataFrame,
            answers: list, headline: Any, consensus: Mapping[str, dict], table_files: Mapping[str, Path],
            figures: Mapping[str, Path], status: Mapping[str, Any] | None, notes: list[str]) -> Path:
    root = spec.root
    sections = []
    intro = (f"<p>Study config <code>{spec.path}</code> (sha256 {sha256_file(spec.path)[:12]}), "
             f"{len(spec.models)} models, methods {', '.join(spec.methods)}.</p>")
    if headline is not None:
        intro += f'<p class="answer">{headline.sentence}</p>'
    sections.append(("Overview", intro))
    if status:
        rows = []
        for name, e in status.get("cells", {}).items():
            log_link = f'<a href="{relative(e["log"], root)}">log</a>' if e.get("log") else ""
            rows.append(dict(cell=name, kind=e.get("meta", {}).get("kind", ""), status=e.get("status", "pending"),
                             exit=e.get("rc"), seconds=e.get("seconds"), cpu_seconds=e.get("cpu_seconds"),
                             log=log_link, note=e.get("error", "")))
        inner = html_table(pd.DataFrame(rows))
        inv = status.get("invocation")
        if inv:
            inner += (f"<p>Last run: {inv['cells_run']} cell(s) in {inv['wall_seconds'] / 60:.1f} min wall, "
                      f"{inv['cpu_seconds'] / 60:.1f} CPU min, {inv['cores']} cores, load average (1/5/15 min) "
                      f"{inv['load_start']} at the start, {inv['load_end']} at the end.</p>")
        sections.append(("Cells", inner))
    links = []
    for model in spec.models:
        for method in model.methods:
            r = runs.get((model.name, method))
            page = run_report_page(spec, model, method)
            link = f'<a href="{relative(page, root)}">report</a>' if r is not None and page.is_file() else "not finished"
            links.append(dict(model=model.name, method=method, cam_method=spec.cam_method(model, method),
                              map_tag=spec.map_tag(model, method) or "(own)", run=link))
    sections.append(("Runs", html_table(pd.DataFrame(links))))
    shown = models.copy()
    shown.columns = [label(c) for c in shown.columns]
    sections.append(("Models", html_table(shown, index=True) + '<p>All rates are fractions; '
                     '<a href="models.csv">models.csv</a>.</p>'))
    for key, f in table_files.items():
        sections.append((f"Table: {key}", html_table(pd.read_csv(f)) +
                         f'<p><a href="{relative(f.with_suffix(".md"), root)}">md</a> · '
                         f'<a href="{relative(f, root)}">csv</a> · '
                         f'<a href="{relative(f.with_suffix(".tex"), root)}">latex</a></p>'))
    for method, s in consensus.items():
        out = root / "consensus" / method
        inner = (f"<p>votes the <b>{s.get('source', 'maps')}</b> maps ({html.escape(str(s.get('source_reason', '')))}); "
                 f"rule <code>{s['rule']}</code>, similarity <code>{s['similarity']}</code>, RBF sigma "
                 f"{s['rbf_sigma']:.4g}; {s['n_pairs']} (image, class) pairs over {s['n_images']} images; "
                 f"consensus mAP vs masks {'n/a' if s['consensus_map'] is None else format(s['consensus_map'], '.4f')}."
                 "</p>")
        inner += html_table(pd.read_csv(out / "member_scores.csv"))
        keep = ("n", "pearson", "pearson_p", "pearson_ci_low", "pearson_ci_high", "spearman", "spearman_p", "reason")
        ctab = pd.DataFrame([dict(metric=k, **{f: c.get(f) for f in keep}) for k, c in s["correlations"].items()])
        inner += "<p>Consensus score against each metric, across members:</p>" + html_table(ctab)
        inner += "".join(_img(Path(p), root) for p in s["figures"].values())
        sections.append((f"Consensus: {method}", inner))
    if len(corr):
        inner = "".join(f'<p class="answer">{a.sentence}</p>' for a in answers)
        inner += "".join(_img(p, root) for p in figures.values())
        keep = ["x_label", "y_label", "n", "pearson", "pearson_ci_low", "pearson_ci_high", "pearson_p", "spearman",
                "spearman_ci_low", "spearman_ci_high", "spearman_p"]
        inner += html_table(corr[[k for k in keep if k in corr.columns]])
        sections.append(("Across models", inner))
    if notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"))
    return render_study_html(root / "report.html", f"Study {spec.name}", sections)
