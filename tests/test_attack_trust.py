"""Evidence and trust scope: attacks on what the far side trusts and on what it reports back.

Each test is named after the attack it carries and asserts the documented exit code (3 for an
integrity or trust failure, 4 for input that is not a key), one line, no traceback, and that
nothing was written outside the state directory (nor, where the attack aims at it, inside).

- An evidence export is signed as a whole by the site key: a record dropped (the failed install),
  one added, all of them removed, the manifest stripped or signed by another key — exit 3.
- A key is trusted for names: a key trusted for one name cannot sign another, nor raise the other's
  highest installed version; ``--for '*'`` says that it trusts every name; entries written before
  scopes are read as ``*`` with a warning.
- A key file holds one key; key ids are the openssl recipe's for every encoding accepted.
- ``rebuild`` keeps the version order install keeps.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.signers import FileSigner
from airgap.core.signing import EVERY_NAME
from airgap.errors import AirgapError
from airgap.services.evidence.attestations import Evidence
from airgap.services.state import State
from tests.bundles import PASS, make_key, pack_demo
from tests.conftest import PASSPHRASE, assert_one_line_error, run_airgap

SITE_PASS = {"AIRGAP_SITE_KEY_PASSPHRASE": PASS.decode()}


def snapshot(root: Path, state: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` outside ``state``, with its size and mtime."""
    return {
        str(p): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_dir() and state not in p.parents
    }


