"""Container runtimes the far side may have: Docker (through the SDK) and Podman (through its CLI).

Both implement one small port, so the install service drives either the same way. Every container
airgap starts is hardened identically: read-only root, a tmpfs /tmp, every capability dropped,
no-new-privileges, the image's numeric non-root user, memory and CPU limits, a restart policy, and
host networking on the bundle's port (the model needs no other network).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import json
import socket
import subprocess
from collections.abc import Iterable, Iterator
from typing import Any

from airgap.core.model_layer import MODEL_ROOT
from airgap.errors import EnvironmentFailure
from airgap.ports import ContainerSpec as ContainerSpec  # declared with the port; named here too

LABEL = "io.airgap.install"
STATE_LABEL = "io.airgap.state"  # which state directory started the container (a digest of its path)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already holds ``host:port``, found by binding there as the model server will.

    SO_REUSEADDR as the server sets it: a port held only by connections closing down (TIME_WAIT) is
    free for it, and so for this check. A refusal other than "in use" (a privileged port, say) cannot be
    told in advance: the server then fails and says so in its log.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


class Runtime(abc.ABC):
    """The base of both runtimes: the container-runtime port (``ports.ContainerRuntime``) every install
    target that runs containers drives, so the install service is written once for Docker and Podman;
    each implementation turns its own failures into ``EnvironmentFailure``."""

    name: str

    @abc.abstractmethod
    def load(self, archive: Iterable[bytes], tag: str) -> str:
        """Loads a docker-archive stream; returns the image id (its config digest)."""

    @abc.abstractmethod
    def has_image(self, image_id: str) -> bool:
        """Whether an image with this id is already loaded, so an image another install loaded is tagged
        instead of loaded again."""

    @abc.abstractmethod
    def tag(self, image_id: str, tag: str) -> None:
        """Names an image already loaded (another install may have loaded it under another name)."""

    @abc.abstractmethod
    def remove_image(self, image_id: str) -> None:
        """Removes an image by id, by force; one already gone is not an error. The caller must know no other
        install uses it: force drops every tag (and Podman's also removes containers using it)."""

    @abc.abstractmethod
    def create(self, spec: ContainerSpec) -> None:
        """Creates (not starts) a hardened container from ``spec``, so the old version keeps serving until the
        new one can start."""

    @abc.abstractmethod
    def start(self, name: str) -> None:
        """Starts a container made by ``create``; it serves once its port answers, not when this returns."""

    @abc.abstractmethod
    def stop(self, name: str) -> None:
        """Stops a container with a short grace period; a missing container is not an error, so undo can
        always run."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Removes a container, running or not; a missing one is not an error, so leftovers of an undone run
        can be cleared blindly."""

    @abc.abstractmethod
    def state(self, name: str) -> str | None:
        """``running``, ``exited``, ... or None when no such container exists."""

    @abc.abstractmethod
    def containers(self, labels: dict[str, str] | None = None) -> list[str]:
        """Names of the containers airgap created (labelled), those with ``labels`` too if given."""

    @abc.abstractmethod
    def labels(self, name: str) -> dict[str, str]:
        """The container's labels; empty when there is no such container."""

    @abc.abstractmethod
    def logs(self, name: str) -> str:
        """The tail of the container's log, for the error message when the model server does not come up."""


# ----------------------------------------------------------------------------------------- docker
class DockerRuntime(Runtime):
    """Docker through the SDK: the engine at ``base_url``, or DOCKER_HOST or the default socket."""

    name = "docker"

    def __init__(self, base_url: str | None = None) -> None:
        import docker
        import docker.errors

        self._errors = docker.errors
        from airgap.adapters.docker_engine import DockerEngine

        self.client = DockerEngine(base_url).client

    @contextlib.contextmanager
    def _wrap(self, what: str) -> Iterator[None]:
        import requests

        try:
            yield
        except self._errors.NotFound:
            raise
        except (self._errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EnvironmentFailure(
                f"docker: {what} failed: {getattr(exc, 'explanation', None) or exc}"
            ) from None

    def load(self, archive: Iterable[bytes], tag: str) -> str:
        """Loads the single image of a docker-archive stream and tags it; more than one image from one bundle
        image is refused."""
        with self._wrap("loading the image"):
            loaded = self.client.images.load(archive)
            if len(loaded) != 1:
                raise EnvironmentFailure(f"docker loaded {len(loaded)} images from one bundle image")
            loaded[0].tag(*tag.rsplit(":", 1))
            return str(loaded[0].id)

    def has_image(self, image_id: str) -> bool:
        """Looks the id up in the engine; only "image not found" means False (an engine that does not
        answer is an environment failure, not a missing image)."""
        with self._wrap("looking up an image"):
            try:
                self.client.images.get(image_id)
                return True
            except self._errors.ImageNotFound:
                return False

    def tag(self, image_id: str, tag: str) -> None:
        """Tags the image ``name:version`` as given (Podman's implementation prefixes ``localhost/``)."""
        with self._wrap("tagging the image"):
            self.client.images.get(image_id).tag(*tag.rsplit(":", 1))

    def remove_image(self, image_id: str) -> None:
        """Removes the image by force, ignoring one that is gone or that the engine refuses to remove."""
        with (
            self._wrap("removing an image"),
            contextlib.suppress(self._errors.ImageNotFound, self._errors.APIError),
        ):
            self.client.images.remove(image_id, force=True)

    def pull(self, ref: str) -> str:
        """Pulls ``ref`` (a registry reference, by digest) and returns the image id."""
        try:
            with self._wrap(f"pulling {ref} back from the registry"):
                return str(self.client.images.pull(ref).id)
        except self._errors.NotFound as exc:
            raise EnvironmentFailure(f"docker: pulling {ref} back from the registry failed: {exc}") from None

    def create(self, spec: ContainerSpec) -> None:
        """Creates the container with host networking on 127.0.0.1, a read-only root, a small tmpfs /tmp, no
        capabilities, no-new-privileges, memory, CPU and pids limits, and the restart policy."""
        with self._wrap(f"creating {spec.name}"):
            self.client.containers.create(
                spec.image,
                name=spec.name,
                environment={**spec.env, "AIRGAP_PORT": str(spec.port), "AIRGAP_HOST": "127.0.0.1"},
                volumes=(
                    {spec.model_dir: {"bind": MODEL_ROOT, "mode": "ro"}} if spec.model_dir is not None else {}
                ),
                network_mode="host",
                read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=spec.memory_bytes,
                nano_cpus=spec.nano_cpus,
                pids_limit=256,
                restart_policy={"Name": spec.restart},
                labels={LABEL: "1", **spec.labels},
                detach=True,
            )

    def _container(self, name: str) -> Any:
        try:
            return self.client.containers.get(name)
        except self._errors.NotFound:
            return None

    def start(self, name: str) -> None:
        """Starts the container; a missing one raises the SDK's NotFound, which ``_wrap`` lets through."""
        with self._wrap(f"starting {name}"):
            self.client.containers.get(name).start()

    def stop(self, name: str) -> None:
        """Stops the container with 15 s grace, if it exists."""
        c = self._container(name)
        if c is not None:
            with self._wrap(f"stopping {name}"):
                c.stop(timeout=15)

    def remove(self, name: str) -> None:
        """Removes the container by force, if it exists."""
        c = self._container(name)
        if c is not None:
            with self._wrap(f"removing {name}"):
                c.remove(force=True)

    def state(self, name: str) -> str | None:
        """The container's status, refreshed from the engine, or None when there is none."""
        c = self._container(name)
        if c is None:
            return None
        try:
            with self._wrap(f"reading the state of {name}"):
                c.reload()
        except self._errors.NotFound:
            return None  # removed between the lookup and the reload
        return str(c.status)

    def containers(self, labels: dict[str, str] | None = None) -> list[str]:
        """airgap's containers (those carrying its install label), narrowed by ``labels``."""
        wanted = [LABEL, *(f"{k}={v}" for k, v in (labels or {}).items())]
        with self._wrap("listing containers"):
            return sorted(c.name for c in self.client.containers.list(all=True, filters={"label": wanted}))

    def labels(self, name: str) -> dict[str, str]:
        """The container's labels, or ``{}`` when there is no such container."""
        c = self._container(name)
        return {} if c is None else dict(c.labels or {})

    def logs(self, name: str) -> str:
        """The last 20 log lines, or ``""`` when there is no such container."""
        c = self._container(name)
        if c is None:
            return ""
        with self._wrap(f"reading the logs of {name}"):
            return str(c.logs(tail=20).decode("utf-8", "replace"))


# ----------------------------------------------------------------------------------------- podman
class PodmanRuntime(Runtime):
    """Podman through its CLI: daemonless, works rootless, no socket service needed."""

    name = "podman"

    def __init__(self, executable: str = "podman") -> None:
        self.exe = executable
        self._run(["version", "--format", "{{.Client.Version}}"], "checking podman")

    def _run(self, args: list[str], what: str, input_data: bytes | None = None, check: bool = True) -> str:
        try:
            proc = subprocess.run([self.exe, *args], input=input_data, capture_output=True, timeout=600)
        except FileNotFoundError:
            raise EnvironmentFailure(
                "podman is not installed", hint="install podman, or choose --to docker|venv"
            ) from None
        except subprocess.TimeoutExpired:
            raise EnvironmentFailure(f"podman: {what} did not finish within 10 minutes") from None
        if check and proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise EnvironmentFailure(f"podman: {what} failed: {(err or ['no output'])[-1][:300]}")
        return proc.stdout.decode("utf-8", "replace")

    def load(self, archive: Iterable[bytes], tag: str) -> str:
        """Streams the docker-archive into ``podman load`` and tags the result under ``localhost/``, as podman
        names local images; returns the id as ``sha256:...`` so it compares with the signed config digest."""
        proc = subprocess.Popen(
            [self.exe, "load", "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        try:
            for chunk in archive:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # podman stopped reading: its error is reported below
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise EnvironmentFailure("podman: loading the image did not finish within 10 minutes") from None
        if proc.returncode != 0:
            raise EnvironmentFailure(f"podman load failed: {err.decode('utf-8', 'replace').strip()[-300:]}")
        loaded = out.decode().strip().splitlines()[-1].split(":", 1)[-1].strip()
        image_id = self._run(
            ["image", "inspect", "--format", "{{.Id}}", loaded], "inspecting the image"
        ).strip()
        self._run(["tag", image_id, f"localhost/{tag}"], "tagging the image")
        return "sha256:" + image_id.removeprefix("sha256:")

    def has_image(self, image_id: str) -> bool:
        """``podman image exists``: any non-zero exit means False."""
        try:
            proc = subprocess.run(
                [self.exe, "image", "exists", image_id.removeprefix("sha256:")],
                capture_output=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            raise EnvironmentFailure("podman: looking up an image did not finish within a minute") from None
        return proc.returncode == 0

    def tag(self, image_id: str, tag: str) -> None:
        """Adds ``localhost/TAG`` to an image already loaded."""
        self._run(["tag", image_id.removeprefix("sha256:"), f"localhost/{tag}"], "tagging the image")

    def remove_image(self, image_id: str) -> None:
        """``podman rmi --force``: it also removes every container using the image; failures are ignored."""
        self._run(["rmi", "--force", image_id.removeprefix("sha256:")], "removing an image", check=False)

    def create(self, spec: ContainerSpec) -> None:
        """Creates the container with the same hardening as Docker's: host network on 127.0.0.1, read-only
        root, small tmpfs /tmp, no capabilities, no-new-privileges, memory, CPU and pids limits, restart
        policy."""
        labels = [a for k, v in {LABEL: "1", **spec.labels}.items() for a in ("--label", f"{k}={v}")]
        self._run(
            [
                "create",
                "--name",
                spec.name,
                *(a for k, v in spec.env.items() for a in ("--env", f"{k}={v}")),
                *(("--volume", f"{spec.model_dir}:{MODEL_ROOT}:ro") if spec.model_dir is not None else ()),
                "--env",
                f"AIRGAP_PORT={spec.port}",
                "--env",
                "AIRGAP_HOST=127.0.0.1",
                "--network",
                "host",
                "--read-only",
                "--tmpfs",
                "/tmp:rw,nosuid,nodev,size=64m",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--memory",
                str(spec.memory_bytes),
                "--cpus",
                f"{spec.nano_cpus / 1e9:g}",
                "--pids-limit",
                "256",
                "--restart",
                spec.restart,
                *labels,
                spec.image.removeprefix("sha256:"),
            ],
            f"creating {spec.name}",
        )

    def start(self, name: str) -> None:
        """Starts the container; a failure (no such container, say) is an environment failure."""
        self._run(["start", name], f"starting {name}")

    def stop(self, name: str) -> None:
        """Stops the container with 15 s grace; a missing container is not an error."""
        self._run(["stop", "--time", "15", name], f"stopping {name}", check=False)

    def remove(self, name: str) -> None:
        """Removes the container by force; a missing container is not an error."""
        self._run(["rm", "--force", name], f"removing {name}", check=False)

    def state(self, name: str) -> str | None:
        """The container's status, or None when there is none."""
        out = self._run(
            ["container", "inspect", "--format", "{{json .State.Status}}", name], "", check=False
        ).strip()
        return json.loads(out) if out else None

    def containers(self, labels: dict[str, str] | None = None) -> list[str]:
        """airgap's containers (those carrying its install label), narrowed by ``labels``."""
        filters = [
            a
            for k in [LABEL, *(f"{k}={v}" for k, v in (labels or {}).items())]
            for a in ("--filter", f"label={k}")
        ]
        out = self._run(["ps", "--all", *filters, "--format", "{{.Names}}"], "listing containers")
        return sorted(n for n in out.split() if n)

    def labels(self, name: str) -> dict[str, str]:
        """The container's labels, or ``{}`` when there is no such container."""
        out = self._run(
            ["container", "inspect", "--format", "{{json .Config.Labels}}", name], "", check=False
        ).strip()
        return dict(json.loads(out) or {}) if out else {}

    def logs(self, name: str) -> str:
        """The last 20 lines of stdout and stderr, for the error message when the model server does not come
        up."""
        try:
            proc = subprocess.run([self.exe, "logs", "--tail", "20", name], capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "(podman logs did not answer within a minute)"
        return (proc.stdout + proc.stderr).decode("utf-8", "replace")

    def kube_play(self, yaml_text: str, network: str) -> None:
        """Runs Kubernetes YAML with ``podman kube play --replace``: the stand-in for a cluster where the host
        has none, so the manifests a bundle ships are run for real."""
        self._run(
            ["kube", "play", "--replace", "--network", network, "-"],
            "kube play",
            input_data=yaml_text.encode(),
        )

    def kube_down(self, yaml_text: str) -> None:
        """Tears down what ``kube_play`` of the same YAML started; failures are ignored so undo and uninstall
        can always run it."""
        self._run(["kube", "down", "-"], "kube down", input_data=yaml_text.encode(), check=False)
