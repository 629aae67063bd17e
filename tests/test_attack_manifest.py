"""Attacks on the signed manifest, the version order, the compliance gate, install.sh and the far
side's disk: one test per attack, each named after it.

The bundles are signed with a real P-384 key the far side trusts (a publisher gone bad, or a
stolen key): the signature verifies, so everything after it must still refuse what is malformed.
Every forged bundle is written by airgap's own tar writer, so only the attack differs from a real
one. Each refusal asserts the documented exit code, the one-line message, that nothing was written
but the audit record, and (for install) that no image or container appeared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from airgap.adapters import keys
from airgap.adapters.archive import PartSink, TarWriter
from airgap.core.bundle_format import SIGNATURE_ALGORITHM, FileEntry, Manifest, canonical_json, render_sums
from airgap.errors import AirgapError, InvalidInputError, RollbackError
from airgap.services.deploy.receipts import Installed, Receipt
from airgap.services.media.verify import VerifyOptions, verify_bundle
from airgap.services.observer import NullObserver
from airgap.services.state import State
from tests.bundles import EPOCH, PASS, flip_byte_in, make_key, members, pack_demo, synthetic_staging
from tests.conftest import ROOT, assert_one_line_error, run_airgap

CREATED = "2023-11-14T22:13:20Z"  # EPOCH
PASSED = {"fail_on": "high", "failed": False, "summary": {}, "blocking": []}
FAILED = {"fail_on": "high", "failed": True, "summary": {}, "blocking": ["AG-IMG-ROOT"]}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def far(tmp_path: Path) -> dict[str, Any]:
    """A publisher key the far side trusts, and the far side's state directory."""
    key, pub, kid = make_key(tmp_path, "publisher")
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    return {"tmp": tmp_path, "key": key, "pub": pub, "kid": kid, "state": state, "name": _unique()}


def _unique() -> str:
    return f"attack-{uuid.uuid4().hex[:10]}"


def forge(
    far: dict[str, Any],
    files: dict[str, bytes] | None = None,
    manifest_files: list[dict[str, Any]] | None = None,
    spell: Any = canonical_json,
    **fields: Any,
) -> Path:
    """A bundle whose manifest, signed by the trusted key, says whatever the attack needs."""
    files = files if files is not None else {"build.json": json.dumps({"name": far["name"]}).encode()}
    listed = manifest_files or [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in sorted(files.items())
    ]
    doc: dict[str, Any] = {
        "format": "airgap.bundle/v1",
        "name": far["name"],
        "version": "1.0.0",
        "created": CREATED,
        "expires": None,
        "tool": "airgap test",
        "target_profile_sha256": None,
        "images": [],
        "locks": {},
        "policy": PASSED,
        "files": listed,
        "signer": {"key_id": far["kid"], "algorithm": SIGNATURE_ALGORITHM},
    }
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not _ABSENT}
    manifest = spell(doc)
    msig = far["key"].sign(manifest)
    sums = render_sums(
        [(f["path"], f["sha256"]) for f in listed]
        + [
            ("manifest.json", hashlib.sha256(manifest).hexdigest()),
            ("manifest.json.sig", hashlib.sha256(msig).hexdigest()),
        ]
    )
    out = far["tmp"] / "media"
    out.mkdir(exist_ok=True)
    name = f"forged-{uuid.uuid4().hex[:6]}.airgap.tar"
    sink = PartSink(out, name, None)
    writer = TarWriter(sink, EPOCH, "bundle")
    control = [
        ("manifest.json", manifest),
        ("manifest.json.sig", msig),
        ("SHA256SUMS", sums),
        ("SHA256SUMS.sig", far["key"].sign(sums)),
    ]
    for member, data in [*control, *sorted(files.items())]:
        writer.add_bytes(member, data)
    writer.close()
    sink.commit()
    return out / name


