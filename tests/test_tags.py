"""Wheel tags and markers computed from probed facts, checked against packaging's own sys_tags().

The oracle is always the real interpreter: facts are collected from it by the collector, tags are
computed here on the host, and ``sys_tags()`` is run inside that same interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from packaging.tags import sys_tags

from airgap.adapters import probe_script as collector
from airgap.core.profile import ElfFacts, Profile, PythonFacts
from airgap.core.tags import LINUX_TAG_FIRST, compute_tags, evaluate_marker, marker_environment, platform_tags
from tests.conftest import find_python, sys_tags_of


def facts_of(interpreter: str) -> PythonFacts:
    deadline = collector.Deadline(30)
    entry = collector.probe_interpreter(interpreter, interpreter, [interpreter], deadline)
    assert "error" not in entry, entry
    return PythonFacts.from_dict(json.loads(json.dumps(entry)), "test")


def test_tags_from_facts_equal_sys_tags_of_the_running_interpreter() -> None:
    py = facts_of(sys.executable)
    assert [str(t) for t in compute_tags(py)] == [str(t) for t in sys_tags()]


# packaging (the oracle) itself runs on 3.9+; older interpreters are covered by the exported-script test.
@pytest.mark.parametrize("version", ["3.9", "3.10", "3.12", "3.13"])
def test_tags_from_facts_equal_sys_tags_of_other_interpreters_on_this_machine(version: str) -> None:
    exe = find_python(version)
    if exe is None:
        pytest.fail(f"python{version} is not on this machine; the test environment provides pyenv builds")
    py = facts_of(exe)
    computed = [str(t) for t in compute_tags(py)]
    assert computed == sys_tags_of([exe])
    assert computed[0].startswith(f"cp{version.replace('.', '')}-cp{version.replace('.', '')}")


def test_tags_from_facts_equal_sys_tags_of_the_distribution_python() -> None:
    py = facts_of("/usr/bin/python3")
    assert [str(t) for t in compute_tags(py)] == sys_tags_of(["/usr/bin/python3"])


def test_marker_environment_is_the_targets_not_the_hosts() -> None:
    py = facts_of(sys.executable)
    arm = replace(
        py,
        markers={**py.markers, "platform_machine": "aarch64", "python_version": "3.10"},
    )
    assert evaluate_marker("platform_machine == 'aarch64' and python_version < '3.11'", arm)
    assert evaluate_marker(f"platform_machine == '{py.markers['platform_machine']}'", py)
    assert not evaluate_marker(f"platform_machine == '{py.markers['platform_machine']}'", arm)
    env = marker_environment(arm)
    assert set(env) >= {"python_full_version", "sys_platform", "implementation_name"}


def manylinux_only(platforms: list[str]) -> list[str]:
    return [p for p in platforms if p.startswith("manylinux")]


def synthetic(
    version: tuple[int, int, int],
    arch: str,
    glibc: str | None = "2.28",
    bits: int = 64,
    machine: int = 62,
    flags: int = 0,
    musl: str | None = None,
    config: dict[str, object] | None = None,
) -> PythonFacts:
    nodot = f"{version[0]}{version[1]}"
    return PythonFacts(
        path="/usr/bin/python3",
        version=version,
        implementation="cpython",
        sysconfig_platform=f"linux-{arch}",
        pointer_bits=bits,
        config_vars={"Py_DEBUG": 0, "py_version_nodot": nodot, "WITH_PYMALLOC": 1, **(config or {})},
        extension_suffixes=(f".cpython-{nodot}-{arch}-linux-gnu.so", ".abi3.so", ".so"),
        has_gettotalrefcount=False,
        markers={},
        glibc=glibc,
        musl=musl,
        elf=ElfFacts(bits, True, machine, flags, "/lib/ld-musl-x86_64.so.1" if musl else "/lib64/ld.so"),
        manylinux_override=None,
    )


def test_aarch64_glibc_2_28_counts_down_to_manylinux2014_and_never_below() -> None:
    plats = manylinux_only(platform_tags(synthetic((3, 10, 12), "aarch64", "2.28", machine=183)))
    assert plats[0] == "manylinux_2_28_aarch64"
    assert plats[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert not any("manylinux_2_16" in p or "manylinux1" in p for p in plats)


def test_x86_64_glibc_2_17_includes_the_legacy_aliases_down_to_manylinux1() -> None:
    plats = manylinux_only(platform_tags(synthetic((3, 9, 18), "x86_64", "2.17")))
    for legacy in ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
        assert legacy in plats
    assert plats.index("manylinux_2_12_x86_64") + 1 == plats.index("manylinux2010_x86_64")
    assert plats[-1] == "manylinux1_x86_64"


def test_python_3_7_carries_the_pymalloc_m_abi() -> None:
    tags = [str(t) for t in compute_tags(synthetic((3, 7, 17), "x86_64"))]
    assert "cp37-cp37m-manylinux_2_28_x86_64" in tags[:2]


def test_free_threaded_3_13_gets_the_t_abi_and_no_abi3() -> None:
    tags = [str(t) for t in compute_tags(synthetic((3, 13, 1), "x86_64", config={"Py_GIL_DISABLED": 1}))]
    assert "cp313-cp313t-manylinux_2_28_x86_64" in tags[:2]
    assert not any("-abi3-" in t for t in tags)


def test_musl_target_gets_musllinux_and_no_manylinux_tags() -> None:
    py = synthetic((3, 12, 3), "x86_64", glibc=None, musl="1.2")
    plats = platform_tags(py)
    assert manylinux_only(plats) == []
    assert [p for p in plats if p.startswith("musl")] == [
        "musllinux_1_2_x86_64",
        "musllinux_1_1_x86_64",
        "musllinux_1_0_x86_64",
    ]
    assert plats[0 if LINUX_TAG_FIRST else -1] == "linux_x86_64"


def test_armv7_hard_float_only_when_the_elf_header_says_so() -> None:
    hard = synthetic((3, 11, 2), "armv7l", "2.31", bits=32, machine=40, flags=0x05000400)
    soft = replace(hard, elf=ElfFacts(32, True, 40, 0x05000000, "/lib/ld-linux.so.3"))
    assert manylinux_only(platform_tags(hard))[0] == "manylinux_2_31_armv7l"
    assert platform_tags(soft) == ["linux_armv7l"]


def test_32_bit_interpreter_on_64_bit_kernel_is_i686() -> None:
    py = synthetic((3, 11, 2), "x86_64", "2.28", bits=32, machine=3)
    assert manylinux_only(platform_tags(py))[0] == "manylinux_2_28_i686"


def test_unknown_glibc_yields_only_the_linux_tag_never_a_guess() -> None:
    assert platform_tags(synthetic((3, 11, 2), "x86_64", glibc=None)) == ["linux_x86_64"]


def test_profile_of_this_host_round_trips_and_knows_its_python() -> None:
    data = collector.collect(budget=8, egress="none")
    text = json.dumps(data)
    prof = Profile.from_json(text)
    assert Profile.from_json(json.dumps(dict(prof.raw))).digest == prof.digest
    assert any(py.version[:2] == sys.version_info[:2] for py in prof.pythons)


def test_running_interpreter_agrees_via_its_own_packaging_report() -> None:
    py = facts_of(sys.executable)
    assert py.reported_tags_source == "packaging.tags"
    assert list(py.reported_tags or ()) == [str(t) for t in compute_tags(py)]


def test_collector_snippet_itself_is_python_3_6_syntax() -> None:
    import ast

    ast.parse(collector.INTERPRETER_SNIPPET, feature_version=(3, 6))
    proc = subprocess.run(
        [sys.executable, "-I", "-c", collector.INTERPRETER_SNIPPET], capture_output=True, check=True
    )
    assert json.loads(proc.stdout)["markers"]["sys_platform"] == "linux"
