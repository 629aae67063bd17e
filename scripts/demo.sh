#!/usr/bin/env bash
# The main job, end to end, on the bundled example. Each step prints what it proves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-env.sh >/dev/null
bash scripts/dev-install.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
work=${AIRGAP_DEMO_DIR:-build/demo}
rm -rf "$work"
mkdir -p "$work/workstation" "$work/media" "$work/far-side"
export AIRGAP_KEY_PASSPHRASE=${AIRGAP_KEY_PASSPHRASE:-demo passphrase, not for real use}
project=examples/tabular

echo "== 1. probe the target host (here: this machine) -> $work/far-side/target-profile.json"
airgap probe -o "$work/far-side/target-profile.json"

echo "== 2. on the workstation: a signing key, then the signed bundle for that target"
airgap keys generate -o "$work/workstation/publisher"
airgap bundle "$project" --profile "$work/far-side/target-profile.json" --host-wheelhouse \
  --output "$work/workstation" --key "$work/workstation/publisher.key" --part-size 100M --expires 90d

echo "== 3. carry the parts and the public key across (here: a copy to another directory)"
cp "$work"/workstation/tabular-classifier-1.0.0.airgap.tar.part-* \
   "$work"/workstation/tabular-classifier-1.0.0.airgap.tar.parts.sha256* "$work/media/"
cp "$work/workstation/publisher.pub" "$work/media/"

echo "== 4. on the far side: trust the publisher's key, verify the bundle (streaming, nothing unpacked)"
state="$work/far-side/state"
airgap keys trust "$work/media/publisher.pub" --state-dir "$state"
airgap verify "$work/media/tabular-classifier-1.0.0.airgap.tar.parts.sha256" --state-dir "$state"
airgap inspect "$work/media/tabular-classifier-1.0.0.airgap.tar.parts.sha256"

echo "== 5. run the model image with no network and a read-only root, and ask it a golden question"
staging="$work/workstation/tabular-classifier-1.0.0"
tag=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['image']['tag'])" "$staging/build.json")
cid=$(docker run -d --rm --network none --read-only --tmpfs /tmp --cap-drop ALL \
      --security-opt no-new-privileges "$tag")
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
ask() {
  docker exec -i "$cid" python -c '
import sys, urllib.request as u
req = u.Request("http://127.0.0.1:8080" + sys.argv[1], data=sys.stdin.read().encode() or None,
                headers={"Content-Type": "application/json"})
print(u.urlopen(req, timeout=10).read().decode())' "$1"
}
for _ in $(seq 1 60); do ask /readyz </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
echo '{"inputs": {"features": [[0.64, -1.0, 1.97, -0.71]]}}' | ask /v1/predict
