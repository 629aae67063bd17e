"""What the container targets share: loading the signed image into a runtime, switching from the
old container to the new one step by step, and pushing the image to a registry byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.core.smoke import compare_contract
from airgap.errors import EnvironmentFailure, InvalidInputError, TamperError, UsageError
from airgap.ports import ContainerRuntime, ContainerSpec, OciImage
from airgap.services.deploy.smoketest import (
    Answers,
    answers_via,
    healthz,
    instance_on,
    pin_new_instance,
    wait_ready,
)
from airgap.services.deploy.targets._base import BaseTarget, InstallContext, Site, quiet
from airgap.services.observer import BYTES

if TYPE_CHECKING:
    from airgap.core.build_record import BuildRecord
    from airgap.services.deploy.receipts import Receipt


class ContainerTarget(BaseTarget):
    """A hardened container on a runtime, serving on ``127.0.0.1:PORT`` with host networking.

    ``runtime_name`` names the runtime (``docker``, ``podman``) the site's adapters make for it."""

    host_port = True
    candidates = True

    def __init__(self, name: str, runtime_name: str, shares_images_with: frozenset[str], rank: int) -> None:
        self.name = name
        self.runtime_name = runtime_name
        self.shares_images_with = shares_images_with  # targets whose images live in the same runtime
        self.rank = rank

    def runtime(self, site: Site) -> ContainerRuntime:
        """The runtime this target drives, made by the site's adapters (EnvironmentFailure when it is
        not there)."""
        return site.adapters.runtime(self.runtime_name)

    def deploy(self, ctx: InstallContext) -> None:
        """Loads the signed image and switches from the old container to a new one."""
        rt = self.runtime(ctx.site)
        r = ctx.receipt
        r.image_id = load_image(ctx, rt)
        r.container = f"airgap-{r.name}-{r.version}-{container_suffix(r)}"
        if ctx.options.candidate:
            r.container += "-candidate"
        self.switch_container(ctx, rt, r.image_id)

    def switch_container(
        self, ctx: InstallContext, rt: ContainerRuntime, image: str, *, mount_model: bool = True
    ) -> None:
        """Creates the new container, stops the old one, starts the new one and waits for it:
        the one sequence every container target and rollback share, journalled step by step.
        ``mount_model``: False for an image that holds its model (the model image from a registry)."""
        r, journal = ctx.receipt, ctx.journal
        assert r.container
        port = r.port or 8080
        limits = ctx.record.resource_limits or {"cpu": "1", "memory": "1Gi"}
        labels = ctx.site.labels(r.name, r.version, self.name)
        rt.remove(r.container)  # a leftover of an undone run
        rt.create(
            ContainerSpec(
                r.container,
                image,
                port,
                memory_bytes(limits["memory"]),
                nano_cpus(limits["cpu"]),
                labels,
                **(served_model(ctx.record, ctx.content) if mount_model else {}),
            )
        )
        journal.step("created", container=r.container)
        if ctx.current and ctx.current.container:
            rt.stop(ctx.current.container)
        journal.step("stopped-old")
        ctx.site.check_port(port)  # the old version is stopped: whatever holds the port now is not ours
        rt.start(r.container)
        journal.step("started")
        name = r.container
        wait_ready(
            port,
            lambda: rt.state(name) == "running",
            logs=lambda: rt.logs(name),
            what=f"the model server in container {name}",
        )

    def healthy(self, site: Site, receipt: Receipt) -> bool:
        """Healthy while the container runs and its server answers ``/healthz``."""
        name = receipt.container or ""
        try:
            running = bool(name) and self.runtime(site).state(name) == "running"
        except (OSError, EnvironmentFailure, ValueError):
            return False
        return running and healthz(receipt.port or 8080)

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        """Removes the new container, starts the old one again and waits until it answers, and removes an
        image the run loaded that no installation uses; says whether the old version runs again."""
        old = journal.get("old") or {}
        said = f"{old.get('version')} restored" if old else "nothing left installed"
        with quiet():
            rt = self.runtime(site)
            if journal.get("container"):
                with quiet():
                    rt.remove(journal["container"])
            if "stopped-old" in journal.get("steps", []) and old.get("container"):
                try:
                    rt.start(old["container"])
                    # Restored means answering again, not just started.
                    wait_ready(old.get("port") or 8080, lambda: rt.state(old["container"]) == "running", 60)
                except (EnvironmentFailure, OSError) as exc:
                    said = f"{old.get('version')} not restored (it did not start again: {exc})"
            image = journal.get("image_id")
            if (
                image
                and journal.get("image_preexisting") is False
                and image not in site.installed.images_in_use(self.shares_images_with)
            ):
                rt.remove_image(image)
        return said

    def finish(self, site: Site, new: dict[str, Any], old: dict[str, Any]) -> None:
        """Removes the old version's container (its image stays, for rollback)."""
        if old.get("container") and old.get("container") != new.get("container"):
            with quiet():
                self.runtime(site).remove(old["container"])

    def rollback(self, ctx: InstallContext) -> None:
        """Re-creates the previous version's container from its still-loaded image."""
        rt = self.runtime(ctx.site)
        prev = ctx.receipt
        self._check_loaded(rt, prev)
        prev.container = prev.container or f"airgap-{prev.name}-{prev.version}"
        self.switch_container(ctx, rt, prev.image_id or "")

    def _check_loaded(self, rt: ContainerRuntime, receipt: Receipt) -> None:
        if not receipt.image_id or not rt.has_image(receipt.image_id):
            raise EnvironmentFailure(
                f"the image of {receipt.name} {receipt.version} is no longer loaded",
                hint=f"install its bundle again: airgap install {receipt.bundle}",
            )

    def promote(self, ctx: InstallContext, contract: dict[str, Any]) -> Answers:
        """Starts the new version beside the current one on the same port, smoke-tests the new
        server itself, and only then stops the current one: no request is refused in between.

        Both servers bind the port with SO_REUSEPORT (host networking: one port, two processes); the
        kernel spreads new connections over both while they overlap. The smoke test reaches the new
        one on a connection that its /readyz instance id proves is the new process. Stopping the old
        container sends SIGTERM: its server stops accepting, answers what is in flight, and exits.
        A current server too old to report an instance binds without SO_REUSEPORT: then the switch
        is the rollback's (stop, then start), with the short gap that has."""
        rt = self.runtime(ctx.site)
        new, old, journal = ctx.receipt, ctx.current, ctx.journal
        self._check_loaded(rt, new)
        port = new.port or 8080
        running = instance_on(port)
        if old is None or not old.container or running is None:
            return super().promote(ctx, contract)
        assert new.container and new.image_id
        limits = ctx.record.resource_limits or {"cpu": "1", "memory": "1Gi"}
        rt.remove(new.container)  # a leftover of an undone run
        rt.create(
            ContainerSpec(
                new.container,
                new.image_id,
                port,
                memory_bytes(limits["memory"]),
                nano_cpus(limits["cpu"]),
                ctx.site.labels(new.name, new.version, self.name),
                **served_model(ctx.record, ctx.content),
            )
        )
        journal.step("created", container=new.container)
        rt.start(new.container)
        journal.step("started")
        name = new.container
        with pin_new_instance(
            port,
            {running},
            lambda: rt.state(name) == "running",
            logs=lambda: rt.logs(name),
            what=f"the model server in container {name}",
        ) as conn:
            answers = answers_via(lambda path, body: conn.request_json(path, body), contract)
        if compare_contract(contract, *answers):
            return answers  # the caller reports the mismatch and undoes; the old one never stopped
        rt.stop(old.container)  # SIGTERM: the old server drains and exits
        journal.step("stopped-old")
        return answers

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        """Removes the container, and its image unless another installation on the same runtime still names
        it."""
        removed: list[str] = []
        if not receipt.container:
            return removed
        with quiet():
            rt = self.runtime(site)
            rt.remove(receipt.container)
            removed.append(f"container {receipt.container}")
            # An image another installation still runs, or would roll back to, stays loaded.
            besides = (receipt.name, receipt.target)
            if receipt.image_id and receipt.image_id not in site.installed.images_in_use(
                self.shares_images_with, besides
            ):
                rt.remove_image(receipt.image_id)
                removed.append(f"image {receipt.image_id[:19]}")
        return removed

    def as_current(self, candidate: Receipt, current: Receipt) -> Receipt:
        """The candidate on the current port, in a container named as an install would name it."""
        promoted = super().as_current(candidate, current)
        promoted.container = f"airgap-{promoted.name}-{promoted.version}-{container_suffix(promoted)}"
        return promoted

    def discard(self, site: Site, receipt: Receipt) -> list[str]:
        """Removes the container, unless a receipt still names it, and its image, unless a receipt
        on the same runtime still uses it."""
        removed: list[str] = []
        named = {r.container for r in site.installed.receipts()}
        with quiet():
            rt = self.runtime(site)
            if receipt.container and receipt.container not in named:
                rt.remove(receipt.container)
                removed.append(f"container {receipt.container}")
            if receipt.image_id and receipt.image_id not in site.installed.images_in_use(
                self.shares_images_with
            ):
                rt.remove_image(receipt.image_id)
                removed.append(f"image {receipt.image_id[:19]}")
        return removed


