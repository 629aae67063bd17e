"""Attacks on the names a bundle makes the far side create, and on the far side's blob store.

A hostile publisher (its key trusted) signs names that collide: with the control files, with each
other once a file system folds case or normalises Unicode, a file with a directory. A local user
with write access to the state directory plants directories, links, FIFOs and sparse files where
blobs belong, and links where airgap writes. Each attack is refused with the documented exit code
in one line naming the entry (verify refuses what install could not lay out: exit 4, never an
install failure after a verify that passed), or defeated (install lays out the verified content
anyway); nothing outside the state directory is written. The real CLI, in-process; install runs
on ``--to inert`` (tests/fakes.py), which exercises every installer step but deploying.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.core import names
from airgap.errors import InvalidInputError
from airgap.services.build.pack import pack
from tests.bundles import EPOCH, pass_policy
from tests.conftest import assert_one_line_error
from tests.farside import INSTALLABLE, FarSide, audit, far_side, inert_target, outside_unchanged, sha


@pytest.fixture
def far(tmp_path: Path) -> Iterator[FarSide]:
    with inert_target():
        yield far_side(tmp_path)


def refused(far: FarSide, bundle: Path, code: int, *match: str) -> str:
    """Verify and install both refuse ``bundle`` with ``code``, in one line holding ``match``, and
    write nothing outside the state directory."""
    lines = []
    with outside_unchanged(far):
        for proc in (far.verify(bundle), far.install(bundle)):
            line = assert_one_line_error(proc, code)
            assert all(m in line for m in match), line
            lines.append(line)
    assert audit(far)[-1]["result"] == "rejected" and audit(far)[-1]["exit_code"] == code
    return lines[0]


# ======================================================================== names that collide
@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    "name",
    [
        "manifest.json.sig",
        "SHA256SUMS.sig",
        "SHA256SUMS",
        "manifest.json",
        "MANIFEST.JSON",
        "Sha256Sums.Sig",
        "model/SHA256SUMS.sig",
        "model/manifest.json.sig",
    ],
)
def test_a_file_named_like_a_control_file_is_refused_at_every_level_in_any_case(
    far: FarSide, fmt: str, name: str
) -> None:
    """v1 used to write a second ``bundle/manifest.json.sig`` member and verify it (exit 0) while
    ``sha256sum -c`` and openssl failed: the check compared against ``bundle/``-prefixed names."""
    bundle = getattr(far, fmt)({**INSTALLABLE, name: b"a second signature\n"})
    line = refused(far, bundle, 4, repr(name))
    assert "reserved" in line


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    ("file", "under"),
    [("model/a", "model/a/b"), ("model/A", "model/a/b"), ("model/a.d", "MODEL/a.d/x/y")],
    ids=["same-case", "case-folded", "deep"],
)
def test_a_file_and_a_directory_of_one_name_are_refused_at_verify_not_at_install(
    far: FarSide, fmt: str, file: str, under: str
) -> None:
    """``model/a`` and ``model/a/b`` verified (exit 0), then install failed with exit 70."""
    bundle = getattr(far, fmt)({**INSTALLABLE, file: b"file", under: b"under"})
    refused(far, bundle, 4, repr(file), "needs it to be a directory")


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    ("one", "other"),
    [("model/Weights.bin", "model/weights.bin"), ("LICENSE", "license")],
)
def test_names_that_are_one_file_on_a_case_insensitive_file_system_are_refused(
    far: FarSide, fmt: str, one: str, other: str
) -> None:
    bundle = getattr(far, fmt)({**INSTALLABLE, one: b"1", other: b"2"})
    refused(far, bundle, 4, "the same file once extracted on a case-insensitive file system")


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("model/caf\u00e9.txt", "U+00E9"),  # NFC
        ("model/cafe\u0301.txt", "U+0301"),  # NFD: its twin once normalised
        ("model/\ufb01le.txt", "U+FB01"),  # NFKC folds the ligature into "fi"
        ("model/\u212a.txt", "U+212A"),  # KELVIN SIGN: casefolds to 'k'
        ("model/\u202etxt.exe", "U+202E"),  # a bidi override
        ("model/a\x1b[31m", "U+001B"),  # a terminal escape
    ],
)
def test_names_outside_the_documented_characters_are_refused_with_the_character_shown(
    far: FarSide, fmt: str, name: str, why: str
) -> None:
    """Unicode twins (NFC/NFD, compatibility forms, case) cannot pass: the character set is
    ASCII, and a refused character is named in its escaped spelling."""
    bundle = getattr(far, fmt)({**INSTALLABLE, name: b"x"})
    line = refused(far, bundle, 4, why)
    assert "\x1b" not in line and "\u202e" not in line


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    "name",
    [".hidden", "model/.part", "model/-rf", "-", "model/a b", "model\\a", "x" * 256, "a/" * 40 + "z"],
    ids=["dot-top", "dot-deep", "dash", "dash-alone", "space", "backslash", "segment-256", "depth-41"],
)
def test_odd_names_a_reviewer_would_not_expect_are_refused(far: FarSide, fmt: str, name: str) -> None:
    bundle = getattr(far, fmt)({**INSTALLABLE, name: b"x"})
    refused(far, bundle, 4, "unsafe path in files[")


@pytest.mark.parametrize("name", ["blobs/x", "Blobs/sha256/" + "0" * 64, "BLOBS"])
def test_a_v2_file_under_blobs_in_any_case_is_refused(far: FarSide, name: str) -> None:
    refused(far, far.v2({**INSTALLABLE, name: b"x"}), 4, "is reserved at the top of a bundle")


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_a_file_where_the_installer_writes_its_own_deploy_directory_is_refused(
    far: FarSide, fmt: str
) -> None:
    """The targets write the manifests they render into ``deploy/`` of the installed tree: a
    bundle file ``deploy`` would make that mkdir fail after verify passed."""
    refused(far, getattr(far, fmt)({**INSTALLABLE, "deploy": b"x"}), 4, "'deploy' is reserved")


def test_the_control_for_the_name_attacks_installs(far: FarSide) -> None:
    """The honest neighbours of the names above verify and install: each attack is refused for
    its name and nothing else."""
    files = {
        **INSTALLABLE,
        "image/oci/manifest.json": b"[]",  # manifest.json below the top: the Docker archive's
        "model/a.d/b": b"1",
        "model/weights.bin": b"2",
        "licenses/LICENSE.txt": b"3",
        "wheels/numpy-1.0+local_1,x=y@z~-py3-none-any.whl": b"4",
        "x" * 255: b"5",
    }
    for fmt in ("v1", "v2"):
        bundle = getattr(far, fmt)(files, version="1.0.0" if fmt == "v1" else "1.0.1")
        with outside_unchanged(far):
            assert far.verify(bundle).returncode == 0
            proc = far.install(bundle)
        assert proc.returncode == 0, proc.stderr


def test_pack_refuses_to_write_names_the_far_side_would_refuse(tmp_path: Path) -> None:
    """Bundle time applies the far side's rule, before a byte is hashed."""
    from tests.bundles import make_key

    key, _, _ = make_key(tmp_path, "k")
    for bad in (("model/A.txt", "model/a.txt"), ("sha256sums",), ("deploy",), ("model/a b",)):
        st = tmp_path / f"st{len(list(tmp_path.iterdir()))}"
        for rel in bad:
            (st / rel).parent.mkdir(parents=True, exist_ok=True)
            (st / rel).write_text(rel)
        pass_policy(st)
        with pytest.raises(InvalidInputError) as caught:
            pack(st, tmp_path / "out", key, EPOCH, name="demo", version="1.0.0")
        line = caught.value.one_line()
        assert caught.value.exit_code == 4 and repr(bad[-1]) in line and "rename or remove that file" in line
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "name",
    ["demo-1.0.0.airgap.tar.part-000", "demo-1.0.0+b.1.airgap.tar.parity-003", "x.intoto.json"],
)
def test_part_parity_and_evidence_file_names_pass_the_same_rule(name: str) -> None:
    assert names.check_file_name(name) == name


