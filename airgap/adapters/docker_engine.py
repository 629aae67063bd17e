"""The Docker Engine (or Podman's Docker-compatible socket), through the ``docker`` SDK.

This module is the only place that imports ``docker``; every SDK or transport exception is
turned into an airgap error here, with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import docker
import docker.errors
import requests.exceptions

from airgap.adapters.interfaces import ImageRunner
from airgap.errors import EnvironmentFailure, InvalidInputError

LABEL_ROLE = "io.airgap.role"


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
            hint="start the engine (`scripts/setup-env.sh` in a lab) or set DOCKER_HOST",
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
            where = (
                ref.split("/", 1)[0]
                if "/" in ref and ("." in ref.split("/")[0] or ":" in ref.split("/")[0])
                else "docker.io"
            )
            raise InvalidInputError(
                f"image {ref} is not in the local engine and could not be pulled from {where}: "
                f"{getattr(exc, 'explanation', None) or exc}",
                hint="check the reference, load the image first, or push it to a reachable registry",
            ) from None

    def run_isolated(self, ref: str, argv: Sequence[str], timeout: float) -> bytes:
        name = f"airgap-probe-{uuid.uuid4().hex[:12]}"
        with _engine_errors(f"running {argv[0]} in {ref}"):
            container = self.client.containers.create(
                ref,
                command=list(argv),
                name=name,
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                labels={LABEL_ROLE: "probe"},
                detach=True,
            )
            try:
                container.start()
                try:
                    status = container.wait(timeout=timeout)
                except requests.exceptions.RequestException:
                    raise EnvironmentFailure(
                        f"running {argv[0]} in {ref} did not finish within {timeout:.0f}s",
                        hint="check that the image starts; try `docker run --rm IMAGE python3 -V`",
                    ) from None
                out = container.logs(stdout=True, stderr=False)
                if status.get("StatusCode", 1) != 0:
                    err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
                    last = (err.strip().splitlines() or ["no output"])[-1]
                    raise EnvironmentFailure(
                        f"{argv[0]} exited {status.get('StatusCode')} in {ref}: {last[:300]}",
                        hint="the image needs a python3 (3.6 or newer) on its PATH",
                    )
                return bytes(out)
            finally:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
