#!/usr/bin/env bash
# The main job, end to end, on the bundled example. Each step prints what it proves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-env.sh >/dev/null
bash scripts/dev-install.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
work=${AIRGAP_DEMO_DIR:-build/demo}
mkdir -p "$work"
base=127.0.0.1:5000/airgap/python-base:bookworm

echo "== 1. probe the target host (here: this machine) -> $work/target-profile.json"
airgap probe -o "$work/target-profile.json"

echo "== 2. probe the base image the model image will be built from -> $work/base-profile.json"
airgap probe --image "$base" -o "$work/base-profile.json"

echo "== 3. read the profile back as the workstation would"
airgap profile "$work/target-profile.json" >/dev/null && echo "profile valid: $work/target-profile.json"
