#!/usr/bin/env bash
# Makes a fresh machine ready (engines, registry, base image, .venv), then runs lint, types and
# every test, engine tests included. Extra arguments go to pytest (e.g. -k probe).
#
#   bash scripts/test.sh           lint, types, the fast tier and the engine tier
#   bash scripts/test.sh --fast    lint, types and the fast tier only: minutes (its tests use no
#                                  engine and no index; the set-up still readies the machine's tools)
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
if [[ ${1:-} == --fast ]]; then
  fast=1
  shift
fi
started=$SECONDS
bash scripts/setup-env.sh
bash scripts/dev-install.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== set-up done in $((SECONDS - started)) s"

echo "== ruff"
ruff check airgap tests benchmarks
echo "== mypy"
mypy
echo "== pytest"
if ((fast)); then
  pytest -m "not docker and not podman and not network" --durations=25 "$@"
else
  pytest --durations=25 "$@"
fi
