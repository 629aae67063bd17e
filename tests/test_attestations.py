"""Attestations: the provenance every bundle carries, and the far side's signed record of what it
checked, each a DSSE envelope around an in-toto Statement v1 signed with ECDSA P-384/SHA-384.

Signatures are checked the way an outside reviewer would: the DSSE pre-authentication encoding
written out by hand here (not by airgap), the signature decoded with ``base64 -d`` and checked with
``openssl dgst -sha384 -verify``. Hostile envelopes are refused in one line by `airgap evidence
verify`. The far-side records come from real `verify`, `install --to venv` and `smoke` runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from airgap.core import attestation as at
from tests.bundles import PASS, make_key, pack_demo
from tests.conftest import PASSPHRASE, assert_one_line_error, run_airgap

SITE = {"AIRGAP_SITE_KEY_PASSPHRASE": PASS.decode()}


# ------------------------------------------------------------------------------ by hand, as a reviewer
def pae_by_hand(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 protocol: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII decimal."""
    kind = payload_type.encode()
    return (
        b"DSSEv1 "
        + str(len(kind)).encode()
        + b" "
        + kind
        + b" "
        + str(len(payload)).encode()
        + b" "
        + payload
    )


def openssl_verifies(envelope: dict[str, Any], pub: Path, work: Path, payload: bytes | None = None) -> bool:
    """Writes PAE by hand, decodes the signature with base64 -d, and asks openssl."""
    body = base64.b64decode(envelope["payload"]) if payload is None else payload
    (work / "pae.bin").write_bytes(pae_by_hand(envelope["payloadType"], body))
    (work / "sig.b64").write_text(envelope["signatures"][0]["sig"])
    with open(work / "sig.der", "wb") as der:
        subprocess.run(["base64", "-d", str(work / "sig.b64")], stdout=der, check=True)
    proc = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha384",
            "-verify",
            str(pub),
            "-signature",
            str(work / "sig.der"),
            str(work / "pae.bin"),
        ],
        capture_output=True,
        text=True,
    )
    assert ("Verified OK" in proc.stdout) == (proc.returncode == 0), proc.stdout + proc.stderr
    return proc.returncode == 0


def test_pae_is_the_dsse_specs_encoding() -> None:
    # The example of the DSSE protocol document.
    assert at.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert at.pae(at.PAYLOAD_TYPE, "é".encode()) == pae_by_hand(at.PAYLOAD_TYPE, "é".encode())


