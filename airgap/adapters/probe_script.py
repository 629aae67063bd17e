#!/usr/bin/env python3
"""airgap target probe: records the facts that decide whether a deployment runs on this host.

This file is self-contained on purpose. It uses only the Python standard library, runs on
Python 3.6 (RHEL 8's platform python) and newer, needs neither root nor network, and
finishes within a fixed time budget. A reviewer on the far side can read every line of it
before running it:

    python3 airgap-probe.py --output target-profile.json

What it does, and nothing more:
  * reads files under /proc, /sys and /etc (os-release, cpuinfo, meminfo, fips_enabled,
    SELinux/AppArmor state, crypto-policies);
  * runs, each with a timeout, every Python 3 interpreter found on PATH (with -I, printing
    its own facts), and the version commands of docker, podman, ctr, crictl, kubectl,
    openssl and nvidia-smi when present;
  * resolves one host name and opens (and immediately closes) one TCP connection to prove
    whether egress is blocked (--egress-check, default pypi.org:443; --egress-check none
    skips it);
  * writes one JSON document. It sends nothing anywhere.

A fact that cannot be read is written as {"unknown": "<reason>"}; nothing is guessed.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

SCHEMA = "airgap.target-profile/v1"
COLLECTOR_VERSION = "1.0"
DEFAULT_EGRESS = "pypi.org:443"
DEFAULT_BUDGET = 8.0

# Flags that decide which binary wheels (numpy, onnxruntime, ...) can run on this CPU.
X86_LEVELS = (
    ("x86-64-v2", ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")),
    ("x86-64-v3", ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")),
    ("x86-64-v4", ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")),
)
WHEEL_FLAGS = (
    "sse2",
    "sse3",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "popcnt",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "neon",
    "sve",
    "sve2",
    "asimddp",
    "asimdhp",
    "i8mm",
    "bf16",
    "vsx",
    "vx",
)

# Runs inside each interpreter found. It must itself stay Python 3.6 compatible.
INTERPRETER_SNIPPET = r"""
import json, os, platform, struct, sys, sysconfig
out = {}
def full_version(info):
    v = "{0.major}.{0.minor}.{0.micro}".format(info)
    kind = info.releaselevel
    if kind != "final":
        v += kind[0] + str(info.serial)
    return v
out["executable"] = sys.executable
out["version"] = list(sys.version_info[:3])
out["version_string"] = sys.version.split()[0]
out["implementation"] = sys.implementation.name
out["implementation_version"] = full_version(sys.implementation.version)
out["abiflags"] = getattr(sys, "abiflags", "")
out["pointer_bits"] = struct.calcsize("P") * 8
out["has_gettotalrefcount"] = hasattr(sys, "gettotalrefcount")
out["maxunicode"] = sys.maxunicode
try:
    import importlib.machinery
    out["extension_suffixes"] = list(importlib.machinery.EXTENSION_SUFFIXES)
except Exception as exc:
    out["extension_suffixes"] = {"unknown": repr(exc)}
out["sysconfig_platform"] = sysconfig.get_platform()
cfg = {}
for name in ("Py_DEBUG", "WITH_PYMALLOC", "Py_GIL_DISABLED", "Py_UNICODE_SIZE", "SOABI",
             "EXT_SUFFIX", "py_version_nodot", "MULTIARCH", "HOST_GNU_TYPE", "Py_ENABLE_SHARED"):
    cfg[name] = sysconfig.get_config_var(name)
