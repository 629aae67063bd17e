#!/usr/bin/env bash
# Makes a fresh machine ready (engines, registry, base image, .venv), then runs lint, types and
# every test, engine tests included. Extra arguments go to pytest (e.g. -k probe).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-env.sh
bash scripts/dev-install.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check airgap tests benchmarks
echo "== mypy"
mypy
echo "== pytest"
pytest --durations=25 "$@"