_ABSENT = object()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def run_far_side(far: dict[str, Any], *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs airgap on the far side; returns what it printed and every file it changed anywhere
    under the test's directory."""
    before = _tree(far["tmp"])
    proc = run_airgap(*args, "--state-dir", str(far["state"]), timeout=300)
    after = _tree(far["tmp"])
    return proc, {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}


def refused(far: dict[str, Any], code: int, *args: str) -> str:
    """The refusal contract: exit code, one line, nothing written but the audit record, which
    records the refusal."""
    proc, changed = run_far_side(far, *args)
    line = assert_one_line_error(proc, code)
    assert changed <= {str(far["state"] / "audit.log")}, f"wrote outside the audit log: {changed}"
    last = json.loads((far["state"] / "audit.log").read_text().splitlines()[-1])
    assert last["result"] in ("rejected", "refused") and last["exit_code"] == code, last
    return line


def verify(far: dict[str, Any], bundle: Path, *extra: str) -> str:
    return refused(far, 4, "verify", str(bundle), *extra)


def service_refuses(far: dict[str, Any], bundle: Path, error: type[AirgapError]) -> AirgapError:
    """The verify service, called as a library would with the far side's trust store and
    installed records, raises exactly ``error`` (the CLI line is asserted separately)."""
    state = State(far["state"])
    options = VerifyOptions(
        trusted=tuple(state.trust.keys()),
        installed_versions=state.installed_versions(),
        installed_manifests=state.installed_manifests(),
    )
    with pytest.raises(error) as caught:
        verify_bundle(bundle, options)
    return caught.value


def engine_objects(name: str) -> set[str]:
    """Containers and images, in Docker and Podman, that carry the bundle's name."""
    found: set[str] = set()
    for runtime in ("docker", "podman"):
        if shutil.which(runtime) is None:
            continue
        for argv in (
            [runtime, "ps", "-a", "--format", "{{.Names}}"],
            [runtime, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            found |= {f"{runtime}:{line}" for line in proc.stdout.split() if name in line}
    return found


def install_refused(far: dict[str, Any], bundle: Path, code: int, *extra: str) -> str:
    """``install --to venv`` refuses: no virtualenv, no content, no journal, no image, no container."""
    line = refused(far, code, "install", str(bundle), "--to", "venv", *extra)
    for leftover in ("content", "venvs", "journal", "installed.json"):
        assert not (far["state"] / leftover).exists(), leftover
    assert engine_objects(far["name"]) == set()
    return line


# --------------------------------------------------------------- malformed signed manifests
def test_name_with_path_traversal_is_rejected(far: dict[str, Any]) -> None:
    evil = forge(far, name="../../x")
    line = verify(far, evil)
    assert "manifest is malformed: name must be a lowercase DNS label" in line and "../../x" in line
    line = install_refused(far, evil, 4)
    assert "name must be a lowercase DNS label" in line
    assert not (far["tmp"] / "x").exists() and not (far["state"].parent.parent / "x").exists()


@pytest.mark.parametrize("name", ["Demo", "a" * 64, "-demo", "demo_1", "demo.x", "", 7])
def test_name_that_is_not_a_dns_label_is_rejected(far: dict[str, Any], name: Any) -> None:
    assert "name must be a lowercase DNS label" in verify(far, forge(far, name=name))


def test_version_with_path_traversal_is_rejected(far: dict[str, Any]) -> None:
    evil = forge(far, version="x/../../y")
    assert "version must be a semantic version" in verify(far, evil)
    assert "version must be a semantic version" in install_refused(far, evil, 4)


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0+a/b", "1.0.0-rc1\n", 1])
def test_version_that_is_not_semver_is_rejected(far: dict[str, Any], version: Any) -> None:
    assert "version must be a semantic version" in verify(far, forge(far, version=version))


@pytest.mark.parametrize(
    ("fieldname", "value"),
    [
        ("expires", "next tuesday"),
        ("expires", "2030-01-01T00:00:00"),  # no zone
        ("expires", "2030-02-30T00:00:00Z"),  # no such day
        ("expires", 1893456000),
        ("created", "2023-11-14"),
        ("created", None),
    ],
)
def test_date_that_is_not_rfc3339_with_a_zone_is_rejected(
    far: dict[str, Any], fieldname: str, value: Any
) -> None:
    line = verify(far, forge(far, **{fieldname: value}))
    assert f"manifest is malformed: {fieldname} is not" in line, line


def test_expires_that_is_not_a_date_is_rejected_at_install(far: dict[str, Any]) -> None:
    line = install_refused(far, forge(far, expires="soon"), 4)
    assert "expires is not an RFC 3339 timestamp" in line


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"images": 5}, "images must be a list"),
        ({"images": [5]}, "images[0] must be an object"),
        ({"images": [{"name": "x"}]}, "images[0].layout"),
        (
            {
                "images": [
                    {
                        "name": "demo:1.0.0",
                        "layout": "image/oci",
                        "manifest_digest": "sha256:../../../etc/passwd",
                        "config_digest": "sha256:" + "0" * 64,
                        "layers": [],
                        "user": None,
                    }
                ]
            },
            "images[0].manifest_digest",
        ),
        (
            {
                "images": [
                    {
                        "name": "demo:1.0.0",
                        "layout": "../oci",
                        "manifest_digest": "sha256:" + "0" * 64,
                        "config_digest": "sha256:" + "0" * 64,
                        "layers": [{"digest": "sha256:" + "1" * 64, "size": -1}],
                        "user": None,
                    }
                ]
            },
            "images[0].layout",
        ),
        ({"locks": ["a", "b"]}, "locks must be an object"),
        ({"locks": {"image": "not-a-digest"}}, "locks.image"),
        ({"policy": "passed"}, "policy must be an object"),
        ({"policy": {"failed": "no", "fail_on": "high"}}, "policy.failed"),
        ({"policy": {"failed": False, "fail_on": "never"}}, "policy.fail_on"),
        ({"target_profile_sha256": 5}, "target_profile_sha256"),
        ({"tool": ""}, "tool"),
        ({"extra": []}, "extra must be an object"),
        ({"surprise": True}, "surprise is not a field this format has"),
    ],
)
def test_typed_field_of_the_wrong_type_is_rejected(
    far: dict[str, Any], fields: dict[str, Any], named: str
) -> None:
    assert named in verify(far, forge(far, **fields))


def test_images_that_is_a_number_is_exit_4_at_install(far: dict[str, Any]) -> None:
    assert "images must be a list" in install_refused(far, forge(far, images=5), 4)


def test_locks_that_is_a_list_is_exit_4_at_install(far: dict[str, Any]) -> None:
    assert "locks must be an object" in install_refused(far, forge(far, locks=["x"]), 4)


def test_manifest_from_json_returns_a_valid_object_or_raises() -> None:
    """The model itself: every field the packer writes round-trips; a bad one raises."""
    doc = {
        "format": "airgap.bundle/v1",
        "name": "demo",
        "version": "1.0.0-rc.1+build.5",
        "created": CREATED,
        "expires": "2030-01-01T00:00:00.5+02:00",
        "tool": "airgap 0.1.0",
        "signer": {"key_id": "a" * 64, "algorithm": SIGNATURE_ALGORITHM},
        "target_profile_sha256": None,
        "files": [],
        "images": [
            {
                "name": "demo:1.0.0",
                "layout": "image/oci",
                "manifest_digest": "sha256:" + "1" * 64,
                "config_digest": "sha256:" + "2" * 64,
                "layers": [{"digest": "sha256:" + "3" * 64, "size": 12}],
                "user": "10001:10001",
            }
        ],
        "locks": {"image": "4" * 64},
        "policy": {**PASSED, "summary": {"open": {"high": 0, "total": 0}}},
    }
    m = Manifest.from_json(canonical_json(doc))
    assert Manifest.from_json(m.to_bytes()) == m
    assert m.expires_at == dt.datetime(2029, 12, 31, 22, 0, 0, 500000, tzinfo=dt.timezone.utc)
    assert m.images[0].layers == (("sha256:" + "3" * 64, 12),)
    assert m.policy_failed is False
    with pytest.raises(InvalidInputError, match="images.0..layers.0..size"):
        bad = json.loads(json.dumps(doc))
        bad["images"][0]["layers"][0]["size"] = "12"
        Manifest.from_json(canonical_json(bad))


# ---------------------------------------------------------------------- lying zstd frames
def _zst_bundle(far: dict[str, Any], stored: bytes, content: bytes, declared: int | None = None) -> Path:
    """A signed bundle with one ``.zst`` member: the stored bytes and the content the manifest claims."""
    files = {"model/weights.bin.zst": stored}
    listed = [
        {
            "path": "model/weights.bin.zst",
            "size": len(stored),
            "sha256": hashlib.sha256(stored).hexdigest(),
            "compression": "zstd",
            "content": {
                "size": len(content) if declared is None else declared,
                "sha256": hashlib.sha256(content).hexdigest(),
            },
        }
    ]
    return forge(far, files, listed)


PAYLOAD = bytes(random.Random(3).choices(b"abcdefgh", k=300_000))  # compresses about 3:1
FRAME = zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compress(PAYLOAD)