@pytest.mark.parametrize(
    "name", [".part-000", "-rf", "a/b", "SHA256SUMS", "manifest.json", "", "a\nb", "x" * 256]
)
def test_a_part_or_evidence_file_name_the_far_side_would_not_create_is_refused(name: str) -> None:
    with pytest.raises(names.UnsafeName) as caught:
        names.check_file_name(name)
    assert caught.value.exit_code == 4 and "\n" not in caught.value.one_line()


def test_a_parity_index_naming_a_hidden_part_is_refused() -> None:
    from airgap.core.parity import _share

    with pytest.raises(ValueError, match="not a plain file name"):
        _share({"name": ".demo.part-000", "size": 1, "sha256": "0" * 64})


# ================================================================ the store is hostile ground
def _external(far: FarSide, shared: bool = False) -> tuple[Path, str, bytes]:
    """A v2 bundle whose wheel's blob is external: the far side's store must hold it."""
    wheel = b"wheel content " * 100
    files = {**INSTALLABLE, "wheels/w.whl": wheel}
    if shared:
        files["host/wheels/w.whl"] = wheel
    bundle = far.v2(files, external=frozenset({"wheels/w.whl"}))
    far.store.mkdir(parents=True, exist_ok=True)
    return bundle, sha(wheel), wheel


