"""Every file a user or a medium names is read within a cap, and only if it is a regular file.

The inventory (`bundle --have`), an evidence file, a public key (`keys trust`, `--key`), a signing
key, a target profile, the parts and parity indexes and their signatures: each attack below points
one of them at a device, a FIFO, a directory, a socket, an oversized or an unreadable file. The
contract is the same for all: one line, exit 4 (invalid input), no traceback, no hang, memory
bounded by a small multiple of the cap, and nothing written outside the state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.adapters.fs import MAX_KEY, MAX_PROFILE
from airgap.core.inventory import MAX_INVENTORY
from airgap.services.evidence.export import MAX_EVIDENCE
from tests.bundles import PASS, make_key
from tests.conftest import ROOT, assert_one_line_error, run_airgap

ENV = {"AIRGAP_KEY_PASSPHRASE": PASS.decode()}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A public key, a state directory, and a FIFO with no writer (opening it for reading the
    ordinary way would wait forever)."""
    _, pub, _ = make_key(tmp_path, "publisher")
    fifo = tmp_path / "named.fifo"
    os.mkfifo(fifo)
    return {"tmp": tmp_path, "pub": pub, "state": tmp_path / "state", "fifo": fifo}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def refused(site: dict[str, Path], args: list[str], what: str, kind: str) -> str:
    """Runs the command; asserts exit 4 in one line naming ``what`` and ``kind``, within a few
    seconds, and that nothing changed outside the state directory."""
    before = snapshot(site["tmp"])
    started = time.monotonic()
    proc = run_airgap(*args, env=ENV, timeout=30)
    elapsed = time.monotonic() - started
    line = assert_one_line_error(proc, 4)
    assert what in line and kind in line, line
    assert elapsed < 10, f"took {elapsed:.1f}s"
    after = snapshot(site["tmp"])
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    assert all(Path(p).is_relative_to(site["state"]) for p in changed), changed
    return line


# The commands that read a file the user names, and how to point each at ``target``.
def inventory_args(site: dict[str, Path], target: Path) -> list[str]:
    return ["bundle", str(site["tmp"]), "--have", str(target), "--key", str(site["tmp"] / "k.key")]


def evidence_args(site: dict[str, Path], target: Path) -> list[str]:
    return ["evidence", "verify", str(target), "--key", str(site["pub"])]


KEY_READERS = {
    "keys-trust": lambda s, t: ["keys", "trust", str(t), "--state-dir", str(s["state"])],
    "verify-key": lambda s, t: [
        "verify",
        str(s["tmp"] / "x.airgap.tar"),
        "--key",
        str(t),
        "--state-dir",
        str(s["state"]),
    ],
    "evidence-key": lambda s, t: ["evidence", "verify", str(s["pub"]), "--key", str(t)],
    "signing-key": lambda s, t: ["pack", str(s["tmp"]), "--key", str(t)],
}
KEY_WHAT = {
    "keys-trust": "public key",
    "verify-key": "public key",
    "evidence-key": "public key",
    "signing-key": "signing key",
}


# ------------------------------------------------------------------------------ the inventory
def test_inventory_from_dev_zero_is_refused_in_one_line(site: dict[str, Path]) -> None:
    refused(site, inventory_args(site, Path("/dev/zero")), "inventory /dev/zero", "a character device")


def test_inventory_fifo_does_not_hang(site: dict[str, Path]) -> None:
    refused(site, inventory_args(site, site["fifo"]), "inventory", "is a FIFO")


def test_inventory_that_is_a_directory_is_refused(site: dict[str, Path]) -> None:
    refused(site, inventory_args(site, site["tmp"]), "inventory", "is a directory")


def test_inventory_over_its_cap_is_refused_before_reading(site: dict[str, Path]) -> None:
    big = sparse(site["tmp"] / "inventory.json", MAX_INVENTORY + 1)
    refused(
        site, inventory_args(site, big), "inventory", f"is {MAX_INVENTORY + 1} bytes, more than the 64 MiB"
    )


# ------------------------------------------------------------------------------ evidence
def test_evidence_from_dev_zero_is_refused_in_one_line(site: dict[str, Path]) -> None:
    refused(site, evidence_args(site, Path("/dev/zero")), "evidence file /dev/zero", "a character device")


def test_evidence_fifo_does_not_hang(site: dict[str, Path]) -> None:
    refused(site, evidence_args(site, site["fifo"]), "evidence file", "is a FIFO")


