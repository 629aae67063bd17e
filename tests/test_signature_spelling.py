"""Every signature airgap reads has one spelling, and a parts index reads as ``sha256sum -c`` reads it.

A signature that verifies can still be spelled many ways: its high-s twin (r, n - s) is just as
valid for ECDSA, and base64 with CRLF, spaces or another number of newlines decodes to the same
DER. The two signatures inside the archive were always held to the one spelling the packer writes;
these attacks prove the parts index's and the parity index's signatures are too (exit 3). And a
signed parts index must name the same parts to airgap as to ``sha256sum -c``: the real sha256sum
is the oracle for the line reader, on the same bytes.

A small real bundle (the synthetic staging directory) is packed once per module into 1 MiB parts
with one parity part, signed with a real key, and copied for each test.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from airgap.adapters.keys import P384_ORDER
from airgap.core.checksums import parse_index, sum_lines
from airgap.errors import TamperError
from tests.bundles import make_key, pack_demo
from tests.conftest import assert_one_line_error, run_airgap

BASE = "demo-1.0.0.airgap.tar"
INDEX = f"{BASE}.parts.sha256"
PARITY = f"{BASE}.parity.json"


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("spelling")
    key, pub, _ = make_key(root, "publisher")
    pack_demo(root, key, part_size=1 << 20, parity=1)
    state = root / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    return {"root": root, "key": key, "pub": pub, "state": state}


def stick(packed: dict[str, Any], tmp_path: Path) -> Path:
    """A fresh copy of the parts and indexes."""
    dest = tmp_path / "stick"
    shutil.copytree(packed["root"] / "out", dest)
    return dest


def verify(packed: dict[str, Any], media: Path) -> subprocess.CompletedProcess[str]:
    """`airgap verify` of the media's parts index; asserts nothing was written but the state directory."""
    before = {p.name: p.read_bytes() for p in media.iterdir()}
    proc = run_airgap("verify", str(media / INDEX), "--state-dir", str(packed["state"]))
    assert {p.name: p.read_bytes() for p in media.iterdir()} == before, "verify changed the media"
    return proc


def high_s_twin(sig: bytes) -> bytes:
    """The other valid ECDSA signature over the same bytes: (r, n - s), spelled as the packer spells."""
    r, s = decode_dss_signature(base64.b64decode(sig))
    return base64.b64encode(encode_dss_signature(r, P384_ORDER - s)) + b"\n"


