"""Small in-memory fakes of airgap's own ports (``airgap.ports``), for the fast tier.

They implement the port's contract as the services rely on it, nothing more; they are not mocks of
Docker (the engine tier drives the real engine). A method the fake does not support raises, so a
service that starts needing it fails loudly here instead of passing on a stub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.adapters.fs import atomic_write_bytes
from airgap.core.build_images import ImageFacts, removal_plan
from airgap.errors import EnvironmentFailure
from airgap.ports import Adapters, ContainerSpec


@dataclass
class FakeImage:
    """One image in the fake engine: its parent, tags, registry digests and labels."""

    id: str
    parent: str = ""
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    size: int = 1000
    digests: list[str] = field(default_factory=list)


class FakeEngine:
    """The image engine port over a dict of images. Removal follows the same plan as the real
    adapter (``core.build_images.removal_plan``); what the fake adds is the engine's own refusal
    of an image a container or a child image still uses."""

    def __init__(self) -> None:
        self.images: dict[str, FakeImage] = {}
        self.running_from: set[str] = set()  # images a container still runs from
        self.waited: list[list[str]] = []
        self.removals: list[list[str]] = []

    def add(
        self,
        image_id: str,
        parent: str = "",
        *,
        tags: Sequence[str] = (),
        own: bool = True,
        digests: Sequence[str] = (),
    ) -> str:
        """An image in the engine (``own``: it carries airgap's stage label)."""
        labels = {"io.airgap.stage": "1"} if own else {}
        self.images[image_id] = FakeImage(image_id, parent, list(tags), labels, 1000, list(digests))
        return image_id

    def remove_build_images(self, ids: Sequence[str]) -> tuple[int, int]:
        self.removals.append(list(ids))
        facts = [
            ImageFacts(i.id, i.parent, tuple(i.tags), tuple(i.digests), dict(i.labels), i.size)
            for i in self.images.values()
        ]
        count = size = 0
        for image_id in removal_plan(facts, ids):
            in_use = image_id in self.running_from or any(c.parent == image_id for c in self.images.values())
            if in_use:
                continue
            size += self.images.pop(image_id).size
            count += 1
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


@dataclass
class FakeContainer:
    """One container in a fake runtime: its image, labels and state."""

    image: str
    labels: dict[str, str]
    state: str = "created"


class FakeRuntime:
    """The container-runtime port (``ports.ContainerRuntime``) over dicts of images and containers,
    with the real adapters' rules: ``containers`` lists only airgap's (install-labelled) ones,
    narrowed by labels; stopping or removing what is not there is not an error; starting it is.
    Loading an image is not supported (the engine tier loads real ones)."""

    INSTALL_LABEL = "io.airgap.install"  # what the adapters put on every container they create

    def __init__(self, name: str = "docker") -> None:
        self.name = name
        self.images: set[str] = set()
        self.tags: dict[str, str] = {}  # tag -> image id
        self.by_name: dict[str, FakeContainer] = {}  # every container, whatever its state

    def add_container(self, name: str, image: str, labels: dict[str, str], state: str = "running") -> None:
        """A container as an earlier run left it (airgap's install label added, as create adds it)."""
        self.images.add(image)
        self.by_name[name] = FakeContainer(image, {self.INSTALL_LABEL: "1", **labels}, state)

    def load(self, archive: Iterable[bytes], tag: str) -> str:
        raise NotImplementedError("FakeRuntime does not load images: use the engine tier")

    def has_image(self, image_id: str) -> bool:
        return image_id in self.images

    def tag(self, image_id: str, tag: str) -> None:
        if image_id not in self.images:
            raise EnvironmentFailure(f"{self.name}: tagging the image failed: no image {image_id}")
        self.tags[tag] = image_id

    def remove_image(self, image_id: str) -> None:
        self.images.discard(image_id)
        self.tags = {t: i for t, i in self.tags.items() if i != image_id}

    def create(self, spec: ContainerSpec) -> None:
        if spec.name in self.by_name:
            raise EnvironmentFailure(f"{self.name}: creating {spec.name} failed: the name is in use")
        self.by_name[spec.name] = FakeContainer(spec.image, {self.INSTALL_LABEL: "1", **spec.labels})

    def start(self, name: str) -> None:
        if name not in self.by_name:
            raise EnvironmentFailure(f"{self.name}: starting {name} failed: no such container")
        self.by_name[name].state = "running"

    def stop(self, name: str) -> None:
        if name in self.by_name:
            self.by_name[name].state = "exited"

    def remove(self, name: str) -> None:
        self.by_name.pop(name, None)

    def state(self, name: str) -> str | None:
        c = self.by_name.get(name)
        return None if c is None else c.state

    def containers(self, labels: dict[str, str] | None = None) -> list[str]:
        wanted = {self.INSTALL_LABEL: "1", **(labels or {})}
        return sorted(
            n for n, c in self.by_name.items() if all(c.labels.get(k) == v for k, v in wanted.items())
        )

    def labels(self, name: str) -> dict[str, str]:
        c = self.by_name.get(name)
        return {} if c is None else dict(c.labels)

    def logs(self, name: str) -> str:
        return ""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError(f"FakeRuntime does not support {name}: extend it or use the engine tier")


def fake_adapters(docker: FakeRuntime | None = None, podman: FakeRuntime | None = None) -> Adapters:
    """The far side's adapters with fake runtimes; a runtime given as None is not there (its factory
    raises EnvironmentFailure, as the real adapter's constructor does), nor are a registry or kubectl."""

    def runtime(rt: FakeRuntime | None, what: str) -> Any:
        if rt is None:
            raise EnvironmentFailure(f"{what} is not there (fake)")
        return rt

    def absent(*_: object) -> Any:
        raise EnvironmentFailure("not there (fake)")

    return Adapters(
        docker=lambda: runtime(docker, "docker"),
        podman=lambda: runtime(podman, "podman"),
        registry=absent,
        kubectl=absent,
    )


class InertTarget:
    """An install target that runs nothing: the installer's own steps (verify, admit, extract into
    the content store, journal, commit) exercised in-process, with no engine, server or port. Its
    model answers no golden case, so a bundle installs on it when its contract has none."""

    name = "inert"
    rank = 200
    needs_image = False
    host_port = False
    candidates = False

    def admit(self, site: Any, options: Any, record: Any, kept: dict[str, bytes]) -> None:
        return None  # it runs nothing, so every verified bundle fits it

    def wants(self, path: str) -> bool:
        return not path.startswith("image/")

    def deploy(self, ctx: Any) -> None:
        # What the real targets do with what they render for their runtime.
        atomic_write_bytes(ctx.deploy_dir() / "inert.yaml", b"kind: Nothing\n")
        ctx.journal.step("started")

    def answers(
        self, site: Any, receipt: Any, contract: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        return {}, {}

    def healthy(self, site: Any, receipt: Any) -> bool:
        return False

    def undo(self, site: Any, journal: dict[str, Any]) -> str:
        return "nothing runs"

    def finish(self, site: Any, new: dict[str, Any], old: dict[str, Any]) -> None:
        return None

    def remove(self, site: Any, receipt: Any) -> list[str]:
        return []

    def discard(self, site: Any, receipt: Any) -> list[str]:
        return []

    def serve_command(self, site: Any, receipt: Any, record: Any, content: Path) -> str | None:
        return None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError(f"InertTarget does not support {name}")
class FakeServiceManager:
    """The service-manager port (``ports.ServiceManager``): units installed into a directory of the
    test's, and every unit it was asked to enable, in order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.enabled: list[str] = []

    def unit_directory(self) -> Path:
        return self.directory

    def enable(self, unit: str) -> None:
        if not (self.directory / unit).is_file():
            raise EnvironmentFailure(f"Unit {unit} not found.")
        self.enabled.append(unit)


class ProcessRuntime(FakeRuntime):
    """The container-runtime port whose containers are the bundled model server run as processes on
    this host, on the port their spec names (as the real runtimes run them, with host networking).
    ``images`` maps an image id to the server's environment for it (model, version, golden). The
    order of what was asked is kept in ``events``: ("create" | "start" | "stop" | "remove", name)."""

    def __init__(self, server: Path, images: dict[str, dict[str, str]]) -> None:
        super().__init__("docker")
        self.server = server
        self.env = images
        self.images = set(images)
        self.specs: dict[str, ContainerSpec] = {}
        self.procs: dict[str, Any] = {}
        self.exit_codes: dict[str, int] = {}
        self.events: list[tuple[str, str]] = []

    def create(self, spec: ContainerSpec) -> None:
        super().create(spec)
        self.specs[spec.name] = spec
        self.events.append(("create", spec.name))

    def start(self, name: str) -> None:
        import os
        import subprocess
        import sys

        super().start(name)
        spec = self.specs[name]
        env = {**os.environ, **self.env[spec.image], "AIRGAP_HOST": "127.0.0.1"}
        env["AIRGAP_PORT"] = str(spec.port)
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(self.server), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.events.append(("start", name))

    def stop(self, name: str) -> None:
        import signal

        self.events.append(("stop", name))
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            self.exit_codes[name] = proc.wait(30)
        super().stop(name)

    def remove(self, name: str) -> None:
        self.events.append(("remove", name))
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        super().remove(name)

    def state(self, name: str) -> str | None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            return "exited"
        return super().state(name)

    def close(self) -> None:
        """Kills whatever still runs."""
        for name in list(self.procs):
            self.remove(name)