# ------------------------------------------------------------------------------ evidence exports
@pytest.fixture
def exported(tmp_path: Path) -> dict[str, Any]:
    """A far side that verified a bundle twice and had an install fail its smoke test, all signed
    by the site key, exported; and its site public key."""
    publisher, pub, _ = make_key(tmp_path, "publisher")
    site, site_pub, site_kid = make_key(tmp_path, "site")
    bundle = pack_demo(tmp_path, publisher).files[0]
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--for", "demo", "--state-dir", str(state)).returncode == 0
    env = {**SITE_PASS, "AIRGAP_SITE_KEY": f"file:{tmp_path / 'site.key'}"}
    for _ in range(2):
        assert run_airgap("verify", str(bundle), "--state-dir", str(state), env=env).returncode == 0
    # The failed install, recorded as install records one: FAILED, with what failed.
    record = Evidence(State(state), site)
    record._write(
        "install",
        "demo",
        "1.0.0",
        "a" * 64,
        ["manifest signature by trusted key"],
        [],
        ["golden case 'c1': output 0 differs by 0.5, tolerance 1e-05"],
        {"target": "docker", "outcome": "smoke test failed; the previous version restored"},
    )
    assert not record.problems, record.problems
    out = tmp_path / "evidence.json"
    proc = run_airgap("--json", "evidence", "export", "-o", str(out), "--state-dir", str(state), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["signed_by"] == site_kid
    return {
        "out": out,
        "site_pub": site_pub,
        "site_kid": site_kid,
        "state": state,
        "env": env,
        "tmp": tmp_path,
    }


def evidence_verify(e: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_airgap("evidence", "verify", str(e["out"]), "--key", str(e["site_pub"]), *extra)


def edit(e: dict[str, Any], change: Any) -> None:
    data = json.loads(e["out"].read_text())
    change(data)
    e["out"].write_text(json.dumps(data))


def test_an_intact_signed_export_verifies_and_its_manifest_checks_with_openssl(
    exported: dict[str, Any],
) -> None:
    proc = run_airgap(
        "--json", "evidence", "verify", str(exported["out"]), "--key", str(exported["site_pub"])
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["attestations"]
    assert sorted(r["action"] + " " + r["result"] for r in rows) == [
        "install FAILED",
        "verify PASSED",
        "verify PASSED",
    ]
    # By hand, as docs/attestations.md says: the manifest's bytes, its signature, openssl.
    data = json.loads(exported["out"].read_text())
    work = exported["tmp"]
    (work / "m.json").write_bytes(base64.b64decode(data["manifest"]))
    (work / "m.sig").write_bytes(base64.b64decode(data["manifest_signature"]))
    checked = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha384",
            "-verify",
            str(exported["site_pub"]),
            "-signature",
            str(work / "m.sig"),
            str(work / "m.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0 and "Verified OK" in checked.stdout, checked.stderr
    manifest = json.loads((work / "m.json").read_text())
    assert manifest["records"] == 3 and manifest["counts"] == {
        "install": {"FAILED": 1},
        "verify": {"PASSED": 2},
    }
    # Each record's hash is sha256sum of the file it was exported from.
    for f in manifest["files"]:
        digest = subprocess.run(
            ["sha256sum", str(exported["state"] / "attestations" / f["file"])], capture_output=True, text=True
        ).stdout.split()[0]
        assert digest == f["sha256"], f


def test_an_evidence_export_with_its_failed_install_dropped_is_refused(exported: dict[str, Any]) -> None:
    before = snapshot(exported["tmp"], exported["state"])

    def drop_failed(data: dict[str, Any]) -> None:
        data["attestations"] = [a for a in data["attestations"] if "-install-" not in a["file"]]

    edit(exported, drop_failed)
    before[str(exported["out"])] = snapshot(exported["tmp"], exported["state"])[str(exported["out"])]
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert "missing 1 of the 3 records" in line and "install FAILED" in line, line
    assert snapshot(exported["tmp"], exported["state"]) == before


def test_an_evidence_export_with_a_record_added_is_refused(exported: dict[str, Any]) -> None:
    def add_copy(data: dict[str, Any]) -> None:
        first = data["attestations"][0]
        data["attestations"].append(
            {"file": "20990101T000000000000Z-verify-demo-0000.intoto.json", "envelope": first["envelope"]}
        )

    edit(exported, add_copy)
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert "does not list" in line and "20990101T000000000000Z" in line, line


def test_an_evidence_export_with_no_attestation_at_all_is_refused(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    edit(exported, lambda data: data.update(attestations=[]))
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert "missing 3 of the 3 records" in line, line
    # Nor does an honest export of a site with nothing recorded prove anything.
    empty_state = tmp_path / "empty-state"
    empty = tmp_path / "empty.json"
    proc = run_airgap(
        "evidence", "export", "-o", str(empty), "--state-dir", str(empty_state), env=exported["env"]
    )
    assert proc.returncode == 0, proc.stderr
    line = assert_one_line_error(
        run_airgap("evidence", "verify", str(empty), "--key", str(exported["site_pub"])), 3
    )
    assert "no attestation at all" in line, line


def test_an_evidence_export_with_its_manifest_stripped_to_the_unsigned_format_is_refused(
    exported: dict[str, Any],
) -> None:
    def downgrade(data: dict[str, Any]) -> None:
        del data["manifest"], data["manifest_signature"]
        data["format"] = "airgap.evidence/v1"
        data["attestations"] = [a for a in data["attestations"] if "-install-" not in a["file"]]

    edit(exported, downgrade)
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert "not signed as a whole" in line, line


def test_an_evidence_export_with_a_record_changed_and_its_manifest_resigned_by_another_key_is_refused(
    exported: dict[str, Any],
) -> None:
    mallory, _, mallory_kid = make_key(exported["tmp"], "mallory")

    def resign(data: dict[str, Any]) -> None:
        manifest = json.loads(base64.b64decode(data["manifest"]))
        manifest["site_key_id"] = mallory_kid
        raw = (json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n").encode()
        data["manifest"] = base64.b64encode(raw).decode()
        data["manifest_signature"] = mallory.sign(raw).decode().strip()

    edit(exported, resign)
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert mallory_kid[:16] in line and exported["site_kid"][:16] in line, line


def test_an_evidence_export_with_a_record_changed_is_refused(exported: dict[str, Any]) -> None:
    def flip(data: dict[str, Any]) -> None:
        entry = next(a for a in data["attestations"] if "-install-" in a["file"])
        payload = base64.b64decode(entry["envelope"]["payload"]).replace(b'"FAILED"', b'"PASSED"')
        entry["envelope"]["payload"] = base64.b64encode(payload).decode()

    edit(exported, flip)
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert "differs from its signed manifest" in line, line


def test_a_failed_install_removed_from_the_state_directory_before_export_is_refused(
    exported: dict[str, Any],
) -> None:
    """The export's manifest lists what it found; the chain of records shows what was removed
    before it looked: each record names its place and the hash of the one before it."""
    directory = exported["state"] / "attestations"
    records = sorted(directory.glob("*.intoto.json"))
    chain = []
    for path in records:
        statement = json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))
        ours = statement["predicate"]["airgap"]
        chain.append((ours["action"], ours["sequence"], ours["previous_sha256"]))
    assert [(a, n) for a, n, _ in chain] == [("verify", 1), ("verify", 2), ("install", 3)], chain
    assert chain[0][2] is None
    assert (
        chain[2][2]
        == subprocess.run(
            ["sha256sum", str(records[1])], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    # A later verify follows the failed install; then the failed install is deleted on the site.
    bundle = next((exported["tmp"] / "out").glob("*.airgap.tar"))
    verified = run_airgap("verify", str(bundle), "--state-dir", str(exported["state"]), env=exported["env"])
    assert verified.returncode == 0, verified.stderr
    records[2].unlink()
    before = snapshot(exported["tmp"], exported["state"])
    proc = run_airgap(
        "evidence",
        "export",
        "-o",
        str(exported["out"]),
        "--state-dir",
        str(exported["state"]),
        env=exported["env"],
    )
    assert proc.returncode == 0, proc.stderr
    assert set(snapshot(exported["tmp"], exported["state"])) == set(before)
    line = assert_one_line_error(evidence_verify(exported), 3)
    assert "lacks record 3 of the 4 the site wrote" in line, line


def test_an_unsigned_export_is_refused_unless_listed_with_allow_unsigned(exported: dict[str, Any]) -> None:
    out = exported["tmp"] / "unsigned.json"
    proc = run_airgap("evidence", "export", "-o", str(out), "--state-dir", str(exported["state"]))
    assert proc.returncode == 0 and "the export is not signed" in proc.stderr, proc.stderr
    line = assert_one_line_error(
        run_airgap("evidence", "verify", str(out), "--key", str(exported["site_pub"])), 3
    )
    assert "exported without a site key" in line, line
    listed = run_airgap(
        "--json", "evidence", "verify", str(out), "--key", str(exported["site_pub"]), "--allow-unsigned"
    )
    assert listed.returncode == 0, listed.stderr


# ------------------------------------------------------------------------------ trust scope
@pytest.fixture
def scoped(tmp_path: Path) -> dict[str, Any]:
    """A demo bundle 9.0.0 signed by a publisher that the site trusts only for another name."""
    publisher, pub, kid = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, publisher, version="9.0.0").files[0]
    state = tmp_path / "state"
    proc = run_airgap("--json", "keys", "trust", str(pub), "--for", "fraud-model", "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["names"] == ["fraud-model"]
    (state / "installed.json").write_text(json.dumps({"names": {"demo": {"highest_version": "1.0.0"}}}))
    return {"bundle": bundle, "pub": pub, "kid": kid, "state": state, "tmp": tmp_path}


def test_a_key_trusted_for_one_name_cannot_sign_another(scoped: dict[str, Any]) -> None:
    before = snapshot(scoped["tmp"], scoped["state"])
    line = assert_one_line_error(
        run_airgap("verify", str(scoped["bundle"]), "--state-dir", str(scoped["state"])), 3
    )
    assert "trusted here only for fraud-model, not for demo" in line and scoped["kid"][:16] in line, line
    assert snapshot(scoped["tmp"], scoped["state"]) == before
    last = json.loads((scoped["state"] / "audit.log").read_text().splitlines()[-1])
    assert last["result"] == "rejected" and last["exit_code"] == 3, last


def test_a_key_trusted_for_one_name_cannot_raise_another_names_highest_version(
    scoped: dict[str, Any],
) -> None:
    installed = (scoped["state"] / "installed.json").read_text()
    before = snapshot(scoped["tmp"], scoped["state"])
    proc = run_airgap(
        "install",
        str(scoped["bundle"]),
        "--to",
        "venv",
        "--state-dir",
        str(scoped["state"]),
    )
    line = assert_one_line_error(proc, 3)
    assert "not for demo" in line, line
    assert (scoped["state"] / "installed.json").read_text() == installed
    assert snapshot(scoped["tmp"], scoped["state"]) == before


def test_a_key_trusted_again_for_the_name_signs_it(scoped: dict[str, Any]) -> None:
    state = str(scoped["state"])
    assert (
        run_airgap(
            "keys", "trust", str(scoped["pub"]), "--for", "fraud-model,demo", "--state-dir", state
        ).returncode
        == 0
    )
    assert run_airgap("verify", str(scoped["bundle"]), "--state-dir", state).returncode == 0


def test_keys_trust_for_every_name_says_so(scoped: dict[str, Any]) -> None:
    state = str(scoped["state"])
    proc = run_airgap("keys", "trust", str(scoped["pub"]), "--for", "*", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert f"trusted key {scoped['kid']} for every name (*)" in proc.stdout, proc.stdout
    listed = run_airgap("--json", "keys", "list", "--state-dir", state)
    assert json.loads(listed.stdout) == [
        {
            "key_id": scoped["kid"],
            "file": str(scoped["state"] / "trust" / f"{scoped['kid']}.pem"),
            "names": ["*"],
            "scope_recorded": True,
        }
    ]
    assert run_airgap("verify", str(scoped["bundle"]), "--state-dir", state).returncode == 0
    # Without --for a new key is trusted for every name too, and a warning line says so.
    other_state = str(scoped["tmp"] / "other-state")
    bare = run_airgap("keys", "trust", str(scoped["pub"]), "--state-dir", other_state)
    assert bare.returncode == 0 and "trusted for every bundle name" in bare.stderr, bare.stderr
    assert "for every name (*)" in bare.stdout, bare.stdout


def test_trusting_a_scoped_key_again_only_adds_names_and_never_widens_it_silently(
    scoped: dict[str, Any],
) -> None:
    """A script that trusts the key it was handed (the bundled install.sh runs `keys trust KEY`)
    must not undo the site's scope: without --for the names stay; --for adds; '*' absorbs."""
    state = str(scoped["state"])

    def trust(*extra: str) -> dict[str, Any]:
        proc = run_airgap("--json", "keys", "trust", str(scoped["pub"]), *extra, "--state-dir", state)
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    assert trust() == {**trust(), "names": ["fraud-model"], "changed": False}
    line = assert_one_line_error(run_airgap("verify", str(scoped["bundle"]), "--state-dir", state), 3)
    assert "not for demo" in line, line
    assert trust("--for", "demo")["names"] == ["demo", "fraud-model"]
    assert trust("--for", "*")["names"] == ["*"]
    assert trust("--for", "demo")["names"] == ["*"]
    audit = [json.loads(ln) for ln in (scoped["state"] / "audit.log").read_text().splitlines()]
    assert [r.get("names") for r in audit if r["action"] == "keys trust"] == [
        ["fraud-model"],
        ["demo", "fraud-model"],
        ["*"],
    ]


def test_a_trust_entry_from_before_scopes_is_read_as_every_name_with_a_warning(
    scoped: dict[str, Any],
) -> None:
    state = str(scoped["state"])
    (scoped["state"] / "trust" / f"{scoped['kid']}.scope.json").unlink()
    listed = run_airgap("keys", "list", "--state-dir", state)
    assert listed.returncode == 0
    assert f"{scoped['kid']}  for every name (*)" in listed.stdout, listed.stdout
    [warning] = [ln for ln in listed.stderr.splitlines() if ln.strip()]
    assert "trusted without names" in warning and "--for NAME" in warning, warning
    assert run_airgap("verify", str(scoped["bundle"]), "--state-dir", state).returncode == 0


@pytest.mark.parametrize(
    "scope",
    [
        '{"format":"airgap.trust-scope/v1","key_id":"KID","names":["*","demo"]}',
        '{"format":"airgap.trust-scope/v1","key_id":"0000","names":["fraud-model"]}',
        '{"format":"airgap.trust-scope/v1","key_id":"KID","names":["Demo"]}',
        "not json",
    ],
)
def test_a_tampered_trust_scope_is_refused_rather_than_read_as_any_scope(
    scoped: dict[str, Any], scope: str
) -> None:
    (scoped["state"] / "trust" / f"{scoped['kid']}.scope.json").write_text(
        scope.replace("KID", scoped["kid"])
    )
    line = assert_one_line_error(
        run_airgap("verify", str(scoped["bundle"]), "--state-dir", str(scoped["state"])), 3
    )
    assert "is not a scope airgap wrote" in line, line
    # The damaged entry can still be removed, and the key trusted again.
    state = str(scoped["state"])
    assert run_airgap("keys", "remove", scoped["kid"][:12], "--state-dir", state).returncode == 0
    assert list((scoped["state"] / "trust").iterdir()) == []


@pytest.mark.parametrize("names", ["Demo", "*,demo", "", "a/b", "demo\x1b[2J"])
def test_keys_trust_refuses_a_scope_that_is_not_bundle_names(scoped: dict[str, Any], names: str) -> None:
    line = assert_one_line_error(
        run_airgap("keys", "trust", str(scoped["pub"]), "--for", names, "--state-dir", str(scoped["state"])),
        2,
    )
    assert "--for" in line and "\x1b" not in line, line


# ------------------------------------------------------------------------------ key files and ids
def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


def recipe(pub: Path) -> str:
    """The documented by-hand key id (docs/bundle-format.md#signatures)."""
    der = openssl(
        "ec",
        "-pubin",
        "-in",
        str(pub),
        "-param_enc",
        "named_curve",
        "-conv_form",
        "uncompressed",
        "-outform",
        "DER",
    )
    return (
        subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.decode().split()[0]
    )


def test_a_key_file_with_a_second_key_block_is_refused(tmp_path: Path) -> None:
    _, first, _ = make_key(tmp_path, "first")
    _, second, _ = make_key(tmp_path, "second")
    both = tmp_path / "both.pub"
    both.write_bytes(first.read_bytes() + second.read_bytes())
    state = tmp_path / "state"
    line = assert_one_line_error(
        run_airgap("keys", "trust", str(both), "--for", "demo", "--state-dir", str(state)), 4
    )
    assert "2 PEM blocks" in line, line
    assert not (state / "trust").exists() or not list((state / "trust").iterdir())
    bundle = pack_demo(tmp_path, make_key(tmp_path, "signer")[0]).files[0]
    line = assert_one_line_error(
        run_airgap("verify", str(bundle), "--key", str(both), "--state-dir", str(state)), 4
    )
    assert "2 PEM blocks" in line, line


def test_a_signing_key_file_with_a_second_key_block_is_refused(tmp_path: Path) -> None:
    make_key(tmp_path, "first")
    make_key(tmp_path, "second")
    both = tmp_path / "both.key"
    both.write_bytes((tmp_path / "first.key").read_bytes() + (tmp_path / "second.key").read_bytes())
    env = {**SITE_PASS, "AIRGAP_SITE_KEY": f"file:{both}"}
    out = tmp_path / "evidence.json"
    proc = run_airgap("evidence", "export", "-o", str(out), "--state-dir", str(tmp_path / "state"), env=env)
    line = assert_one_line_error(proc, 4)
    assert "2 PEM blocks" in line, line
    assert not out.exists()


@pytest.mark.parametrize("after", [b"junk\n", b"\x30\x76\x30\x10", b"-----END PUBLIC KEY-----\n"])
def test_a_key_file_with_anything_after_the_key_is_refused(tmp_path: Path, after: bytes) -> None:
    _, pub, _ = make_key(tmp_path, "publisher")
    padded = tmp_path / "padded.pub"
    padded.write_bytes(pub.read_bytes() + after)
    line = assert_one_line_error(
        run_airgap("keys", "trust", str(padded), "--for", "demo", "--state-dir", str(tmp_path / "state")), 4
    )
    assert str(padded) in line, line


def test_a_key_with_explicit_curve_parameters_or_a_compressed_point_gets_the_id_of_its_named_curve_form(
    tmp_path: Path,
) -> None:
    openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(tmp_path / "k.pem"))
    forms = {
        "named": [],
        "explicit": ["-param_enc", "explicit"],
        "compressed": ["-conv_form", "compressed"],
    }
    ids = {}
    for form, extra in forms.items():
        pub = tmp_path / f"{form}.pub"
        openssl("ec", "-in", str(tmp_path / "k.pem"), "-pubout", *extra, "-out", str(pub))
        proc = run_airgap(
            "--json", "keys", "trust", str(pub), "--for", "demo", "--state-dir", str(tmp_path / form)
        )
        assert proc.returncode == 0, proc.stderr
        ids[form] = json.loads(proc.stdout)["key_id"]
        assert ids[form] == recipe(pub), form
    assert len(set(ids.values())) == 1, ids
    # The plain pkey recipe agrees for the named-curve form airgap writes.
    der = openssl("pkey", "-pubin", "-in", str(tmp_path / "named.pub"), "-outform", "DER")
    plain = (
        subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.decode().split()[0]
    )
    assert plain == ids["named"]


def test_the_key_id_of_every_key_airgap_generates_equals_the_openssl_recipe(tmp_path: Path) -> None:
    _, pub, kid = make_key(tmp_path, "publisher")
    assert recipe(pub) == kid


# ------------------------------------------------------------------------------ rebuild
def test_rebuild_of_an_older_version_than_installed_is_refused_as_a_rollback(tmp_path: Path) -> None:
    from airgap.services.build.rebuild import RebuildOptions, rebuild
    from airgap.services.media.verify import VerifyOptions
    from tests.fakes import FakeEngine

    publisher, pub, _ = make_key(tmp_path, "publisher")
    make_key(tmp_path, "site")
    bundle = pack_demo(tmp_path, publisher, version="1.0.0").files[0]
    state_dir = tmp_path / "state"
    assert (
        run_airgap("keys", "trust", str(pub), "--for", "demo", "--state-dir", str(state_dir)).returncode == 0
    )
    (state_dir / "installed.json").write_text(json.dumps({"names": {"demo": {"highest_version": "2.0.0"}}}))
    state = State(state_dir)
    before = snapshot(tmp_path, state_dir)
    options = RebuildOptions(
        bundle=bundle,
        base="site-base:1",
        signer=FileSigner(tmp_path / "site.key", lambda: PASS),
        verify=VerifyOptions(trusted=tuple(state.trust.keys()), blob_store=state.blob_store),
        output_dir=tmp_path / "rebuilt",
    )
    with pytest.raises(AirgapError) as caught:
        rebuild(options, state, FakeEngine())
    assert caught.value.exit_code == 3
    line = caught.value.one_line()
    assert "\n" not in line and "refusing a rollback: demo 1.0.0 is older than 2.0.0" in line, line
    assert snapshot(tmp_path, state_dir) == before
    assert not (tmp_path / "rebuilt").exists()
    assert EVERY_NAME not in state.trust.keys()[0].names


@pytest.mark.docker
def test_rebuild_of_an_older_version_than_installed_exits_3_in_one_line(tmp_path: Path) -> None:
    publisher, pub, _ = make_key(tmp_path, "publisher")
    make_key(tmp_path, "site")
    bundle = pack_demo(tmp_path, publisher, version="1.0.0").files[0]
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--for", "demo", "--state-dir", str(state)).returncode == 0
    (state / "installed.json").write_text(json.dumps({"names": {"demo": {"highest_version": "2.0.0"}}}))
    proc = run_airgap(
        "rebuild",
        str(bundle),
        "--base",
        "site-base:1",
        "--key",
        str(tmp_path / "site.key"),
        "--output",
        str(tmp_path / "rebuilt"),
        "--state-dir",
        str(state),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    line = assert_one_line_error(proc, 3)
    assert "refusing a rollback" in line, line
    assert not (tmp_path / "rebuilt").exists()
