#!/usr/bin/env bash
# Refreshes requirements/dev.lock: every runtime and development dependency of airgap, pinned with
# hashes, for the Python that .venv runs. Run it on purpose (a dependency update is a reviewed
# change), then run scripts/test.sh and commit the lock with the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dev-install.sh >/dev/null
.venv/bin/pip-compile --quiet --extra dev --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
  --constraint requirements/constraints.txt --output-file requirements/dev.lock "$@" pyproject.toml
echo "lock: requirements/dev.lock refreshed for $(.venv/bin/python --version)"
