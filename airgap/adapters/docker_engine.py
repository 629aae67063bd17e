"""The Docker Engine (or Podman's Docker-compatible socket), through the ``docker`` SDK.

This module is the only place that imports ``docker``; every SDK or transport exception is
turned into an airgap error here, with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from airgap.core.build_images import ImageFacts, StepReader, removal_plan
from airgap.errors import EnvironmentFailure, InvalidInputError
from airgap.ports import ImageRunner, RunResult, RunSpec

LABEL_ROLE = "io.airgap.role"
# The classic builder's progress: " ---> Using cache" precedes a reused image's id, " ---> 1a2b3c4d5e6f"
# alone on a line is the image a step just committed.


def registry_of(ref: str) -> str:
    """The registry a reference points at (Docker Hub when the first part is not a host)."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def repository_of(ref: str) -> str:
    """``ref`` without its tag or digest: the name ``RepoDigests`` entries are matched against. A registry
    port (``host:5000/x``) is not mistaken for a tag."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: -(len(last) - last.index(":"))]
    return name


@contextlib.contextmanager
def _engine_errors(action: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise InvalidInputError(f"{action}: image not found ({exc.explanation})") from None
    except docker.errors.APIError as exc:
        raise EnvironmentFailure(f"{action}: the engine refused: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise EnvironmentFailure(
            f"{action}: the container engine did not answer ({exc})",
            hint="start Docker (`sudo systemctl start docker`), or point DOCKER_HOST at a running engine "
            "(e.g. unix:///run/user/$UID/podman/podman.sock); without one, install Docker Engine first",
        ) from None


class DockerEngine(ImageRunner):
    """A connection to one engine; ``base_url`` None means DOCKER_HOST or the default socket."""

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        with _engine_errors("connecting to the container engine"):
            if base_url:
                self.client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self.client = docker.from_env(timeout=timeout)
            self.client.ping()

    def describe_image(self, ref: str) -> Mapping[str, Any]:
        """The image's id and registry digests, pulling it only if the local engine lacks it, so the probe
        records exactly which image it described."""
        with _engine_errors(f"looking up image {ref}"):
            try:
                image = self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                image = self._pull(ref)
            return {"id": image.id, "repo_digests": list(image.attrs.get("RepoDigests") or [])}

    def _pull(self, ref: str) -> Any:
        try:
            return self.client.images.pull(ref)
        except (docker.errors.ImageNotFound, docker.errors.NotFound, docker.errors.APIError) as exc:
            raise InvalidInputError(
                f"image {ref} is not in the local engine ({self.client.api.base_url}) and could not be "
                f"pulled from {registry_of(ref)}: {getattr(exc, 'explanation', None) or exc}",
                hint="check the reference, load the image first, or push it to a reachable registry",
            ) from None

    def run_isolated(self, ref: str, argv: Sequence[str], timeout: float) -> bytes:
        """Runs ``argv`` in ``ref`` with no network, a read-only root and no capabilities, and returns its
        stdout; a non-zero exit is an environment failure quoting the last line of stderr."""
        res = self.run(RunSpec(image=ref, argv=argv, timeout=timeout))
        if res.exit_code != 0:
            last = (res.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
            raise EnvironmentFailure(
                f"{argv[0]} exited {res.exit_code} in {ref}: {last[:300]}",
                hint="the image needs a python3 (3.6 or newer) on its PATH",
            )
        return res.stdout

    def resolve_digest(self, ref: str) -> str:
        """``repo@sha256:...`` for ``ref``: a tag is resolved once and the digest used from then on."""
        with _engine_errors(f"resolving {ref}"):
            if "@sha256:" in ref:
                try:
                    image = self.client.images.get(ref)
                except docker.errors.ImageNotFound:
                    image = self._pull(ref)
                return ref
            try:
                image = self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                image = self._pull(ref)
            repo = repository_of(ref)
            digests = [d for d in image.attrs.get("RepoDigests") or [] if d.split("@", 1)[0] == repo]
            if not digests:
                raise InvalidInputError(
                    f"image {ref} has no registry digest in the local engine ({self.client.api.base_url}) "
                    f"and {registry_of(ref)} did not give one",
                    hint="push it to a registry, or name it by digest (repo@sha256:...)",
                )
            return str(digests[0])

    def image_id(self, ref: str) -> str:
        """The local id (``sha256:`` of the config) of ``ref``; an image the engine lacks is invalid input,
        never pulled."""
        with _engine_errors(f"inspecting {ref}"):
            return str(self.client.images.get(ref).id)

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """The engine's whole inspect record of a local image (architecture, config, user), for checks the SDK
        does not type."""
        with _engine_errors(f"inspecting {ref}"):
            return dict(self.client.images.get(ref).attrs)

    def run(self, spec: RunSpec) -> RunResult:
        """Runs one container to completion and removes it, whatever happens."""
        volumes = {
            str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts
        }
        with _engine_errors(f"running {spec.argv[0]} in {spec.image}"):
            container = self.client.containers.create(
                spec.image,
                command=list(spec.argv),
                name=f"airgap-run-{uuid.uuid4().hex[:12]}",
                network_mode=spec.network,
                read_only=spec.read_only,
                tmpfs={"/tmp": "rw,exec,nosuid,nodev,size=2g"},
                volumes=volumes,
                environment=dict(spec.env),
                user=spec.user,
                working_dir=spec.workdir,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                labels={LABEL_ROLE: "build-step"},
                detach=True,
            )
            try:
                container.start()
                try:
                    status = container.wait(timeout=spec.timeout)
                except requests.exceptions.RequestException:
                    raise EnvironmentFailure(
                        f"{spec.argv[0]} in {spec.image} did not finish within {spec.timeout:.0f}s"
                    ) from None
                return RunResult(
                    int(status.get("StatusCode", 1)),
                    bytes(container.logs(stdout=True, stderr=False)),
                    bytes(container.logs(stdout=False, stderr=True)),
                )
            finally:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)

    def build(
        self,
        context: Path,
        tag: str,
        labels: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
        on_image: Callable[[str], None] | None = None,
        cache: bool = True,
    ) -> str:
        """Builds ``context`` with the network disabled and returns the image id.

        No network is the point: a build that needed the internet fails here, on the
        workstation, instead of on the far side. ``on_image`` hears the id of every image a build
        step commits (not the ones reused from the cache): what the caller may remove afterwards.
        """
        log: list[str] = []
        image_id: str | None = None
        steps = StepReader()
        with _engine_errors(f"building {tag}"):
            stream = self.client.api.build(
                path=str(context),
                tag=tag,
                labels=dict(labels),
                network_mode="none",
                pull=False,
                nocache=not cache,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    tail = " | ".join(line.strip() for line in log[-3:] if line.strip())
                    raise EnvironmentFailure(
                        f"building {tag} failed: {str(detail).strip()}"
                        + (f" (last output: {tail[:400]})" if tail else "")
                    )
                text = chunk.get("stream") or ""
                if text:
                    log.append(text)
                    if on_line is not None:
                        on_line(text.rstrip())
                    for line in text.splitlines():
                        short = steps.feed(line)
                        if short is not None and on_image is not None:
                            # recorded by full id: a short one is a prefix that could match
                            # images that are not this build's
                            on_image(str(self.client.images.get(short).id))
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
            if image_id is None:
                image_id = str(self.client.images.get(tag).id)
        return image_id

    def save(self, ref: str, dest: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        """Streams ``docker save`` of ``ref`` into ``dest`` (constant memory)."""
        from airgap.adapters.fs import atomic_writer

        with _engine_errors(f"saving {ref}"), atomic_writer(dest) as fh:
            for chunk in self.client.images.get(ref).save(chunk_size=1 << 20, named=True):
                fh.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))

    def remove_image(self, ref: str) -> None:
        """Removes ``ref`` by force (every tag of it goes); an image already gone is not an error."""
        with _engine_errors(f"removing {ref}"), contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.remove(ref, force=True)

    def tagged(self, ref: str) -> str | None:
        """The id of the image ``ref`` names in this engine, or None."""
        with _engine_errors(f"looking up {ref}"):
            try:
                return str(self.client.images.get(ref).id)
            except docker.errors.ImageNotFound:
                return None

    def wait_for_build_steps(self, ids: Sequence[str], limit: float = 30.0) -> None:
        """Waits until no container made from any of ``ids`` (the step images this build
        committed; never the base) exists: after a client stops listening, the engine finishes
        the step it was on, may commit it once its container has exited, and only then removes
        the container. An exited container still counts for that reason. Polls that condition,
        bounded by ``limit`` seconds."""
        wanted = set(ids)
        deadline = time.monotonic() + limit
        with _engine_errors("listing build containers"):
            while time.monotonic() < deadline:
                present = [
                    c for c in self.client.api.containers(all=True) if str(c.get("ImageID") or "") in wanted
                ]
                if not present:
                    return
                time.sleep(0.1)

    def remove_build_images(self, ids: Sequence[str]) -> tuple[int, int]:
        """Removes what a build committed (``ids``, full image ids) and the images on top, as
        ``core.build_images.removal_plan`` allows (airgap-labelled, untagged, never pulled),
        children first; an image the engine says is in use (a container, a child) stays.
        Returns (count, bytes) removed."""
        with _engine_errors("listing images"):
            listed = self.client.api.images(all=True)
        facts = [
            ImageFacts(
                str(i["Id"]),
                str(i.get("ParentId") or ""),
                tuple(i.get("RepoTags") or ()),
                tuple(i.get("RepoDigests") or ()),
                dict(i.get("Labels") or {}),
                int(i.get("Size") or 0),
            )
            for i in listed
        ]
        sizes = {f.id: f.size for f in facts}
        count = size = 0
        for image_id in removal_plan(facts, ids):
            with _engine_errors(f"removing image {image_id[:19]}"):
                try:
                    self.client.images.remove(image_id, force=False, noprune=False)
                except (docker.errors.APIError, docker.errors.ImageNotFound):
                    continue  # in use by a container or a child image, or already gone
            count += 1
            size += sizes[image_id]
        return count, size
