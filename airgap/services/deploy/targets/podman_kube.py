"""``--to podman-kube``: the bundle's Kubernetes manifests run by ``podman kube play`` on one node
(host networking, one replica), serving on 127.0.0.1:PORT."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.adapters.fs import atomic_write_bytes
from airgap.core.model_layer import MODEL_ROOT
from airgap.services.deploy.smoketest import wait_ready
from airgap.services.deploy.targets._base import BaseTarget, InstallContext, Site, restored
from airgap.services.deploy.targets._container import load_image, push, rewritten_manifests, served_model

if TYPE_CHECKING:
    from airgap.services.deploy.receipts import Receipt


class PodmanKubeTarget(BaseTarget):
    """The manifests as a pod; the old pod is taken down before the new one is played."""

    name = "podman-kube"
    rank = 30
    host_port = True

    def deploy(self, ctx: InstallContext) -> None:
        """Loads (or pushes) the image, takes the old pod down, plays the new one and waits for it
        on the port."""
        import yaml

        from airgap.services.manifests import RenderedFile, for_podman

        rt = ctx.site.adapters.podman()
        r, content, current = ctx.receipt, ctx.content, ctx.current
        served: dict[str, Any] = {}
        if ctx.options.registry:
            ref = push(ctx)  # the model image: it holds the model
            r.extra["registry_ref"] = ref
        else:
            load_image(ctx, rt)
            ref = f"localhost/airgap/{r.name}:{r.version}"
            served = served_model(ctx.record, content)  # the server image: the model is mounted
        text = rewritten_manifests(content, ctx.record, ref)
        files = [RenderedFile("all.yaml", text, tuple(o for o in yaml.safe_load_all(text) if o))]
        docs = [d for d in yaml.safe_load_all(for_podman(files, "host")) if d]
        port = r.port or 8080
        for d in docs:
            if d.get("kind") == "Deployment":
                d["spec"]["replicas"] = 1  # one node: one pod, or the port is taken twice
                pod = d["spec"]["template"]["spec"]
                for c in pod["containers"]:
                    env = c.setdefault("env", [])
                    env.extend({"name": k, "value": v} for k, v in served.get("env", {}).items())
                    env.extend(
                        [
                            {"name": "AIRGAP_PORT", "value": str(port)},
                            {"name": "AIRGAP_HOST", "value": "127.0.0.1"},
                        ]
                    )
                    if served:
                        c.setdefault("volumeMounts", []).append(
                            {"name": "airgap-model", "mountPath": MODEL_ROOT, "readOnly": True}
                        )
                if served:
                    pod.setdefault("volumes", []).append(
                        {
                            "name": "airgap-model",
                            "hostPath": {"path": served["model_dir"], "type": "Directory"},
                        }
                    )
        play_text = yaml.safe_dump_all(docs, sort_keys=False)
        ctx.deploy_dir()
        atomic_write_bytes(content / "deploy" / "podman-kube.yaml", play_text.encode())
        r.extra["kube_yaml"] = str(content / "deploy" / "podman-kube.yaml")
        old_yaml = _kube_yaml(current.extra if current else {})
        if old_yaml:
            rt.kube_down(old_yaml.read_text())
        ctx.journal.step("stopped-old", kube_yaml=r.extra["kube_yaml"])
        rt.kube_play(play_text, "host")
        ctx.journal.step("started")
        wait_ready(port, lambda: True)

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        """Takes the new pod down and plays the old version's YAML again."""
        rt = site.adapters.podman()
        new_yaml = _kube_yaml(journal)
        if new_yaml:
            rt.kube_down(new_yaml.read_text())
        old_yaml = _kube_yaml((journal.get("old") or {}).get("extra") or {})
        if old_yaml:
            rt.kube_play(old_yaml.read_text(), "host")
        return restored(journal)

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        """Takes the version's pod down with the YAML that played it."""
        kube_yaml = _kube_yaml(receipt.extra)
        if kube_yaml is None:
            return []
        site.adapters.podman().kube_down(kube_yaml.read_text())
        return ["podman pod"]


def _kube_yaml(facts: dict[str, Any]) -> Path | None:
    """The played YAML a receipt or journal names, if it is still there."""
    path = facts.get("kube_yaml")
    return Path(path) if path and Path(path).exists() else None


TARGET = PodmanKubeTarget()
