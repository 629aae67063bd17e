#!/usr/bin/env bash
# The main job, end to end, on the bundled example. Each step prints what it proves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-env.sh >/dev/null
bash scripts/dev-install.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
work=${AIRGAP_DEMO_DIR:-build/demo}
mkdir -p "$work"
project=examples/tabular

echo "== 1. probe the target host (here: this machine) -> $work/target-profile.json"
airgap probe -o "$work/target-profile.json"

echo "== 2. bundle the example for it: wheelhouse resolved in the base image, model image built offline"
airgap bundle "$project" --profile "$work/target-profile.json" --host-wheelhouse --output "$work"
staging="$work/tabular-classifier-1.0.0"

echo "== 3. run the model image with no network and a read-only root, and ask it a golden question"
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