def test_a_well_formed_zstd_member_verifies(far: dict[str, Any]) -> None:
    proc, changed = run_far_side(far, "verify", str(_zst_bundle(far, FRAME, PAYLOAD)))
    assert proc.returncode == 0, proc.stderr
    # The audit record and, the bundle being accepted, its attestation (docs/attestations.md).
    # Records are chained under a lock file that stays beside them.
    lock = str(far["state"] / "attestations" / ".chain.lock")
    [attested] = [p for p in changed if Path(p).parent == far["state"] / "attestations" and p != lock]
    assert changed - {lock} == {str(far["state"] / "audit.log"), attested}


def test_zstd_junk_after_a_valid_frame_is_rejected(far: dict[str, Any]) -> None:
    line = refused(far, 3, "verify", str(_zst_bundle(far, FRAME + b"JUNK", PAYLOAD)))
    assert (
        "model/weights.bin.zst is not a valid zstd member: 4 bytes follow the end of the zstd frame" in line
    )


def test_a_second_zstd_frame_is_rejected(far: dict[str, Any]) -> None:
    second = zstandard.ZstdCompressor(write_content_size=True).compress(b"more")
    line = refused(far, 3, "verify", str(_zst_bundle(far, FRAME + second, PAYLOAD + b"more")))
    assert "follow the end of the zstd frame" in line


def test_zstd_frame_that_lies_about_its_content_size_is_rejected(far: dict[str, Any]) -> None:
    # The frame header says 1000 bytes; the manifest agrees; the frame holds 1,024,000.
    header = zstandard.frame_header_size(FRAME)
    assert zstandard.get_frame_parameters(FRAME).content_size == len(PAYLOAD)
    fhd = FRAME[4]
    fcs = (1 if fhd & 0x20 else 0, 2, 4, 8)[fhd >> 6]
    claimed = 200 if fcs == 1 else 1000
    lie = bytearray(FRAME)
    lie[header - fcs : header] = (claimed - 256 if fcs == 2 else claimed).to_bytes(fcs, "little")
    assert zstandard.get_frame_parameters(bytes(lie)).content_size == claimed
    line = refused(far, 3, "verify", str(_zst_bundle(far, bytes(lie), PAYLOAD[:claimed])))
    assert "model/weights.bin.zst is not a valid zstd member" in line


def test_zstd_frame_that_disagrees_with_the_manifest_is_rejected(far: dict[str, Any]) -> None:
    line = refused(far, 3, "verify", str(_zst_bundle(far, FRAME, PAYLOAD, declared=len(PAYLOAD) + 1)))
    assert f"its frame declares {len(PAYLOAD)} bytes of content; the manifest says {len(PAYLOAD) + 1}" in line


def test_zstd_frame_without_a_content_size_is_rejected(far: dict[str, Any]) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(PAYLOAD)
    line = refused(far, 3, "verify", str(_zst_bundle(far, frame, PAYLOAD)))
    assert "does not declare its content size" in line


def test_zstd_frame_cut_short_is_rejected(far: dict[str, Any]) -> None:
    line = refused(far, 3, "verify", str(_zst_bundle(far, FRAME[:-7], PAYLOAD)))
    assert "the zstd frame is cut short" in line


def test_zstd_frame_that_decompresses_to_other_content_is_rejected(far: dict[str, Any]) -> None:
    line = refused(far, 3, "verify", str(_zst_bundle(far, FRAME, b"\0" * len(PAYLOAD))))
    assert "decompresses to content that differs from the manifest" in line


def test_zstd_frame_that_needs_a_huge_window_is_rejected(far: dict[str, Any]) -> None:
    """A signed frame cannot make the verifier allocate a large decompression window."""
    content = bytes(random.Random(5).choices(b"abcdefgh", k=64 << 10)) * 144  # 9 MiB
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24, write_content_size=1)
    frame = zstandard.ZstdCompressor(compression_params=params).compress(content)
    line = refused(far, 3, "verify", str(_zst_bundle(far, frame, content)))
    assert "model/weights.bin.zst is not a valid zstd member" in line and "memory" in line.lower(), line


def test_lying_zstd_frame_is_refused_at_install_before_anything_is_extracted(far: dict[str, Any]) -> None:
    line = install_refused(far, _zst_bundle(far, FRAME + b"JUNK", PAYLOAD), 3)
    assert "follow the end of the zstd frame" in line


# ------------------------------------------------------------------------- version order
def _installed(far: dict[str, Any], version: str, manifest_sha256: str = "0" * 64) -> None:
    """The far side's record that ``version`` was installed (as a finished install writes it)."""
    receipt = Receipt(
        far["name"], version, "venv", manifest_sha256, far["kid"], "old.airgap.tar", CREATED, str(far["tmp"])
    )
    Installed(State(far["state"])).put(receipt, None)


def test_pre_release_does_not_replace_release(far: dict[str, Any]) -> None:
    _installed(far, "1.0.0")
    rc = forge(far, version="1.0.0-rc1")
    expected = (
        f"refusing a rollback: {far['name']} 1.0.0-rc1 is older than 1.0.0, the highest version "
        "installed here (a pre-release is older than its release)"
    )
    line = refused(far, 3, "install", str(rc), "--to", "venv")
    assert expected in line and "--allow-downgrade" in line
    assert engine_objects(far["name"]) == set()
    assert expected in refused(far, 3, "verify", str(rc))
    assert expected in service_refuses(far, rc, RollbackError).one_line()


def test_release_replaces_its_pre_release_and_build_metadata_is_ignored(far: dict[str, Any]) -> None:
    _installed(far, "1.0.0-rc.2")
    for version in ("1.0.0", "1.0.0-rc.10"):
        proc, _ = run_far_side(far, "verify", str(forge(far, version=version)))
        assert proc.returncode == 0, (version, proc.stderr)
    for version in ("1.0.0-rc.1", "1.0.0-beta", "0.9.9"):
        older = forge(far, version=version)
        refused(far, 3, "verify", str(older))
        service_refuses(far, older, RollbackError)
    # Build metadata does not order: 1.0.0-rc.2+rebuild is the installed version, with other content.
    rebuild = forge(far, version="1.0.0-rc.2+rebuild")
    assert "same version, different content" in refused(far, 3, "verify", str(rebuild))
    service_refuses(far, rebuild, RollbackError)


def test_allow_downgrade_accepts_a_pre_release_loudly(far: dict[str, Any]) -> None:
    _installed(far, "1.0.0")
    proc, _ = run_far_side(far, "verify", str(forge(far, version="1.0.0-rc1")), "--allow-downgrade")
    assert proc.returncode == 0 and "UNSAFE: accepted 1.0.0-rc1, older than installed 1.0.0" in proc.stderr


