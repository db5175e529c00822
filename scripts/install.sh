#!/usr/bin/env bash
# Install fedswarm (editable, with test tools) into the active Python environment.
#
# torch is installed first, on purpose: a plain "torch" requirement on a machine
# without a GPU can pull a multi-GB CUDA build. With no GPU we ask for the CPU
# build; set FEDSWARM_TORCH_INDEX=https://download.pytorch.org/whl/cpu on a public
# machine to take it from PyTorch's CPU index. An existing torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 || PY=python3

"$PY" -m pip install --quiet --upgrade "pip>=23.1" "setuptools>=77" wheel

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install: GPU found; installing torch with CUDA"
  "$PY" -m pip install --quiet "torch>=2.3"
else
  echo "install: no GPU; installing the CPU build of torch"
  if [ -n "${FEDSWARM_TORCH_INDEX:-}" ]; then
    "$PY" -m pip install --quiet "${FEDSWARM_TORCH_SPEC:-torch==2.13.0}" --index-url "$FEDSWARM_TORCH_INDEX"
  else
    "$PY" -m pip install --quiet "${FEDSWARM_TORCH_SPEC:-torch==2.13.0}"
  fi
fi

# Opacus (DP-SGD's accountant) asks for torch>=2.6; install it without dependencies so pip
# never swaps the torch chosen above, then its other requirements explicitly.
"$PY" -m pip install --quiet --no-deps "opacus>=1.5"
"$PY" -m pip install --quiet "scipy>=1.10" "opt-einsum>=3.3"

extras="dev"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="dev,gpu"
fi
"$PY" -m pip install --quiet -e ".[$extras]"
echo "install: done. Try: fedswarm demo"