# ------------------------------------------------------------------------------ hostile envelopes
def _signed_envelope(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    from airgap.services.attest import sign_envelope

    signer, pub, _ = make_key(tmp_path, "signer")
    payload = at.statement([at.Subject("thing", "a" * 64)], at.TEST_RESULT, {"result": "PASSED"})
    return sign_envelope(payload, signer).to_json(), pub


def _hostile(good: dict[str, Any]) -> dict[str, bytes]:
    def variant(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    sig = good["signatures"][0]
    return {
        "wrong payloadType": variant(payloadType="application/json"),
        "non-base64 payload": variant(payload="!!not base64!!"),
        "url-safe base64": variant(payload=good["payload"].replace("+", "-").replace("/", "_") + "-_"),
        "extra field": variant(extra="x"),
        "extra signature field": variant(signatures=[{**sig, "publicKey": "x"}]),
        "no signature field": json.dumps({k: v for k, v in good.items() if k != "signatures"}).encode(),
        "short key id": variant(signatures=[{**sig, "keyid": "abc"}]),
        "huge signature": variant(signatures=[{**sig, "sig": base64.b64encode(b"x" * 4096).decode()}]),
        "too many signatures": variant(signatures=[sig] * 9),
        "duplicate key": b'{"payload":"e30=","payload":"e30=","payloadType":"x","signatures":[]}',
        "not a statement": variant(payload=base64.b64encode(b'{"a":1}').decode()),
        "huge": b'{"payload":"' + b"A" * (2 << 20) + b'","payloadType":"x","signatures":[]}',
        "not JSON": b"\xff\xfe{",
    }


def test_hostile_envelopes_are_refused_in_one_line(tmp_path: Path) -> None:
    from airgap.errors import InvalidInputError
    from airgap.services.evidence.export import verify_evidence

    good, pub = _signed_envelope(tmp_path)
    (tmp_path / "good.intoto.json").write_text(json.dumps(good))
    ok = run_airgap("evidence", "verify", str(tmp_path / "good.intoto.json"), "--key", str(pub))
    assert ok.returncode == 0, ok.stderr
    for name, raw in _hostile(good).items():
        path = tmp_path / f"{name.replace(' ', '-')}.intoto.json"
        path.write_bytes(raw)
        # As a library caller meets it: invalid input (exit 4), one line that names the file.
        with pytest.raises(InvalidInputError) as caught:
            verify_evidence(path, pub.read_bytes(), str(pub))
        line = caught.value.one_line()
        assert "\n" not in line and str(path) in line, (name, line)
    # And as the command line shows it: exit 4, one line, no traceback.
    for name in ("wrong payloadType", "huge"):
        path = tmp_path / f"{name.replace(' ', '-')}.intoto.json"
        line = assert_one_line_error(run_airgap("evidence", "verify", str(path), "--key", str(pub)), 4)
        assert str(path) in line, line


def test_a_changed_payload_fails_with_openssl_and_with_airgap(tmp_path: Path) -> None:
    good, pub = _signed_envelope(tmp_path)
    assert openssl_verifies(good, pub, tmp_path)
    changed = base64.b64decode(good["payload"]).replace(b"PASSED", b"FAILED")
    assert not openssl_verifies(good, pub, tmp_path, payload=changed)
    (tmp_path / "forged.intoto.json").write_text(
        json.dumps({**good, "payload": base64.b64encode(changed).decode()})
    )
    line = assert_one_line_error(
        run_airgap("evidence", "verify", str(tmp_path / "forged.intoto.json"), "--key", str(pub)), 3
    )
    assert "does not verify" in line, line


# ------------------------------------------------------------------------------ far side, no engine
@pytest.fixture
def far(tmp_path: Path) -> dict[str, Any]:
    """A synthetic signed bundle, a state directory that trusts its publisher, and a site key."""
    publisher, pub, _ = make_key(tmp_path, "publisher")
    _, site_pub, site_kid = make_key(tmp_path, "site")
    result = pack_demo(tmp_path, publisher)
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    site_env = {**SITE, "AIRGAP_SITE_KEY": f"file:{tmp_path / 'site.key'}"}
    return {
        "bundle": result.files[0],
        "state": state,
        "site_pub": site_pub,
        "site_kid": site_kid,
        "site": site_env,
    }


def _verify(far: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_airgap("--json", "verify", str(far["bundle"]), "--state-dir", str(far["state"]), env=env)


def test_verify_signs_its_attestation_with_the_site_key_and_export_round_trips(
    far: dict[str, Any], tmp_path: Path
) -> None:
    first, second = _verify(far, far["site"]), _verify(far, far["site"])
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    doc = json.loads(first.stdout)
    [written] = doc["attestations"]
    envelope = json.loads(Path(written).read_text())
    assert envelope["signatures"][0]["keyid"] == far["site_kid"]
    assert openssl_verifies(envelope, far["site_pub"], tmp_path)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["digest"] == {"sha256": doc["manifest_sha256"]}
    assert statement["predicateType"] == at.TEST_RESULT and statement["predicate"]["result"] == "PASSED"
    assert statement["predicate"]["airgap"]["action"] == "verify"

    out = tmp_path / "evidence.json"
    exported = run_airgap(
        "--json", "evidence", "export", "--out", str(out), "--state-dir", str(far["state"]), env=far["site"]
    )
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout) == {
        "out": str(out),
        "attestations": 2,
        "unsigned": 0,
        "site_key_ids": [far["site_kid"]],
        "signed_by": far["site_kid"],
        "oscal": [
            str(tmp_path / "evidence.oscal-assessment-results.json"),
            str(tmp_path / "evidence.oscal-summary.md"),
        ],
    }
    checked = run_airgap("--json", "evidence", "verify", str(out), "--key", str(far["site_pub"]))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["verified"] == 2
    # The key carried in the file is not trusted: another key's check fails, naming both ids.
    _, other, _ = make_key(tmp_path, "other")
    line = assert_one_line_error(run_airgap("evidence", "verify", str(out), "--key", str(other)), 3)
    assert far["site_kid"][:16] in line, line
    # One changed envelope in the carried file is named.
    data = json.loads(out.read_text())
    entry = data["attestations"][1]
    payload = base64.b64decode(entry["envelope"]["payload"]).replace(b'"PASSED"', b'"FAILED"')
    entry["envelope"]["payload"] = base64.b64encode(payload).decode()
    out.write_text(json.dumps(data))
    line = assert_one_line_error(run_airgap("evidence", "verify", str(out), "--key", str(far["site_pub"])), 3)
    assert entry["file"] in line and "differs from its signed manifest" in line, line


def test_without_a_site_key_attestations_are_stored_unsigned_and_do_not_verify(
    far: dict[str, Any], tmp_path: Path
) -> None:
    proc = _verify(far)
    assert proc.returncode == 0, proc.stderr
    [written] = json.loads(proc.stdout)["attestations"]
    assert json.loads(Path(written).read_text())["signatures"] == []
    out = tmp_path / "evidence.json"
    assert run_airgap("evidence", "export", "-o", str(out), "--state-dir", str(far["state"])).returncode == 0
    line = assert_one_line_error(run_airgap("evidence", "verify", str(out), "--key", str(far["site_pub"])), 3)
    assert "unsigned" in line, line
    listed = run_airgap(
        "--json", "evidence", "verify", str(out), "--key", str(far["site_pub"]), "--allow-unsigned"
    )
    assert listed.returncode == 0 and json.loads(listed.stdout)["verified"] == 0, listed.stderr


def test_an_attestation_that_cannot_be_written_leaves_verify_successful_and_says_so(
    far: dict[str, Any],
) -> None:
    far["state"].mkdir(exist_ok=True)
    (far["state"] / "attestations").write_text("a file where the directory belongs")
    proc = _verify(far, far["site"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["attestations"] == [] and "was not written" in doc["attestation_problems"][0]
    assert "warning: the verify attestation" in proc.stderr
    last = json.loads((far["state"] / "audit.log").read_text().splitlines()[-1])
    assert last["action"] == "attest verify" and last["result"] == "not written", last


def test_a_site_key_that_cannot_be_used_stops_verify_before_it_starts(far: dict[str, Any]) -> None:
    env = {"AIRGAP_SITE_KEY": far["site"]["AIRGAP_SITE_KEY"], "AIRGAP_SITE_KEY_PASSPHRASE": ""}
    line = assert_one_line_error(_verify(far, env), 2)
    assert "AIRGAP_SITE_KEY" in line, line
    assert "verify" not in (far["state"] / "audit.log").read_text()


# ------------------------------------------------------------------------------ with the engine
def _member(bundle_file: Path, name: str) -> bytes:
    """A file of the bundle: its own member in v1; in v2 the blob the signed manifest maps it to."""
    import zstandard

    with tarfile.open(bundle_file) as tf:

        def read(member: str) -> bytes:
            fh = tf.extractfile(member)
            assert fh is not None, member
            return fh.read()

        manifest = json.loads(read("bundle/manifest.json"))
        rel = name.removeprefix("bundle/")
        if manifest["format"] != "airgap.bundle/v2" or rel == "manifest.json":
            return read(name)
        [entry] = [f for f in manifest["files"] if f["path"] == rel]
        blob = f"bundle/blobs/sha256/{entry['sha256']}"
        if blob in tf.getnames():
            return read(blob)
        return zstandard.ZstdDecompressor().decompress(read(blob + ".zst"), max_output_size=entry["size"])


@pytest.mark.docker
def test_every_bundle_carries_a_provenance_that_openssl_verifies_over_pae_built_by_hand(
    built: dict[str, Any], signing_key: Path, project: Path, tmp_path: Path
) -> None:
    bundle_file = Path(built["bundle"][0])
    manifest = json.loads(_member(bundle_file, "bundle/manifest.json"))
    raw = _member(bundle_file, "bundle/attestations/provenance.intoto.json")
    # The manifest's signature covers the attestation's hash.
    [entry] = [f for f in manifest["files"] if f["path"] == "attestations/provenance.intoto.json"]
    assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
    envelope = json.loads(raw)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == manifest["signer"]["key_id"]
    assert openssl_verifies(envelope, signing_key.with_suffix(".pub"), tmp_path)

    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects["airgap/tabular-classifier"] == manifest["images"][0]["manifest_digest"].split(":")[1]
    assert subjects["requirements.lock"] == manifest["locks"]["image"]
    assert subjects["host/requirements.lock"] == manifest["locks"]["host"]
    record = json.loads(_member(bundle_file, "bundle/build.json"))
    assert subjects[record["model"]["file"]] == record["model"]["sha256"]
    definition = statement["predicate"]["buildDefinition"]
    project_sha = hashlib.sha256((project / "airgap.yaml").read_bytes()).hexdigest()
    assert definition["externalParameters"]["project"]["sha256"] == project_sha
    assert definition["externalParameters"]["targetProfile"]["sha256"] == manifest["target_profile_sha256"]
    [base] = [d for d in definition["resolvedDependencies"] if d["name"] == "base image"]
    assert base["uri"] == record["base_image"]["resolved"]
    assert base["digest"]["sha256"] == record["base_image"]["resolved"].rsplit(":", 1)[1]
    assert statement["predicate"]["runDetails"]["builder"]["id"].startswith("pkg:generic/airgap@")

    # A changed payload no longer verifies, by hand or with airgap.
    forged = base64.b64decode(envelope["payload"]).replace(b"tabular-classifier", b"tabular-classifiez")
    assert not openssl_verifies(envelope, signing_key.with_suffix(".pub"), tmp_path, payload=forged)
    (tmp_path / "forged.intoto.json").write_text(
        json.dumps({**envelope, "payload": base64.b64encode(forged).decode()})
    )
    pub = str(signing_key.with_suffix(".pub"))
    assert assert_one_line_error(
        run_airgap("evidence", "verify", str(tmp_path / "forged.intoto.json"), "--key", pub), 3
    )
    (tmp_path / "provenance.intoto.json").write_bytes(raw)
    assert (
        run_airgap("evidence", "verify", str(tmp_path / "provenance.intoto.json"), "--key", pub).returncode
        == 0
    )


@pytest.fixture(scope="module")
def host_bundle(clean_image_bundle: dict[str, Any]) -> Path:
    """The example bundled for Debian 12's Python 3.11 (the session's clean-image bundle, which
    tests/test_install_sh.py uses too): `install --to venv` runs it with this host's Python."""
    return Path(clean_image_bundle["bundle"])


@pytest.mark.docker
def test_verify_install_and_smoke_each_leave_a_signed_attestation_with_the_golden_numbers(
    host_bundle: Path, signing_key: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    site = tmp_path / "site"
    assert (
        run_airgap("keys", "generate", "-o", str(site), env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE}).returncode
        == 0
    )
    env = {"AIRGAP_SITE_KEY": f"file:{site}.key", "AIRGAP_SITE_KEY_PASSPHRASE": PASSPHRASE}
    far = ("--state-dir", str(state))
    try:
        verified = run_airgap("--json", "verify", str(host_bundle), *far, env=env)
        assert verified.returncode == 0, verified.stderr
        installed = run_airgap(
            "--json", "install", str(host_bundle), "--to", "venv", *far, env=env, timeout=600
        )
        assert installed.returncode == 0, installed.stderr
        smoked = run_airgap("--json", "smoke", "tabular-classifier", "--to", "venv", *far, env=env)
        assert smoked.returncode == 0, smoked.stderr
    finally:
        run_airgap("uninstall", "tabular-classifier", "--to", "venv", *far)
    manifest_sha = json.loads(verified.stdout)["manifest_sha256"]
    contract = json.loads(_member(host_bundle, "bundle/model/contract.json"))
    cases = len(contract["cases"])
    statements = {}
    for proc in (verified, installed, smoked):
        [path] = json.loads(proc.stdout)["attestations"]
        envelope = json.loads(Path(path).read_text())
        assert openssl_verifies(envelope, site.with_suffix(".pub"), tmp_path)
        statement = json.loads(base64.b64decode(envelope["payload"]))
        assert statement["subject"][0]["digest"]["sha256"] == manifest_sha
        statements[statement["predicate"]["airgap"]["action"]] = statement["predicate"]
    assert set(statements) == {"verify", "install", "smoke"}
    for action in ("install", "smoke"):
        predicate = statements[action]
        assert predicate["result"] == "PASSED" and predicate["failedTests"] == []
        golden = predicate["airgap"]["golden"]
        assert (golden["cases"], golden["passed"], golden["failed"]) == (cases, cases, 0), golden
        assert len([t for t in predicate["passedTests"] if t.startswith("golden case")]) == cases
    assert statements["install"]["airgap"]["target"] == "venv"

    out = tmp_path / "evidence.json"
    assert run_airgap("evidence", "export", "-o", str(out), *far, env=env).returncode == 0
    checked = run_airgap("--json", "evidence", "verify", str(out), "--key", str(site.with_suffix(".pub")))
    assert checked.returncode == 0, checked.stderr
    assert [a["action"] for a in json.loads(checked.stdout)["attestations"]] == ["verify", "install", "smoke"]