def load_image(ctx: InstallContext, rt: ContainerRuntime) -> str:
    """Loads the signed image into ``rt`` (or names the one already there); returns its id, which
    must be the signed config digest."""
    from airgap.adapters.oci import docker_archive_stream

    image = ctx.oci_image()
    tag = f"airgap/{ctx.receipt.name}:{ctx.receipt.version}"
    config_id = image.config_digest
    preexisting = rt.has_image(config_id)
    if not preexisting:
        ctx.site.observer.begin("load image", None)
        image_id = rt.load(docker_archive_stream(image, tag), tag)
        ctx.site.observer.end("load image")
        if image_id.removeprefix("sha256:") != config_id.removeprefix("sha256:"):
            raise TamperError(f"the runtime loaded image {image_id}, not the signed {config_id}")
    else:
        rt.tag(config_id, tag)
    ctx.journal.step("loaded", image_id=config_id, image_preexisting=preexisting)
    return config_id


def served_model(record: BuildRecord, content: Path) -> dict[str, Any]:
    """How a container serves a model that is its own content: the installed model directory, to be
    mounted read-only, and the settings the signed record gives it; nothing for an image that holds
    its model. The directories are opened to the server's unprivileged user (the files are 0444)."""
    model_image = record.image.model_image
    if model_image is None:
        return {}
    model_dir = content / "model"
    for path in [model_dir, *(p for p in model_dir.rglob("*") if p.is_dir() and not p.is_symlink())]:
        mode = path.stat().st_mode
        if mode & 0o555 != 0o555:
            path.chmod(mode | 0o555)
    return {"model_dir": str(model_dir), "env": dict(model_image.env)}