def test_evidence_symlink_to_dev_zero_is_refused(site: dict[str, Path]) -> None:
    link = site["tmp"] / "evidence.json"
    link.symlink_to("/dev/zero")
    refused(site, evidence_args(site, link), "evidence file", "a character device")


def test_evidence_over_its_cap_is_refused_before_reading(site: dict[str, Path]) -> None:
    big = sparse(site["tmp"] / "evidence.json", MAX_EVIDENCE + 1)
    refused(site, evidence_args(site, big), "evidence file", "more than the 256 MiB")


# ------------------------------------------------------------------------------ keys
@pytest.mark.parametrize("reader", KEY_READERS)
def test_key_file_from_dev_zero_is_refused_in_one_line(site: dict[str, Path], reader: str) -> None:
    refused(
        site,
        KEY_READERS[reader](site, Path("/dev/zero")),
        f"{KEY_WHAT[reader]} /dev/zero",
        "a character device",
    )


@pytest.mark.parametrize("reader", KEY_READERS)
def test_key_fifo_does_not_hang(site: dict[str, Path], reader: str) -> None:
    refused(site, KEY_READERS[reader](site, site["fifo"]), KEY_WHAT[reader], "is a FIFO")


@pytest.mark.parametrize("reader", KEY_READERS)
def test_key_file_over_its_cap_is_refused_before_reading(site: dict[str, Path], reader: str) -> None:
    big = sparse(site["tmp"] / "big.pem", MAX_KEY + 1)
    refused(site, KEY_READERS[reader](site, big), KEY_WHAT[reader], "more than the 64 KiB")


def test_key_that_is_a_socket_is_refused(site: dict[str, Path]) -> None:
    # A short path: a socket's name is limited to some 100 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as short, socket.socket(socket.AF_UNIX) as sock:
        path = Path(short) / "k.sock"
        sock.bind(str(path))
        refused(site, KEY_READERS["keys-trust"](site, path), "public key", "is a socket")


def test_trusted_key_in_the_store_replaced_by_a_fifo_does_not_hang(site: dict[str, Path]) -> None:
    """A local user who can write the trust store plants a FIFO under a key's name."""
    assert run_airgap("keys", "trust", str(site["pub"]), "--state-dir", str(site["state"])).returncode == 0
    (stored,) = (site["state"] / "trust").glob("*.pem")
    stored.unlink()
    os.mkfifo(stored)
    refused(site, ["keys", "list", "--state-dir", str(site["state"])], "trusted key", "is a FIFO")


# ------------------------------------------------------------------------------ profiles
@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_profile_from_a_device_or_fifo_is_refused(site: dict[str, Path], target: str) -> None:
    path = site["fifo"] if target == "fifo" else Path(target)
    refused(site, ["profile", str(path)], "profile", "only regular files are read")


def test_profile_over_its_cap_is_refused_before_reading(site: dict[str, Path]) -> None:
    big = sparse(site["tmp"] / "profile.json", MAX_PROFILE + 1)
    refused(site, ["profile", str(big)], "profile", "more than the 4 MiB")


# ------------------------------------------------------------------------------ indexes on the media
def fake_index(site: dict[str, Path]) -> Path:
    """A parts index in the one spelling airgap writes (unsigned: these attacks are refused first)."""
    index = site["tmp"] / "demo-1.0.0.airgap.tar.parts.sha256"
    index.write_bytes(b"0" * 64 + b"  demo-1.0.0.airgap.tar.part-000\n")
    return index


def test_parity_index_fifo_does_not_hang(site: dict[str, Path]) -> None:
    index = fake_index(site)
    os.mkfifo(site["tmp"] / "demo-1.0.0.airgap.tar.parity.json")
    refused(site, ["verify", str(index), "--state-dir", str(site["state"])], "parity.json", "is a FIFO")


def test_parts_index_signature_from_dev_zero_is_refused(site: dict[str, Path]) -> None:
    index = fake_index(site)
    (site["tmp"] / f"{index.name}.sig").symlink_to("/dev/zero")
    refused(site, ["verify", str(index), "--state-dir", str(site["state"])], ".sig", "a character device")


