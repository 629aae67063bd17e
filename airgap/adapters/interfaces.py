"""Ports: the small interfaces services depend on, so that tests can use a fake of our own port."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any


class ImageRunner(abc.ABC):
    """Runs one short-lived, locked-down command in a container image and returns its stdout."""

    @abc.abstractmethod
    def describe_image(self, ref: str) -> Mapping[str, Any]:
        """Id and repo digests of ``ref``, pulling it first if the engine lacks it."""

    @abc.abstractmethod
    def run_isolated(self, ref: str, argv: Sequence[str], timeout: float) -> bytes:
        """Runs ``argv`` with no network, a read-only root and a tmpfs /tmp; returns stdout."""
