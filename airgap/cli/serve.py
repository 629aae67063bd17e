"""``airgap serve``: the model server of a virtualenv install, in the foreground."""

import os
import sys
from typing import Annotated, Optional

import typer

from airgap.cli.common import EPILOG, StateDirOption, _state, app, err_console


@app.command(epilog=EPILOG)
def serve(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The bundle installed with --to venv.")],
    port: Annotated[
        Optional[int],
        typer.Option("--port", min=0, max=65535, help="Listen here instead (default: the installed port)."),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Run the model server of a virtualenv install in the foreground, as a service would.

    Serves the current version on 127.0.0.1 with the settings its image would give it (threads,
    largest batch and request, port; docs/serving.md). The process becomes the server (exec):
    SIGTERM or Ctrl-C reach it directly, it stops accepting, answers what is in flight and exits 0.
    The systemd unit `airgap install --to venv` writes (STATE/systemd/airgap-NAME.service) runs
    this command; `install --systemd` installs and enables it.

    Example: airgap serve tabular-classifier
    """
    from airgap.services.deploy.serve import plan

    served = plan(_state(state_dir), name, port)
    err_console.print(
        f"serving {served.name} {served.version} from its virtualenv on "
        f"http://127.0.0.1:{served.env['AIRGAP_PORT']}",
        markup=False,
        highlight=False,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(served.executable, list(served.argv), {**os.environ, **served.env})
