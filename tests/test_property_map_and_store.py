"""A property over the v2 map and the blob store: for random signed maps (names drawn to collide:
case twins, files under files, control and installer names, dots, dashes, non-ASCII) and random
store contents where the blobs belong (the right file, a wrong size, a sparse giant, other bytes
of the right size, a directory, a link to the right bytes outside, a dangling link, a FIFO),
``verify`` and ``install`` give one verdict, 0, 3 or 4 and never anything else (70 above all);
what install lays out is exactly the signed map, every store entry it leaves is a read-only
regular file of its content, and nothing outside the state directory changes.

Real keys, the real CLI in-process, ``--to inert`` (tests/fakes.py) for the installer's steps.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.farside import INSTALLABLE, FarSide, far_side, inert_target, outside_unchanged, sha

CASES = 100
PLAIN = ["a", "b", "c.whl", "wheels", "host", "model"]  # safe alone; together a file may be a directory
HOSTILE = ["A", "deploy", "blobs", "SHA256SUMS.sig", ".h", "-x", "é", "a b"]  # twins, reserved, refused
CONTENTS = [b"", b"one", b"two", b"three " * 300, b"\0" * 4096]
STORE = ["absent", "right", "short", "sparse", "other", "directory", "link", "dangling", "fifo"]

# Mostly plain segments, so that most maps are valid and reach the store; a hostile one now and then.
segments = st.sampled_from(PLAIN * 6 + HOSTILE)
paths = st.lists(segments, min_size=1, max_size=3).map("/".join)
maps = st.dictionaries(paths, st.sampled_from(CONTENTS), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarSide]:
    """A far side trusting a publisher key, made once: each case copies it."""
    with inert_target():
        yield far_side(tmp_path_factory.mktemp("farside"))


def _plant(far: FarSide, digest: str, data: bytes, how: str) -> None:
    path = far.store / digest
    if how == "right":
        path.write_bytes(data)
    elif how == "short":
        path.write_bytes(data[:-1] if data else b"x")
    elif how == "sparse":
        with open(path, "wb") as fh:
            fh.truncate(256 << 20)
    elif how == "other":
        path.write_bytes(bytes(b ^ 1 for b in data) if data else b"")
    elif how == "directory":
        (path / "inner").mkdir(parents=True)
    elif how == "link":
        (far.outside / digest).write_bytes(data)
        path.symlink_to(far.outside / digest)
    elif how == "dangling":
        path.symlink_to(far.outside / "nothing-here")
    elif how == "fifo":
        os.mkfifo(path)


@settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    extra=maps,
    external=st.sets(st.sampled_from(CONTENTS), max_size=3),
    store=st.lists(st.sampled_from(STORE), min_size=len(CONTENTS), max_size=len(CONTENTS)),
)
def test_verify_and_install_agree_on_random_maps_and_hostile_stores(
    template: FarSide, extra: dict[str, bytes], external: set[bytes], store: list[str]
) -> None:
    with tempfile.TemporaryDirectory(prefix="prop-", dir=template.root) as tmp:
        root = Path(tmp)
        shutil.copytree(template.state, root / "state", symlinks=True)
        (root / "outside").mkdir()
        (root / "outside" / "victim").write_bytes(b"the user's own file\n")
        far = FarSide(root, template.key, template.pub, root / "state", root / "outside")
        files = {**INSTALLABLE, **extra}
        left_out = frozenset(p for p, d in files.items() if d in external and p not in INSTALLABLE)
        bundle = far.v2(files, external=left_out)
        far.store.mkdir(parents=True)
        for data, how in zip(CONTENTS, store):
            _plant(far, sha(data), data, how)
        started = time.monotonic()
        with outside_unchanged(far):
            verified = far.verify(bundle)
            installed = far.install(bundle)
        assert time.monotonic() - started < 60, "a FIFO or a sparse file was waited on or read"
        for proc in (verified, installed):
            assert proc.returncode in (0, 3, 4), (proc.returncode, proc.stderr[-2000:])
            assert "Traceback" not in proc.stderr
        assert verified.returncode == installed.returncode, (verified.stderr[-600:], installed.stderr[-600:])
        event(f"exit {installed.returncode}")
        if installed.returncode:
            return
        # What install laid out is exactly the signed map, read-only, from regular store files.
        tree = next((far.state / "content" / "bundles").iterdir())
        for path, data in files.items():
            laid = tree / path
            assert stat.S_ISREG(os.lstat(laid).st_mode) and laid.read_bytes() == data, path
            assert stat.S_IMODE(os.lstat(laid).st_mode) == 0o444, path
        for data in {d for d in files.values()}:
            blob = far.store / sha(data)
            assert stat.S_ISREG(os.lstat(blob).st_mode) and blob.read_bytes() == data
