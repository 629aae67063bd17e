"""Small in-memory fakes of airgap's own ports (``airgap.ports``), for the fast tier.

They implement the port's contract as the services rely on it, nothing more; they are not mocks of
Docker (the engine tier drives the real engine). A method the fake does not support raises, so a
service that starts needing it fails loudly here instead of passing on a stub.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FakeImage:
    """One image in the fake engine: its parent, tags and labels."""

    id: str
    parent: str = ""
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    size: int = 1000


class FakeEngine:
    """The image engine port over a dict of images, with the removal rules of the real adapter:
    full ids only; children first; never an image with a tag or a child left; beyond the ids
    given, only images with airgap's labels."""

    OWN = ("io.airgap.tool.version", "io.airgap.stage")

    def __init__(self) -> None:
        self.images: dict[str, FakeImage] = {}
        self.running_from: set[str] = set()  # images a container still runs from
        self.waited: list[list[str]] = []
        self.removals: list[list[str]] = []

    def add(self, image_id: str, parent: str = "", *, tags: Sequence[str] = (), own: bool = True) -> str:
        """An image in the engine (``own``: it carries airgap's label)."""
        labels = {"io.airgap.stage": "install"} if own else {}
        self.images[image_id] = FakeImage(image_id, parent, list(tags), labels)
        return image_id

    def remove_build_images(self, ids: Sequence[str]) -> tuple[int, int]:
        self.removals.append(list(ids))
        recorded = [i for i in ids if i in self.images]
        count = size = 0
        order: list[str] = []

        def visit(image_id: str) -> None:
            for child in [c.id for c in self.images.values() if c.parent == image_id]:
                visit(child)
            if image_id not in order:
                order.append(image_id)

        for image_id in reversed(recorded):
            visit(image_id)
        for image_id in order:
            image = self.images.get(image_id)
            if image is None or image.tags or image_id in self.running_from:
                continue
            if any(c.parent == image_id for c in self.images.values()):
                continue
            if image_id not in recorded and not any(k in image.labels for k in self.OWN):
                continue
            del self.images[image_id]
            count += 1
            size += image.size
        return count, size

    def wait_for_build_steps(self, ids: Sequence[str], limit: float = 30.0) -> None:
        self.waited.append(list(ids))
        self.running_from -= set(ids)  # the engine finished the step it was on

    def __getattr__(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError(f"FakeEngine does not support {name}: extend it or use the engine tier")


def image_id(n: int) -> str:
    """A full image id, distinct for each ``n``."""
    return "sha256:" + f"{n:064x}"


def record_images(staging: Path, ids: Sequence[str], name: str) -> None:
    """What a build records in its partial directory as it commits step images."""
    (staging / name).write_text("".join(f"{i}\n" for i in ids))
