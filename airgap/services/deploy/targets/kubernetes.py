"""``--to kubernetes``: the image pushed to the cluster's registry, the bundle's manifests applied
with ``kubectl``, and the smoke test sent through a ``kubectl port-forward`` to the deployment that
was applied — never to a port on this host, which another installation may hold.

Ready means the rollout is complete (``kubectl rollout status``). A failed install is undone by
applying the previous version's manifests again (or, on a fresh install, deleting what was applied,
namespaces excepted); rollback applies the previous version's manifests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.adapters.fs import atomic_write_bytes
from airgap.errors import EnvironmentFailure, InvalidInputError, UsageError
from airgap.ports import Kubectl
from airgap.services.deploy.smoketest import Answers, answers_on, wait_ready
from airgap.services.deploy.targets._base import BaseTarget, InstallContext, Site
from airgap.services.deploy.targets._container import push, rewritten_manifests

if TYPE_CHECKING:
    from airgap.services.deploy.receipts import Receipt

ROLLOUT_TIMEOUT = 300.0


class KubernetesTarget(BaseTarget):
    """A cluster reached through the kubectl port, made for a ``--context`` by the site's adapters,
    or by ``kubectl`` when one is given (a test's fake cluster)."""

    name = "kubernetes"
    rank = 50
    candidates = True

    def __init__(self, kubectl: Callable[[str | None], Kubectl] | None = None) -> None:
        self.kubectl = kubectl

    def _kubectl(self, site: Site, context: str | None) -> Kubectl:
        return (self.kubectl or site.adapters.kubectl)(context)

    def deploy(self, ctx: InstallContext) -> None:
        """Pushes the image, applies the manifests rewritten to it by digest, and waits for the
        rollout; the journal names what was applied before it is."""
        options, r, content = ctx.options, ctx.receipt, ctx.content
        if not options.registry:
            raise UsageError("--to kubernetes needs --registry HOST:PORT (the cluster's registry)")
        ref = push(ctx)
        text = rewritten_manifests(content, ctx.record, ref)
        ctx.deploy_dir()
        path = content / "deploy" / "kubernetes.yaml"
        atomic_write_bytes(path, text.encode())
        where = self._where(ctx, path, text)
        promoted = None
        if options.candidate:
            # Beside the current Deployment: its own, with its own Service. What a promote applies
            # (the bundle's own manifests, rolling the current Deployment to this image) is kept too.
            promoted, text = where, candidate_manifests(text)
            path = content / "deploy" / "kubernetes-candidate.yaml"
            atomic_write_bytes(path, text.encode())
            where = self._where(ctx, path, text)
        r.extra = {"registry_ref": ref, **where, **({"promoted": promoted} if promoted else {})}
        ctx.journal.step("created", kube=where)  # before apply: an undo knows what to take back
        self._apply_and_wait(ctx.site, r.extra, text, f"{r.name} {r.version}")
        ctx.journal.step("started")

    @staticmethod
    def _where(ctx: InstallContext, path: Path, text: str) -> dict[str, Any]:
        namespace, deployment = _deployment(text, ctx.options.namespace)
        return {
            "manifests": str(path),
            "namespace": namespace,
            "deployment": deployment,
            "remote_port": ctx.record.port,
            "context": ctx.options.kube_context,
        }

    def as_current(self, candidate: Receipt, current: Receipt) -> Receipt:
        """The candidate promoted: the bundle's own manifests (the current Deployment's name) at the
        candidate's image."""
        promoted = super().as_current(candidate, current)
        promoted.extra = {"registry_ref": candidate.extra.get("registry_ref"), **candidate.extra["promoted"]}
        return promoted

    def discard(self, site: Site, receipt: Receipt) -> list[str]:
        """Deletes a candidate's own Deployment, Service and policy (a promoted one's were applied
        under the current names)."""
        if not receipt.extra.get("promoted"):
            return []
        return self.remove(site, receipt)

    def _apply_and_wait(self, site: Site, where: dict[str, Any], text: str, what: str) -> None:
        kube = self._kubectl(site, where.get("context"))
        kube.apply(text)
        rollout = kube.rollout_status(where["namespace"], where["deployment"], ROLLOUT_TIMEOUT)
        if not rollout.complete:
            raise EnvironmentFailure(
                f"the rollout of {what} (deployment/{where['deployment']} in {where['namespace']}) "
                f"did not complete: {rollout.message}",
                hint=f"see kubectl -n {where['namespace']} describe deployment/{where['deployment']}",
            )

    def answers(self, site: Site, receipt: Receipt, contract: dict[str, Any]) -> Answers:
        """The golden cases sent through a port-forward to the applied deployment, on a port kubectl
        picks."""
        x = receipt.extra
        kube = self._kubectl(site, x.get("context"))
        with kube.port_forward(x["namespace"], x["deployment"], int(x["remote_port"])) as local:
            return answers_on(local, contract, ready_timeout=60)

    @contextlib.contextmanager
    def endpoint(self, site: Site, receipt: Receipt) -> Iterator[int]:
        """A port-forward to the applied deployment, on a port kubectl picks, once it is ready."""
        x = receipt.extra
        kube = self._kubectl(site, x.get("context"))
        with kube.port_forward(x["namespace"], x["deployment"], int(x["remote_port"])) as local:
            wait_ready(local, lambda: True, timeout=60)
            yield local

    def healthy(self, site: Site, receipt: Receipt) -> bool:
        """Healthy while the deployment's rollout is complete, asked now (no waiting)."""
        x = receipt.extra
        if not x.get("namespace"):
            return False  # a receipt that never recorded where it was applied
        try:
            kube = self._kubectl(site, x.get("context"))
            return kube.rollout_status(x["namespace"], x["deployment"], 0).complete
        except (EnvironmentFailure, OSError):
            return False

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        """The previous version's manifests applied again (and its rollout waited for), or, on a
        fresh install, what was applied deleted; says which."""
        new = journal.get("kube")
        old = journal.get("old") or {}
        if not new:
            return f"{old.get('version')} restored" if old else "nothing left installed"
        old_where = old.get("extra") or {}
        old_text = _read(old_where.get("manifests"))
        if old_text is not None:
            what = f"{old.get('version')}"
            try:
                self._apply_and_wait(site, old_where, old_text, what)
            except EnvironmentFailure as exc:
                return f"{what} not restored ({exc.message})"
            return f"{what} restored (its manifests applied again, its rollout complete)"
        new_text = _read(new.get("manifests"))
        if new_text is not None:
            self._kubectl(site, new.get("context")).delete(_without_namespaces(new_text))
        return f"nothing left installed (deployment/{new['deployment']} deleted from {new['namespace']})"

    def rollback(self, ctx: InstallContext) -> None:
        """Applies the previous version's manifests and waits for their rollout; the smoke test
        follows."""
        prev = ctx.receipt
        text = _read(prev.extra.get("manifests"))
        if text is None:
            raise EnvironmentFailure(
                f"the manifests of {prev.name} {prev.version} are gone from the state directory",
                hint=f"install its bundle again: airgap install {prev.bundle}",
            )
        ctx.journal.step("created", kube=prev.extra)
        self._apply_and_wait(ctx.site, prev.extra, text, f"{prev.name} {prev.version}")
        ctx.journal.step("started")

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        """Deletes what the version's manifests created, namespaces excepted."""
        x = receipt.extra
        text = _read(x.get("manifests"))
        if text is None:
            return []
        self._kubectl(site, x.get("context")).delete(_without_namespaces(text))
        return [f"deployment/{x.get('deployment')} in namespace {x.get('namespace')}"]


def _deployment(text: str, namespace: str | None) -> tuple[str, str]:
    """The namespace and name of the Deployment the manifests create: what is waited for and
    smoke-tested is what was applied."""
    import yaml

    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            meta = doc.get("metadata") or {}
            return str(meta.get("namespace") or namespace or "default"), str(meta["name"])
    raise InvalidInputError("the bundle's manifests hold no Deployment: there is nothing to roll out")


def candidate_manifests(text: str) -> str:
    """The bundle's manifests (one YAML stream) made into the candidate's: a second Deployment with
    its own Service and ingress policy, names suffixed ``-candidate`` (core/candidate_manifests.py)."""
    import yaml

    from airgap.core.candidate_manifests import candidate_objects

    objects = candidate_objects(d for d in yaml.safe_load_all(text) if d)
    if not objects:
        raise InvalidInputError("the bundle's manifests hold no Deployment: there is no candidate to run")
    return yaml.safe_dump_all(objects, sort_keys=False)


def _read(path: object) -> str | None:
    """The text of a manifests file a receipt or journal names, if it is still there."""
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    return Path(path).read_text()


def _without_namespaces(text: str) -> str:
    """The manifests minus their Namespace objects: a namespace may hold more than this model."""
    import yaml

    docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") != "Namespace"]
    return yaml.safe_dump_all(docs, sort_keys=False)


TARGET = KubernetesTarget()