def openssl_verifies(pub: Path, data: Path, sig: bytes, tmp: Path) -> bool:
    """The by-hand check (docs/bundle-format.md): openssl over the base64-decoded signature."""
    der = tmp / "sig.der"
    der.write_bytes(base64.b64decode(b"".join(sig.split())))
    proc = subprocess.run(
        ["openssl", "dgst", "-sha384", "-verify", str(pub), "-signature", str(der), str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode == 0


def test_the_untouched_split_bundle_verifies(packed: dict[str, Any], tmp_path: Path) -> None:
    """The control: every attack below starts from media that verifies."""
    proc = verify(packed, stick(packed, tmp_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("document", [INDEX, PARITY], ids=["parts-index", "parity-index"])
def test_high_s_twin_of_an_index_signature_is_refused(
    packed: dict[str, Any], tmp_path: Path, document: str
) -> None:
    media = stick(packed, tmp_path)
    sig_path = media / f"{document}.sig"
    twin = high_s_twin(sig_path.read_bytes())
    assert openssl_verifies(packed["pub"], media / document, twin, tmp_path), (
        "the twin must be a valid signature"
    )
    sig_path.write_bytes(twin)
    line = assert_one_line_error(verify(packed, media), 3)
    assert f"{document}.sig is not in the low-s form the packer writes" in line, line


@pytest.mark.parametrize(
    "respell",
    [
        lambda s: s.replace(b"\n", b"\r\n"),
        lambda s: s.rstrip(b"\n"),
        lambda s: s + b"\n",
        lambda s: b" " + s,
        lambda s: s.rstrip(b"\n") + b"  \n",
        lambda s: s[:40] + b"\n" + s[40:],
    ],
    ids=["crlf", "no-newline", "two-newlines", "leading-space", "trailing-spaces", "wrapped"],
)
@pytest.mark.parametrize("document", [INDEX, PARITY], ids=["parts-index", "parity-index"])
def test_an_index_signature_in_another_spelling_is_refused(
    packed: dict[str, Any], tmp_path: Path, document: str, respell: Any
) -> None:
    """The same DER signature, base64 with other whitespace: openssl by hand takes it, airgap does not."""
    media = stick(packed, tmp_path)
    sig_path = media / f"{document}.sig"
    variant = respell(sig_path.read_bytes())
    assert openssl_verifies(packed["pub"], media / document, variant, tmp_path)
    sig_path.write_bytes(variant)
    line = assert_one_line_error(verify(packed, media), 3)
    wanted = "is not base64" if b"\n" in variant.rstrip(b"\n") else "is not spelled as the packer writes it"
    assert f"{document}.sig {wanted}" in line, line


def resign_index(packed: dict[str, Any], media: Path, index: bytes) -> None:
    """The publisher signs a parts index spelled otherwise (a buggy or hostile packer)."""
    (media / INDEX).write_bytes(index)
    (media / f"{INDEX}.sig").write_bytes(packed["key"].sign(index))
    (media / PARITY).unlink()  # the parity index names the canonical index's hash
    (media / f"{PARITY}.sig").unlink()


def sha256sum_c(directory: Path, index: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "--strict", "-c", index], cwd=directory, capture_output=True, text=True, timeout=60
    )


def test_signed_parts_index_joined_by_x1c_fails_in_airgap_as_in_sha256sum(
    packed: dict[str, Any], tmp_path: Path
) -> None:
    """Lines joined by \\x1c (a line break to Python's splitlines, an ordinary byte to sha256sum):
    sha256sum reads one line naming a part that does not exist, and so must airgap."""
    media = stick(packed, tmp_path)
    original = (media / INDEX).read_bytes()
    joined = original[:-1].replace(b"\n", b"\x1c") + b"\n"
    assert len(joined.decode().splitlines()) == len(original.splitlines()) > 1  # what a lenient reader saw
    resign_index(packed, media, joined)
    assert sha256sum_c(media, INDEX).returncode != 0
    line = assert_one_line_error(verify(packed, media), 3)
    assert "the parts index" in line and "malformed" in line, line


@pytest.mark.parametrize(
    "respell",
    [
        lambda i: i.replace(b"\n", b"\r\n"),
        lambda i: i[:-1],
        lambda i: i.replace(b"  ", b" *", 1),
        lambda i: i.replace(b"  ", b"\t"),
        lambda i: b"# parts\n" + i,
        lambda i: b"\n" + i,
        lambda i: i.replace(b"\n", b"\n\n", 1),
    ],
    ids=["crlf", "no-final-newline", "binary-mark", "tab", "comment", "leading-blank-line", "blank-line"],
)
def test_signed_parts_index_in_a_spelling_sha256sum_accepts_is_still_refused(
    packed: dict[str, Any], tmp_path: Path, respell: Any
) -> None:
    """sha256sum -c reads each of these as the same parts; airgap takes only the one spelling it
    writes, so that the signed bytes a reviewer checks and the ones airgap checks are the same file."""
    media = stick(packed, tmp_path)
    resign_index(packed, media, respell((media / INDEX).read_bytes()))
    assert sha256sum_c(media, INDEX).returncode == 0, "the spelling must be one sha256sum accepts"
    line = assert_one_line_error(verify(packed, media), 3)
    assert "the parts index" in line, line


# ---------------------------------------------------------------- the line reader against sha256sum
H = [hashlib.sha256(b"content %d" % i).hexdigest().encode() for i in range(4)]

TRICKY = {
    "plain": b"%s  a\n%s  b\n" % (H[0], H[1]),
    "x1c": b"%s  a\x1c%s  b\n" % (H[0], H[1]),
    "x1d": b"%s  a\x1d%s  b\n" % (H[0], H[1]),
    "x1e": b"%s  a\x1e%s  b\n" % (H[0], H[1]),
    "x85": b"%s  a\xc2\x85%s  b\n" % (H[0], H[1]),
    "u2028": b"%s  a\xe2\x80\xa8%s  b\n" % (H[0], H[1]),
    "u2029": b"%s  a\xe2\x80\xa9%s  b\n" % (H[0], H[1]),
    "vt": b"%s  a\x0b%s  b\n" % (H[0], H[1]),
    "ff": b"%s  a\x0c%s  b\n" % (H[0], H[1]),
    "lone-cr": b"%s  a\r%s  b\n" % (H[0], H[1]),
    "crlf": b"%s  a\r\n%s  b\r\n" % (H[0], H[1]),
    "cr-cr-lf": b"%s  a\r\r\n" % H[0],
    "cr-in-name": b"%s  a\rb\n" % H[0],
    "no-final-newline": b"%s  a\n%s  b" % (H[0], H[1]),
    "final-cr-no-newline": b"%s  a\r" % H[0],
    "blank-lines": b"\n%s  a\n\r\n%s  b\n\n" % (H[0], H[1]),
    "comment": b"# a comment\n%s  a\n" % H[0],
    "nul-in-name": b"%s  a\x00b\n%s  c\n" % (H[0], H[1]),
    "trailing-space": b"%s  a \n" % H[0],
}


@pytest.mark.parametrize("data", TRICKY.values(), ids=TRICKY.keys())
def test_the_line_reader_reads_the_lines_sha256sum_c_reads(tmp_path: Path, data: bytes) -> None:
    """For each input, files are laid out exactly as airgap's reader reads it (one per line, named by
    what follows the two spaces, holding the content its hash names); the real ``sha256sum
    --strict -c`` must then check every one of them and nothing else. Had the reader split where
    sha256sum does not (or not where it does), a file would be missing or unread."""
    contents = {h: b"content %d" % i for i, h in enumerate(H)}
    lines = sum_lines(data)
    assert lines, "every tricky input names at least one file"
    for line in lines:
        digest, name = line[:64], line[66:]
        (tmp_path / name.decode("utf-8", "surrogateescape")).write_bytes(contents[digest])
    (tmp_path / "index").write_bytes(data)
    proc = sha256sum_c(tmp_path, "index")
    assert proc.returncode == 0, (lines, proc.stdout, proc.stderr)
    assert proc.stdout.count(": OK\n") == len(lines), (lines, proc.stdout)


# One line each, re-rendered to the same bytes: the reader takes them, with the odd byte in the
# name (which the opener then refuses as a part name). Every other tricky input is another
# spelling of lines airgap would write, and is refused.
ONE_ODD_NAME = {"x1c", "x1d", "x1e", "x85", "u2028", "u2029", "vt", "ff", "lone-cr", "cr-in-name"}


def test_parse_index_takes_only_the_spelling_airgap_writes() -> None:
    assert parse_index(TRICKY["plain"], "index") == [("a", H[0].decode()), ("b", H[1].decode())]
    assert parse_index(TRICKY["trailing-space"], "index") == [("a ", H[0].decode())]  # as sha256sum
    for name in ONE_ODD_NAME:
        assert len(parse_index(TRICKY[name], "index")) == 1, name
    for name in set(TRICKY) - ONE_ODD_NAME - {"plain", "trailing-space"}:
        with pytest.raises(TamperError):
            parse_index(TRICKY[name], "index")
    # Joined by a byte sha256sum does not split on: one entry, never two.
    assert [n for n, _ in parse_index(TRICKY["x1c"], "index")] == [f"a\x1c{H[1].decode()}  b"]


@pytest.mark.parametrize("document", [INDEX, PARITY], ids=["parts-index", "parity-index"])
def test_the_documented_by_hand_check_refuses_a_respelled_index_signature(
    packed: dict[str, Any], tmp_path: Path, document: str
) -> None:
    """The reviewer's commands (docs/bundle-format.md) hold the index signatures to the same one
    spelling: the block passes on the untouched media and fails on a signature with one newline
    more (which base64 -d and openssl alone would take)."""
    from tests.test_bundle_by_hand import run_by_hand

    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(packed["pub"].read_bytes())
    media = stick(packed, tmp_path)
    assert run_by_hand(work, media / BASE).returncode == 0
    (media / BASE).unlink()
    sig = media / f"{document}.sig"
    sig.write_bytes(sig.read_bytes() + b"\n")
    proc = run_by_hand(work, media / BASE)
    assert proc.returncode != 0 and "cmp: EOF on -" in proc.stderr, proc.stdout + proc.stderr


def test_high_s_twin_of_a_previous_bundles_manifest_signature_is_refused_by_since(tmp_path: Path) -> None:
    """`bundle --since PREVIOUS` reads only the previous bundle's signed front: its manifest
    signature is held to the same one spelling as when the bundle is verified whole."""
    from airgap.adapters import keys
    from airgap.errors import SignatureError
    from airgap.services.build.delta import held_since
    from tests.bundles import rewrite

    key, pub, kid = make_key(tmp_path, "publisher")
    pack_demo(tmp_path, key)
    bundle = tmp_path / "out" / BASE
    public = keys.load_public(pub.read_bytes(), str(pub))
    trusted = (keys.TrustedKey(kid, pub, public),)
    assert held_since(bundle, trusted)  # the control: the untouched bundle is read

    def twin(member: Any, data: bytes) -> list[tuple[Any, bytes]]:
        if member.name == "bundle/manifest.json.sig":
            data = high_s_twin(data)
            member.size = len(data)
        return [(member, data)]

    rewrite(bundle, twin)
    with pytest.raises(SignatureError, match="not in the low-s form"):
        held_since(bundle, trusted)


SEPARATORS = [b"\n", b"\r\n", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\x0b", b"\x0c"]
SEPARATORS += [b"\r", b"\n\n", b"\n# note\n", b"\x00tail\n", b"\r\r\n", b" ", b"\t"]


def test_the_line_reader_agrees_with_sha256sum_c_on_200_random_joins(tmp_path: Path) -> None:
    """Entries joined by separators drawn at random (seeded): for every input, the files laid out
    as airgap's reader reads it are exactly the ones ``sha256sum --strict -c`` checks."""
    import random

    rng = random.Random(2026)
    digests = {hashlib.sha256(b"content %d" % i).hexdigest().encode(): b"content %d" % i for i in range(6)}
    hashes = list(digests)
    for case in range(200):
        directory = tmp_path / str(case)
        directory.mkdir()
        count = rng.randint(1, 4)  # four joined stay within a file name's 255 bytes
        data = b"".join(
            hashes[i] + b"  n%d" % i + (rng.choice(SEPARATORS) if i < count - 1 else rng.choice([b"\n", b""]))
            for i in range(count)
        )
        lines = sum_lines(data)
        for line in lines:
            (directory / line[66:].decode("utf-8", "surrogateescape")).write_bytes(digests[line[:64]])
        (directory / "index").write_bytes(data)
        proc = sha256sum_c(directory, "index")
        assert proc.returncode == 0 and proc.stdout.count(": OK\n") == len(lines), (data, lines, proc)
