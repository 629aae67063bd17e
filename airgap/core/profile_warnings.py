"""Warnings that matter to a field engineer, derived from a profile's facts alone.

Each warning is something that has, in practice, turned a deployment into a failed site visit:
no usable container runtime, a glibc too old for current onnxruntime wheels, FIPS mode, an
egress path that means the host is not actually air-gapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airgap.core.profile import Profile, is_unknown
from airgap.core.tags import compute_tags

# Oldest glibc that current onnxruntime wheels on PyPI are built for, per architecture
# (onnxruntime 1.2x/1.3x ship manylinux_2_27 / manylinux_2_28 wheels; none for armv7).
ONNXRUNTIME_MIN_GLIBC = {"x86_64": (2, 28), "aarch64": (2, 28)}
LOW_DISK_BYTES = 10 * 1024**3
LOW_MEMORY_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ProfileWarning:
    """One warning for the engineer: ``code`` is stable for scripts and tests to match, ``message`` says what
    will go wrong and what to do."""

    code: str
    message: str


def _runtime_usable(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("usable_by_user") is True


def profile_warnings(profile: Profile) -> list[ProfileWarning]:
    """Everything in the profile that a deployment would trip over, most serious first."""
    out: list[ProfileWarning] = []

    def add(code: str, message: str) -> None:
        out.append(ProfileWarning(code, message))

    # An image is not a host: its runtimes, disks, memory and network are the builder's.
    host_facts = profile.source.get("kind") != "image"

    runtimes = profile.section("container_runtimes") or {}
    if host_facts and not any(_runtime_usable(v) for v in runtimes.values() if isinstance(v, dict)):
        why = "; ".join(
            f"{name}: {v.get('reason') or (v.get('detail') or {}).get('unknown') or 'not usable'}"
            for name, v in sorted(runtimes.items())
            if isinstance(v, dict) and v.get("installed")
        )
        add(
            "no-container-runtime",
            "no container runtime is usable by this user"
            + (f" ({why})" if why else " (none installed)")
            + "; install with --to venv, or ask the site admin for docker/podman access",
        )

    if profile.libc is None:
        add("libc-unknown", "the C library could not be identified; binary wheels cannot be chosen safely")
    elif profile.libc.family == "musl":
        add(
            "musl",
            f"{profile.libc.label}: onnxruntime publishes no musllinux wheels; use a container runtime",
        )
    else:
        need = ONNXRUNTIME_MIN_GLIBC.get(profile.arch)
        if need is None:
            add("arch-unsupported", f"architecture {profile.arch}: onnxruntime publishes no wheels for it")
        elif profile.libc.version < need:
            add(
                "glibc-too-old",
                f"{profile.libc.label} is older than the glibc {need[0]}.{need[1]} that current "
                "onnxruntime wheels need; run the model in a container, not a host virtualenv",
            )

    if not profile.pythons:
        add("no-python", "no working Python 3 interpreter was found on PATH")
    for py in profile.pythons:
        if py.minor < (3, 9):
            add(
                "old-python",
                f"{py.path} is Python {py.version_str}: too old for airgap and onnxruntime on the host; "
                "use a container runtime or a newer interpreter",
            )
        if py.manylinux_override:
            add(
                "manylinux-override",
                f"{py.path} has a _manylinux module ({', '.join(py.manylinux_override)}) that can veto "
                "manylinux levels at run time; computed tags may list levels it rejects",
            )
        if py.reported_tags is not None and py.reported_tags_source == "packaging.tags":
            # Releases of packaging order tags differently; the set must agree.
            computed = {str(t) for t in compute_tags(py)}
            if set(py.reported_tags) != computed:
                add(
                    "tags-mismatch",
                    f"{py.path}: its own packaging reports different wheel tags than computed",
                )
    for path, err in profile.broken_pythons:
        if "pyenv:" not in err:
            add("broken-python", f"{path} could not be probed: {err}")

    fips = profile.section("fips") or {}
    if fips.get("kernel_fips_enabled") is True:
        add(
            "fips-on",
            "kernel FIPS mode is on: bundles must be signed with ECDSA P-384/SHA-384 (airgap's default) and "
            "wheels that bundle their own OpenSSL (e.g. cryptography from PyPI) are not FIPS-validated here",
        )
    elif fips.get("openssl_fips_provider") is True:
        add("fips-provider", "the OpenSSL FIPS provider is active")

    if not host_facts:
        return out
    net = profile.section("network") or {}
    tcp = net.get("tcp") if isinstance(net, dict) else None
    if isinstance(tcp, dict) and tcp.get("connects") is True:
        add(
            "egress-open",
            f"this host is not air-gapped: a TCP connection to {net.get('egress_check')} opened",
        )
    elif isinstance(net.get("dns"), dict) and net["dns"].get("resolves") is True:
        add("dns-resolves", f"{net.get('egress_check')} resolves in DNS although TCP is blocked")
    if net.get("proxies"):
        add("proxy-set", "proxy variables are set: " + ", ".join(sorted(net["proxies"])))

    for disk in profile.section("disk") or []:
        free = disk.get("free_bytes") if isinstance(disk, dict) else None
        if isinstance(free, int) and free < LOW_DISK_BYTES:
            add("low-disk", f"only {free / 1024**3:.1f} GiB free at {disk.get('path')}")
    mem = profile.section("memory") or {}
    avail = mem.get("available_bytes") if isinstance(mem, dict) else None
    if isinstance(avail, int) and avail < LOW_MEMORY_BYTES:
        add("low-memory", f"only {avail / 1024**3:.1f} GiB of memory available")

    lsm = profile.section("security_modules") or {}
    if lsm.get("selinux") == "enforcing":
        add(
            "selinux-enforcing",
            "SELinux is enforcing: host directories mounted into containers need :Z relabelling",
        )
    if is_unknown(profile.section("host")):
        add("host-unknown", "host facts could not be read")
    return out
