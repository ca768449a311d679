#!/usr/bin/env bash
# The whole VICE study, stage by stage; a rerun skips finished stages and resumes interrupted ones.
#
#   bash run.sh            demo: synthetic VOC-layout data, EfficientNet-Lite0 (offline ImageNet
#                          weights, config/demo.py) and ViT-Tiny from scratch (config/demo_vit.py):
#                          train, maps, JI curve, per-sample loss, ECE_ML, VICE, report; then the table
#   bash run.sh paper      the original's ResNet-50 and ViT-Small commands on voc12/VOC2012
#   bash run.sh study      the demo study across 6 models (config/studies/demo_study.py, docs/STUDIES.md):
#                          consensus, OOD, the cross-model report in work_dirs/demo_study/report.html
#   bash run.sh probes     the probe study on the frozen demo backbone (EfficientNet-Lite0, docs/PROBES.md):
#                          10 probes (linear, MLP-2/3, B-cos MLP-2/3 x BCE, CE), CAM / Grad-CAM / B-cos maps,
#                          table, figures in work_dirs/demo_probes/ (--options k=v overrides the demo's keys)
#   bash run.sh [demo|paper] --force [STAGE ...] | --dry-run    passed to scripts/run_stages.py
#   bash run.sh study [--dry-run | --force | --jobs N | ...]     passed to scripts/run_study.py
set -euo pipefail
cd "$(dirname "$0")"

mode=demo
case "${1:-}" in
  demo|paper|probes|study) mode=$1; shift ;;
  -h|--help) mode=help ;;
  -*|"") ;;
  *) mode=$1 ;;
esac
case "$mode" in
  demo|paper|probes|study) ;;
  help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "run.sh: unknown mode '$mode' (use: bash run.sh [demo|paper|probes|study])" >&2; exit 2 ;;
esac

if [ "$mode" = study ]; then
  bash scripts/setup.sh
  [ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}
  start=$SECONDS
  rc=0
  .venv/bin/python scripts/run_study.py config/studies/demo_study.py "$@" || rc=$?
  case " $* " in *" --dry-run "*) exit $rc ;; esac
  echo "[run.sh] study finished in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s (exit status $rc)"
  echo "  report: work_dirs/demo_study/report.html"
  echo "  tables: work_dirs/demo_study/tables/, models.csv, correlations.csv, cross_model.json"
  exit $rc
fi

dry=0
case " $* " in *" --dry-run "*) dry=1 ;; esac
if [ "$mode" = paper ] && [ "$dry" = 0 ]; then
  # check the data before anything slow
  for d in voc12/VOC2012/JPEGImages voc12/VOC2012/SegmentationClassAug; do
    if [ ! -d "$d" ]; then
      echo "run.sh paper: $d not found. Put PASCAL VOC 2012 + SBD there (VOC2012/JPEGImages and" >&2
      echo "VOC2012/SegmentationClassAug; see voc12/README.md), or run the demo: bash run.sh" >&2
      exit 1
    fi
  done
fi

bash scripts/setup.sh
PY=.venv/bin/python
# progress bars: redraw at most every 30 s when the output is a log file rather than a terminal
[ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}
start=$SECONDS

if [ "$mode" = probes ]; then
  # sized for 2 CPU cores: 10 probe epochs (the config says 30), 20 GridPG grids of 2x2 whose cells are
  # images each probe predicts as exactly their class (p > 0.5; the paper's 0.95 leaves weak probes none)
  DEMO_DATA=${DEMO_DATA:-"--out data/demo --train 480 --val 120 --seed 0 --min-side 160 --max-side 256"}
  rc=0
  # the demo's settings first, your arguments after: an --options of yours adds to them (a key you give
  # replaces the demo's value) and any other option you repeat (--study, --demo-data, ...) replaces the demo's
  "$PY" scripts/probe_study.py config/probe_demo.py --study demo_probes --demo-data "$DEMO_DATA" \
    --options probe_epochs=10 gridpg_n_grids=20 gridpg_min_conf=0.5 "$@" || rc=$?
  echo "[run.sh] probes study done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s (exit status $rc)"
  exit $rc
fi

if [ "$mode" = demo ]; then
  DEMO_DATA=${DEMO_DATA:-"--out data/demo --train 480 --val 120 --seed 0 --min-side 160 --max-side 256"}
  sessions=(demo_efficientnet_lite0 demo_vit_tiny)
  "$PY" scripts/run_stages.py config/demo.py --demo-data "$DEMO_DATA" "$@"
  "$PY" scripts/run_stages.py config/demo_vit.py --demo-data "$DEMO_DATA" "$@"
  table=work_dirs/demo_table.md
else
  sessions=(resnet50_PyTorch_pretrain_lr_0.01 vit_small_patch16_224_timm_pretrain_lr_0.01)
  "$PY" scripts/run_stages.py config/resnet50.py --session "${sessions[0]}" \
    --options network=resnet50 optimizer.lr=0.01 fignote=ResNet-50 "$@"
  "$PY" scripts/run_stages.py config/vision_transformer.py --session "${sessions[1]}" \
    --options network=vit_small_patch16_224 crop_size=224 optimizer.lr=0.01 fignote=ViT-Small "$@"
  table=work_dirs/paper_table.md
fi

[ "$dry" = 1 ] && exit 0
"$PY" scripts/make_table.py "${sessions[@]/#/work_dirs/}" --format md --out "$table"
cat "$table"
echo "[run.sh] $mode study done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
for s in "${sessions[@]}"; do echo "  report: work_dirs/$s/report.html"; done
echo "  table:  $table"
