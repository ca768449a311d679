# Shared by scripts/paper/table*.sh (sourced, not run). See README.md in this folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PY=${PY:-.venv/bin/python}
LR=${LR:-0.01}                          # the original README's learning rate
PRETRAINED_DIR=${PRETRAINED_DIR:-pretrained}
STAGE_ARGS=${STAGE_ARGS:-}              # e.g. "--dry-run" or "--force maps"
SESSIONS=()

need_data() {
  local d
  for d in voc12/VOC2012/JPEGImages voc12/VOC2012/SegmentationClassAug; do
    if [ ! -d "$d" ]; then
      echo "$0: $d not found: put PASCAL VOC 2012 + SBD under voc12/VOC2012 (see voc12/README.md)" >&2
      exit 1
    fi
  done
}

# need_checkpoint FILE...: stop with a message naming every missing pre-training checkpoint
need_checkpoint() {
  local f missing=0
  for f in "$@"; do
    if [ ! -f "$f" ]; then echo "$0: pre-training checkpoint $f not found (see scripts/paper/README.md)" >&2; missing=1; fi
  done
  [ "$missing" = 0 ] || exit 1
}

# study CONFIG SESSION key=value...: every stage of one run (train, maps, JI, loss, ECE_ML, VICE, report)
study() {
  local config=$1 session=$2
  shift 2
  SESSIONS+=("work_dirs/$session")
  # shellcheck disable=SC2086
  "$PY" scripts/run_stages.py "$config" --session "$session" --options "$@" $STAGE_ARGS
}

cnn() {  # cnn NETWORK SESSION_SUFFIX [key=value...]
  local net=$1 tag=$2
  shift 2
  study config/resnet50.py "${net}_${tag}_lr_${LR}" "network=$net" "optimizer.lr=$LR" "$@"
}

vit() {  # vit NETWORK SESSION_SUFFIX [key=value...]
  local net=$1 tag=$2
  shift 2
  study config/vision_transformer.py "${net}_${tag}_lr_${LR}" "network=$net" "crop_size=224" "optimizer.lr=$LR" "$@"
}

# table NAME: collect this script's runs into work_dirs/paper/NAME.{md,csv,tex}
table() {
  case " $STAGE_ARGS " in *" --dry-run "*) return 0 ;; esac
  mkdir -p work_dirs/paper
  local fmt ext
  for fmt in md csv latex; do
    ext=$fmt; [ "$fmt" = latex ] && ext=tex
    "$PY" scripts/make_table.py "${SESSIONS[@]}" --format "$fmt" --out "work_dirs/paper/$1.$ext"
  done
  cat "work_dirs/paper/$1.md"
}
