"""NIST's OSCAL JSON schemas (tests/data/oscal, see its README) as jsonschema validators.

The schemas' patterns use the Unicode classes ``\\p{L}`` (letters) and ``\\p{N}`` (numbers), which
Python's ``re`` lacks; they are rewritten in memory to ``[^\\W\\d_]`` (a Unicode letter) and ``\\d``
(a Unicode decimal digit, a subset of ``\\p{N}``, so the check is if anything stricter). The files
themselves stay byte for byte as NIST published them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from tests.conftest import ROOT

OSCAL_DATA = ROOT / "tests" / "data" / "oscal"
SCHEMAS = {
    "component-definition": OSCAL_DATA / "oscal_component_schema.json",
    "assessment-results": OSCAL_DATA / "oscal_assessment-results_schema.json",
}


def _python_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("\\p{L}", "[^\\W\\d_]").replace("\\p{N}", "\\d")
                if k == "pattern" and isinstance(v, str)
                else _python_patterns(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_python_patterns(v) for v in node]
    return node


@functools.cache
def validator(model: str) -> jsonschema.Draft7Validator:
    schema = _python_patterns(json.loads(Path(SCHEMAS[model]).read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def oscal_errors(document: Any) -> list[str]:
    """Every schema error of an OSCAL document (its one top-level key names the model)."""
    [model] = document
    errors = sorted(validator(model).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors]


def assert_valid_oscal(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Parses and validates one OSCAL JSON document; returns it."""
    document = data if isinstance(data, dict) else json.loads(data)
    errors = oscal_errors(document)
    assert not errors, errors[:10]
    return dict(document)