def test_a_directory_named_by_an_external_blobs_hash_is_exit_3_not_70(far: FarSide) -> None:
    bundle, digest, _ = _external(far)
    (far.store / digest).mkdir()
    (far.store / digest / "x").write_bytes(b"x")
    refused(far, bundle, 3, f"external blob {digest}", "is a directory, not a regular file")


def test_a_symlink_named_by_an_external_blobs_hash_is_not_followed(far: FarSide) -> None:
    """Even to a file with exactly the right content: the store holds regular files only."""
    bundle, digest, wheel = _external(far)
    (far.outside / "planted").write_bytes(wheel)
    (far.store / digest).symlink_to(far.outside / "planted")
    refused(far, bundle, 3, "is a symbolic link, not a regular file")


def test_a_fifo_named_by_an_external_blobs_hash_is_refused_without_waiting(far: FarSide) -> None:
    bundle, digest, _ = _external(far)
    os.mkfifo(far.store / digest)
    started = time.monotonic()
    refused(far, bundle, 3, "is a FIFO, not a regular file")
    assert time.monotonic() - started < 30


def test_a_device_named_by_an_external_blobs_hash_is_refused(far: FarSide) -> None:
    bundle, digest, _ = _external(far)
    os.mknod(far.store / digest, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    refused(far, bundle, 3, "is a character device, not a regular file")


def _peak_rss_of_verify(far: FarSide, bundle: Path) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """``airgap verify`` in a child: its result, peak resident set size (bytes) and wall time."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "t = time.monotonic() - t\n"
        "sys.stdout.write(f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024} {t}')\n"
        "sys.stderr.write(p.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    argv = [sys.executable, "-m", "airgap", "verify", str(bundle), "--state-dir", str(far.state)]
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120
    )
    rss, seconds = proc.stdout.split()
    return proc, int(rss), float(seconds)


def test_a_4_gib_sparse_file_named_by_an_external_blob_is_refused_by_its_size_in_bounded_memory(
    far: FarSide,
) -> None:
    """It used to be hashed in full before its size was compared, and kept in memory when its
    content is read (the build record is): a 512 MiB one peaked at 1 GB, a 4 GiB one at 8 GB
    and took a minute. Now one ``stat`` refuses it."""
    bundle = far.v2({**INSTALLABLE, "wheels/w.whl": b"w"}, external=frozenset({"build.json"}))
    digest = sha(INSTALLABLE["build.json"])
    far.store.mkdir(parents=True)
    with open(far.store / digest, "wb") as fh:
        fh.truncate(4 << 30)
    with outside_unchanged(far):
        proc, rss, seconds = _peak_rss_of_verify(far, bundle)
        line = assert_one_line_error(proc, 3)
        assert f"is {4 << 30} bytes, not {len(INSTALLABLE['build.json'])}" in line, line
        # The same refusal for a missing blob is the baseline: what airgap imports at start.
        os.unlink(far.store / digest)
        base_proc, baseline, base_seconds = _peak_rss_of_verify(far, bundle)
        assert "missing from the blob store" in assert_one_line_error(base_proc, 3)
    assert rss - baseline < 16 << 20, f"{(rss - baseline) >> 20} MiB more than refusing a missing blob"
    assert seconds - base_seconds < 2.0, f"{seconds:.2f}s against {base_seconds:.2f}s"


def test_two_external_files_sharing_a_blob_must_both_have_its_size(far: FarSide) -> None:
    """Only the first file's size was compared; the second could claim any size."""
    wheel = b"wheel content " * 100
    files = {**INSTALLABLE, "wheels/w.whl": wheel, "host/wheels/w.whl": wheel}
    bundle = far.v2(files, external=frozenset({"wheels/w.whl"}), sizes={"wheels/w.whl": 7})
    far.store.mkdir(parents=True)
    (far.store / sha(wheel)).write_bytes(wheel)
    refused(far, bundle, 3, "wheels/w.whl is 7 bytes but host/wheels/w.whl", "is 1400")


def test_planted_links_cannot_make_install_write_outside_the_state_directory(far: FarSide) -> None:
    """A link at every name install writes through — the blob's temporary name (the fixed
    ``.HEX.part`` it used to open without ``O_NOFOLLOW``), the blob itself, a logical file's
    temporary name, a directory of the installed tree and the ``deploy/`` a target renders into —
    pointing at the user's own files."""
    wheel = b"wheel content " * 100
    files = {**INSTALLABLE, "wheels/w.whl": wheel}
    bundle = far.v2(files)
    verified_sha = _manifest_sha(far, bundle)
    far.store.mkdir(parents=True)
    victim = far.outside / "victim"
    for data in files.values():
        (far.store / f".{sha(data)}.part").symlink_to(victim)
    (far.store / sha(wheel)).symlink_to(victim)
    tree = far.state / "content" / "bundles" / verified_sha
    (tree / "model").parent.mkdir(parents=True)
    (tree / "model").symlink_to(far.outside, target_is_directory=True)
    (tree / ".build.json.part").symlink_to(victim)
    (tree / "deploy").symlink_to(far.outside, target_is_directory=True)  # where targets render
    with outside_unchanged(far):
        proc = far.install(bundle)
    assert proc.returncode == 0, proc.stderr
    assert (tree / "wheels" / "w.whl").read_bytes() == wheel
    assert not (tree / "model").is_symlink() and (tree / "model" / "model.onnx").read_bytes() == b"onnx"
    assert not (far.store / sha(wheel)).is_symlink()
    assert not (tree / "deploy").is_symlink() and (tree / "deploy" / "inert.yaml").is_file()


def test_a_content_store_linked_outside_is_refused_before_anything_is_written(far: FarSide) -> None:
    bundle = far.v2({**INSTALLABLE, "wheels/w.whl": b"w"})
    far.state.mkdir(exist_ok=True)
    (far.state / "content").symlink_to(far.outside, target_is_directory=True)
    assert far.verify(bundle).returncode == 0
    with outside_unchanged(far):
        line = assert_one_line_error(far.install(bundle), 3)
    assert f"{far.state / 'content'} is a symbolic link, not a directory" in line


def test_a_blob_store_directory_linked_outside_is_replaced_by_a_real_one(far: FarSide) -> None:
    bundle = far.v2({**INSTALLABLE, "wheels/w.whl": b"w"})
    far.store.parent.mkdir(parents=True)
    far.store.symlink_to(far.outside, target_is_directory=True)
    with outside_unchanged(far):
        proc = far.install(bundle)
    assert proc.returncode == 0, proc.stderr
    assert not far.store.is_symlink() and (far.store / sha(b"w")).read_bytes() == b"w"


def test_a_directory_or_fifo_named_by_a_carried_blobs_hash_is_replaced_at_install(far: FarSide) -> None:
    """The bundle carries the blob, so verify passes; install must then lay it out (never exit
    70 after a verify exit 0), replacing what was planted at its name."""
    wheel, lock = b"wheel " * 50, b"lock\n"
    bundle = far.v2({**INSTALLABLE, "wheels/w.whl": wheel, "requirements.lock": lock})
    far.store.mkdir(parents=True)
    (far.store / sha(wheel) / "inner").mkdir(parents=True)
    os.mkfifo(far.store / sha(lock))
    assert far.verify(bundle).returncode == 0
    with outside_unchanged(far):
        proc = far.install(bundle)
    assert proc.returncode == 0, proc.stderr
    for data in (wheel, lock):
        assert stat.S_ISREG(os.lstat(far.store / sha(data)).st_mode)
        assert (far.store / sha(data)).read_bytes() == data


def test_a_wrong_sized_or_altered_store_file_at_a_carried_blobs_name_is_replaced(far: FarSide) -> None:
    wheel = b"wheel " * 50
    bundle = far.v2({**INSTALLABLE, "wheels/w.whl": wheel})
    far.store.mkdir(parents=True)
    with open(far.store / sha(wheel), "wb") as fh:
        fh.truncate(1 << 30)  # sparse: refused by its size, never hashed
    started = time.monotonic()
    proc = far.install(bundle)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    assert (far.store / sha(wheel)).read_bytes() == wheel


def test_installed_content_is_read_only_so_no_installation_changes_a_blob_another_shares(
    far: FarSide,
) -> None:
    """Installed files were hard links to the store's writable inodes: one in-place write through
    any of them changed the blob for every installation sharing it."""
    wheel = b"wheel " * 50
    one = far.v2({**INSTALLABLE, "wheels/w.whl": wheel})
    two = far.v1({**INSTALLABLE, "wheels/w.whl": wheel}, version="1.0.1")
    for bundle in (one, two):
        assert far.install(bundle).returncode == 0
    content = far.state / "content"
    # Everything extracted; not what a target renders for its runtime (deploy/, its own new files).
    files = [p for p in content.rglob("*") if p.is_file() and "deploy" not in p.relative_to(content).parts]
    writable = [str(p) for p in files if stat.S_IMODE(p.stat().st_mode) != 0o444]
    assert len(files) >= 8 and not writable, writable


def test_rebuild_extraction_copies_never_the_stores_inodes(far: FarSide, tmp_path: Path) -> None:
    """``rebuild`` edits the tree it extracts: it gets copies, so no edit reaches the store."""
    from airgap.services.media.extraction import extract
    from airgap.services.media.verify import VerifyOptions, verify_bundle
    from airgap.services.state import State

    wheel = b"wheel " * 50
    bundle = far.v2({**INSTALLABLE, "wheels/w.whl": wheel})
    assert far.install(bundle).returncode == 0
    state = State(far.state)
    verified = verify_bundle(bundle, VerifyOptions(trusted=tuple(state.trust.keys())))
    staging = tmp_path / "staging"
    extract(bundle, verified, lambda p: True, staging, state.blob_store, copy=True)
    copied = staging / "wheels" / "w.whl"
    assert copied.read_bytes() == wheel
    assert os.stat(copied).st_ino != os.stat(state.blob_store / sha(wheel)).st_ino
    os.chmod(copied, 0o644)
    copied.write_bytes(b"edited by a build step")
    assert hashlib.sha256((state.blob_store / sha(wheel)).read_bytes()).hexdigest() == sha(wheel)


def _manifest_sha(far: FarSide, bundle: Path) -> str:
    import tarfile

    with tarfile.open(bundle) as tf:
        return sha(tf.extractfile("bundle/manifest.json").read())  # type: ignore[union-attr]