def served_image(ctx: InstallContext) -> OciImage:
    """What a registry gets: the model image (the server image's layers and the model layer, made
    from the installed model files as it is pushed) when the model is its own content, else the
    bundle's image."""
    from airgap.adapters.oci import model_layer_image

    image, model_image = ctx.oci_image(), ctx.record.image.model_image
    if model_image is None:
        return image
    assert ctx.record.source_date_epoch is not None
    signed = None
    if ctx.manifest is not None:
        signed = [
            (f.content_path.removeprefix("model/"), f.content_size if f.content_size is not None else f.size)
            for f in ctx.manifest.files
            if f.content_path.startswith("model/")
        ]
    return model_layer_image(
        image,
        ctx.content / "model",
        model_image.layer_digest,
        model_image.layer_size,
        model_image.manifest_digest,
        model_image.config_digest,
        ctx.record.source_date_epoch,
        signed,
        lambda n: ctx.site.observer.advance("push model layer", n),
    )


def push(ctx: InstallContext) -> str:
    """The signed image's blobs and manifest, byte for byte, to the far side's registry (made by the
    site's adapters); returns the reference by digest."""
    options, receipt, image = ctx.options, ctx.receipt, served_image(ctx)
    if not options.registry:
        raise UsageError(f"--to {options.target} needs --registry HOST:PORT")
    registry = ctx.site.adapters.registry(options.registry, options.insecure_registry, options.ca_bundle)
    model_image = ctx.record.image.model_image
    if model_image is None:
        return registry.push_image(image, f"airgap/{receipt.name}", receipt.version)
    # the model layer is made from the installed files as it is sent: gigabytes, with progress
    ctx.site.observer.begin("push model layer", model_image.layer_size, BYTES)
    try:
        return registry.push_image(image, f"airgap/{receipt.name}", receipt.version)
    finally:
        ctx.site.observer.end("push model layer")


def rewritten_manifests(content: Path, record: BuildRecord, ref: str) -> str:
    """The bundle's Kubernetes manifests as one YAML stream, their image pointed at ``ref``."""
    old = record.manifests.image
    if old is None:
        raise InvalidInputError("the signed build.json names no manifests.image: no manifest to rewrite")
    texts = [
        p.read_text().replace(f"image: {old}", f"image: {ref}")
        for p in sorted((content / "manifests").glob("*.yaml"))
    ]
    return "---\n".join(texts)


def container_suffix(r: Receipt) -> str:
    """Bundle digest and state directory in the name: two state directories never share a container."""
    return f"{r.manifest_sha256[:8]}-{hashlib.sha256(r.content.encode()).hexdigest()[:6]}"


def memory_bytes(q: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1G``) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * mult)
    return int(q)


def nano_cpus(q: str) -> int:
    """A Kubernetes CPU quantity (``500m``, ``1``) in billionths of a CPU."""
    return int(q[:-1]) * 1_000_000 if q.endswith("m") else int(float(q) * 1e9)