# ------------------------------------------------------------------------------ memory
def peak_rss(args: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Runs ``airgap ARGS`` in a child and returns it with its peak resident set size, in bytes."""
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))\n"
        "sys.stderr.write(p.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "airgap", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return proc, int(proc.stdout)


EMPTY_OBJECTS = 50_000_000 // 3  # 50 MB of `{},`: some 1.3 GB once parsed as Python objects


def test_evidence_of_50_mb_of_empty_objects_is_refused_in_bounded_memory(site: dict[str, Path]) -> None:
    head = b'{"format":"airgap.evidence/v1","exported":"x","exported_by":"x","site_keys":[],"attestations":['
    big = site["tmp"] / "evidence.json"
    big.write_bytes(head + b"{}," * (EMPTY_OBJECTS - 1) + b"{}]}")
    tiny = site["tmp"] / "tiny.json"
    tiny.write_bytes(head + b"{}]}")
    proc, rss = peak_rss(evidence_args(site, big))
    line = assert_one_line_error(proc, 4)
    assert "places where a JSON value may start" in line, line
    _, baseline = peak_rss(evidence_args(site, tiny))
    # Reading the file costs its size (48 MiB); parsing it would cost some 1.3 GB.
    assert rss - baseline < 80 << 20, (
        f"evidence verify peaked at {(rss - baseline) >> 20} MiB over a tiny file"
    )


def test_inventory_of_50_mb_of_empty_objects_is_refused_in_bounded_memory(site: dict[str, Path]) -> None:
    head = b'{"format":"airgap.inventory/v1","store":{"blobs":['
    big = site["tmp"] / "inventory.json"
    big.write_bytes(head + b"{}," * (EMPTY_OBJECTS - 1) + b"{}]}}")
    tiny = site["tmp"] / "tiny.json"
    tiny.write_bytes(head + b"{}]}}")
    proc, rss = peak_rss(inventory_args(site, big))
    line = assert_one_line_error(proc, 4)
    assert "JSON values an inventory may have" in line, line
    _, baseline = peak_rss(inventory_args(site, tiny))
    assert rss - baseline < 80 << 20, f"bundle --have peaked at {(rss - baseline) >> 20} MiB over a tiny file"


@pytest.mark.parametrize(
    "item",
    [b"{}", b"[]", b'"ab"', b"0.5", b"123456", b'{"k":[{}]}', b"[[[]]]"],
    ids=["empty-object", "empty-array", "short-string", "float", "int", "nested", "deep-array"],
)
def test_one_counted_json_value_costs_at_most_value_cost_once_parsed(item: bytes) -> None:
    """The value budget bounds the parser only if no value costs more than ``VALUE_COST``: the
    cheapest documents to write and dearest to parse are measured (Python's own allocations,
    beyond the document and its decoded text)."""
    import tracemalloc

    from airgap.core.bundle_format import strict_json
    from airgap.core.json_budget import VALUE_COST, json_values

    raw = b"[" + b",".join([item] * 100_000) + b"]"
    tracemalloc.start()
    try:
        parsed = strict_json(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parsed) == 100_000
    assert peak - 2 * len(raw) < VALUE_COST * json_values(raw), (peak, json_values(raw))


# ------------------------------------------------------------------------------ permissions
@pytest.fixture
def unreadable() -> Iterator[dict[str, Path]]:
    """A directory another user can enter, holding files that user may not read, and a state
    directory it may write. As root (who reads anything), the commands run as ``nobody``."""
    root = Path(tempfile.mkdtemp(prefix="airgap-perm-", dir="/tmp"))
    try:
        root.chmod(0o755)
        state = root / "state"
        state.mkdir()
        state.chmod(0o777)
        for name in ("demo-1.0.0.airgap.tar", "k.pub", "inventory.json", "evidence.json", "profile.json"):
            (root / name).write_bytes(b"{}\n")
            (root / name).chmod(0)
        yield {"root": root, "state": state}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_as_user(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, as ``nobody`` when this is root (so permissions count)."""
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "airgap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "HOME": "/tmp", **ENV},
    )


UNREADABLE = {
    "verify": lambda r, s: ["verify", f"{r}/demo-1.0.0.airgap.tar", "--state-dir", s],
    "inspect": lambda r, s: ["inspect", f"{r}/demo-1.0.0.airgap.tar"],
    "install": lambda r, s: ["install", f"{r}/demo-1.0.0.airgap.tar", "--to", "venv", "--state-dir", s],
    "keys-trust": lambda r, s: ["keys", "trust", f"{r}/k.pub", "--state-dir", s],
    "evidence-verify": lambda r, s: ["evidence", "verify", f"{r}/evidence.json", "--key", f"{r}/k.pub"],
    "profile": lambda r, s: ["profile", f"{r}/profile.json"],
    "bundle-have": lambda r, s: ["bundle", r, "--have", f"{r}/inventory.json", "--key", f"{r}/k.key"],
}


