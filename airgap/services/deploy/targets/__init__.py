"""Install targets: one module per ``--to``, found here and registered by name.

Every module in this package whose name does not start with ``_`` is imported on first use and
its ``TARGET`` registered; adding a target is adding one such module. :func:`register` adds one
from elsewhere (a plugin, or a test).
"""

from __future__ import annotations

import importlib
import pkgutil

from airgap.errors import UsageError
from airgap.services.deploy.targets._base import (
    BaseTarget,
    InstallContext,
    InstallOptions,
    Site,
    Target,
)

__all__ = [
    "BaseTarget",
    "InstallContext",
    "InstallOptions",
    "Site",
    "Target",
    "discover",
    "find",
    "get",
    "names",
    "register",
    "unregister",
]

_TARGETS: dict[str, Target] = {}
_discovered = False


def discover() -> None:
    """Imports every target module of this package (again: a module added since is found too)."""
    global _discovered
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        target = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TARGET", None)
        if target is not None and target.name not in _TARGETS:
            register(target)


def register(target: Target, replace: bool = False) -> None:
    """Makes ``target`` installable as ``--to target.name``; a name already taken needs ``replace``."""
    if not _discovered:
        discover()
    if target.name in _TARGETS and not replace and _TARGETS[target.name] is not target:
        raise ValueError(f"an install target is already named {target.name!r}")
    _TARGETS[target.name] = target


def unregister(name: str) -> None:
    """Removes a target registered under ``name`` (a no-op when there is none)."""
    _TARGETS.pop(name, None)


def names() -> tuple[str, ...]:
    """The ``--to`` choices, in the order they are listed."""
    if not _discovered:
        discover()
    return tuple(sorted(_TARGETS, key=lambda n: (_TARGETS[n].rank, n)))


def find(name: str) -> Target | None:
    """The target named ``name``, or None."""
    if not _discovered:
        discover()
    return _TARGETS.get(name)


def get(name: str) -> Target:
    """The target named ``name``; any other name is a usage error (exit 2) listing the choices."""
    target = find(name)
    if target is None:
        raise UsageError(f"--to must be one of {', '.join(names())}")
    return target