def test_installed_record_keeps_the_highest_version_by_semver(tmp_path: Path) -> None:
    installed = Installed(State(tmp_path))
    for version in ("1.0.0", "1.0.0-rc1", "1.0.0+b2", "0.9.0"):
        installed.put(Receipt("demo", version, "venv", "0" * 64, "k", "b", CREATED, "c"), None)
    assert State(tmp_path).installed_versions() == {"demo": "1.0.0"}


# ---------------------------------------------------------------------- compliance gate
def staging_dir(root: Path, name: str, policy: dict[str, Any] | None, version: str = "1.0.0") -> Path:
    st = synthetic_staging(root / "staging", version)
    (st / "build.json").write_text(
        json.dumps({"name": name, "version": version, "source_date_epoch": EPOCH, "wheelhouses": {}})
    )
    if policy is not None:
        (st / "compliance").mkdir()
        (st / "compliance" / "results.json").write_text(json.dumps(policy))
    return st


def pack_cli(far: dict[str, Any], staging: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_airgap(
        "pack",
        str(staging),
        "--key",
        str(far["tmp"] / "publisher.key"),
        "-o",
        str(far["tmp"] / "out"),
        *extra,
        env={"AIRGAP_KEY_PASSPHRASE": PASS.decode(), "SOURCE_DATE_EPOCH": str(EPOCH)},
    )


def _manifest_of(bundle: Path) -> dict[str, Any]:
    with tarfile.open(bundle) as tf:
        return dict(json.loads(tf.extractfile("bundle/manifest.json").read()))  # type: ignore[union-attr]


def test_failed_policy_is_not_signed(far: dict[str, Any]) -> None:
    staging = staging_dir(far["tmp"], far["name"], FAILED)
    line = assert_one_line_error(pack_cli(far, staging), 1)
    assert "policy evaluation failed (1 open finding(s) at or above high: AG-IMG-ROOT)" in line
    assert "the bundle was not signed" in line
    assert not (far["tmp"] / "out").exists() or not list((far["tmp"] / "out").iterdir())


def test_staging_without_a_policy_evaluation_is_not_signed(far: dict[str, Any]) -> None:
    line = assert_one_line_error(pack_cli(far, staging_dir(far["tmp"], far["name"], None)), 4)
    assert "has no policy evaluation" in line
    assert not (far["tmp"] / "out").exists() or not list((far["tmp"] / "out").iterdir())


def test_unsafe_sign_failed_policy_warns_and_is_recorded_then_install_refuses(far: dict[str, Any]) -> None:
    staging = staging_dir(far["tmp"], far["name"], FAILED)
    proc = pack_cli(far, staging, "--unsafe-sign-failed-policy")
    assert proc.returncode == 0, proc.stderr
    assert "UNSAFE: signing" in proc.stderr and "--unsafe-sign-failed-policy" in proc.stderr
    bundle = next((far["tmp"] / "out").glob("*.airgap.tar"))
    policy = _manifest_of(bundle)["policy"]
    assert policy["failed"] is True and policy["unsafe_signed_failed_policy"] is True
    line = install_refused(far, bundle, 1)
    assert f"{far['name']} 1.0.0 failed its signed policy evaluation" in line
    assert "signed with --unsafe-sign-failed-policy" in line and "refusing to install" in line


def test_install_refuses_a_bundle_without_a_signed_policy_evaluation(far: dict[str, Any]) -> None:
    line = install_refused(far, forge(far, policy={}), 1)
    assert "carries no signed policy evaluation" in line


def test_unsafe_install_failed_policy_passes_the_gate_loudly(far: dict[str, Any]) -> None:
    files = {
        "build.json": json.dumps({"name": far["name"]}).encode(),
        "model/contract.json": b'{"cases": []}',
    }
    bundle = forge(far, files, policy=FAILED)
    proc, _ = run_far_side(far, "install", str(bundle), "--to", "venv", "--unsafe-install-failed-policy")
    assert "UNSAFE: installing" in proc.stderr and "--unsafe-install-failed-policy" in proc.stderr
    # Past the gate, this forged bundle fails for what it lacks, not for its policy.
    assert proc.returncode == 4 and "has no host wheelhouse" in proc.stderr, proc.stderr
    assert not (far["state"] / "content" / "bundles").exists() or not any(
        (far["state"] / "content" / "bundles").iterdir()
    ), "what it extracted is removed when it fails"


# ---------------------------------------------------------------------------- expiry
def test_expires_counts_from_signing_time(far: dict[str, Any]) -> None:
    """SOURCE_DATE_EPOCH is 2023; a 90-day bundle signed today expires 90 days from today."""
    staging = staging_dir(far["tmp"], far["name"], PASSED)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    proc = pack_cli(far, staging, "--expires", "90d")
    after = dt.datetime.now(dt.timezone.utc)
    assert proc.returncode == 0, proc.stderr
    bundle = next((far["tmp"] / "out").glob("*.airgap.tar"))
    doc = _manifest_of(bundle)
    assert doc["created"] == CREATED  # reproducible
    expires = dt.datetime.fromisoformat(doc["expires"].replace("Z", "+00:00"))
    assert before + dt.timedelta(days=90) <= expires <= after + dt.timedelta(days=90)
    verified, _ = run_far_side(far, "verify", str(bundle))
    assert verified.returncode == 0, verified.stderr


def test_expires_in_the_past_is_refused_at_pack(far: dict[str, Any]) -> None:
    staging = staging_dir(far["tmp"], far["name"], PASSED)
    line = assert_one_line_error(pack_cli(far, staging, "--expires", "2024-01-01T00:00:00Z"), 4)
    assert "is not in the future" in line


# ----------------------------------------------------------------- pack and join: one read
class _ChangesAfterHashing(NullObserver):
    """An observer (the pack service's own progress port) that changes a staging file the moment
    the first pass reports it hashed: a file edited while pack runs."""

    def __init__(self, path: Path, change: Any) -> None:
        self.path, self.change = path, change

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        if task == "hash" and detail == "model/model.onnx":
            self.change(self.path)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda p: p.write_bytes(b"\x01" + p.read_bytes()[1:]), "changed while it was being packed"),
        (lambda p: p.write_bytes(p.read_bytes() + b"more"), "grew while it was being packed"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "shrank while it was being packed"),
    ],
)
def test_file_changed_between_hash_and_write_is_not_signed(tmp_path: Path, change: Any, says: str) -> None:
    key, _, _ = make_key(tmp_path, "publisher")
    staging = synthetic_staging(tmp_path / "staging")
    observer = _ChangesAfterHashing(staging / "model" / "model.onnx", change)
    with pytest.raises(InvalidInputError, match=rf"model\.onnx {says}: nothing was written"):
        pack_demo(tmp_path, key, observer=observer)
    assert not list((tmp_path / "out").iterdir()), "no bundle, no part, no temporary file"