out["config_vars"] = cfg
out["markers"] = {
    "implementation_name": sys.implementation.name,
    "implementation_version": full_version(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
glibc = None
try:
    s = os.confstr("CS_GNU_LIBC_VERSION")
    if s:
        glibc = s.split()[-1]
except (AttributeError, OSError, ValueError):
    pass
if glibc is None:
    try:
        import ctypes
        fn = ctypes.CDLL(None).gnu_get_libc_version
        fn.restype = ctypes.c_char_p
        glibc = fn().decode("ascii")
    except Exception:
        glibc = None
out["glibc"] = glibc
try:
    import _manylinux
    out["manylinux_override"] = sorted(n for n in dir(_manylinux) if not n.startswith("_"))
except ImportError:
    out["manylinux_override"] = None
except Exception as exc:
    out["manylinux_override"] = {"unknown": repr(exc)}
try:
    import ssl
    out["openssl"] = ssl.OPENSSL_VERSION
except Exception as exc:
    out["openssl"] = {"unknown": repr(exc)}
try:
    import _hashlib
    out["hashlib_fips_mode"] = bool(_hashlib.get_fips_mode())
except Exception as exc:
    out["hashlib_fips_mode"] = {"unknown": "not reported by this interpreter: " + type(exc).__name__}
try:
    import pip
    out["pip"] = pip.__version__
except Exception:
    out["pip"] = None
tags = None
for mod in ("packaging.tags", "pip._vendor.packaging.tags"):
    try:
        m = __import__(mod, fromlist=["sys_tags"])
        tags = {"source": mod, "tags": [str(t) for t in m.sys_tags()]}
        break
    except Exception:
        continue
if not tags:
    tags = {"unknown": "neither packaging nor pip's vendored packaging is importable here"}
out["reported_tags"] = tags
sys.stdout.write(json.dumps(out))
"""


def unknown(reason):
    # type: (str) -> dict
    """The single shape of a fact that could not be read."""
    return {"unknown": reason}


class Deadline(object):
    """A shared time budget so that the whole probe never runs past its limit."""

    def __init__(self, seconds):
        # type: (float) -> None
        self.end = time.monotonic() + seconds

    def left(self, cap):
        # type: (float) -> float
        return max(0.05, min(cap, self.end - time.monotonic()))


def run(cmd, timeout, env=None):
    # type: (list, float, dict) -> dict
    """Runs one command with a hard timeout, killing its whole process group on expiry.

    Returns {"rc", "stdout", "stderr"} or an unknown fact; never raises.
    """
    exe = shutil.which(cmd[0]) if not os.path.isabs(cmd[0]) else cmd[0]
    if exe is None or not os.path.exists(exe):
        return unknown("not installed: {} is not on PATH".format(cmd[0]))
    full_env = dict(os.environ)
    full_env.update({"LC_ALL": "C", "LANG": "C"})
    if env:
        full_env.update(env)
    try:
        proc = subprocess.Popen(
            [exe] + list(cmd[1:]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        return unknown("cannot run {}: {}".format(cmd[0], exc))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
        try:
            proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        return unknown("{} did not answer within {:.1f}s".format(" ".join(cmd[:2]), timeout))
    return {
        "rc": proc.returncode,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
    }


def read_text(path):
    # type: (str) -> object
    try:
        with open(path, "r") as fh:
            return fh.read()
    except (OSError, IOError, UnicodeDecodeError) as exc:
        return unknown("cannot read {}: {}".format(path, getattr(exc, "strerror", None) or exc))


def is_unknown(value):
    # type: (object) -> bool
    return isinstance(value, dict) and "unknown" in value


def first_line(text):
    # type: (str) -> str
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


# ---------------------------------------------------------------- ELF
ELF_MACHINES = {
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv",
    258: "loongarch",
}


def read_elf(path):
    # type: (str) -> dict
    """Reads the ELF header fields that decide manylinux/musllinux compatibility.

    packaging inspects the interpreter binary the same way (class, byte order, machine,
    ARM float ABI flags, and PT_INTERP to detect musl).
    """
    try:
        with open(path, "rb") as fh:
            ident = fh.read(16)
            if len(ident) < 16 or ident[:4] != b"\x7fELF":
                return unknown("{} is not an ELF file".format(path))
            ei_class, ei_data = ident[4], ident[5]
            if ei_class not in (1, 2) or ei_data not in (1, 2):
                return unknown("{} has an unsupported ELF class/encoding".format(path))
            end = "<" if ei_data == 1 else ">"
            if ei_class == 1:
                hdr = struct.Struct(end + "HHIIIIIHHHHHH")
            else:
                hdr = struct.Struct(end + "HHIQQQIHHHHHH")
            (
                _type,
                machine,
                _ver,
                _entry,
                phoff,
                _shoff,
                flags,
                _ehsize,
                phentsize,
                phnum,
                _shentsize,
                _shnum,
                _shstrndx,
            ) = hdr.unpack(fh.read(hdr.size))
            interp = None
            ph = struct.Struct(end + ("IIIIIIII" if ei_class == 1 else "IIQQQQQQ"))
            for i in range(min(phnum, 64)):
                fh.seek(phoff + i * phentsize)
                raw = fh.read(ph.size)
                if len(raw) < ph.size:
                    break
                fields = ph.unpack(raw)
                p_type = fields[0]
                if p_type != 3:  # PT_INTERP
                    continue
                if ei_class == 1:
                    p_offset, p_filesz = fields[1], fields[4]
                else:
                    p_offset, p_filesz = fields[2], fields[5]
                fh.seek(p_offset)
                interp = fh.read(min(p_filesz, 4096)).rstrip(b"\x00").decode("ascii", "replace")
            return {
                "class": 32 if ei_class == 1 else 64,
                "byteorder": "little" if ei_data == 1 else "big",
                "machine": machine,
                "machine_name": ELF_MACHINES.get(machine, "unknown"),
                "flags": flags,
                "interpreter": interp,
            }
    except (OSError, IOError, struct.error) as exc:
        return unknown("cannot read ELF header of {}: {}".format(path, exc))


def musl_version(loader, deadline):
    # type: (str, Deadline) -> object
    """musl's dynamic loader prints its version when run with no arguments."""
    res = run([loader], deadline.left(2.0))
    if is_unknown(res):
        return res
    lines = [ln.strip() for ln in res["stderr"].splitlines() if ln.strip()]
    if len(lines) >= 2 and lines[0].startswith("musl"):
        m = re.match(r"Version ([0-9]+)\.([0-9]+)", lines[1])
        if m:
            return "{}.{}".format(m.group(1), m.group(2))
    return unknown("{} did not print a musl version".format(loader))


# ---------------------------------------------------------------- sections
def collect_host():
    # type: () -> dict
    osr = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = read_text(path)
        if is_unknown(text):
            continue
        for line in text.splitlines():
            m = re.match(r"^([A-Z0-9_]+)=(.*)$", line.strip())
            if m:
                val = m.group(2).strip()
                if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
                    val = val[1:-1]
                osr[m.group(1)] = val
        break
    uname = platform.uname()
    in_container = None
    for marker in ("/.dockerenv", "/run/.containerenv"):
        if os.path.exists(marker):
            in_container = marker
    return {
        "hostname": socket.gethostname(),
        "os_release": osr if osr else unknown("no /etc/os-release or /usr/lib/os-release"),
        "system": uname[0],
        "kernel": uname[2],
        "kernel_version": uname[3],
        "arch": uname[4],
        "container_marker": in_container,
        "uid": os.getuid(),
        "is_root": os.getuid() == 0,
    }


def find_interpreters():
    # type: () -> list
    """Every python3 / python3.X on PATH plus the RHEL platform-python, de-duplicated."""
    seen = {}
    order = []
    pat = re.compile(r"^python3(\.[0-9]+)?$")
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            if pat.match(name):
                candidates.append(os.path.join(d, name))
    candidates.append("/usr/libexec/platform-python")
    for path in candidates:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        real = os.path.realpath(path)
        if real in seen:
            seen[real].append(path)
            continue
        seen[real] = [path]
        order.append(real)
    return [(seen[r][0], r, seen[r]) for r in order]


def probe_interpreter(path, real, aliases, deadline):
    # type: (str, str, list, Deadline) -> dict
    res = run([path, "-I", "-c", INTERPRETER_SNIPPET], deadline.left(6.0))
    entry = {"path": path, "realpath": real, "aliases": aliases}
    if is_unknown(res):
        entry["error"] = res["unknown"]
        return entry
    if res["rc"] != 0:
        entry["error"] = "exited {}: {}".format(res["rc"], first_line(res["stderr"])[:300])
        return entry
    try:
        facts = json.loads(res["stdout"])
    except ValueError:
        entry["error"] = "printed no JSON facts"
        return entry
    entry.update(facts)
    elf = read_elf(real)
    entry["elf"] = elf
    musl = None
    if not is_unknown(elf) and elf.get("interpreter") and "musl" in elf["interpreter"]:
        musl = musl_version(elf["interpreter"], deadline)
    entry["musl"] = musl
    return entry


def collect_libc(pythons, deadline):
    # type: (list, Deadline) -> dict
    """The system C library, as the first working interpreter sees it (ldd as fallback)."""
    for py in pythons:
        if py.get("glibc"):
            return {"family": "glibc", "version": py["glibc"], "source": py["path"]}
        if py.get("musl") and not is_unknown(py["musl"]):
            return {"family": "musl", "version": py["musl"], "source": py["path"]}
    res = run(["ldd", "--version"], deadline.left(2.0))
    if is_unknown(res):
        return unknown("no Python interpreter reported a libc and " + res["unknown"])
    text = res["stdout"] + res["stderr"]
    m = re.search(r"(GLIBC|GNU libc).*?([0-9]+\.[0-9]+)", first_line(text))
    if m:
        return {"family": "glibc", "version": m.group(2), "source": "ldd --version"}
    m = re.search(r"musl.*\n.*Version ([0-9]+\.[0-9]+)", text)
    if m:
        return {"family": "musl", "version": m.group(1), "source": "ldd --version"}
    return unknown("ldd --version printed no recognizable libc version")


def collect_cpu():
    # type: () -> dict
    text = read_text("/proc/cpuinfo")
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    out = {"count": os.cpu_count(), "usable": usable, "machine": platform.machine()}
    if is_unknown(text):
        out["model"] = text
        out["flags"] = text
        return out
    model = None
    flags = set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware", "cpu") and model is None and val.strip():
            model = val.strip()
        if key in ("flags", "features") and not flags:
            flags = set(val.split())
    out["model"] = model if model else unknown("/proc/cpuinfo names no model")
    if not flags:
        out["flags"] = unknown("/proc/cpuinfo lists no flags or features")
        return out
    out["flags"] = {f: (f in flags) for f in WHEEL_FLAGS}
    if "asimd" in flags:
        out["flags"]["neon"] = True
    if "sse2" in flags or "lm" in flags:
        level = "x86-64"
        for name, needed in X86_LEVELS:
            if all(f in flags for f in needed):
                level = name
            else:
                break
        out["x86_64_level"] = level
    out["all_flags_count"] = len(flags)
    return out


def collect_memory():
    # type: () -> dict
    text = read_text("/proc/meminfo")
    out = {}
    if is_unknown(text):
        return text
    for line in text.splitlines():
        m = re.match(r"^(MemTotal|MemAvailable|SwapTotal):\s+([0-9]+) kB", line)
        if m:
            out[
                {
                    "MemTotal": "total_bytes",
                    "MemAvailable": "available_bytes",
                    "SwapTotal": "swap_total_bytes",
                }[m.group(1)]
            ] = int(m.group(2)) * 1024
    limit = read_text("/sys/fs/cgroup/memory.max")
    if is_unknown(limit):
        limit = read_text("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if not is_unknown(limit):
        val = limit.strip()
        out["cgroup_limit_bytes"] = None if val == "max" or int(val or 0) >= 1 << 60 else int(val)
    else:
        out["cgroup_limit_bytes"] = unknown("no cgroup memory limit file readable")
    return out


def default_disk_paths():
    # type: () -> list
    paths = [os.path.expanduser("~"), os.getcwd(), "/tmp", "/var/tmp"]
    for p in ("/var/lib/docker", "/var/lib/containers", "/var/lib/airgap"):
        if os.path.exists(p):
            paths.append(p)
    out = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def collect_disk(paths):
    # type: (list) -> list
    result = []
    for path in paths:
        entry = {"path": path}
        try:
            st = os.statvfs(path)
            entry.update(
                {
                    "free_bytes": st.f_bavail * st.f_frsize,
                    "total_bytes": st.f_blocks * st.f_frsize,
                    "writable": os.access(path, os.W_OK),
                }
            )
        except OSError as exc:
            entry["error"] = "cannot stat {}: {}".format(path, exc.strerror or exc)
        result.append(entry)
    return result


def collect_fips(deadline):
    # type: (Deadline) -> dict
    out = {}
    raw = read_text("/proc/sys/crypto/fips_enabled")
    out["kernel_fips_enabled"] = raw if is_unknown(raw) else (raw.strip() == "1")
    policy = read_text("/etc/crypto-policies/state/current")
    if is_unknown(policy):
        policy = read_text("/etc/crypto-policies/config")
    out["crypto_policy"] = (
        unknown("no crypto-policies on this host") if is_unknown(policy) else first_line(policy)
    )
    ver = run(["openssl", "version"], deadline.left(2.0))
    out["openssl_version"] = ver if is_unknown(ver) else first_line(ver["stdout"])
    prov = run(["openssl", "list", "-providers"], deadline.left(2.0))
    if is_unknown(prov):
        out["openssl_providers"] = prov
    elif prov["rc"] != 0:
        out["openssl_providers"] = unknown(
            "openssl list -providers failed (OpenSSL < 3?): " + first_line(prov["stderr"])[:200]
        )
    else:
        names = re.findall(r"^\s{2}(\w[\w-]*)\s*$", prov["stdout"], re.M)
        out["openssl_providers"] = names
        out["openssl_fips_provider"] = "fips" in names
    return out


def collect_lsm():
    # type: () -> dict
    out = {}
    if os.path.isdir("/sys/fs/selinux"):
        enforce = read_text("/sys/fs/selinux/enforce")
        if is_unknown(enforce):
            out["selinux"] = enforce
        else:
            out["selinux"] = "enforcing" if enforce.strip() == "1" else "permissive"
    else:
        cfg = read_text("/etc/selinux/config")
        out["selinux"] = "disabled"
        if not is_unknown(cfg):
            m = re.search(r"^SELINUX=(\w+)", cfg, re.M)
            if m:
                out["selinux_configured"] = m.group(1)
    aa = read_text("/sys/module/apparmor/parameters/enabled")
    if is_unknown(aa):
        out["apparmor"] = "absent"
    else:
        out["apparmor"] = "enabled" if aa.strip().upper().startswith("Y") else "disabled"
    return out


def _json_or_none(text):
    # type: (str) -> object
    try:
        return json.loads(text)
    except ValueError:
        return None


def _denied(text):
    # type: (str) -> bool
    return "permission denied" in text.lower()


def collect_docker(deadline):
    # type: (Deadline) -> dict
    res = run(["docker", "version", "--format", "{{json .}}"], deadline.left(4.0))
    if is_unknown(res):
        return {"installed": not res["unknown"].startswith("not installed"), "detail": res}
    data = _json_or_none(first_line(res["stdout"])) or {}
    client = (data.get("Client") or {}).get("Version")
    server = data.get("Server") or None
    out = {"installed": True, "client_version": client}
    if server:
        out.update({"server_version": server.get("Version"), "daemon_answers": True, "usable_by_user": True})
    else:
        err = first_line(res["stderr"])
        out["daemon_answers"] = False if not _denied(err) else True
        out["usable_by_user"] = False
        out["reason"] = err[:300] or "docker version returned no server section"
    return out


def collect_podman(deadline):
    # type: (Deadline) -> dict
    res = run(["podman", "version", "--format", "{{json .}}"], deadline.left(5.0))
    if is_unknown(res):
        return {"installed": not res["unknown"].startswith("not installed"), "detail": res}
    data = _json_or_none(first_line(res["stdout"])) or {}
    client = (data.get("Client") or {}).get("Version")
    out = {"installed": True, "client_version": client, "rootless": os.getuid() != 0}
    if res["rc"] == 0 and client:
        # podman is daemonless: if version works, this user can run containers with it.
        out.update({"daemon_answers": None, "usable_by_user": True})
    else:
        out.update(
            {"usable_by_user": False, "reason": first_line(res["stderr"])[:300] or "podman version failed"}
        )
    return out


def collect_ctr(name, args, deadline):
    # type: (str, list, Deadline) -> dict
    res = run([name] + args, deadline.left(3.0))
    if is_unknown(res):
        return {"installed": not res["unknown"].startswith("not installed"), "detail": res}
    text = res["stdout"]
    versions = re.findall(r"Version:\s*(\S+)", text)
    out = {"installed": True, "client_version": versions[0] if versions else None}
    if res["rc"] == 0 and len(versions) >= 2:
        out.update({"server_version": versions[-1], "daemon_answers": True, "usable_by_user": True})
    else:
        err = first_line(res["stderr"])
        out.update(
            {
                "daemon_answers": True if _denied(err) else False,
                "usable_by_user": False,
                "reason": err[:300] or "no server version reported",
            }
        )
    return out


def collect_kubernetes(deadline):
    # type: (Deadline) -> dict
    client = run(["kubectl", "version", "--client", "-o", "json"], deadline.left(3.0))
    if is_unknown(client):
        return {"kubectl": client}
    data = _json_or_none(client["stdout"]) or {}
    out = {"kubectl": {"client_version": (data.get("clientVersion") or {}).get("gitVersion")}}
    ctx = run(["kubectl", "config", "current-context"], deadline.left(2.0))
    if is_unknown(ctx) or ctx["rc"] != 0:
        out["context"] = None
        out["server"] = unknown("no current kubectl context configured")
        return out
    out["context"] = first_line(ctx["stdout"])
    srv = run(["kubectl", "version", "-o", "json", "--request-timeout=2s"], deadline.left(3.0))
    sdata = None if is_unknown(srv) else (_json_or_none(srv["stdout"]) or {})
    if sdata and sdata.get("serverVersion"):
        out["server"] = {
            "version": sdata["serverVersion"].get("gitVersion"),
            "platform": sdata["serverVersion"].get("platform"),
        }
        nodes = run(["kubectl", "get", "nodes", "-o", "json", "--request-timeout=2s"], deadline.left(3.0))
        ndata = None if is_unknown(nodes) else _json_or_none(nodes["stdout"])
        if ndata:
            out["node_architectures"] = sorted(
                set(
                    ((n.get("status") or {}).get("nodeInfo") or {}).get("architecture", "?")
                    for n in ndata.get("items", [])
                )
            )
        else:
            out["node_architectures"] = unknown("kubectl get nodes failed or was not allowed")
    else:
        why = srv["unknown"] if is_unknown(srv) else first_line(srv["stderr"])[:300]
        out["server"] = unknown("cluster did not answer: " + (why or "no server version"))
    return out


def collect_gpu(deadline):
    # type: (Deadline) -> dict
    out = {}
    drv = read_text("/proc/driver/nvidia/version")
    out["nvidia_driver"] = None if is_unknown(drv) else first_line(drv)
    res = run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        deadline.left(4.0),
    )
    if is_unknown(res):
        out["gpus"] = [] if res["unknown"].startswith("not installed") else res
    elif res["rc"] != 0:
        out["gpus"] = unknown("nvidia-smi failed: " + first_line(res["stderr"] + res["stdout"])[:200])
    else:
        gpus = []
        for line in res["stdout"].splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3:
                gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
        out["gpus"] = gpus
    return out


def _in_thread(fn, timeout):
    # type: (object, float) -> tuple
    """getaddrinfo has no timeout of its own; bound it with a daemon thread."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except Exception as exc:  # reported, never raised
            box["error"] = exc

    t = threading.Thread(target=target)
    t.daemon = True
    t.start()
    t.join(timeout)
    if t.is_alive():
        return None, "timed out after {:.1f}s".format(timeout)
    if "error" in box:
        return None, str(box["error"]) or type(box["error"]).__name__
    return box.get("value"), None


def _redact_proxy(value):
    # type: (str) -> str
    return re.sub(r"//[^@/]*@", "//***@", value)


def collect_network(egress, deadline):
    # type: (str, Deadline) -> dict
    proxies = {}
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        if os.environ.get(name):
            proxies[name] = _redact_proxy(os.environ[name])
    if egress in (None, "", "none"):
        return {
            "egress_check": None,
            "proxies": proxies,
            "dns": unknown("egress check disabled"),
            "tcp": unknown("egress check disabled"),
        }
    host, _, port_s = egress.rpartition(":")
    host = host.strip("[]")
    port = int(port_s)
    out = {"egress_check": "{}:{}".format(host, port), "proxies": proxies}
    infos, err = _in_thread(lambda: socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM), deadline.left(2.5))
    if err:
        out["dns"] = {"resolves": False, "error": err}
        out["tcp"] = {"connects": False, "error": "not attempted: the name did not resolve"}
        out["egress_blocked"] = True
        return out
    addrs = []
    for info in infos or []:
        if info[4][0] not in addrs:
            addrs.append(info[4][0])
    out["dns"] = {"resolves": True, "addresses": addrs[:8]}
    last = None
    for fam, stype, proto, _cn, addr in (infos or [])[:4]:
        sock = socket.socket(fam, stype, proto)
        sock.settimeout(deadline.left(2.0))
        try:
            sock.connect(addr)
            out["tcp"] = {"connects": True, "address": addr[0]}
            out["egress_blocked"] = False
            return out
        except (OSError, socket.timeout) as exc:
            last = "{}: {}".format(addr[0], getattr(exc, "strerror", None) or exc or "timed out")
        finally:
            sock.close()
    out["tcp"] = {"connects": False, "error": last or "no address to try"}
    out["egress_blocked"] = True
    return out


# ---------------------------------------------------------------- orchestration
def collect(paths=None, egress=DEFAULT_EGRESS, budget=DEFAULT_BUDGET, on_step=None):
    # type: (object, str, float, object) -> dict
    """Collects every section concurrently under one time budget and returns the profile dict.

    Sections run in daemon threads; a section still running when the budget ends is
    recorded as unknown, so a hung daemon socket or DNS server cannot stall the probe.
    """
    started = time.monotonic()
    deadline = Deadline(budget)
    results = {}

    def step(name, fn):
        def target():
            try:
                results[name] = fn()
            except Exception as exc:  # a collector bug must not lose the other facts
                results[name] = unknown("collector error in {}: {!r}".format(name, exc))
            if on_step is not None:
                on_step(name)

        return name, target

    def pythons():
        found = find_interpreters()
        box = [None] * len(found)
        threads = []
        for i, (path, real, aliases) in enumerate(found):

            def work(i=i, path=path, real=real, aliases=aliases):
                box[i] = probe_interpreter(path, real, aliases, deadline)

            t = threading.Thread(target=work)
            t.daemon = True
            t.start()
            threads.append(t)
        for t in threads:
            t.join(deadline.left(budget))
        return [
            b if b is not None else {"path": found[i][0], "error": "timed out"} for i, b in enumerate(box)
        ]

    steps = [
        step("host", collect_host),
        step("pythons", pythons),
        step("cpu", collect_cpu),
        step("memory", collect_memory),
        step("disk", lambda: collect_disk(paths or default_disk_paths())),
        step("fips", lambda: collect_fips(deadline)),
        step("security_modules", collect_lsm),
        step("docker", lambda: collect_docker(deadline)),
        step("podman", lambda: collect_podman(deadline)),
        step("containerd", lambda: collect_ctr("ctr", ["--connect-timeout", "1s", "version"], deadline)),
        step("crictl", lambda: collect_ctr("crictl", ["--timeout", "2s", "version"], deadline)),
        step("kubernetes", lambda: collect_kubernetes(deadline)),
        step("gpu", lambda: collect_gpu(deadline)),
        step("network", lambda: collect_network(egress, deadline)),
    ]
    threads = []
    for name, target in steps:
        t = threading.Thread(target=target, name="probe-" + name)
        t.daemon = True
        t.start()
        threads.append((name, t))
    for name, t in threads:
        t.join(max(0.0, deadline.end + 0.5 - time.monotonic()))
    for name, _t in threads:
        if name not in results:
            results[name] = unknown("did not finish within the {:.0f}s probe budget".format(budget))

    pys = results["pythons"] if isinstance(results["pythons"], list) else []
    libc = collect_libc([p for p in pys if "error" not in p], deadline)
    return {
        "schema": SCHEMA,
        "collector_version": COLLECTOR_VERSION,
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_seconds": round(time.monotonic() - started, 3),
        "collector_python": sys.version.split()[0],
        "host": results["host"],
        "pythons": results["pythons"],
        "libc": libc,
        "cpu": results["cpu"],
        "memory": results["memory"],
        "disk": results["disk"],
        "fips": results["fips"],
        "security_modules": results["security_modules"],
        "container_runtimes": {
            "docker": results["docker"],
            "podman": results["podman"],
            "containerd": results["containerd"],
            "crictl": results["crictl"],
        },
        "kubernetes": results["kubernetes"],
        "gpu": results["gpu"],
        "network": results["network"],
    }


def parse_args(argv):
    # type: (list) -> argparse.Namespace
    ap = argparse.ArgumentParser(
        prog="airgap-probe",
        description="Record the facts of this host that decide whether an airgap bundle runs here.",
    )
    ap.add_argument(
        "--output", "-o", default="-", help="where to write the JSON profile ('-' for standard output)"
    )
    ap.add_argument(
        "--path", action="append", default=[], help="report free disk space at this path (repeatable)"
    )
    ap.add_argument(
        "--egress-check",
        default=DEFAULT_EGRESS,
        metavar="HOST:PORT",
        help="resolve HOST and open a TCP connection to it to learn whether egress is "
        "blocked ('none' to skip; default %(default)s)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help="seconds the whole probe may take (default %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.egress_check not in ("", "none"):
        host, sep, port = args.egress_check.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            ap.error("--egress-check must be HOST:PORT, e.g. pypi.org:443")
    return args


def main(argv=None):
    # type: (list) -> int
    args = parse_args(sys.argv[1:] if argv is None else argv)
    profile = collect(args.path or None, args.egress_check, args.budget)
    data = json.dumps(profile, indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(data)
        return 0
    target = os.path.abspath(args.output)
    tmp = "{}.tmp-{}".format(target, os.getpid())
    try:
        with open(tmp, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        sys.stderr.write(
            "airgap-probe: cannot write {}: {} - choose a writable --output\n".format(
                target, exc.strerror or exc
            )
        )
        return 5
    sys.stderr.write("airgap-probe: wrote {}\n".format(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
