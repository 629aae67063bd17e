"""Wheel tags and marker environments for a *target* interpreter, computed from its probed facts.

``packaging.tags.sys_tags()`` answers only for the interpreter it runs in: it reads the local
sysconfig, glibc and ELF headers. Here the same algorithm is driven by the facts the collector
recorded on the far side, so the workstation can resolve wheels for a machine it has never
touched. The oracle is exact: for any probed interpreter, ``compute_tags`` equals
``list(sys_tags())`` run on that interpreter, in order, ``linux_*`` tags included.

Known limit: a distribution-provided ``_manylinux`` module can veto manylinux levels at run time;
its decisions cannot be reproduced from facts, so its presence is reported as a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import packaging
from packaging.markers import Marker
from packaging.tags import INTERPRETER_SHORT_NAMES, Tag, compatible_tags, cpython_tags, generic_tags

from airgap.core.profile import MARKER_KEYS, ElfFacts, PythonFacts, parse_libc_version
from airgap.errors import InvalidInputError

# ELF constants, as packaging._manylinux uses them.
_EM_386 = 3
_EM_ARM = 40
_EF_ARM_ABIMASK = 0xFF000000
_EF_ARM_ABI_VER5 = 0x05000000
_EF_ARM_ABI_FLOAT_HARD = 0x00000400
_MANYLINUX_ARCHS = {"x86_64", "aarch64", "ppc64", "ppc64le", "s390x", "loongarch64", "riscv64"}
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_LAST_GLIBC_MINOR = 50
# packaging 26.3 moved ``linux_<arch>`` ahead of the manylinux/musllinux tags. Follow the installed
# release, so the list is always the one its sys_tags() (and pip built on it) would give.
LINUX_TAG_FIRST = tuple(int(x) for x in packaging.__version__.split(".")[:2] if x.isdigit()) >= (26, 3)


def _normalize(text: str) -> str:
    return text.replace(".", "_").replace("-", "_").replace(" ", "_")


def _nodot(version: Sequence[int]) -> str:
    return "".join(map(str, version))


def interpreter_short_name(py: PythonFacts) -> str:
    """The interpreter's tag prefix (``cp``, ``pp``, ...), as packaging spells it, for the implementation the
    target reported."""
    return INTERPRETER_SHORT_NAMES.get(py.implementation) or py.implementation


def interpreter_version(py: PythonFacts) -> str:
    """The target's ``XY`` version for tags; ``py_version_nodot`` is preferred when recorded because that is
    what the target's own packaging would use."""
    nodot = py.config_vars.get("py_version_nodot")
    return str(nodot) if nodot else _nodot(py.minor)


def cpython_abis(py: PythonFacts) -> list[str]:
    """The CPython ABI tags (e.g. ``cp311``, ``cp37m``, ``cp313t``) from the recorded config vars."""
    cfg = py.config_vars
    version = _nodot(py.minor)
    abis: list[str] = []
    threading = debug = pymalloc = ucs4 = ""
    with_debug = cfg.get("Py_DEBUG")
    has_ext = "_d.pyd" in py.extension_suffixes
    if with_debug or (with_debug is None and (py.has_gettotalrefcount or has_ext)):
        debug = "d"
    if py.minor >= (3, 13) and cfg.get("Py_GIL_DISABLED"):
        threading = "t"
    if py.minor < (3, 8):
        with_pymalloc = cfg.get("WITH_PYMALLOC")
        if with_pymalloc or with_pymalloc is None:
            pymalloc = "m"
        if py.minor < (3, 3):
            unicode_size = cfg.get("Py_UNICODE_SIZE")
            if unicode_size == 4:
                ucs4 = "u"
    elif debug:
        abis.append(f"cp{version}{threading}")
    abis.insert(0, f"cp{version}{threading}{debug}{pymalloc}{ucs4}")
    return abis


def generic_abi(py: PythonFacts) -> list[str]:
    """The ABI tag of a non-CPython interpreter, derived from its EXT_SUFFIX as packaging does."""
    ext_suffix = py.config_vars.get("EXT_SUFFIX")
    if not isinstance(ext_suffix, str) or not ext_suffix.startswith("."):
        raise InvalidInputError(
            f"profile: interpreter {py.path} has no usable EXT_SUFFIX ({ext_suffix!r})",
            hint="its ABI tag cannot be derived; re-run the probe with a complete interpreter",
        )
    parts = ext_suffix.split(".")
    if len(parts) < 3:
        return cpython_abis(py)
    soabi = parts[1]
    if soabi.startswith("cpython"):
        abi = "cp" + soabi.split("-")[1]
    elif soabi.startswith("cp"):
        abi = soabi.split("-")[0]
    elif soabi.startswith("pypy"):
        abi = "-".join(soabi.split("-")[:2])
    elif soabi.startswith("graalpy"):
        abi = "-".join(soabi.split("-")[:3])
    elif soabi:
        abi = soabi
    else:
        return []
    return [_normalize(abi)]


