"""``--to venv``: a virtualenv created offline from the bundle's host wheelhouse; the smoke test
runs the model in it (no server, no port). ``airgap serve NAME`` serves it, with the settings the
image would give the server, and install writes a systemd unit that runs that (services/deploy/serve.py)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.adapters import venv as venvs
from airgap.errors import InvalidInputError
from airgap.services.deploy.smoketest import Answers, wait_ready
from airgap.services.deploy.targets._base import BaseTarget, InstallContext, Site, restored

if TYPE_CHECKING:
    from airgap.core.build_record import BuildRecord
    from airgap.services.deploy.receipts import Receipt


class VenvTarget(BaseTarget):
    """One virtualenv per installed version, under the state directory; old ones stay for rollback."""

    name = "venv"
    rank = 60
    needs_image = False
    candidates = True

    def deploy(self, ctx: InstallContext) -> None:
        """A fresh virtualenv for this version from the host wheelhouse, offline and hash-checked."""
        content, r = ctx.content, ctx.receipt
        lock = content / "host" / "requirements.lock"
        if not lock.exists():
            raise InvalidInputError(
                "this bundle has no host wheelhouse", hint="bundle it with --profile and --host-wheelhouse"
            )
        python = ctx.options.python or sys.executable
        venv = ctx.site.state.directory / "venvs" / r.name / f"{r.version}-{r.manifest_sha256[:12]}"
        if ctx.options.candidate:
            # Beside the current one; never over a virtualenv a receipt (a promoted candidate) names.
            named = {x.extra.get("venv") for x in ctx.site.installed.receipts()}
            n = 1
            while str(venv) in named or n == 1:
                venv = venv.with_name(f"{r.version}-{r.manifest_sha256[:12]}-candidate{n if n > 1 else ''}")
                n += 1
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        ctx.journal.step("created", venv=str(venv))
        venv_python = venvs.create_offline(python, venv, content / "host" / "wheels", lock)
        r.extra = {"venv": str(venv), "python": str(venv_python)}
        ctx.journal.step("started")

    def answers(self, site: Site, receipt: Receipt, contract: dict[str, Any]) -> Answers:
        """The golden cases run by the model in the virtualenv (no server, no port)."""
        from airgap.services.media.extraction import model_file, read_record

        content = Path(receipt.content)
        outputs = venvs.model_answers(
            Path(receipt.extra["python"]),
            content / "server" / "airgap_server.py",
            content / model_file(read_record(content)),
            content / "model" / "golden.json",
        )
        return outputs, {}

    @contextlib.contextmanager
    def endpoint(self, site: Site, receipt: Receipt) -> Iterator[int]:
        """The installed model served from its virtualenv on a free loopback port, with the serving
        settings `airgap serve` gives it, for as long as the caller needs it."""
        from airgap.services.deploy.serve import server_env
        from airgap.services.media.extraction import read_record

        content = Path(receipt.content)
        env = server_env(receipt, read_record(content), content, 0)
        with venvs.serving(
            Path(receipt.extra["python"]), content / "server" / "airgap_server.py", env
        ) as port:
            wait_ready(port, lambda: True, timeout=120, what="the model server in the virtualenv")
            yield port

    def healthy(self, site: Site, receipt: Receipt) -> bool:
        """Healthy while the virtualenv's interpreter is there."""
        return Path(receipt.extra.get("python", "")).exists()

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        """Deletes the virtualenv the interrupted run created; the old one was never touched."""
        if journal.get("venv"):
            shutil.rmtree(journal["venv"], ignore_errors=True)
        return restored(journal)

    def rollback(self, ctx: InstallContext) -> None:
        """Nothing to start: the previous virtualenv is still there, and the smoke test decides."""
        return None  # the previous virtualenv is still there: the smoke test decides

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        """Deletes the version's virtualenv."""
        if not receipt.extra.get("venv"):
            return []
        shutil.rmtree(receipt.extra["venv"], ignore_errors=True)
        return [f"virtualenv {receipt.extra['venv']}"]

    def discard(self, site: Site, receipt: Receipt) -> list[str]:
        """Deletes the version's virtualenv unless a receipt (a promoted candidate) still names it."""
        venv = receipt.extra.get("venv")
        if not venv or venv in {r.extra.get("venv") for r in site.installed.receipts()}:
            return []
        shutil.rmtree(venv, ignore_errors=True)
        return [f"virtualenv {venv}"]

    def finish(self, site: Site, new: dict[str, Any], old: dict[str, Any]) -> None:
        """Writes the systemd unit that serves the current version (`airgap serve NAME`) into the
        state directory; installing and enabling it is `install --systemd`'s, only when asked."""
        from airgap.services.deploy.serve import write_unit

        write_unit(site.state, str(new["name"]), user=os.geteuid() != 0)

    def serve_command(self, site: Site, receipt: Receipt, record: BuildRecord, content: Path) -> str | None:
        """``airgap serve NAME``: the installed model server in the foreground, on its port."""
        from airgap.services.deploy.serve import serve_argv

        return shlex.join(serve_argv(site.state, receipt.name))


TARGET = VenvTarget()
