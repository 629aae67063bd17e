"""Bytes that cross the gap, on the example: bundle size against its unique content, duplicates,
and a delta bundle when only the model changed. Not part of the test suite.

    python benchmarks/transfer_sizes.py [--project examples/tabular] [--cache-dir DIR] [--json]

One run: this host is probed (so the bundle carries a host wheelhouse and airgap's own, as a
bundle for a bare far side does); 1.0.0 is bundled and signed in format v2, and the same staging
directory packed again in v1; 1.0.0 is installed `--to venv` on a scratch far side, which writes
its inventory; then 1.0.1 — other model weights, a later SOURCE_DATE_EPOCH, nothing else changed —
is bundled `--have` that inventory.

- unique content: the sum of the sizes of the distinct files (by SHA-256) the bundle holds;
- duplicate bytes: archive members whose bytes another member already holds;
- delta: the size of the 1.0.1 bundle against the size of its model (goal: model + 1 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASS = "benchmark passphrase"
EPOCH = 1700000000


def airgap(*args: str, epoch: int = EPOCH) -> dict[str, Any]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), AIRGAP_KEY_PASSPHRASE=PASS)
    proc = subprocess.run(
        [sys.executable, "-m", "airgap", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"airgap {args[0]} failed: {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout)) if proc.stdout.strip().startswith("{") else {}


def unique_content(staging: Path) -> tuple[int, int]:
    """(sum of all content, sum of distinct content) of what a bundle of ``staging`` holds."""
    from airgap.services.build.delta import bundle_files

    seen: dict[str, int] = {}
    total = 0
    for _, path in bundle_files(staging):
        h = hashlib.sha256(path.read_bytes()).hexdigest()
        size = path.stat().st_size
        total += size
        seen[h] = size
    return total, sum(seen.values())


def duplicate_bytes(bundle: Path) -> int:
    """Bytes of archive members whose content an earlier member already holds."""
    seen: set[str] = set()
    dup = 0
    with tarfile.open(bundle, mode="r:") as tf:
        for member in tf:
            if not member.isfile():
                continue
            fh = tf.extractfile(member)
            assert fh is not None
            h = hashlib.sha256()
            while block := fh.read(1 << 20):
                h.update(block)
            if h.hexdigest() in seen:
                dup += member.size
            seen.add(h.hexdigest())
    return dup


def new_model(dest: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_model", ROOT / "examples" / "tabular" / "make_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import numpy as np

    model = module.build_model(np.random.default_rng(module.SEED + 1))
    dest.write_bytes(model.SerializeToString(deterministic=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=ROOT / "examples" / "tabular")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "airgap")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="airgap-transfer-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [sys.executable, "-m", "airgap", "keys", "generate", "-o", str(tmp / "publisher")],
            env=dict(os.environ, AIRGAP_KEY_PASSPHRASE=PASS),
            check=True,
            capture_output=True,
        )
        key = str(tmp / "publisher.key")
        profile = tmp / "host.json"
        airgap("probe", "-o", str(profile), "--egress-check", "none")
        project = tmp / "v100" / "tabular"
        shutil.copytree(args.project, project, ignore=shutil.ignore_patterns("build"))
        common = [
            "--cache-dir",
            str(args.cache_dir),
            "--profile",
            str(profile),
            "--host-wheelhouse",
            "--key",
            key,
        ]
        full = airgap("bundle", str(project), *common)
        staging = Path(full["staging"])
        v2 = Path(full["bundle"][0])
        v1 = Path(
            airgap("pack", str(staging), "--key", key, "--format", "v1", "-o", str(tmp / "v1"))["bundle"][0]
        )
        total, unique = unique_content(staging)

        far = tmp / "far"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "airgap",
                "keys",
                "trust",
                str(tmp / "publisher.pub"),
                "--state-dir",
                str(far),
            ],
            check=True,
            capture_output=True,
        )
        airgap("install", str(v2), "--to", "venv", "--state-dir", str(far))
        inventory = tmp / "inventory.json"
        airgap("inventory", "--out", str(inventory), "--state-dir", str(far))
        airgap("uninstall", "tabular-classifier", "--to", "venv", "--state-dir", str(far))

        later = tmp / "v101" / "tabular"
        shutil.copytree(args.project, later, ignore=shutil.ignore_patterns("build"))
        text = (later / "airgap.yaml").read_text().replace('version: "1.0.0"', 'version: "1.0.1"')
        (later / "airgap.yaml").write_text(text)
        new_model(later / "model" / "classifier.onnx")
        delta = airgap("bundle", str(later), *common, "--have", str(inventory), epoch=EPOCH + 30 * 86400)
        delta_size = sum(Path(p).stat().st_size for p in delta["bundle"])
        model_size = (later / "model" / "classifier.onnx").stat().st_size

        figures = {
            "content_total_bytes": total,
            "content_unique_bytes": unique,
            "v1_bundle_bytes": v1.stat().st_size,
            "v1_duplicate_bytes": duplicate_bytes(v1),
            "v2_bundle_bytes": v2.stat().st_size,
            "v2_duplicate_bytes": duplicate_bytes(v2),
            "v1_over_unique": round(v1.stat().st_size / unique, 3),
            "v2_over_unique": round(v2.stat().st_size / unique, 3),
            "v2_over_v1": round(v2.stat().st_size / v1.stat().st_size, 3),
            "model_bytes": model_size,
            "delta_bundle_bytes": delta_size,
            "delta_left_out": delta.get("delta"),
            "delta_minus_model_bytes": delta_size - model_size,
            "delta_goal_met": delta_size <= model_size + 1_000_000,
        }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    mb = 1e6
    print(f"content: {total / mb:.1f} MB in files, {unique / mb:.1f} MB unique")
    for fmt in ("v1", "v2"):
        print(
            f"{fmt} bundle: {figures[f'{fmt}_bundle_bytes'] / mb:.1f} MB "  # type: ignore[operator]
            f"({figures[f'{fmt}_over_unique']}x unique content), "
            f"duplicates {figures[f'{fmt}_duplicate_bytes'] / mb:.1f} MB"  # type: ignore[operator]
        )
    print(
        f"delta 1.0.1 (only the model changed): {delta_size / mb:.3f} MB "
        f"for a {model_size / 1e3:.1f} kB model "
        f"(goal <= model + 1 MB: {'met' if figures['delta_goal_met'] else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
