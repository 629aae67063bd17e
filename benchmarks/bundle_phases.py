"""Times each phase of `airgap bundle` on the example, cold cache then warm, and `docker save` beside it.

    python benchmarks/bundle_phases.py [--project examples/tabular] [--json]

Cold: an empty wheel store and lock cache (resolution and downloads inside the base image).
Warm: the same cache again (the lock and every file come from the store; nothing is downloaded).
The save phase is compared with a plain `docker save` of the same image in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bundle(project: Path, cache: Path) -> dict[str, object]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "airgap", "--json", "bundle", str(project), "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"),
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"bundle failed: {proc.stderr.strip()}")
    record = json.loads(proc.stdout)["record"]
    record["wall_seconds"] = round(time.monotonic() - started, 2)
    return dict(record)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=ROOT / "examples" / "tabular")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="airgap-bench-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(args.project, project, ignore=shutil.ignore_patterns("build"))
        cache = Path(tmp) / "cache"
        cold = run_bundle(project, cache)
        warm = run_bundle(project, cache)
        tag = str(cold["image"]["tag"])  # type: ignore[index]
        started = time.monotonic()
        subprocess.run(["docker", "save", "-o", str(Path(tmp) / "plain.tar"), tag], check=True)
        plain_save = round(time.monotonic() - started, 3)
    phases = sorted(set(cold["phases"]) | set(warm["phases"]))  # type: ignore[arg-type]
    figures = {
        "cold": cold["phases"],
        "warm": warm["phases"],
        "cold_wall_seconds": cold["wall_seconds"],
        "warm_wall_seconds": warm["wall_seconds"],
        "warm_downloaded": warm["wheelhouses"]["image"]["downloaded"],  # type: ignore[index]
        "docker_save_seconds": plain_save,
        "save_ratio_to_docker_save": round(warm["phases"]["save image"] / plain_save, 2),  # type: ignore[index]
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{'phase':<20}{'cold s':>10}{'warm s':>10}")
    for p in phases:
        print(f"{p:<20}{cold['phases'].get(p, 0):>10.2f}{warm['phases'].get(p, 0):>10.2f}")  # type: ignore[attr-defined]
    print(f"{'wall':<20}{cold['wall_seconds']:>10.2f}{warm['wall_seconds']:>10.2f}")
    print(f"warm bundle downloaded {figures['warm_downloaded']} files")
    print(
        f"save image {warm['phases']['save image']:.2f}s vs docker save {plain_save:.2f}s "  # type: ignore[index]
        f"(ratio {figures['save_ratio_to_docker_save']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