@pytest.mark.parametrize("command", UNREADABLE)
def test_a_file_without_read_permission_is_one_line_exit_4_not_a_usage_box(
    unreadable: dict[str, Path], command: str
) -> None:
    before = snapshot(unreadable["root"])
    proc = run_as_user(UNREADABLE[command](str(unreadable["root"]), str(unreadable["state"])))
    line = assert_one_line_error(proc, 4)
    assert "permission denied" in line and "make it readable by this user" in line, line
    assert "Usage" not in proc.stderr and "not readable" not in proc.stderr, proc.stderr
    after = snapshot(unreadable["root"])
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    assert all(Path(p).is_relative_to(unreadable["state"]) for p in changed), changed


def test_no_command_leaves_path_checks_to_the_cli_framework() -> None:
    """Every path parameter of every command, as ``main`` runs them: none is checked for
    readability by typer (which would answer with a usage box and exit 2)."""
    import typer

    from airgap.cli import app
    from airgap.cli.common import let_commands_open_their_paths

    command = typer.main.get_command(app)
    let_commands_open_their_paths(command)
    seen = 0

    def walk(cmd: object) -> None:
        nonlocal seen
        for param in getattr(cmd, "params", ()):
            info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
            if info is not None and hasattr(info, "readable"):
                seen += 1
                assert not info.readable, (getattr(cmd, "name", "?"), param.name)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(command)
    assert seen > 20  # the walk reached the commands' parameters


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no space: a reader that trusts nothing but reads it all
    would still spend the memory."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def test_the_reader_stops_one_byte_past_its_cap_when_a_file_is_larger_than_it_says() -> None:
    """/proc files report size 0 and hold more: the read stops at the cap, never runs on."""
    from airgap.adapters.fs import read_bytes
    from airgap.errors import InvalidInputError

    assert read_bytes(Path("/proc/self/status"), "status", 1 << 20).startswith(b"Name:")
    with pytest.raises(InvalidInputError, match="more than the 16 bytes airgap reads as one"):
        read_bytes(Path("/proc/self/status"), "status", 16)
    assert json.loads(
        read_bytes(ROOT / "tests" / "data" / "profiles" / "rocky8-aarch64-py310.json", "profile")
    )


def test_profile_nested_fifty_thousand_deep_is_one_line_exit_4(site: dict[str, Path]) -> None:
    """Python's parser gives up on deep nesting with RecursionError: an invalid profile, not a crash."""
    deep = site["tmp"] / "deep.json"
    deep.write_bytes(b"[" * 50_000 + b"]" * 50_000)
    refused(site, ["profile", str(deep)], "deep.json", "is not JSON")


def test_profile_of_empty_objects_is_refused_before_parsing(site: dict[str, Path]) -> None:
    packed = site["tmp"] / "packed.json"
    packed.write_bytes(b"[" + b"{}," * 1_000_000 + b"{}]")  # 3 MB, under the cap; 70 MB once parsed
    refused(site, ["profile", str(packed)], "packed.json", "places where a JSON value may start")


# ------------------------------------------------------------------------------ project files
def test_project_file_fifo_does_not_hang(site: dict[str, Path]) -> None:
    project = site["tmp"] / "project"
    project.mkdir()
    os.mkfifo(project / "airgap.yaml")
    refused(site, ["bundle", str(project)], "project file", "is a FIFO")


def test_project_file_of_a_billion_laughs_is_refused_in_one_line(site: dict[str, Path]) -> None:
    """A 1 KiB airgap.yaml whose aliases name one list 10⁹ times: building its values would run
    out of memory (it ran for minutes); the values built are counted and it stops at the bound."""
    project = site["tmp"] / "project"
    project.mkdir()
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (project / "airgap.yaml").write_text("\n".join([*lines, "name: *a8"]) + "\n")
    assert (project / "airgap.yaml").stat().st_size < 1024
    refused(site, ["bundle", str(project)], "airgap.yaml", "expands to more than 10000 values")
