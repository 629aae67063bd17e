"""``--to registry``: the signed image pushed byte for byte to the far side's registry, the bundle's
manifests rewritten to it by digest, and the image run from there (Docker) to prove the registry
serves exactly what was signed."""

from __future__ import annotations

from airgap.adapters.fs import atomic_write_bytes
from airgap.errors import UsageError
from airgap.services.deploy.targets._base import InstallContext
from airgap.services.deploy.targets._container import (
    ContainerTarget,
    container_suffix,
    push,
    rewritten_manifests,
)


class RegistryTarget(ContainerTarget):
    """A container target whose image comes back from the registry it was pushed to."""

    candidates = False  # it cannot roll back in place, so it cannot promote: install the bundle

    def deploy(self, ctx: InstallContext) -> None:
        """Pushes the image, writes the manifests rewritten to it, pulls it back by digest and runs
        it hardened."""
        options, r, content = ctx.options, ctx.receipt, ctx.content
        if not options.registry:
            raise UsageError("--to registry needs --registry HOST:PORT")
        ref = push(ctx)
        ctx.journal.step("pushed", registry_ref=ref)
        manifests = rewritten_manifests(content, ctx.record, ref)
        ctx.deploy_dir()
        atomic_write_bytes(
            content / "deploy" / f"manifests-{options.registry.replace(':', '_')}.yaml", manifests.encode()
        )
        r.extra = {"registry_ref": ref, "manifests": str(content / "deploy")}
        # Prove the registry serves exactly the signed image: run it from there, by digest.
        rt = ctx.site.adapters.docker()
        r.container = f"airgap-{r.name}-{r.version}-{container_suffix(r)}-registry"
        r.image_id = rt.pull(ref)
        self.switch_container(ctx, rt, ref, mount_model=False)  # the registry's image holds the model

    def rollback(self, ctx: InstallContext) -> None:
        """Refused: the image of the previous version may be gone from the registry; install its
        bundle again."""
        raise UsageError("rollback of --to registry: install the previous bundle again")


TARGET = RegistryTarget("registry", "docker", frozenset({"docker", "registry"}), rank=40)
