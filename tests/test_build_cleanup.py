"""What a bundle removes after itself, and when: the build service's clean-up logic against the
in-memory engine fake (the real engine's part is proven in test_interrupts and
test_concurrent_bundles)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from airgap.adapters.engine_lease import EngineLease
from airgap.services.build.bundle import PARTIAL_LOCK, _remove_recorded_images, reclaim_partials
from airgap.services.build.model_image import PARTIAL_IMAGES, remove_unshipped
from tests.fakes import FakeEngine, image_id, record_images

BASE, STEP1, STEP2, MODEL, OLD_MODEL = (image_id(n) for n in range(1, 6))


def engine_after_a_build() -> FakeEngine:
    """The base image, two build-stage steps this run committed, the shipped model image (on the
    base) and the image the tag named before."""
    engine = FakeEngine()
    engine.add(BASE, tags=["python-base:bookworm"], own=False)
    engine.add(STEP1, BASE)
    engine.add(STEP2, STEP1)
    engine.add(MODEL, BASE, tags=["airgap/demo:1.0.0"])
    engine.add(OLD_MODEL, BASE)
    return engine


def test_after_a_build_the_build_stage_and_the_replaced_image_are_removed_and_the_model_stays(
    tmp_path: Path,
) -> None:
    engine = engine_after_a_build()
    record_images(tmp_path, [STEP1, STEP2], PARTIAL_IMAGES)
    with EngineLease(tmp_path / "leases") as lease:
        notes = remove_unshipped(engine, tmp_path, MODEL, OLD_MODEL, "airgap/demo:1.0.0", lease)  # type: ignore[arg-type]
    assert set(engine.images) == {BASE, MODEL}
    assert notes and notes[0].startswith("removed 3 image(s) the build made or replaced")
    assert not (tmp_path / PARTIAL_IMAGES).exists()


def test_a_build_that_is_not_alone_on_the_engine_leaves_its_images_to_the_last_one(tmp_path: Path) -> None:
    engine = engine_after_a_build()
    record_images(tmp_path, [STEP1, STEP2], PARTIAL_IMAGES)
    leases = tmp_path / "leases"
    with EngineLease(leases) as lease:
        with EngineLease(leases):  # another build, still running
            notes = remove_unshipped(engine, tmp_path, MODEL, None, "airgap/demo:1.0.0", lease)  # type: ignore[arg-type]
            assert STEP1 in engine.images and STEP2 in engine.images
            assert notes == [
                "left the build-stage images for the build still running on this engine to remove "
                "when it finishes (removing them now would break it)"
            ]
        # the other build finished: this one, last, removes what was left
        assert lease.remove_when_alone([], engine.remove_build_images) == (2, 2000)
    assert set(engine.images) == {BASE, MODEL, OLD_MODEL}


def test_an_interrupted_build_waits_for_its_last_step_and_removes_what_it_committed(tmp_path: Path) -> None:
    engine = engine_after_a_build()
    engine.add(image_id(9), STEP2)  # the step the engine committed after the client went away
    engine.running_from.add(STEP2)
    record_images(tmp_path, [STEP1, STEP2], PARTIAL_IMAGES)
    with EngineLease(tmp_path / "leases") as lease:
        removed = _remove_recorded_images(tmp_path, engine, lease, interrupted=True)  # type: ignore[arg-type]
    assert engine.waited == [[STEP1, STEP2]]
    assert removed == 3
    assert set(engine.images) == {BASE, MODEL, OLD_MODEL}


def test_a_users_image_built_on_a_recorded_step_is_never_removed(tmp_path: Path) -> None:
    engine = engine_after_a_build()
    users = engine.add(image_id(10), STEP2, own=False)  # untagged, unlabelled: someone else's
    record_images(tmp_path, [STEP1, STEP2], PARTIAL_IMAGES)
    with EngineLease(tmp_path / "leases") as lease:
        _remove_recorded_images(tmp_path, engine, lease)  # type: ignore[arg-type]
    assert users in engine.images
    assert STEP2 in engine.images and STEP1 in engine.images  # it still stands on them


def test_short_ids_recorded_by_an_older_run_remove_nothing(tmp_path: Path) -> None:
    """A prefix could name every untagged image on the engine: only full ids are acted on."""
    engine = engine_after_a_build()
    record_images(tmp_path, ["0", "a", STEP1[7:19]], PARTIAL_IMAGES)
    with EngineLease(tmp_path / "leases") as lease:
        assert _remove_recorded_images(tmp_path, engine, lease) == 0
    assert engine.removals == []
    assert len(engine.images) == 5


def test_reclaim_removes_a_dead_runs_partial_directory_and_images_and_leaves_a_live_one(
    tmp_path: Path,
) -> None:
    engine = engine_after_a_build()
    out = tmp_path / "build"
    dead, live = out / ".demo-1.0.0.partial-dead0000", out / ".demo-1.0.0.partial-live0000"
    for d in (dead, live):
        d.mkdir(parents=True)
        (d / "payload").write_bytes(b"x" * 2000)
    record_images(dead, [STEP1, STEP2], PARTIAL_IMAGES)
    live_images = [engine.add(image_id(20), BASE), engine.add(image_id(21), image_id(20))]
    record_images(live, live_images, PARTIAL_IMAGES)
    with open(live / PARTIAL_LOCK, "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # that run is alive
        with EngineLease(tmp_path / "leases") as lease:
            notes = list(reclaim_partials(out, "demo-1.0.0", engine, lease))  # type: ignore[arg-type]
    assert notes == [
        "reclaimed .demo-1.0.0.partial-dead0000 left by an interrupted earlier run (0.0 MB, 2 image(s))"
    ]
    assert not dead.exists() and live.is_dir()
    assert STEP1 not in engine.images and STEP2 not in engine.images
    assert all(i in engine.images for i in live_images)
