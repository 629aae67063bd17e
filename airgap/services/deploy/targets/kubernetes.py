"""``--to kubernetes``: the image pushed to the cluster's registry, the bundle's manifests applied
with ``kubectl``, and the smoke test sent through a ``kubectl port-forward`` to the deployment that
was applied — never to a port on this host, which another installation may hold.

A bundle whose manifests were rendered for another Kubernetes release than the cluster's is refused
before anything is pushed or applied: API groups and admission labels differ between releases.

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
    from airgap.core.build_record import BuildRecord
    from airgap.services.deploy.receipts import Receipt
    from airgap.services.deploy.targets._base import InstallOptions

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

    def admit(self, site: Site, options: InstallOptions, record: BuildRecord, kept: dict[str, bytes]) -> None:
        """The cluster's release must be the one the manifests were rendered for (major.minor)."""
        rendered_for = record.manifests.kubernetes_version
        if not rendered_for:
            return  # a bundle from before the release was recorded: the API server is the judge
        running = self._kubectl(site, options.kube_context).server_version()
        if _minor(running) == _minor(rendered_for):
            return
        objects = _objects(kept)
        differing = release_differences(objects, running) or [f"{k}/{n}" for k, n, _ in objects]
        where = f"context {options.kube_context}" if options.kube_context else "the current context"
        raise InvalidInputError(
            f"{record.name} {record.version}'s manifests are for Kubernetes {_minor(rendered_for)}, "
            f"the cluster ({where}) runs {running}: {', '.join(differing)}",
            hint=f"bundle it for this cluster (a profile from `airgap probe` with this kubeconfig, or "
            f'kubernetes.version: "{_minor(running)}" in airgap.yaml)',
        )

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
        """One local port that reaches every ready replica: a relay that hands connection *i* to pod
        *i mod n* (adapters/relay.py), straight to the pods' addresses where the pod network is
        routed to this host, else through one port-forward per pod. A Service would spread the
        connections at random (kube-proxy picks a pod per connection), and only where its
        ClusterIP is routed here."""
        from airgap.adapters.relay import round_robin

        x = receipt.extra
        kube = self._kubectl(site, x.get("context"))
        ns, deployment, remote = x["namespace"], x["deployment"], int(x["remote_port"])
        pods = kube.ready_pods(ns, deployment)
        if not pods:
            raise EnvironmentFailure(
                f"deployment/{deployment} in {ns} has no ready pod to measure",
                hint=f"see kubectl -n {ns} get pods",
            )
        with contextlib.ExitStack() as stack:
            if all(ip and _reachable(ip, remote) for _, ip in pods):
                upstreams = [(ip, remote) for _, ip in pods]
            else:
                upstreams = []
                for name, _ in pods:
                    port = stack.enter_context(kube.port_forward(ns, deployment, remote, pod=name))
                    wait_ready(port, lambda: True, timeout=60)
                    upstreams.append(("127.0.0.1", port))
            yield stack.enter_context(round_robin(upstreams))

    def serve_command(self, site: Site, receipt: Receipt, record: BuildRecord, content: Path) -> str | None:
        """The port-forward that puts the deployment on this host's port, for the curl line that
        follows it (the cluster publishes no host port)."""
        x = receipt.extra
        context = f"--context {x['context']} " if x.get("context") else ""
        port = int(x.get("remote_port") or receipt.port or 8080)
        return (
            f"kubectl {context}-n {x['namespace']} port-forward deployment/{x['deployment']} "
            f"{receipt.port or port}:{port} &"
        )

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


def _reachable(address: str, port: int) -> bool:
    """Whether this host can open a TCP connection to a pod's address (a routed pod network)."""
    import socket

    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def _minor(version: str) -> str:
    """``v1.20.2`` and ``1.20.0`` are both ``1.20``."""
    parts = version.lstrip("v").split(".")
    return ".".join(parts[:2])


def _objects(kept: dict[str, bytes]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, name, object) of every manifest the bundle carries, in file order."""
    import yaml

    out = []
    for path in sorted(p for p in kept if p.startswith("manifests/") and p.endswith(".yaml")):
        for doc in yaml.safe_load_all(kept[path]):
            if isinstance(doc, dict) and "kind" in doc:
                out.append((str(doc["kind"]), str((doc.get("metadata") or {}).get("name", "?")), doc))
    return out


def release_differences(objects: list[tuple[str, str, dict[str, Any]]], running: str) -> list[str]:
    """The objects that would be rendered otherwise for the ``running`` release, each with what
    differs: an apiVersion the release serves differently, Pod Security labels it does or does not
    read."""
    from airgap.services.manifests import api_versions

    want = api_versions(running)
    out = []
    for kind, name, obj in objects:
        have = obj.get("apiVersion")
        if kind == "PodDisruptionBudget" and have != want["pdb_api"]:
            out.append(f"{kind}/{name} ({have}, not {want['pdb_api']})")
        elif kind == "HorizontalPodAutoscaler" and have != want["hpa_api"]:
            out.append(f"{kind}/{name} ({have}, not {want['hpa_api']})")
        elif kind == "Namespace":
            labels = (obj.get("metadata") or {}).get("labels") or {}
            labelled = any(str(k).startswith("pod-security.kubernetes.io/") for k in labels)
            if labelled and not want["pod_security_admission"]:
                out.append(f"{kind}/{name} (Pod Security labels this release does not read)")
            elif want["pod_security_admission"] and not labelled:
                out.append(f"{kind}/{name} (no Pod Security labels)")
    return out


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
