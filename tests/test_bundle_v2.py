"""Format v2: each distinct content stored once, every logical path still signed, blobs left out
(external) checked in the far side's store. Small synthetic staging directories, real keys, the
real packer, verifier, extractor and CLI; no engine."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters import keys
from airgap.core import bundle_v2
from airgap.core.bundle_format import SIGNATURE_ALGORITHM, canonical_json, render_sums
from airgap.errors import AirgapError, IntegrityError, InvalidInputError, TamperError, UsageError
from airgap.services.build.pack import pack
from airgap.services.media.extraction import extract
from airgap.services.media.verify import VerifyOptions, verify_bundle
from tests.bundles import EPOCH, flip_byte_in, make_key, members, pass_policy
from tests.conftest import assert_one_line_error, run_airgap

WHEELHOUSES = ("wheels", "host/wheels", "airgap/wheels")


def _wheel(name: str, size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(f"{name}/data.bin", date_time=(2023, 11, 14, 22, 13, 20))
        zf.writestr(info, hashlib.shake_256(name.encode()).digest(size))
    return buf.getvalue()


def _staging(root: Path) -> Path:
    """Three wheelhouses sharing two wheels, one wheel of their own each, an OCI layout, a model."""
    st = root / "staging"
    shared = {
        "numpy-1.0-py3-none-any.whl": _wheel("numpy", 300_000),
        "packaging-1.0-py3-none-any.whl": _wheel("pk", 5000),
    }
    for i, house in enumerate(WHEELHOUSES):
        (st / house).mkdir(parents=True)
        for name, data in shared.items():
            (st / house / name).write_bytes(data)
        (st / house / f"own{i}-1.0-py3-none-any.whl").write_bytes(_wheel(f"own{i}", 1000))
        (st / house.replace("wheels", "requirements.lock").lstrip("/")).write_text(f"lock {i}\n")
    blobs = st / "image" / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer = b"\x1f\x8b" + hashlib.shake_256(b"layer").digest(4000)
    (blobs / hashlib.sha256(layer).hexdigest()).write_bytes(layer)
    (st / "image" / "oci" / "index.json").write_text("{}")
    (st / "model").mkdir()
    (st / "model" / "model.onnx").write_bytes(
        hashlib.shake_256(b"m").hexdigest(200_000).encode()
    )  # a .zst blob
    (st / "model" / "contract.json").write_text(json.dumps({"cases": []}))
    (st / "build.json").write_text(
        json.dumps({"name": "demo", "version": "1.0.0", "model": {"file": "model/model.onnx"}})
    )
    pass_policy(st)
    return st


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    key, pub, kid = make_key(tmp_path, "publisher")
    st = _staging(tmp_path)
    trusted = (keys.TrustedKey(kid, pub, keys.load_public(pub.read_bytes(), str(pub))),)
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    return {
        "tmp": tmp_path,
        "key": key,
        "pub": pub,
        "kid": kid,
        "staging": st,
        "trusted": trusted,
        "state": state,
    }


def _pack(env: dict[str, Any], out: str, **kw: Any) -> Path:
    return pack(
        env["staging"], env["tmp"] / out, env["key"], EPOCH, name="demo", version="1.0.0", **kw
    ).files[0]


def _verify(env: dict[str, Any], bundle: Path, store: Path | None = None) -> Any:
    return verify_bundle(bundle, VerifyOptions(trusted=env["trusted"], blob_store=store))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_distinct_content_is_one_blob_and_v2_is_smaller_than_v1_by_the_duplicates(
    env: dict[str, Any],
) -> None:
    v2 = _pack(env, "v2")
    v1 = _pack(env, "v1", bundle_format="v1")
    names = [n for n in members(v2) if n.startswith("bundle/blobs/")]
    hexes = [n.split("/")[-1].removesuffix(".zst") for n in names]
    assert len(hexes) == len(set(hexes)), "no content is stored twice"
    assert set(members(v2)) == {
        "bundle/manifest.json",
        "bundle/manifest.json.sig",
        "bundle/SHA256SUMS",
        "bundle/SHA256SUMS.sig",
        *names,
    }
    st = env["staging"]
    for wheel in ("numpy-1.0-py3-none-any.whl", "packaging-1.0-py3-none-any.whl"):
        assert sum(n.endswith(_sha(st / "wheels" / wheel)) for n in names) == 1, wheel
    manifest = _verify(env, v2).manifest
    listed = {f.path: f.sha256 for f in manifest.files}
    on_disk = {p.relative_to(st).as_posix(): _sha(p) for p in st.rglob("*") if p.is_file()}
    assert listed == on_disk, "every logical file is listed with its content hash"
    assert f"{listed['model/model.onnx']}.zst" in " ".join(names)
    duplicates = sum(
        2 * (st / "wheels" / w).stat().st_size
        for w in ("numpy-1.0-py3-none-any.whl", "packaging-1.0-py3-none-any.whl")
    )
    assert v1.stat().st_size - v2.stat().st_size >= duplicates
    assert _verify(env, v1).manifest.format == "airgap.bundle/v1"


def test_the_cli_verifies_and_inspects_a_v2_bundle(env: dict[str, Any]) -> None:
    bundle = _pack(env, "out")
    proc = run_airgap("verify", str(bundle), "--state-dir", str(env["state"]))
    assert proc.returncode == 0, proc.stderr
    assert "verified demo 1.0.0" in proc.stdout
    info = json.loads(run_airgap("--json", "inspect", str(bundle)).stdout)
    assert info["format"] == "airgap.bundle/v2" and info["external"] == []
    assert len(info["wheels"]) == 9 and len(info["blobs"]) == 14  # 5 wheels, 3 locks, 6 more
    assert info["bytes"] == sum(b["size"] for b in info["blobs"])


def test_pack_with_format_v1_on_the_cli_writes_v1(env: dict[str, Any]) -> None:
    (env["staging"] / "build.json").write_text(
        json.dumps({"name": "demo", "version": "1.0.0", "source_date_epoch": EPOCH})
    )
    proc = run_airgap(
        "--json",
        "pack",
        str(env["staging"]),
        "--key",
        str(env["tmp"] / "publisher.key"),
        "--format",
        "v1",
        "-o",
        str(env["tmp"] / "cli"),
        env={"AIRGAP_KEY_PASSPHRASE": "correct horse battery staple"},
    )
    assert proc.returncode == 0, proc.stderr
    bundle = Path(json.loads(proc.stdout)["bundle"][0])
    assert "bundle/wheels/numpy-1.0-py3-none-any.whl" in members(bundle)
    assert _verify(env, bundle).manifest.format == "airgap.bundle/v1"


def test_install_materialises_each_path_as_a_hard_link_to_one_stored_blob(env: dict[str, Any]) -> None:
    verified = _verify(env, _pack(env, "out"))
    dest, store = env["tmp"] / "content", env["tmp"] / "store"
    created: list[Path] = []
    extract(verified.source[0], verified, lambda p: not p.startswith("model/"), dest, store, created)
    st = env["staging"]
    numpy = _sha(st / "wheels" / "numpy-1.0-py3-none-any.whl")
    links = [dest / h / "numpy-1.0-py3-none-any.whl" for h in WHEELHOUSES]
    assert {os.stat(p).st_ino for p in links} == {os.stat(store / numpy).st_ino}, "one copy, three paths"
    assert os.stat(store / numpy).st_nlink == 4
    assert (dest / "build.json").read_bytes() == (st / "build.json").read_bytes()
    # An OCI blob stays in the store (the targets read the image there), as in v1.
    layer = next((st / "image" / "oci" / "blobs" / "sha256").iterdir())
    assert _sha(store / layer.name) == layer.name and not (dest / "image" / "oci" / "blobs").exists()
    assert not (dest / "model").exists()
    assert sorted(created) == sorted(store / p.name for p in created) and len(created) == len(set(created))


def test_a_blob_already_in_the_store_is_reused_only_after_re_hashing(env: dict[str, Any]) -> None:
    verified = _verify(env, _pack(env, "out"))
    store = env["tmp"] / "store"
    store.mkdir()
    numpy = _sha(env["staging"] / "wheels" / "numpy-1.0-py3-none-any.whl")
    (store / numpy).write_bytes(b"poisoned")
    extract(verified.source[0], verified, lambda p: p.startswith("host/"), env["tmp"] / "c", store)
    assert _sha(store / numpy) == numpy
    assert _sha(env["tmp"] / "c" / "host" / "wheels" / "numpy-1.0-py3-none-any.whl") == numpy


# ------------------------------------------------------------------ external blobs


def test_external_blobs_are_listed_left_out_and_verified_from_the_store(env: dict[str, Any]) -> None:
    st = env["staging"]
    numpy = st / "wheels" / "numpy-1.0-py3-none-any.whl"
    bundle = _pack(env, "delta", external=frozenset({_sha(numpy)}))
    assert not any(_sha(numpy) in n for n in members(bundle))
    store = env["state"] / "content" / "oci" / "blobs" / "sha256"
    store.mkdir(parents=True)
    shutil.copyfile(numpy, store / _sha(numpy))
    manifest = _verify(env, bundle, store).manifest
    external = [f.path for f in manifest.files if f.external]
    assert external == [f"{h}/numpy-1.0-py3-none-any.whl" for h in ("airgap/wheels", "host/wheels", "wheels")]
    proc = run_airgap("verify", str(bundle), "--state-dir", str(env["state"]))
    assert proc.returncode == 0, proc.stderr
    # install materialises it from the store too
    verified = _verify(env, bundle, store)
    extract(bundle, verified, lambda p: p.startswith("wheels/"), env["tmp"] / "c", store)
    assert _sha(env["tmp"] / "c" / "wheels" / "numpy-1.0-py3-none-any.whl") == _sha(numpy)


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_an_external_blob_missing_or_altered_in_the_store_is_exit_3_naming_it(
    env: dict[str, Any], damage: str
) -> None:
    numpy = env["staging"] / "wheels" / "numpy-1.0-py3-none-any.whl"
    digest = _sha(numpy)
    bundle = _pack(env, "delta", external=frozenset({digest}))
    store = env["state"] / "content" / "oci" / "blobs" / "sha256"
    store.mkdir(parents=True)
    if damage == "altered":
        (store / digest).write_bytes(numpy.read_bytes()[:-1] + b"x")
    line = assert_one_line_error(run_airgap("verify", str(bundle), "--state-dir", str(env["state"])), 3)
    assert f"external blob {digest}" in line and "wheels/numpy-1.0-py3-none-any.whl" in line
    assert ("missing from the blob store" if damage == "missing" else "has other content") in line
    with pytest.raises(TamperError, match=digest):
        _verify(env, bundle, store)


def test_v1_cannot_leave_blobs_out(env: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="only a v2 bundle"):
        _pack(env, "x", bundle_format="v1", external=frozenset({"0" * 64}))


# ------------------------------------------------------------------ attacks on the archive


def test_a_flipped_byte_in_a_shared_blob_is_rejected(env: dict[str, Any]) -> None:
    bundle = _pack(env, "out")
    numpy = _sha(env["staging"] / "wheels" / "numpy-1.0-py3-none-any.whl")
    flip_byte_in(bundle, f"bundle/blobs/sha256/{numpy}", offset=4000)
    with pytest.raises(TamperError, match=f"blobs/sha256/{numpy} has been modified"):
        _verify(env, bundle)


# ------------------------------------------------------------------ hostile manifests (signed)


def _hostile(
    env: dict[str, Any],
    files: list[dict[str, Any]],
    stored: dict[str, bytes],
    listed: list[dict[str, Any]] | None = None,
) -> Path:
    """A v2 archive whose manifest, signed by the trusted key, says what the attack needs:
    ``files``, the compressed blobs ``listed``; the archive holds the blobs ``stored`` (by name)."""
    doc = {
        "format": "airgap.bundle/v2",
        "name": "demo",
        "version": "1.0.0",
        "created": "2023-11-14T22:13:20Z",
        "expires": None,
        "tool": "airgap test",
        "target_profile_sha256": None,
        "images": [],
        "locks": {},
        "policy": {},
        "files": files,
        "blobs": listed or [],
        "signer": {"key_id": env["key"].key_id, "algorithm": SIGNATURE_ALGORITHM},
    }
    manifest = canonical_json(doc)
    msig = env["key"].sign(manifest)
    members_ = sorted((f"blobs/sha256/{n}", d) for n, d in stored.items())
    try:  # SHA256SUMS as the manifest determines it, so that the attack meets the blob checks
        listed_sums = [(b.path, b.sha256) for b in bundle_v2.parse_manifest(manifest).blobs]
    except AirgapError:  # refused at the manifest already: any SHA256SUMS does
        listed_sums = [(n, hashlib.sha256(d).hexdigest()) for n, d in members_]
    sums = render_sums(
        [
            *listed_sums,
            ("manifest.json", hashlib.sha256(manifest).hexdigest()),
            ("manifest.json.sig", hashlib.sha256(msig).hexdigest()),
        ]
    )
    path = env["tmp"] / "hostile.airgap.tar"
    control = [
        ("manifest.json", manifest),
        ("manifest.json.sig", msig),
        ("SHA256SUMS", sums),
        ("SHA256SUMS.sig", env["key"].sign(sums)),
    ]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tw:
        for name, data in [*control, *members_]:
            ti = tarfile.TarInfo(f"bundle/{name}")
            ti.size = len(data)
            ti.mtime = EPOCH
            tw.addfile(ti, io.BytesIO(data))
    return path


A, B = b"content a\n", b"content b\n"
HA, HB = hashlib.sha256(A).hexdigest(), hashlib.sha256(B).hexdigest()


def _file(path: str, data: bytes, **kw: Any) -> dict[str, Any]:
    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **kw}


def _zst(name: str, content: bytes) -> dict[str, Any]:
    """A compressed-blob entry named ``name`` (a hex digest) for ``content``."""
    return {
        "path": f"blobs/sha256/{name}.zst",
        "size": 9,
        "sha256": "0" * 64,
        "compression": "zstd",
        "content": {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()},
    }


@pytest.mark.parametrize(
    ("files", "stored", "listed", "error", "match"),
    [
        pytest.param(
            [_file("a.txt", A), _file("b.txt", B)],
            {HA: A},
            [],
            TamperError,
            f"blobs/sha256/{HB} is listed in the manifest but missing",
            id="path-to-a-blob-not-in-the-archive",
        ),
        pytest.param(
            [_file("a.txt", A)],
            {HA: A, HB: B},
            [],
            TamperError,
            f"blobs/sha256/{HB} is in the bundle but not in its signed manifest",
            id="blob-no-file-maps-to",
        ),
        pytest.param(
            [_file("a.txt", A), _file("a.txt", A)],
            {HA: A},
            [],
            InvalidInputError,
            "the file 'a.txt' is listed twice",
            id="two-entries-for-one-path",
        ),
        pytest.param(
            [_file("a.txt", A), _file("A.TXT", A)],
            {HA: A},
            [],
            InvalidInputError,
            "the same file once extracted",
            id="two-entries-differing-by-case",
        ),
        pytest.param(
            [_file(f"blobs/sha256/{HA}", A)],
            {HA: A},
            [],
            InvalidInputError,
            "'blobs' is reserved at the top of a bundle",
            id="path-under-blobs",
        ),
        pytest.param(
            [_file("SHA256SUMS", A)],
            {HA: A},
            [],
            InvalidInputError,
            "the reserved name 'SHA256SUMS'",
            id="path-over-a-control-file",
        ),
        pytest.param(
            [_file("../a.txt", A)], {HA: A}, [], InvalidInputError, "unsafe path", id="path-escaping"
        ),
        pytest.param(
            [_file("a.txt", A)],
            {},
            [_zst(HB, A)],
            IntegrityError,
            "not to its name",
            id="compressed-blob-named-for-other-content",
        ),
        pytest.param(
            [_file("a.txt", A)],
            {HA: A},
            [_zst(HB, B)],
            IntegrityError,
            "no file maps to it",
            id="compressed-blob-no-file-uses",
        ),
        pytest.param(
            [_file("a.txt", A)],
            {},
            [_zst(HA, A), _zst(HA, A)],
            IntegrityError,
            "twice",
            id="blob-listed-twice",
        ),
        pytest.param(
            [_file("a.txt", A, external=True)],
            {},
            [_zst(HA, A)],
            IntegrityError,
            "marked external",
            id="external-yet-listed",
        ),
        pytest.param(
            [_file("a.txt", A, external=True), _file("b.txt", A)],
            {HA: A},
            [],
            IntegrityError,
            "external for one file and stored for another",
            id="external-and-stored",
        ),
        pytest.param(
            [{**_file("a.txt", A), "size": 3}],
            {HA: A},
            [],
            TamperError,
            "the manifest says 3",
            id="size-other-than-its-blob",
        ),
        pytest.param(
            [_file("a.txt", A)],
            {},
            [{"path": f"blobs/sha256/{HA}", "size": len(A), "sha256": HA}],
            InvalidInputError,
            "not a compressed blob",
            id="as-is-blob-listed",
        ),
        pytest.param(
            [_file("a.txt", A, external=False)],
            {HA: A},
            [],
            InvalidInputError,
            "external",
            id="external-false-spelled-out",
        ),
    ],
)
def test_hostile_v2_manifest_is_refused(
    env: dict[str, Any],
    files: list[dict[str, Any]],
    stored: dict[str, bytes],
    listed: list[dict[str, Any]],
    error: type[Exception],
    match: str,
) -> None:
    bundle = _hostile(env, files, stored, listed)
    with pytest.raises(error, match=match):
        _verify(env, bundle)


def test_a_hostile_v2_manifest_is_one_line_and_exit_3_on_the_cli(env: dict[str, Any]) -> None:
    bundle = _hostile(env, [_file("a.txt", A), _file("b.txt", B)], {HA: A})
    line = assert_one_line_error(run_airgap("verify", str(bundle), "--state-dir", str(env["state"])), 3)
    assert f"blobs/sha256/{HB}" in line


def test_the_hostile_builder_with_honest_input_verifies(env: dict[str, Any]) -> None:
    """The control for the attacks above: each is refused for what it changes, nothing else."""
    bundle = _hostile(env, [_file("a.txt", A), _file("b/a.txt", A)], {HA: A})
    verified = _verify(env, bundle)
    assert [(f.path, f.sha256) for f in verified.manifest.files] == [("a.txt", HA), ("b/a.txt", HA)]


# ------------------------------------------------------------------ every byte of a v2 archive is signed


@pytest.fixture(scope="module")
def small_v2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small v2 bundle: a shared content under two paths, a .zst blob, an empty file."""
    from tests.test_attack_archive import _Small

    root = tmp_path_factory.mktemp("small-v2")
    key, pub, kid = make_key(root, "publisher")
    st = root / "staging"
    for house in ("wheels", "host/wheels"):
        (st / house).mkdir(parents=True)
        (st / house / "a-1.0-py3-none-any.whl").write_bytes(_wheel("a", 300))
    (st / "model").mkdir()
    (st / "model" / "weights.bin").write_bytes(
        bytes((i * 7919) % 251 for i in range(600)) + b"a" * (256 << 10)
    )
    (st / "empty.txt").write_bytes(b"")
    (st / "build.json").write_text(json.dumps({"name": "demo"}))
    bundle = pack(st, root / "out", key, EPOCH, name="demo", version="1.0.0").files[0]
    trusted = (keys.TrustedKey(kid, pub, keys.load_public(pub.read_bytes(), str(pub))),)
    names = set(members(bundle))
    assert any(n.endswith(".zst") for n in names) and len([n for n in names if "/blobs/" in n]) == 4
    verify_bundle(bundle, VerifyOptions(trusted=trusted))
    return _Small(root=root, data=bundle.read_bytes(), trusted=trusted, bundle=bundle)


def test_any_single_byte_change_of_a_v2_bundle_is_rejected(small_v2: dict[str, Any]) -> None:
    """A deterministic sample of 600 offsets over the whole archive, each byte flipped."""
    from tests.test_attack_archive import _must_reject

    data = small_v2["data"]
    step = max(1, len(data) // 600)
    for at in range(0, len(data), step):
        mutated = bytearray(data)
        mutated[at] ^= 0x01 + at % 254
        _must_reject(small_v2, bytes(mutated))


def test_every_header_byte_of_a_zst_blob_changed_is_rejected(
    small_v2: dict[str, Any],
) -> None:
    """A member v2 names by its content (the control files' headers are v1's, tested there)."""
    from tests.test_attack_archive import _must_reject

    data = small_v2["data"]
    with tarfile.open(small_v2["bundle"]) as tf:
        spans = [(m.offset, m.offset_data) for m in tf.getmembers() if m.name.endswith(".zst")]
    assert len(spans) == 1
    for start, end in spans:
        for at in range(start, end):
            mutated = bytearray(data)
            mutated[at] ^= 0x01
            _must_reject(small_v2, bytes(mutated))
