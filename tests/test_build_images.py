"""Which images a build may remove after itself (core/build_images.py): the rules that keep a
user's images, a base pulled by digest and another build's cache out of reach."""

from __future__ import annotations

from airgap.core.build_images import ImageFacts, committed_steps, label_stages, removal_plan

OURS = {"io.airgap.stage": "1"}


def full(n: int) -> str:
    return "sha256:" + f"{n:064x}"


# What the classic builder streams for the shipped template's first stage, a cache hit included.
CLASSIC_OUTPUT = """\
Step 1/24 : FROM 127.0.0.1:5000/airgap/python-base@sha256:88f3ce00ac90
 ---> 3fc61d2e6045
Step 2/24 : LABEL io.airgap.stage=1
 ---> Running in 5c0ab2b87d34
Removing intermediate container 5c0ab2b87d34
 ---> 1a2b3c4d5e6f
Step 3/24 : COPY requirements.lock /tmp/airgap/requirements.lock
 ---> Using cache
 ---> 2b3c4d5e6f70
Step 4/24 : RUN python3 -m venv /opt/airgap/venv
 ---> Running in 6d1e2f3a4b5c
Removing intermediate container 6d1e2f3a4b5c
 ---> 3c4d5e6f7081
Step 5/24 : FROM 127.0.0.1:5000/airgap/python-base@sha256:88f3ce00ac90
 ---> 3fc61d2e6045
""".splitlines()


def test_the_steps_a_build_committed_exclude_the_base_image_and_cache_hits() -> None:
    assert committed_steps(CLASSIC_OUTPUT) == ["1a2b3c4d5e6f", "3c4d5e6f7081"]


def test_every_stage_of_a_rendered_dockerfile_is_labelled_right_after_its_from() -> None:
    text = "FROM base@sha256:1 AS install\nRUN true\n\nfrom base@sha256:1\nCOPY a /a\n"
    assert label_stages(text) == (
        "FROM base@sha256:1 AS install\nLABEL io.airgap.stage=1\nRUN true\n\n"
        "from base@sha256:1\nLABEL io.airgap.stage=2\nCOPY a /a\n"
    )
    assert label_stages("FROM base") == "FROM base\nLABEL io.airgap.stage=1\n"


def test_a_base_pulled_by_digest_is_never_removed_even_when_named() -> None:
    base = ImageFacts(full(1), digests=("registry/python@sha256:" + "a" * 64,), labels=OURS)
    step = ImageFacts(full(2), full(1), labels=OURS)
    assert removal_plan([base, step], [full(1), full(2)]) == [full(2)]


def test_an_unlabelled_image_is_never_removed_named_or_on_top() -> None:
    """A user's own image, untagged, built on an image the run committed, or named outright."""
    step = ImageFacts(full(2), full(1), labels=OURS)
    users = ImageFacts(full(3), full(2))
    assert removal_plan([step, users], [full(2), full(3)]) == [full(2)]


def test_children_come_first_and_tagged_images_stay() -> None:
    a = ImageFacts(full(1), labels=OURS)
    b = ImageFacts(full(2), full(1), labels=OURS)
    c = ImageFacts(full(3), full(2), labels=OURS)  # committed after the interrupt: on top, removed
    model = ImageFacts(full(4), full(2), tags=("airgap/demo:1.0.0",), labels=OURS)
    assert removal_plan([a, b, c, model], [full(1), full(2)]) == [full(3), full(2), full(1)]


def test_a_prefix_or_short_id_names_nothing() -> None:
    images = [ImageFacts(full(n), labels=OURS) for n in range(1, 4)]
    assert removal_plan(images, ["0", "sha256:0", full(1)[:19], full(2)[7:]]) == []
