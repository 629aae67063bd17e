#!/usr/bin/env bash
# Creates .venv (once) and installs airgap with its development tools into it, idempotently.
# Every other script and the README's commands go through this, so they all run the same code.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  echo "dev-install: created .venv with $("$PY" --version)"
fi
stamp=.venv/.airgap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[dev]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "dev-install: pip install failed; full log in $log" >&2
    exit 1
  fi
  touch "$stamp"
  echo "dev-install: installed airgap $(.venv/bin/airgap --version | cut -d' ' -f2) and its dev tools into .venv"
else
  echo "dev-install: .venv already up to date"
fi
