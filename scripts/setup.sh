#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned CPU torch first, then damoxing with all extras.
# Idempotent: a second call only re-installs when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.damoxing-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The pinned CPU build first: a later range (torch>=2.4) is then already satisfied,
  # so pip never pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[all]"
  echo "$want" > "$stamp"
fi
