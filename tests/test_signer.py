"""The signer port, its key URIs, the verifier's algorithm allow-list and the format registry.

Real keys, real packed bundles, the real CLI in a subprocess; the fakes here implement our own
ports (a Signer, a BundleFormat), registered from the test as a new one would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.archive import TarReader
from airgap.adapters.signers import SIGNER_FOR_URI_SCHEME, FileSigner, Signer, signer_from_uri
from airgap.core.bundle_format import Manifest
from airgap.core.signing import ALLOWED_ALGORITHMS, ECDSA_P384_SHA384
from airgap.errors import InvalidInputError, SignatureError, UnsupportedFormatError, UsageError
from airgap.services.media import formats
from airgap.services.media.formats import BundleFormat, FormatResult, Keep, SignedFront
from airgap.services.media.inspect import inspect_bundle
from airgap.services.media.verify import VerifyOptions, verify_bundle
from airgap.services.observer import Observer
from airgap.services.state import State
from tests.bundles import (
    EPOCH,
    PASS,
    make_key,
    pack_demo,
    rejected,
    signed_archive,
    signed_env,
    synthetic_staging,
    verify,
)
from tests.conftest import assert_one_line_error, run_airgap


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return signed_env(tmp_path)


def _no_passphrase() -> bytes:
    raise AssertionError("the passphrase was asked for")


# ------------------------------------------------------------------------------ key URIs
def test_a_plain_path_and_file_uris_name_the_same_key(tmp_path: Path) -> None:
    _, _, kid = make_key(tmp_path, "publisher")
    path = tmp_path / "publisher.key"
    for uri in (str(path), f"file:{path}", f"file://{path}", f"file://localhost{path}"):
        signer = signer_from_uri(uri, lambda: PASS)
        assert isinstance(signer, FileSigner) and signer.path == path
        assert signer.key_id == kid and signer.algorithm == ECDSA_P384_SHA384


@pytest.mark.parametrize(
    "uri", ["pkcs11:token=airgap;object=publisher", "PKCS11:slot-id=0", "vault:transit/k"]
)
def test_a_key_scheme_this_build_lacks_is_refused_before_any_passphrase(uri: str) -> None:
    with pytest.raises(UsageError, match="not supported in this build") as caught:
        signer_from_uri(uri, _no_passphrase)
    assert caught.value.exit_code == 2 and "file:" in caught.value.one_line()


def test_pack_refuses_an_hsm_uri_in_one_line(tmp_path: Path) -> None:
    staging = synthetic_staging(tmp_path / "staging")
    proc = run_airgap("pack", str(staging), "--key", "pkcs11:token=airgap", env={"AIRGAP_KEY_PASSPHRASE": ""})
    line = assert_one_line_error(proc, 2)
    assert "--key pkcs11: keys are not supported in this build" in line, line
    assert not (tmp_path / "staging" / "demo-1.0.0.airgap.tar").exists()


def test_pack_signs_with_a_file_uri_and_the_bundle_verifies(env: dict[str, Any]) -> None:
    staging = synthetic_staging(env["tmp"] / "cli")
    (staging / "build.json").write_text(
        json.dumps({"name": "demo", "version": "1.0.0", "source_date_epoch": EPOCH, "wheelhouses": {}})
    )
    (staging / "compliance").mkdir()
    (staging / "compliance" / "results.json").write_text(
        json.dumps({"failed": False, "fail_on": "high", "summary": {}, "blocking": []})
    )
    proc = run_airgap(
        "pack",
        str(staging),
        "--key",
        f"file://{env['tmp'] / 'publisher.key'}",
        "-o",
        str(env["tmp"] / "signed"),
        env={"AIRGAP_KEY_PASSPHRASE": PASS.decode()},
    )
    assert proc.returncode == 0, proc.stderr
    bundle = env["tmp"] / "signed" / "demo-1.0.0.airgap.tar"
    assert verify(env, bundle).returncode == 0


# ------------------------------------------------------------------------------ the signer port
class _Delegating(Signer):
    """A signer of our own port, standing in for an HSM: it signs through another signer and
    can claim any algorithm."""

    def __init__(self, inner: Signer, algorithm: str | None = None) -> None:
        self.inner = inner
        self._algorithm = algorithm or inner.algorithm
        self.signed: list[bytes] = []

    @property
    def key_id(self) -> str:
        return self.inner.key_id

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def sign(self, data: bytes) -> bytes:
        self.signed.append(data)
        return self.inner.sign(data)


def test_a_signer_registered_for_a_new_scheme_signs_without_any_caller_changing(env: dict[str, Any]) -> None:
    made: list[str] = []

    def hsm(uri: str, passphrase: Callable[[], bytes]) -> Signer:
        made.append(uri)
        return _Delegating(env["key"])

    registry = {**SIGNER_FOR_URI_SCHEME, "test-hsm": hsm}
    signer = signer_from_uri("test-hsm:slot=1", _no_passphrase, registry)
    assert made == ["test-hsm:slot=1"]
    result = pack_demo(env["tmp"] / "hsm", signer)
    assert isinstance(signer, _Delegating) and len(signer.signed) == 2  # manifest and SHA256SUMS
    assert verify(env, result.files[0]).returncode == 0


def test_pack_refuses_a_signer_whose_algorithm_verifiers_refuse(env: dict[str, Any]) -> None:
    weak = _Delegating(env["key"], algorithm="ecdsa-p256-sha256")
    with pytest.raises(InvalidInputError, match="which verifiers refuse"):
        pack_demo(env["tmp"] / "weak", weak)
    assert weak.signed == [] and not list((env["tmp"] / "weak").glob("out/*.tar*"))


# ------------------------------------------------------------------------------ the allow-list
@pytest.mark.parametrize("algorithm", ["ecdsa-p256-sha256", "none", "rsa-pkcs1-sha1"])
def test_a_signed_manifest_naming_an_algorithm_off_the_allow_list_is_refused(
    env: dict[str, Any], algorithm: str
) -> None:
    assert algorithm not in ALLOWED_ALGORITHMS
    path = env["tmp"] / "alg.airgap.tar"
    signer = {"key_id": env["kid"], "algorithm": algorithm}
    signed_archive(path, env["key"], {"model/model.onnx": b"onnx"}, signer=signer)
    rejected(env, "is not one this verifier accepts", 3, path, error=SignatureError)


# ------------------------------------------------------------------------------ the format registry
def test_an_unknown_format_is_one_line_and_exit_4(env: dict[str, Any]) -> None:
    path = env["tmp"] / "v9.airgap.tar"
    signed_archive(path, env["key"], {"model/model.onnx": b"onnx"}, format="airgap.bundle/v9")
    line = rejected(
        env, "format 'airgap.bundle/v9', which this airgap cannot read", 4, path, error=UnsupportedFormatError
    )
    assert "airgap.bundle/v1" in line


class _Drain(BundleFormat):
    """A format reader of our own: reads every member to the end and trusts the signed front."""

    name = "test.bundle/v0"

    def parse_manifest(self, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        return Manifest(
            doc["name"], doc["version"], doc["created"], None, "test", doc["signer"]["key_id"], ()
        )

    def verify(self, reader: TarReader, front: SignedFront, keep: Keep, observer: Observer) -> FormatResult:
        kept = {}
        while (member := reader.next()) is not None:
            kept[member.name] = b"".join(bytes(c) for c in reader.chunks(member))
        return FormatResult(self.parse_manifest(front.manifest_bytes), kept)


@pytest.fixture
def drain_format() -> Iterator[_Drain]:
    reader = formats.register(_Drain())
    yield reader
    formats.unregister(reader.name)


def test_a_registered_format_is_read_by_verify_and_inspect(env: dict[str, Any], drain_format: _Drain) -> None:
    path = env["tmp"] / "v0.airgap.tar"
    signed_archive(path, env["key"], {"model/model.onnx": b"onnx"}, format=drain_format.name)
    trusted = tuple(State(env["state"]).trust.keys())
    verified = verify_bundle(path, VerifyOptions(trusted=trusted))
    assert verified.manifest.name == "demo" and verified.kept["model/model.onnx"] == b"onnx"
    assert inspect_bundle(path)["key_id"] == env["kid"]
    formats.unregister(drain_format.name)
    with pytest.raises(UnsupportedFormatError):
        verify_bundle(path, VerifyOptions(trusted=trusted))


def test_the_signature_is_checked_before_the_format_is_looked_at(env: dict[str, Any]) -> None:
    mallory, _, _ = make_key(env["tmp"], "mallory")
    path = env["tmp"] / "v9.airgap.tar"
    signed_archive(path, mallory, {"model/model.onnx": b"onnx"}, format="airgap.bundle/v9")
    rejected(env, "not trusted here", 3, path)
