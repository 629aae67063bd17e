"""Which engine images a build may remove after itself: decided on facts, never on name prefixes.

An image builder shares one store with everything else on the host: the user's own images, base
images pulled by digest, other builds' caches. So removal is planned here, from what the engine
lists, by three rules: only full image ids; only images that carry airgap's label (every stage of
the Dockerfile airgap renders gets one, ``label_stages``); never an image with a tag or a registry
digest. The engine still refuses to remove an image a container or a child image uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# The model image's own stage carries this one (the build's labels reach the last stage only) ...
OWN_LABEL = "io.airgap.tool.version"
# ... and every stage of a rendered Dockerfile this one, from its first step on.
STAGE_LABEL = "io.airgap.stage"
OWN_LABELS = (OWN_LABEL, STAGE_LABEL)

_FULL_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_FROM = re.compile(r"^\s*FROM\s", re.IGNORECASE)
_STEP = re.compile(r"^Step \d+/\d+ : (\S+)", re.IGNORECASE)
_STEP_IMAGE = re.compile(r"^\s*---> ([0-9a-f]{12,64})\s*$")
_CACHE_HIT = re.compile(r"^\s*---> Using cache\s*$")


def label_stages(dockerfile: str) -> str:
    """``dockerfile`` with ``LABEL io.airgap.stage=N`` right after each ``FROM``: every image a
    step of any stage commits is then recognisably airgap's, a project's own template included."""
    out: list[str] = []
    stage = 0
    for line in dockerfile.splitlines(keepends=True):
        out.append(line)
        if _FROM.match(line):
            stage += 1
            out.append(("" if line.endswith("\n") else "\n") + f"LABEL {STAGE_LABEL}={stage}\n")
    return "".join(out)


class StepReader:
    """Reads a classic build's output line by line, across the chunks the engine streams it in."""

    def __init__(self) -> None:
        self._skip_next = False

    def feed(self, line: str) -> str | None:
        """The (short) id of a step image the build committed, when ``line`` names one: not the
        image of a cache hit, and not the base image a ``FROM`` step names."""
        if (step := _STEP.match(line)) is not None:
            self._skip_next = step.group(1).upper() == "FROM"
        elif _CACHE_HIT.match(line):
            self._skip_next = True
        elif (m := _STEP_IMAGE.match(line)) is not None:
            skip, self._skip_next = self._skip_next, False
            if not skip:
                return m.group(1)
        return None


def committed_steps(lines: Iterable[str]) -> list[str]:
    """The step images a build committed, from its whole output (``StepReader``)."""
    reader = StepReader()
    return [i for line in lines if (i := reader.feed(line)) is not None]


@dataclass(frozen=True)
class ImageFacts:
    """What the engine lists of one image."""

    id: str
    parent: str = ""
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    size: int = 0

    @property
    def removable(self) -> bool:
        """Untagged, never pushed or pulled, and labelled as airgap's."""
        tagged = [t for t in self.tags if t != "<none>:<none>"]
        pulled = [d for d in self.digests if d != "<none>@<none>"]
        return not tagged and not pulled and any(k in self.labels for k in OWN_LABELS)


def removal_plan(images: Sequence[ImageFacts], ids: Sequence[str]) -> list[str]:
    """The images to try to remove, children first: each of ``ids`` (full ids only: a prefix
    could name images that are not the run's) and every image on top of one, each only if
    ``removable``. Images on top cover the step an interrupted build committed after its client
    stopped listening."""
    by_id = {i.id: i for i in images}
    children: dict[str, list[str]] = {}
    for image in images:
        children.setdefault(image.parent, []).append(image.id)
    order: list[str] = []

    def visit(image_id: str) -> None:
        for child in children.get(image_id, []):
            visit(child)
        if image_id not in order:
            order.append(image_id)

    for image_id in reversed([i for i in ids if _FULL_ID.match(i) and i in by_id]):
        visit(image_id)
    return [i for i in order if by_id[i].removable]
