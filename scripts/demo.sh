#!/usr/bin/env bash
# The main job, end to end, on the bundled example:
#   probe -> bundle (signed) -> carry -> verify -> install (docker) -> smoke test -> a prediction.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== 0. this machine: the engines, the registry, the base images and .venv (first run: a few minutes)"
bash scripts/setup-env.sh
bash scripts/dev-install.sh
export PATH="$PWD/.venv/bin:$PATH"
work=${AIRGAP_DEMO_DIR:-$PWD/build/demo}
port=${AIRGAP_DEMO_PORT:-18080}
state="$work/far-side/state"
if [ -d "$state" ]; then airgap uninstall tabular-classifier --to docker --state-dir "$state" >/dev/null 2>&1 || true; fi
rm -rf "$work"
mkdir -p "$work/workstation" "$work/media" "$work/far-side"
export AIRGAP_KEY_PASSPHRASE=${AIRGAP_KEY_PASSPHRASE:-demo passphrase, not for real use}
project=examples/tabular

echo "== 1. far side: probe the target host (here: this machine)"
airgap probe -o "$work/far-side/target-profile.json"

echo "== 2. workstation: a signing key, then the signed bundle for that target"
airgap keys generate -o "$work/workstation/publisher"
airgap bundle "$project" --profile "$work/far-side/target-profile.json" --host-wheelhouse \
  --output "$work/workstation" --key "$work/workstation/publisher.key" --part-size 100M --expires 90d

echo "== 3. carry the parts and the public key across (here: a copy to another directory)"
cp "$work"/workstation/tabular-classifier-1.0.0.airgap.tar.part-* \
   "$work"/workstation/tabular-classifier-1.0.0.airgap.tar.parts.sha256* "$work/media/"
cp "$work/workstation/publisher.pub" "$work/media/"
bundle="$work/media/tabular-classifier-1.0.0.airgap.tar.parts.sha256"

echo "== 4. far side: trust the publisher's key, verify the bundle (streaming, nothing unpacked)"
airgap keys trust "$work/media/publisher.pub" --state-dir "$state"
airgap verify "$bundle" --state-dir "$state"

echo "== 5. far side: install to Docker (verified again first), smoke-tested against the golden outputs"
airgap install "$bundle" --to docker --port "$port" --state-dir "$state"
airgap smoke tabular-classifier --to docker --state-dir "$state"
airgap status --state-dir "$state"

echo "== 6. a prediction from the installed model"
python3 - "$port" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/v1/predict",
    data=json.dumps({"inputs": {"features": [[0.64, -1.0, 1.97, -0.71]]}}).encode(),
    headers={"Content-Type": "application/json"},
)
print(urllib.request.urlopen(req, timeout=10).read().decode())
PY
