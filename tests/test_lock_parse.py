"""The requirements lock is read on the far side before anything is installed: every malformed pin is
one clear refusal (exit 4), never a traceback from deeper in the comparison."""

from __future__ import annotations

import pytest

from airgap.core.wheelhouse import parse_lock
from airgap.errors import InvalidInputError

H = "--hash=sha256:" + "a" * 64


def test_a_well_formed_lock_is_read_with_its_hashes() -> None:
    lock = parse_lock(f"numpy==2.1.0 \\\n    {H}\n# via onnxruntime\nOnnx_Runtime==1.20.1 {H}\n")
    assert [(p.name, p.version) for p in lock.pins] == [("numpy", "2.1.0"), ("onnx-runtime", "1.20.1")]


@pytest.mark.parametrize(
    "text, says",
    [
        (f"numpy==not.a.version {H}\n", "is not a PEP 440 version"),
        (f"numpy==2.1.0 {H}\nNumPy==2.1.0 {H}\n", "pinned twice"),
        ("numpy==2.1.0\n", "has no --hash"),
        (f"numpy>=2 {H}\n", "is not a pinned requirement"),
    ],
)
def test_a_malformed_pin_is_invalid_input(text: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        parse_lock(text)