def _is_armhf(elf: ElfFacts | None) -> bool:
    return (
        elf is not None
        and elf.bits == 32
        and elf.little_endian
        and elf.machine == _EM_ARM
        and elf.flags & _EF_ARM_ABIMASK == _EF_ARM_ABI_VER5
        and elf.flags & _EF_ARM_ABI_FLOAT_HARD == _EF_ARM_ABI_FLOAT_HARD
    )


def _is_i686(elf: ElfFacts | None) -> bool:
    return elf is not None and elf.bits == 32 and elf.little_endian and elf.machine == _EM_386


def _have_compatible_abi(elf: ElfFacts | None, archs: Sequence[str]) -> bool:
    if "armv7l" in archs:
        return _is_armhf(elf)
    if "i686" in archs:
        return _is_i686(elf)
    return any(arch in _MANYLINUX_ARCHS for arch in archs)


def manylinux_platforms(archs: Sequence[str], glibc: tuple[int, int], elf: ElfFacts | None) -> list[str]:
    """manylinux tags from the target's glibc down to the oldest level its architecture allows."""
    if not _have_compatible_abi(elf, archs):
        return []
    too_old = (2, 4) if set(archs) & {"x86_64", "i686"} else (2, 16)
    glibc_max_list = [glibc]
    for major in range(glibc[0] - 1, 1, -1):
        glibc_max_list.append((major, _LAST_GLIBC_MINOR))
    out: list[str] = []
    for arch in archs:
        for gmax in glibc_max_list:
            min_minor = too_old[1] if gmax[0] == too_old[0] else -1
            for minor in range(gmax[1], min_minor, -1):
                out.append(f"manylinux_{gmax[0]}_{minor}_{arch}")
                legacy = _LEGACY_MANYLINUX.get((gmax[0], minor))
                if legacy:
                    out.append(f"{legacy}_{arch}")
    return out


def musllinux_platforms(archs: Sequence[str], musl: tuple[int, int]) -> list[str]:
    """musllinux tags from the target's musl minor version down to 0, per architecture, best first, as
    packaging orders them."""
    return [f"musllinux_{musl[0]}_{minor}_{arch}" for arch in archs for minor in range(musl[1], -1, -1)]


def platform_tags(py: PythonFacts) -> list[str]:
    """The platform tags of a Linux interpreter, best first; other systems get their one tag."""
    linux = _normalize(py.sysconfig_platform)
    if not linux.startswith("linux_"):
        return [linux]
    if py.pointer_bits == 32:
        if linux == "linux_x86_64":
            linux = "linux_i686"
        elif linux == "linux_aarch64":
            linux = "linux_armv8l"
    _, arch = linux.split("_", 1)
    archs = {"armv8l": ["armv8l", "armv7l"]}.get(arch, [arch])
    out: list[str] = []
    generic = [f"linux_{a}" for a in archs]
    if LINUX_TAG_FIRST:
        out += generic
    glibc = parse_libc_version(py.glibc) if py.glibc else None
    if glibc:
        out += manylinux_platforms(archs, glibc, py.elf)
    musl = parse_libc_version(py.musl) if py.musl else None
    if musl and py.elf is not None and py.elf.interpreter and "musl" in py.elf.interpreter:
        out += musllinux_platforms(archs, musl)
    if not LINUX_TAG_FIRST:
        out += generic
    return out


def compute_tags(py: PythonFacts) -> list[Tag]:
    """The ordered tag list ``sys_tags()`` would give on the target interpreter."""
    platforms = platform_tags(py)
    name = interpreter_short_name(py)
    tags: list[Tag] = []
    if name == "cp":
        tags += cpython_tags(py.minor, abis=cpython_abis(py), platforms=platforms)
        interp: str | None = "cp" + interpreter_version(py)
    else:
        tags += generic_tags(f"{name}{interpreter_version(py)}", abis=generic_abi(py), platforms=platforms)
        interp = "pp3" if name == "pp" else None
    tags += compatible_tags(py.minor, interpreter=interp, platforms=platforms)
    return tags


def marker_environment(py: PythonFacts) -> dict[str, str]:
    """The full PEP 508 environment of the target; every key present, so no host value leaks in."""
    return {k: py.markers[k] for k in MARKER_KEYS}


def evaluate_marker(marker: str | Marker, py: PythonFacts, extra: str | None = None) -> bool:
    """Evaluates a dependency marker for the target, never against the running interpreter."""
    env: dict[str, str] = marker_environment(py)
    env["extra"] = extra or ""
    parsed = marker if isinstance(marker, Marker) else Marker(marker)
    return parsed.evaluate(env)
