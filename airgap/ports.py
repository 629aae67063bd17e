"""Ports: what the services ask of the world, declared in one place.

A service names a port, never an adapter: the CLI wires the real one (``adapters/``), the fast
tests a small fake of their own, and mypy proves that each adapter the CLI passes in has every
method the port declares. Each port is exactly what the services call, no more, so a fake stays
small and a new adapter (another engine, an HSM signer) knows what it must do. The values a port
exchanges (a container to run, an OCI image, a rollout) are declared here too.

This module imports only the standard library and ``airgap.core``/``airgap.errors``, so that every
layer may import it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from airgap.core.signing import TrustedKey
from airgap.errors import UsageError

# -- the image engine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A host path bound into a build-step container; read-only unless the step writes its output there."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class RunResult:
    """What a finished container left: its exit code, and stdout and stderr kept apart so output read as data
    never mixes with diagnostics."""

    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class RunSpec:
    """One short-lived container: what to run and with how little privilege."""

    image: str
    argv: Sequence[str]
    network: str = "none"  # "none" or "host": this engine runs without a bridge
    mounts: Sequence[Mount] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    read_only: bool = True
    timeout: float = 600.0
    workdir: str | None = None


class ImageRunner(Protocol):
    """Runs one short-lived, locked-down command in a container image and returns its stdout.

    All the probe (``probe_image``) and the SBOM's rpm reading need of an engine: a fake of two
    methods drives them in the fast tests.
    """

    def describe_image(self, ref: str) -> Mapping[str, Any]:
        """Id and repo digests of ``ref``, pulling it first if the engine lacks it."""
        ...

    def run_isolated(self, ref: str, argv: Sequence[str], timeout: float) -> bytes:
        """Runs ``argv`` with no network, a read-only root and a tmpfs /tmp; returns stdout."""
        ...


class ContainerRunner(Protocol):
    """Runs one container to completion: what resolving a wheelhouse inside the base image needs."""

    def run(self, spec: RunSpec) -> RunResult:
        """Runs ``spec`` to completion (or its timeout) and returns what it left; the container is removed."""
        ...


class ImageEngine(ImageRunner, ContainerRunner, Protocol):
    """The workstation's image engine, as ``bundle`` and ``rebuild`` use it: resolve and inspect the
    base image, build the model image offline, check it by running it, save it, and remove what a
    build left behind. The Docker Engine adapter (``adapters/docker_engine.py``) implements it."""

    def resolve_digest(self, ref: str) -> str:
        """``ref`` pinned by digest (``name@sha256:…``): a tag is resolved once, then never trusted again."""
        ...

    def image_id(self, ref: str) -> str:
        """The image id (``sha256:…``) ``ref`` names in the engine."""
        ...

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """The engine's inspection of ``ref``: config, architecture, size, creation time."""
        ...

    def tagged(self, ref: str) -> str | None:
        """The image id ``ref`` names now, or None: what a new build of the same tag replaces."""
        ...

    def build(
        self,
        context: Path,
        tag: str,
        labels: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
        on_image: Callable[[str], None] | None = None,
        cache: bool = True,
    ) -> str:
        """Builds ``context`` with the network disabled and returns the image id; ``on_image`` hears
        the full id of every image a build step commits; ``cache=False`` runs every step again."""
        ...

    def save(self, ref: str, dest: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        """Writes ``ref`` as a ``docker save`` archive to ``dest``, reporting bytes as they pass."""
        ...

    def remove_build_images(self, ids: Sequence[str]) -> tuple[int, int]:
        """Removes the images a build committed (full ids) that nothing uses now, and the
        airgap-labelled untagged images on top; (how many, bytes freed)."""
        ...

    def wait_for_build_steps(self, ids: Sequence[str], limit: float = 30.0) -> None:
        """Returns once no container runs from any of ``ids`` (an interrupted build's last step
        has been committed or dropped), or after ``limit`` seconds."""
        ...


# -- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OciImage:
    """Where an OCI layout holds one image, and the digests that name it."""

    layout: Path
    manifest_digest: str
    config_digest: str
    layers: tuple[tuple[str, int], ...]  # (blob digest, size)
    ref_name: str
    # Layers the layout does not hold, made on demand: digest → a function returning a readable body
    # of the layer's size (the model layer, built from the installed model files).
    streams: Mapping[str, Callable[[], Any]] = field(default_factory=dict)

    @property
    def blobs(self) -> list[str]:
        """Every blob digest the image needs (manifest, config, layers): what must be copied, kept or checked
        for it."""
        return [self.manifest_digest, self.config_digest, *(d for d, _ in self.layers)]


class Registry(Protocol):
    """The far side's registry, as the container targets push to it: byte for byte, by digest."""

    def push_image(self, image: OciImage, repo: str, tag: str) -> str:
        """Pushes blobs then the manifest, unchanged; returns ``host/repo@digest`` after checking it."""
        ...


# -- container runtimes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """What the install service asks a runtime to run: the container name, the image, the port it serves on,
    and the limits that stop a misbehaving model from starving the host. The hardening itself is not a
    choice and so is not a field."""

    name: str
    image: str  # an image id or tag
    port: int
    memory_bytes: int
    nano_cpus: int
    labels: dict[str, str] = field(default_factory=dict)
    restart: str = "unless-stopped"
    # The model as its own content: the installed model directory, mounted read-only at
    # /opt/airgap/model, and the settings it gives the server. None: the image holds its model.
    model_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class ContainerRuntime(Protocol):
    """A far-side container runtime (Docker, Podman), as the container install targets and the
    installer drive it: load the signed image, switch containers, find what a state directory
    started. Each implementation turns its own failures into ``EnvironmentFailure``."""

    name: str

    def load(self, archive: Iterable[bytes], tag: str) -> str:
        """Loads a docker-archive stream; returns the image id, compared with the signed config digest."""
        ...

    def has_image(self, image_id: str) -> bool:
        """Whether an image with this id is already loaded: one another install loaded is tagged, not loaded
        again, and rollback needs the previous version's image still there."""
        ...

    def tag(self, image_id: str, tag: str) -> None:
        """Names an image already loaded (another install may have loaded it under another name)."""
        ...

    def remove_image(self, image_id: str) -> None:
        """Removes an image by id, by force; one already gone is not an error. The caller must know no other
        install uses it."""
        ...

    def create(self, spec: ContainerSpec) -> None:
        """Creates (not starts) a hardened container, so the old version serves until the new one starts."""
        ...

    def start(self, name: str) -> None:
        """Starts a container made by ``create``; it serves once its port answers, not when this returns."""
        ...

    def stop(self, name: str) -> None:
        """Stops a container; a missing one is not an error, so undo can always run."""
        ...

    def remove(self, name: str) -> None:
        """Removes a container, running or not; a missing one is not an error, so leftovers of an undone run
        can be cleared blindly."""
        ...

    def state(self, name: str) -> str | None:
        """``running``, ``exited``, ... or None when no such container exists: what ready and healthy mean."""
        ...

    def containers(self, labels: dict[str, str] | None = None) -> list[str]:
        """Names of the containers airgap created, those with ``labels`` too: how status and uninstall find
        what a state directory started when no receipt names it."""
        ...

    def labels(self, name: str) -> dict[str, str]:
        """The container's labels (empty when there is none): which target started it."""
        ...

    def logs(self, name: str) -> str:
        """The tail of the container's log, for the error message when the model server does not come up."""
        ...


class PullingRuntime(ContainerRuntime, Protocol):
    """A runtime that also pulls by digest: ``--to registry`` runs the image back from the registry it
    pushed to, to prove the registry serves exactly what was signed (Docker)."""

    def pull(self, ref: str) -> str:
        """Pulls ``ref`` (a registry reference, by digest) and returns the image id."""
        ...


class KubePlayRuntime(ContainerRuntime, Protocol):
    """A runtime that also plays Kubernetes YAML on one node: ``--to podman-kube`` (Podman)."""

    def kube_play(self, yaml_text: str, network: str) -> None:
        """Runs the YAML's pods, replacing those of the same names."""
        ...

    def kube_down(self, yaml_text: str) -> None:
        """Tears down what ``kube_play`` of the same YAML started; never raises, so undo can always run."""
        ...


# -- kubectl ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """Where a deployment's rollout stands: complete or not, and kubectl's words for it."""

    complete: bool
    message: str


class Kubectl(Protocol):
    """What the kubernetes install target asks of a cluster."""

    def apply(self, manifests: str) -> None:
        """Applies the multi-document YAML (raises EnvironmentFailure when the cluster refuses it)."""
        ...

    def delete(self, manifests: str) -> None:
        """Deletes the objects the YAML names; objects already gone are not an error."""
        ...

    def rollout_status(self, namespace: str, deployment: str, timeout: float) -> Rollout:
        """Whether the deployment's newest rollout is complete, waiting up to ``timeout`` seconds
        (0: the state now, no waiting). Never raises for "not complete": that is the answer."""
        ...

    def rollout_undo(self, namespace: str, deployment: str) -> None:
        """Returns the deployment to its previous revision."""
        ...

    def server_version(self) -> str:
        """The cluster's Kubernetes release as its API server reports it (``v1.20.2``)."""
        ...

    def ready_pods(self, namespace: str, deployment: str) -> list[tuple[str, str]]:
        """The deployment's pods that are Ready now: (name, pod IP) pairs."""
        ...

    def port_forward(
        self, namespace: str, deployment: str, remote_port: int, pod: str | None = None
    ) -> AbstractContextManager[int]:
        """A forward from an ephemeral local port on 127.0.0.1 to ``remote_port`` of one of the
        deployment's pods (``pod``, when given), open for the ``with`` block; yields the local port."""
        ...


# -- the signer -------------------------------------------------------------------------------------


class Signer(abc.ABC):
    """Signs bytes for a bundle. The verifier checks ``algorithm`` against its allow-list and
    ``key_id`` against the manifest, so both are part of the port, not details of a key.

    An abstract class rather than a protocol: the optional abilities (``trusted_key``,
    ``public_pem``) have a default that says the signer cannot. The signers themselves, chosen by a
    key URI, are in ``adapters/signers.py``."""

    @property
    @abc.abstractmethod
    def key_id(self) -> str:
        """SHA-256 of the public key's DER SubjectPublicKeyInfo (64 hex digits)."""

    @property
    @abc.abstractmethod
    def algorithm(self) -> str:
        """The signature algorithm's name, as core/signing.py spells it."""

    @abc.abstractmethod
    def sign(self, data: bytes) -> bytes:
        """The signature as a bundle stores it: base64 of the DER signature with the low ``s``,
        and one newline — deterministic, so a rebuild is byte-identical."""

    def trusted_key(self) -> TrustedKey:
        """The public half, as a verifier holds it: `airgap split` checks that a bundle is this
        key's own before it signs a new parts index for it. A signer that cannot tell says so."""
        raise UsageError(
            f"key {self.key_id[:16]}… cannot give its public key in this build",
            hint="split with a key file: --key file:/path/to/publisher.key",
        )

    def public_pem(self) -> bytes | None:
        """The public key (PEM SubjectPublicKeyInfo), when the signer can give it: exported beside
        what it signed so a reader can compare its key id out of band. None if it cannot."""
        return None


# -- the bundle reader ------------------------------------------------------------------------------


class BundleReader(Protocol):
    """The port ``check`` reads a bundle through: relative POSIX paths in, bytes out (a staging
    directory and a verified bundle both implement it)."""

    def list(self) -> list[str]:
        """Every regular file of the bundle, as relative POSIX paths."""
        ...

    def read(self, path: str) -> bytes:
        """One file's bytes; raises InvalidInputError if it is not in the bundle."""
        ...


# -- the far side's adapters ------------------------------------------------------------------------


class ServiceManager(Protocol):
    """The host's service manager (systemd), as `install --systemd` drives it for a virtualenv."""

    def unit_directory(self) -> Path:
        """Where a unit file is installed to be found."""
        ...

    def enable(self, unit: str) -> None:
        """Reloads the units, then enables and starts ``unit`` (EnvironmentFailure when it cannot)."""
        ...


@dataclass(frozen=True)
class Adapters:
    """The factories the far side's installer and install targets make their adapters with: the CLI
    passes the real ones (``airgap.cli.wiring.real_adapters``), a fast test its fakes. Each factory
    raises ``EnvironmentFailure`` when what it makes is not there (no Docker Engine answers, podman
    is not installed), as the adapter's constructor does."""

    docker: Callable[[], PullingRuntime]
    podman: Callable[[], KubePlayRuntime]
    registry: Callable[[str, bool, Path | None], Registry]  # url, insecure, CA bundle
    kubectl: Callable[[str | None], Kubectl]  # the kubeconfig context, or the current one

    def runtime(self, name: str) -> ContainerRuntime:
        """The container runtime named ``name`` (``docker`` or ``podman``)."""
        if name == "docker":
            return self.docker()
        if name == "podman":
            return self.podman()
        raise UsageError(f"no container runtime is named {name!r}: docker or podman")
