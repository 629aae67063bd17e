#!/usr/bin/env bash
# Creates .venv (once) and installs airgap with its development tools into it, idempotently, from
# requirements/dev.lock only: every package pinned and hash-checked, so this gives the same versions
# on a fresh machine next month as today. Every other script and the README's commands go through
# this, so they all run the same code. scripts/lock.sh refreshes the lock on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
lock=requirements/dev.lock
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  echo "dev-install: created .venv with $("$PY" --version)"
fi
stamp=.venv/.airgap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
  log=.venv/pip-install.log
  # --require-hashes: a package whose bytes differ from the lock is refused. The project itself is
  # then installed editable without build isolation, so its build backend comes from the lock too.
  if ! {
    .venv/bin/python -m pip install --disable-pip-version-check --require-hashes --no-deps -r "$lock" &&
      .venv/bin/python -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . &&
      .venv/bin/python -m pip check
  } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "dev-install: pip install failed; full log in $log" >&2
    exit 1
  fi
  touch "$stamp"
  echo "dev-install: installed airgap $(.venv/bin/airgap --version | cut -d' ' -f2) and its dev tools from $lock into .venv in ${SECONDS} s"
else
  echo "dev-install: .venv already up to date"
fi
# airgap's own bytecode, as installing a wheel compiles it: an editable install run under
# PYTHONDONTWRITEBYTECODE would otherwise compile every module again on every command's start-up.
# Cheap when nothing changed (only stale files are compiled again).
.venv/bin/python -m compileall -q airgap >/dev/null
