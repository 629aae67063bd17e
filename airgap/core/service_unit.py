"""A virtualenv install as a service: the serving settings the model image carries, and the systemd
unit that runs ``airgap serve NAME``. Pure: text in, values out."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# Set per installation, never taken from the image: where the files are here, and where to listen.
PER_INSTALL = frozenset(
    {
        "AIRGAP_MODEL_PATH",
        "AIRGAP_GOLDEN_PATH",
        "AIRGAP_DATA_CONTRACT_PATH",
        "AIRGAP_MODEL_NAME",
        "AIRGAP_MODEL_VERSION",
        "AIRGAP_HOST",
    }
)


def image_settings(dockerfile: str | None) -> dict[str, str]:
    """The model server's settings the signed Dockerfile's ``ENV`` gives the container
    (``AIRGAP_THREADS``, ``AIRGAP_MAX_BATCH``, ``AIRGAP_MAX_REQUEST_BYTES``, ``AIRGAP_PORT``, and any
    other ``AIRGAP_`` setting), less the paths and names each installation sets itself: what a
    virtualenv install must give its server so that it serves as the container would."""
    if not dockerfile:
        return {}
    settings: dict[str, str] = {}
    for instruction in dockerfile.replace("\\\n", " ").splitlines():
        words = instruction.strip().split(None, 1)
        if len(words) != 2 or words[0].upper() != "ENV":
            continue
        try:
            tokens = shlex.split(words[1], comments=False)
        except ValueError:
            continue
        if tokens and "=" not in tokens[0] and len(tokens) >= 2:  # the legacy form: ENV KEY value
            tokens = [f"{tokens[0]}={' '.join(tokens[1:])}"]
        for token in tokens:
            key, sep, value = token.partition("=")
            if sep and key.startswith("AIRGAP_") and key not in PER_INSTALL:
                settings[key] = value
    return settings


def unit_name(name: str) -> str:
    """The systemd unit of the installed ``name``."""
    return f"airgap-{name}.service"


def _quote(arg: str) -> str:
    """One ExecStart argument as systemd reads it: ``%`` and ``$`` doubled, quoted when needed."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \t\"\\'"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(name: str, argv: Sequence[str], user: bool) -> str:
    """A unit that runs ``argv`` (``airgap serve NAME ...``) in the foreground. ``airgap serve``
    execs the model server, so systemd's main process is the server itself: SIGTERM reaches it and
    it drains before it exits. ``user``: a unit for ``systemctl --user``."""
    return "\n".join(
        [
            f"# The model server of the installed {name} (its virtualenv), written by `airgap install`.",
            "# `airgap install BUNDLE --to venv --systemd` installs and enables it; by hand:",
            f"#   cp {unit_name(name)} {'~/.config/systemd/user/' if user else '/etc/systemd/system/'}",
            f"#   systemctl {'--user ' if user else ''}daemon-reload",
            f"#   systemctl {'--user ' if user else ''}enable --now {unit_name(name)}",
            "[Unit]",
            f"Description=airgap model server: {name} (virtualenv)",
            "After=network.target",
            "",
            "[Service]",
            "Type=simple",
            "ExecStart=" + " ".join(_quote(a) for a in argv),
            "Restart=on-failure",
            "RestartSec=2",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=30",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "",
            "[Install]",
            f"WantedBy={'default.target' if user else 'multi-user.target'}",
            "",
        ]
    )