def test_join_writes_nothing_when_a_part_is_damaged(far: dict[str, Any]) -> None:
    packed = pack_demo(far["tmp"], far["key"], part_size=1 << 20)
    index = next(p for p in packed.files if p.name.endswith(".parts.sha256"))
    part = next(p for p in packed.files if p.name.endswith(".part-001"))
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    dest = far["tmp"] / "joined.airgap.tar"
    proc = run_airgap("join", str(index), "-o", str(dest), "--key", str(far["pub"]))
    line = assert_one_line_error(proc, 3)
    assert part.name in line and "damaged" in line
    assert not dest.exists() and not list(far["tmp"].glob(".joined*"))


def test_join_of_good_parts_gives_the_single_file_bundle(far: dict[str, Any]) -> None:
    whole = pack_demo(far["tmp"] / "whole", far["key"]).files[0]
    packed = pack_demo(far["tmp"] / "split", far["key"], part_size=1 << 20)
    index = next(p for p in packed.files if p.name.endswith(".parts.sha256"))
    dest = far["tmp"] / "joined.airgap.tar"
    assert run_airgap("join", str(index), "-o", str(dest), "--key", str(far["pub"])).returncode == 0
    assert dest.read_bytes() == whole.read_bytes()


# ------------------------------------------------------------------------- install.sh
def _sh_bundle(far: dict[str, Any]) -> Path:
    """A real packed bundle that carries install.sh (and a stand-in airgap lock)."""
    staging = synthetic_staging(far["tmp"] / "sh" / "staging")
    shutil.copy(ROOT / "bundle_templates" / "install.sh", staging / "install.sh")
    (staging / "airgap").mkdir()
    (staging / "airgap" / "requirements.lock").write_text("airgap==0.1.0 --hash=sha256:" + "0" * 64 + "\n")
    return pack_demo(far["tmp"] / "sh", far["key"]).files[0]


def run_install_sh(far: dict[str, Any], bundle: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """As an operator would: extract install.sh, run it with sh, as this host's user."""
    work = far["tmp"] / f"op-{uuid.uuid4().hex[:6]}"
    (work / "home").mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(work), "bundle/install.sh"], check=True)
    proc = subprocess.run(
        [
            "sh",
            str(work / "bundle" / "install.sh"),
            "--key",
            str(far["pub"]),
            str(bundle),
            "--prefix",
            str(work / "prefix"),
            "--state-dir",
            str(work / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ["PATH"], "HOME": str(work / "home"), "TMPDIR": str(work)},
        cwd=work,
    )
    return proc, work


def sh_refused(far: dict[str, Any], bundle: Path, code: int) -> str:
    proc, work = run_install_sh(far, bundle)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    created = sorted(p.name for p in work.iterdir())
    assert created == ["bundle", "home"], f"install.sh created {created} before refusing"
    assert not any((work / "home").iterdir())
    return lines[0]


def test_install_sh_refuses_before_creating_anything(far: dict[str, Any]) -> None:
    """A flipped byte in a member install.sh itself never uses (here an image layer)."""
    bundle = _sh_bundle(far)
    layer = next(n for n in members(bundle) if "/blobs/sha256/" in n)
    flip_byte_in(bundle, layer, offset=10)
    line = sh_refused(far, bundle, 3)
    assert layer.removeprefix("bundle/") in line and "does not match the signed SHA256SUMS" in line


def _append_member(bundle: Path, name: str, data: bytes) -> None:
    """Adds one member after the last, keeping a well-formed end-of-archive."""
    raw = bundle.read_bytes()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    body = raw[: _end_of_members(raw)] + info.tobuf(format=tarfile.USTAR_FORMAT)
    body += data + b"\0" * (-len(data) % 512) + b"\0" * 1024
    bundle.write_bytes(body + b"\0" * (-len(body) % 10240))


def test_install_sh_refuses_a_member_that_escapes(far: dict[str, Any]) -> None:
    bundle = _sh_bundle(far)
    _append_member(bundle, "bundle/../x", b"x")
    line = sh_refused(far, bundle, 3)
    assert "member name that could escape" in line and "bundle/../x" in line


def _end_of_members(data: bytes) -> int:
    """Offset of the end-of-archive marker of a tar archive written by airgap."""
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tf:
        last = tf.getmembers()[-1]
    return last.offset_data + last.size + (-last.size % 512)


def test_install_sh_refuses_appended_garbage(far: dict[str, Any]) -> None:
    bundle = _sh_bundle(far)
    with open(bundle, "ab") as fh:
        fh.write(b"appended by someone else\n")
    line = sh_refused(far, bundle, 3)
    assert "data follows the end of the archive: 25 bytes were appended" in line


def test_install_sh_refuses_an_unlisted_member(far: dict[str, Any]) -> None:
    bundle = _sh_bundle(far)
    _append_member(bundle, "bundle/extra.txt", b"hello")
    line = sh_refused(far, bundle, 3)
    assert "extra.txt" in line and "does not match the signed SHA256SUMS" in line


def test_install_sh_refuses_duplicated_sha256sums_members(far: dict[str, Any]) -> None:
    """A second bundle/SHA256SUMS (and .sig) after the content: step 5 sets SHA256SUMS lines aside
    by name, so only a count of the control members catches the copy."""
    bundle = _sh_bundle(far)
    with tarfile.open(bundle) as tf:
        sums = tf.extractfile("bundle/SHA256SUMS").read()  # type: ignore[union-attr]
        sig = tf.extractfile("bundle/SHA256SUMS.sig").read()  # type: ignore[union-attr]
    _append_member(bundle, "bundle/SHA256SUMS", sums + b"0" * 64 + b"  evil\n")
    _append_member(bundle, "bundle/SHA256SUMS.sig", sig)
    line = sh_refused(far, bundle, 3)
    assert "a control file appears twice in the bundle: bundle/SHA256SUMS" in line


def test_install_sh_refuses_control_files_out_of_order(far: dict[str, Any]) -> None:
    bundle = _sh_bundle(far)
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tf:
        infos = {i.name: i for i in tf.getmembers()}
    # The fourth member renamed (header checksum fixed): SHA256SUMS.sig is no longer in its place.
    sig = infos["bundle/SHA256SUMS.sig"]
    block = sig.offset
    name = b"bundle/SHA256SUMS.siG"
    data[block : block + 100] = name.ljust(100, b"\0")
    data[block + 148 : block + 156] = b"        "
    data[block + 148 : block + 156] = b"%06o\0 " % sum(data[block : block + 512])
    bundle.write_bytes(bytes(data))
    line = sh_refused(far, bundle, 3)
    assert "the bundle's control files are out of order" in line


def test_install_sh_check_passes_on_an_untouched_bundle(far: dict[str, Any]) -> None:
    """The same bundle, untouched, passes every check and only then stops at the (stand-in) lock."""
    proc, work = run_install_sh(far, _sh_bundle(far))
    assert "files match" in proc.stdout, proc.stdout + proc.stderr
    assert (work / "prefix").exists(), "past the checks, install.sh goes on to build its venv"


# --------------------------------------------------------------- the far side's disk
@pytest.fixture
def tiny_state(far: dict[str, Any]) -> Iterator[Path]:
    """The state directory on a 2 MB tmpfs (a full disk after the first megabytes)."""
    state = far["state"]
    saved = far["tmp"] / "state-saved"
    shutil.copytree(state, saved)
    shutil.rmtree(state)
    state.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], capture_output=True)
    assert proc.returncode == 0, f"mounting a tmpfs needs root: {proc.stderr!r}"
    try:
        shutil.copytree(saved, state, dirs_exist_ok=True)
        yield state
    finally:
        subprocess.run(["umount", str(state)], check=True)


def test_full_disk_install_rolls_back(far: dict[str, Any], tiny_state: Path) -> None:
    bundle = pack_demo(far["tmp"], far["key"], metadata={"policy": PASSED}).files[0]
    before = _tree(tiny_state)
    proc = run_airgap("install", str(bundle), "--to", "venv", "--state-dir", str(tiny_state))
    line = assert_one_line_error(proc, 5)
    assert "No space left on device" in line and "free space in the state directory" in line
    after = _tree(tiny_state)
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    assert changed == {str(tiny_state / "audit.log")}, changed
    for leftover in ("journal", "content/bundles"):
        path = tiny_state / leftover
        assert not path.exists() or not any(path.iterdir()), f"{leftover} left behind"
    assert not (tiny_state / "venvs").exists()
    usage = shutil.disk_usage(tiny_state)
    assert usage.used < 256 << 10, f"partial content left behind: {usage.used} bytes used"
    assert engine_objects("demo-1.0.0") == set()


def test_audit_failure_does_not_mask_tampering(far: dict[str, Any]) -> None:
    bundle = pack_demo(far["tmp"], far["key"]).files[0]
    flip_byte_in(bundle, "bundle/model/model.onnx", offset=3)
    audit = far["state"] / "audit.log"
    audit.unlink()
    audit.mkdir()  # unwritable, even for root
    proc = run_airgap("verify", str(bundle), "--state-dir", str(far["state"]))
    line = assert_one_line_error(proc, 3)
    assert "model/model.onnx has been modified" in line
    assert "the audit record could not be written" in line and str(audit) in line
    proc = run_airgap("install", str(bundle), "--to", "venv", "--state-dir", str(far["state"]))
    line = assert_one_line_error(proc, 3)
    assert "has been modified" in line and "the audit record could not be written" in line
    assert not (far["state"] / "content").exists() and not (far["state"] / "journal").exists()


def test_audit_failure_after_a_good_verify_is_an_environment_failure(far: dict[str, Any]) -> None:
    bundle = pack_demo(far["tmp"], far["key"]).files[0]
    audit = far["state"] / "audit.log"
    audit.unlink()
    audit.mkdir()
    line = assert_one_line_error(run_airgap("verify", str(bundle), "--state-dir", str(far["state"])), 5)
    assert "cannot append to the audit log" in line


def test_internal_error_is_not_doubled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """A bug surfaces as one line that says "internal error" once, with the exception's type."""
    from airgap import cli
    from airgap.services.media import verify as verify_service

    def bug(*_: object, **__: object) -> None:
        raise RuntimeError("an unexpected state")

    monkeypatch.setattr(verify_service, "verify_and_audit", bug)
    code = cli.main(["verify", str(tmp_path / "b.airgap.tar"), "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 70
    assert err.count("internal error") == 1, err
    assert "internal error: RuntimeError: an unexpected state" in " ".join(err.split())


# ------------------------------------------------------------------- shared blob store
GOOD_CONFIG = b'{"config":"GOOD"}'
GOOD_DIGEST = hashlib.sha256(GOOD_CONFIG).hexdigest()
BLOB = f"image/oci/blobs/sha256/{GOOD_DIGEST}"


def test_blob_named_for_other_content_is_rejected(far: dict[str, Any]) -> None:
    """Bundle A carries a blob named sha256(GOOD) holding EVIL: refused, so it can never be the
    copy the shared store keeps for bundle B."""
    evil = forge(far, files={"build.json": b"{}", BLOB: b'{"config":"EVIL, runs as root"}'})
    line = refused(far, 3, "verify", str(evil))
    assert f"{BLOB} is a content-addressed blob whose content hashes to" in line
    assert "not to its name" in line


def test_compressed_blob_named_for_other_content_is_rejected(far: dict[str, Any]) -> None:
    content = b'{"config":"EVIL"}' * 10
    stored = zstandard.ZstdCompressor(write_content_size=True).compress(content)
    listed = [
        {"path": "build.json", "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
        {
            "path": BLOB + ".zst",
            "size": len(stored),
            "sha256": hashlib.sha256(stored).hexdigest(),
            "compression": "zstd",
            "content": {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()},
        },
    ]
    evil = forge(far, files={"build.json": b"{}", BLOB + ".zst": stored}, manifest_files=listed)
    assert "is a content-addressed blob whose content hashes to" in refused(far, 3, "verify", str(evil))


def test_image_naming_a_blob_the_bundle_lacks_is_rejected(far: dict[str, Any]) -> None:
    """An image whose config would come from whatever the store already holds under that name."""
    image = {
        "name": "demo:1.0.0",
        "layout": "image/oci",
        "manifest_digest": f"sha256:{GOOD_DIGEST}",
        "config_digest": f"sha256:{'c' * 64}",
        "layers": [],
        "user": None,
    }
    evil = forge(far, files={"build.json": b"{}", BLOB: GOOD_CONFIG}, images=[image])
    line = refused(far, 3, "verify", str(evil))
    assert f"image demo:1.0.0 names blob sha256:{'c' * 16}" in line and "not in the bundle" in line


def test_poisoned_blob_already_in_the_store_is_replaced_not_reused(far: dict[str, Any]) -> None:
    """A store file whose bytes do not hash to its name (left by an older airgap, or tampered with
    on disk) is never reused: extraction rewrites it from the verified bundle."""
    from airgap.services.media.extraction import extract
    from airgap.services.media.verify import VerifyOptions, verify_bundle

    good = forge(far, files={"build.json": b"{}", BLOB: GOOD_CONFIG})
    blobs = far["tmp"] / "store" / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / GOOD_DIGEST).write_bytes(b'{"config":"EVIL"}')
    trusted = (keys.TrustedKey(far["kid"], far["pub"], keys.load_public(far["pub"].read_bytes(), "pub")),)
    verified = verify_bundle(good, VerifyOptions(trusted=trusted))
    extract(good, verified, lambda p: p.startswith("image/oci/"), far["tmp"] / "store" / "c", blobs)
    assert (blobs / GOOD_DIGEST).read_bytes() == GOOD_CONFIG


# ------------------------------------------------------------------- text shown to the operator
def test_rich_markup_in_the_tool_does_not_hide_text_in_inspect(far: dict[str, Any]) -> None:
    """``[conceal]`` in a signed text field is shown as written, and the unverified label stays."""
    bundle = forge(far, tool="ok [conceal]hidden")
    proc = run_airgap("inspect", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "ok [conceal]hidden" in proc.stdout and "(unverified: run airgap verify)" in proc.stdout
    bad = forge(far, tool="[/]")
    proc = run_airgap("inspect", str(bad))
    assert proc.returncode == 0 and "[/]" in proc.stdout, proc.stderr


# ------------------------------------------------------------------------ the signed build record
@pytest.mark.parametrize(
    ("record", "says"),
    [
        (b"[]", "build.json is malformed: the document must be an object, not list"),
        (b"\xff", "build.json is malformed: the document is not UTF-8 JSON"),
        (b'{"serving":{"port":"x"}}', "build.json is malformed: serving.port must be a TCP port"),
        (b'{"serving":{"port":0}}', "build.json is malformed: serving.port must be a TCP port"),
        (b'{"serving":[]}', "build.json is malformed: serving must be an object, not list"),
        (b'{"resources":{"limits":{"cpu":"x","memory":"1Gi"}}}', "resources.limits.cpu is not a quantity"),
        (b'{"model":{"file":"../../etc/passwd"}}', "model.file is not a safe relative path"),
        (b'{"manifests":{"namespace":"Not A Label"}}', "manifests.namespace is not a DNS label"),
        (b'{"serving":{"port":NaN}}', "build.json is malformed: the document is not UTF-8 JSON"),
    ],
    ids=[
        "list",
        "not-utf8",
        "port-string",
        "port-zero",
        "serving-list",
        "cpu",
        "model-path",
        "namespace",
        "nan",
    ],
)
def test_malformed_build_record_is_rejected_at_verify(far: dict[str, Any], record: bytes, says: str) -> None:
    bundle = forge(far, files={"build.json": record})
    assert says in refused(far, 4, "verify", str(bundle))
    assert says in install_refused(far, bundle, 4)


def test_bundle_without_a_build_record_is_not_installable(far: dict[str, Any]) -> None:
    bundle = forge(far, files={"x.txt": b"1"})
    assert "has no signed build.json: it is not installable" in install_refused(far, bundle, 4)


def test_pack_refuses_a_staging_record_without_source_date_epoch(far: dict[str, Any]) -> None:
    staging = staging_dir(far["tmp"], far["name"], PASSED)
    record = json.loads((staging / "build.json").read_text())
    record.pop("source_date_epoch", None)
    (staging / "build.json").write_text(json.dumps(record))
    line = assert_one_line_error(pack_cli(far, staging), 4)
    assert "source_date_epoch must be a non-negative integer, not None" in line


# ----------------------------------------------------------------------- ASCII digits only
@pytest.mark.parametrize("version", ["1\u0662.0.0", "1.0.\u0661", "1.0.0-rc.\u0663", "\uff11.0.0"])
def test_version_with_non_ascii_digits_is_rejected(far: dict[str, Any], version: str) -> None:
    """``1٢.0.0`` is not 12.0.0: a version in other scripts' digits would order as one it is not."""
    assert "version must be a semantic version" in verify(far, forge(far, version=version))


def test_dates_with_non_ascii_digits_are_rejected(far: dict[str, Any]) -> None:
    arabic = "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in CREATED)
    assert "created is not an RFC 3339 timestamp" in verify(far, forge(far, created=arabic))
    assert "expires is not an RFC 3339 timestamp" in verify(far, forge(far, expires=arabic))


def test_version_order_uses_ascii_digits_only() -> None:
    from airgap.core import versions

    assert not versions.is_valid("1\u0662.0.0")
    assert versions.older("2.0.0", "12.0.0")


# ------------------------------------------------------------------- one spelling of the manifest
def test_duplicate_key_in_the_manifest_is_rejected(far: dict[str, Any]) -> None:
    """``"version":"9.9.9","version":"1.0.0"``: json.loads keeps the last, a grep-based reader
    the first; neither may be trusted, so the manifest is refused."""

    def duplicate(doc: dict[str, Any]) -> bytes:
        raw = canonical_json(doc)
        return raw.replace(b'"version":"1.0.0"', b'"version":"9.9.9","version":"1.0.0"', 1)

    line = verify(far, forge(far, spell=duplicate))
    assert "manifest.json is not JSON: the key 'version' appears twice in one object" in line


@pytest.mark.parametrize(
    "spell",
    [
        lambda doc: json.dumps(doc, sort_keys=True, indent=2).encode() + b"\n",
        lambda doc: b"\xef\xbb\xbf" + canonical_json(doc),
        lambda doc: canonical_json(doc).decode().encode("utf-16"),
        lambda doc: json.dumps(doc, separators=(",", ":")).encode() + b"\n",
        lambda doc: canonical_json(doc)[:-1],
        lambda doc: canonical_json(doc | {"extra": {}}),
        lambda doc: canonical_json(doc).replace(b'"name":', b'"n\\u0061me":', 1),
    ],
    ids=["indented", "bom", "utf-16", "unsorted-keys", "no-newline", "empty-extra", "escaped-key"],
)
def test_manifest_not_in_canonical_form_is_rejected(far: dict[str, Any], spell: Any) -> None:
    line = verify(far, forge(far, spell=spell))
    assert "not in the canonical form the packer writes" in line or "manifest.json is not JSON" in line


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_the_manifest_is_rejected(far: dict[str, Any], constant: str) -> None:
    def with_constant(doc: dict[str, Any]) -> bytes:
        return canonical_json(doc | {"extra": {"x": 1}}).replace(b'"x":1', f'"x":{constant}'.encode())

    assert f"manifest.json is not JSON: {constant} is not JSON" in verify(
        far, forge(far, spell=with_constant)
    )


# ----------------------------------------------------------------- two entries, one file
def test_plain_and_compressed_entries_for_one_file_are_rejected(far: dict[str, Any]) -> None:
    stored = zstandard.ZstdCompressor(write_content_size=True).compress(b'{"cases": [1]}')
    listed = [
        {"path": "model/contract.json", "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
        {
            "path": "model/contract.json.zst",
            "size": len(stored),
            "sha256": hashlib.sha256(stored).hexdigest(),
            "compression": "zstd",
            "content": {"size": 14, "sha256": hashlib.sha256(b'{"cases": [1]}').hexdigest()},
        },
    ]
    files = {"model/contract.json": b"{}", "model/contract.json.zst": stored}
    line = verify(far, forge(far, files=files, manifest_files=listed))
    assert "files list model/contract.json and model/contract.json.zst" in line
    assert "same file once extracted" in line


def test_entries_differing_only_by_case_are_rejected(far: dict[str, Any]) -> None:
    files = {"model/Model.onnx": b"a", "model/model.onnx.zst": b"b"}
    listed = [
        {"path": "model/Model.onnx", "size": 1, "sha256": hashlib.sha256(b"a").hexdigest()},
        {
            "path": "model/model.onnx.zst",
            "size": 1,
            "sha256": hashlib.sha256(b"b").hexdigest(),
            "compression": "zstd",
            "content": {"size": 1, "sha256": hashlib.sha256(b"a").hexdigest()},
        },
    ]
    line = verify(far, forge(far, files=files, manifest_files=listed))
    assert "which are the same file once extracted" in line


# ------------------------------------------------------------- same version, other content
def _manifest_sha(bundle: Path) -> str:
    with tarfile.open(bundle) as tf:
        return hashlib.sha256(tf.extractfile("bundle/manifest.json").read()).hexdigest()  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["1.0.0+build.1", "1.0.0"])
def test_same_version_with_different_content_is_rejected(far: dict[str, Any], version: str) -> None:
    """Installed 1.0.0+build.2; 1.0.0+build.1 and 1.0.0 have its precedence but other manifests:
    neither replaces it silently."""
    installed = forge(far, version="1.0.0+build.2")
    _installed(far, "1.0.0+build.2", _manifest_sha(installed))
    other = forge(far, version=version)
    line = refused(far, 3, "verify", str(other))
    expected = f"same version, different content: {far['name']} {version} has the precedence of installed"
    assert f"{expected} 1.0.0+build.2" in line
    assert "--allow-downgrade" in line
    assert expected in service_refuses(far, other, RollbackError).one_line()


def test_same_version_identical_bundle_verifies(far: dict[str, Any]) -> None:
    installed = forge(far, version="1.0.0+build.2")
    _installed(far, "1.0.0+build.2", _manifest_sha(installed))
    proc, _ = run_far_side(far, "verify", str(installed))
    assert proc.returncode == 0, proc.stderr
    proc, _ = run_far_side(far, "verify", str(forge(far, version="1.0.1")))
    assert proc.returncode == 0, proc.stderr


def test_same_version_different_content_is_accepted_loudly_with_allow_downgrade(far: dict[str, Any]) -> None:
    installed = forge(far, version="1.0.0+build.2")
    _installed(far, "1.0.0+build.2", _manifest_sha(installed))
    proc, _ = run_far_side(far, "verify", str(forge(far, version="1.0.0")), "--allow-downgrade")
    assert (
        proc.returncode == 0
        and "UNSAFE: accepted 1.0.0, other content than installed 1.0.0+build.2" in proc.stderr
    )


def test_poisoned_config_in_the_store_is_not_handed_to_the_engine(tmp_path: Path) -> None:
    """The docker-archive stream checks the config it reads from the store against its digest:
    the engine trusts the config, and the config's diff ids vouch for the layers."""
    from airgap.adapters.oci import OciImage, docker_archive_stream
    from airgap.errors import IntegrityError

    blobs = tmp_path / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / GOOD_DIGEST).write_bytes(b'{"config":"EVIL"}')
    image = OciImage(tmp_path / "oci", f"sha256:{'a' * 64}", f"sha256:{GOOD_DIGEST}", (), "demo:1.0.0")
    with pytest.raises(IntegrityError, match=f"does not hash to sha256:{GOOD_DIGEST}"):
        next(docker_archive_stream(image, "demo:1.0.0"))
    (blobs / GOOD_DIGEST).write_bytes(GOOD_CONFIG)
    assert GOOD_CONFIG in next(docker_archive_stream(image, "demo:1.0.0"))


def test_build_record_with_a_digest_pinned_manifest_image_is_valid() -> None:
    """What `airgap bundle` writes (the manifests' image pinned by digest) passes the check."""
    from airgap.core.bundle_format import check_build_record

    image = "airgap/tabular-classifier@sha256:" + "2" * 64
    check_build_record(json.dumps({"manifests": {"image": image, "namespace": "models"}}).encode())
    with pytest.raises(InvalidInputError, match="manifests.image"):
        check_build_record(json.dumps({"manifests": {"image": image[:-1]}}).encode())


@pytest.mark.parametrize(
    "entry, named",
    [
        ({"path": "model/a", "size": 1, "sha256": "0" * 64, "mode": 0o4755}, "files[0].mode"),
        (
            {
                "path": "model/a.zst",
                "size": 1,
                "sha256": "0" * 64,
                "compression": "zstd",
                "content": {"size": 1, "sha256": "0" * 64, "path": "/etc/passwd"},
            },
            "files[0].content.path",
        ),
    ],
)
def test_a_files_entry_with_a_field_the_format_lacks_is_refused(entry: dict[str, Any], named: str) -> None:
    """Every level of the signed manifest is closed: a field a later reader might honour cannot ride along."""
    with pytest.raises(InvalidInputError, match=rf"{re.escape(named)} is not a field this format has"):
        FileEntry.from_json(entry, "files[0]")
