"""The model server airgap puts in every bundle: one file, stdlib + numpy + onnxruntime, Python 3.9+.

It runs inside a minimal image with a read-only root filesystem, on a network where nothing can be
fetched, so it depends on nothing else and writes no file at all: logs go to stderr, and onnxruntime's
telemetry (a database under ~/.cache in recent wheels) is switched off with ORT_DISABLE_TELEMETRY=1.

Commands
    python airgap_server.py [serve]                         serve HTTP until SIGTERM or SIGINT
    python airgap_server.py check --model M [--golden G]    print the model's contract and the golden
                                                            cases' outputs as one JSON document

Environment (both commands)
    AIRGAP_MODEL_PATH          the .onnx file                     default /opt/airgap/model/model.onnx
    AIRGAP_MODEL_NAME          name reported in answers/metrics   default the model file's stem
    AIRGAP_MODEL_VERSION       version reported likewise          default "unversioned"
    AIRGAP_GOLDEN_PATH         golden.json; its first case is the warm-up inference. Unset: the warm-up
                               runs on zeros (dynamic dimensions 1)
    AIRGAP_DATA_CONTRACT_PATH  the signed data contract (per-feature type, range or allowed values, and
                               the reference's bins for drift)    default data-contract.json beside
                               the model; absent: no contract is enforced
    AIRGAP_HOST                address to listen on               default 0.0.0.0 (":" in it: IPv6)
    AIRGAP_PORT                port; 0 picks a free one (logged)  default 8080
    AIRGAP_THREADS             onnxruntime intra-op threads, and the most inferences run at once
                                                                  default 2
    AIRGAP_MAX_BATCH           largest first (batch) dimension a request may have, for inputs whose
                               first dimension is dynamic         default 64
    AIRGAP_MAX_REQUEST_BYTES   largest request body               default 1048576 (1 MiB)

HTTP/1.1 with keep-alive (every answer is JSON except /metrics)
    POST /v1/predict   {"inputs": {"<input>": nested lists}}
                       → 200 {"model": name, "model_version": v, "outputs": {"<output>": value}}
                       value: a tensor as nested lists, a sequence as a list, a map as an object with
                       string keys in key order, a ZipMap output as a list of objects; NaN and
                       infinities as the strings "NaN", "Infinity", "-Infinity" (docs/serving.md)
    GET  /v1/contract  → 200 the data contract (404 not_found when the bundle has none)
    GET  /healthz      → 200 {"status": "ok"} as soon as the process listens
    GET  /readyz       → 503 until the warm-up inference succeeded, then
                         200 {"status": "ready", "model_version": v, "instance": id}
                         (id: this process's own, so a switch can tell two servers on one port apart)
    GET  /metrics      → Prometheus text 0.0.4: airgap_requests_total{path,code},
                         airgap_request_errors_total, airgap_request_seconds{path} and
                         airgap_inference_seconds (histograms),
                         airgap_model_info{name,version,onnxruntime}, airgap_ready,
                         airgap_requests_in_flight; with a data contract also
                         airgap_out_of_contract_total{feature,rule},
                         airgap_feature_drift_psi{feature}, airgap_feature_drift_window_rows{feature},
                         airgap_predictions_total{output,value} and airgap_prediction_drift_psi{output}
                         (population stability index of the last 1000 answered rows, and answers,
                         against the reference's; no request payload is kept)

    A request must name exactly the model's inputs; values are JSON numbers (whole numbers for integer
    inputs, true/false for bool, strings for string inputs; NaN/Infinity refused), with the model's
    rank and fixed dimensions, no empty or ragged lists, and a first dimension <= AIRGAP_MAX_BATCH.

    Errors: {"error": {"code": C, "message": one sentence saying what to fix}} where C is
    bad_json, bad_shape, bad_dtype, unknown_input, missing_input, batch_too_large,
    out_of_contract (a value outside the data contract: the message names the feature, value, rule) (400),
    bad_request (400, malformed HTTP), length_required (411, no Content-Length), too_large (413,
    Content-Length above AIRGAP_MAX_REQUEST_BYTES, refused before reading), not_found (404),
    method_not_allowed (405), not_ready (503), internal (500).

check output
    {"onnxruntime": "1.32.0", "opset": {"ai.onnx": 13}, "ir_version": 8,
     "inputs":  [{"name": "features", "shape": ["batch", 4], "dtype": "float32"}],
     "outputs": [{"name": "label", "shape": ["batch"], "dtype": "int64"}, ...],
     "cases":   [{"name": "single_row", "outputs": {"label": [2], ...}}, ...]}
    shape: an int per fixed dimension, a string per named dynamic one, null for an unnamed one. dtype:
    numpy's name (float32, int64, bool, str), or onnxruntime's type for a non-tensor output. opset: the
    default domain "" is reported as "ai.onnx". Outputs are what /v1/predict answers for those inputs.

Logs: one JSON object per line on stderr: an "event" per request (method, path, status, error code,
sizes, duration; never a body) and per lifecycle step (listening, ready, stopping, stopped, fatal).

SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests finish (at most
DRAIN_SECONDS), exit 0.

Exit codes: 0 clean stop or check done; 1 cannot listen; 2 the configuration, model or golden file is
unusable (check: one line on stderr, "not an ONNX model ..." or onnxruntime's own message).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union
from urllib.parse import urlsplit

# Before onnxruntime loads: its recent Linux wheels (1.32 does; 1.16 did not) otherwise keep a telemetry
# database under ~/.cache/Microsoft and queue events for upload. Nothing may leave the site, or be written.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument

ort.set_default_logger_severity(4)  # see Model: onnxruntime must not write its own lines to stderr

DEFAULT_MODEL_PATH = "/opt/airgap/model/model.onnx"
IDLE_GRACE_SECONDS = 1.0  # of a drain: idle keep-alive connections may send one more request
DRAIN_SECONDS = 10.0  # in-flight requests get this long after SIGTERM; Kubernetes grants 30 s by default
REQUEST_TIMEOUT_SECONDS = 30.0  # a client that stalls mid-request cannot hold a thread for longer
# Request latency: fine around the tens of milliseconds an SLO usually names (p95 50 ms, p99 100 ms).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Dim = Union[int, str, None]  # fixed size, symbolic name, or dynamic without a name

# onnxruntime's tensor type names → numpy dtype names. Anything else (sequences, maps) is not a tensor.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


class ApiError(Exception):
    """A request the server refuses: HTTP status, stable code, and a sentence that says what to fix."""

    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class FatalError(Exception):
    """The configuration, model or golden file is unusable: one line, exit 2."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


_log_lock = threading.Lock()


def log(event: str, **fields: Any) -> None:
    """One JSON object per line on stderr, written whole so that concurrent requests never interleave."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    line = json.dumps({"ts": stamp, "event": event, **fields}, separators=(",", ":"), default=str)
    with _log_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    model_path: str
    model_name: str
    model_version: str
    golden_path: str | None
    data_contract_path: str
    host: str
    port: int
    threads: int
    max_batch: int
    max_request_bytes: int

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if environ is None else environ)
        model_path = env.get("AIRGAP_MODEL_PATH") or DEFAULT_MODEL_PATH
        return cls(
            model_path=model_path,
            model_name=env.get("AIRGAP_MODEL_NAME") or Path(model_path).stem,
            model_version=env.get("AIRGAP_MODEL_VERSION") or "unversioned",
            golden_path=env.get("AIRGAP_GOLDEN_PATH") or None,
            data_contract_path=env.get("AIRGAP_DATA_CONTRACT_PATH")
            or os.path.join(os.path.dirname(model_path), "data-contract.json"),
            host=env.get("AIRGAP_HOST") or "0.0.0.0",
            port=_int_env(env, "AIRGAP_PORT", 8080, 0, 65535),
            threads=_int_env(env, "AIRGAP_THREADS", 2, 1, 1024),
            max_batch=_int_env(env, "AIRGAP_MAX_BATCH", 64, 1, 2**31 - 1),
            max_request_bytes=_int_env(env, "AIRGAP_MAX_REQUEST_BYTES", 1 << 20, 1, 2**40),
        )


def _int_env(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise FatalError(f"{name} must be an integer from {low} to {high}, not {raw!r}; fix the environment")
    return value


# ---------------------------------------------------------------------------------------------------
# The ONNX header, read without the onnx package (it would be one more dependency in every image)


def _read_varint(f: BinaryIO) -> int:
    result = shift = 0
    for _ in range(10):
        byte = f.read(1)
        if not byte:
            raise ValueError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def _fields(f: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """Protobuf (field, wire type, value) up to offset ``end``; for wire type 2 the value is the length,
    and the caller may read the payload from ``f``: the next field starts after it either way."""
    while f.tell() < end:
        key = _read_varint(f)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            yield field, wire, _read_varint(f)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        elif wire == 2:
            length = _read_varint(f)
            start = f.tell()
            if start + length > end:
                raise ValueError("length-delimited field runs past the end")
            yield field, wire, length
            f.seek(start + length)
        else:
            raise ValueError(f"wire type {wire}")
    if f.tell() != end:
        raise ValueError("last field runs past the end")


def read_onnx_header(path: str) -> tuple[int, dict[str, int]]:
    """ModelProto.ir_version (field 1) and opset_import (field 8: domain 1, version 2), streamed so that
    the graph (field 7) is skipped, not read. Raises FatalError("not an ONNX model ...")."""
    opsets: dict[str, int] = {}
    ir_version, has_graph = 0, False
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for field, wire, value in _fields(f, size):
                if field == 1 and wire == 0:
                    ir_version = value
                elif field == 7 and wire == 2:
                    has_graph = True
                elif field == 8 and wire == 2:
                    domain, version, end = "", 0, f.tell() + value
                    for sub, sub_wire, sub_value in _fields(f, end):
                        if sub == 1 and sub_wire == 2:
                            domain = f.read(sub_value).decode("utf-8")
                        elif sub == 2 and sub_wire == 0:
                            version = sub_value
                    opsets[domain or "ai.onnx"] = version  # "" and "ai.onnx" are the same domain
                elif field in (1, 7, 8):
                    raise ValueError(f"field {field} has wire type {wire}")
    except OSError as exc:
        raise FatalError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FatalError(f"not an ONNX model: {path} is not a valid ModelProto ({exc})") from None
    if not (1 <= ir_version <= 1000 and has_graph):
        raise FatalError(f"not an ONNX model: {path} has no ir_version or no graph")
    return ir_version, opsets


# ---------------------------------------------------------------------------------------------------
# The model: its contract, request validation, inference


def _accepts_number(x: object) -> bool:
    return type(x) is float or type(x) is int  # not bool, although bool is an int subclass


def _accepts_integer(x: object) -> bool:
    return type(x) is int


def _accepts_bool(x: object) -> bool:
    return type(x) is bool


def _accepts_str(x: object) -> bool:
    return type(x) is str


def _describe(x: object) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return f"the boolean {json.dumps(x)}"
    if isinstance(x, str):
        return f"the string {json.dumps(x)[:40]}"
    if isinstance(x, float):
        return f"the fraction {x!r}"
    if isinstance(x, dict):
        return "an object"
    if isinstance(x, list):
        return "a list"
    return repr(x)


# A number beyond float32 becomes infinite in the cast, and TensorSpec refuses it with a 400: numpy's
# warning about it would only be a stray non-JSON line on stderr (and np.errstate costs 2 us a call).
warnings.filterwarnings("ignore", message="overflow encountered in cast", category=RuntimeWarning)


def _call(accept: Callable[[object], bool], x: object) -> bool:
    return accept(x)


def _as_text(x: object) -> str:
    """A JSON value as the text a string tensor carries: null (a missing value) as ""."""
    if x is None:
        return ""
    if x is True or x is False:
        return "1" if x else "0"
    return _num_text(x)  # type: ignore[arg-type]


class Columns:
    """The columns of a data contract's [batch, features] input, each read by its feature's declared
    type whatever the tensor's dtype: a text column does not make a number column text, and a
    nullable feature accepts JSON null (NaN in a float tensor, "" in a string tensor)."""

    def __init__(self, dtype: str, features: list[tuple[str, str, bool]]) -> None:
        self.features = features
        self.dtype = dtype
        self.text = dtype == "str"
        kinds = [_column_types(dtype, kind) for _, kind, _ in features]
        self.accepts = tuple(_accepting(types) for types in kinds)
        # Columns that all take the same JSON types are checked by one function, as without a contract.
        self.same = self.accepts[0] if len(set(kinds)) == 1 else None

    def describe(self, col: int) -> tuple[str, str, str]:
        """The column's feature name, its declared type, and the JSON values it takes."""
        name, kind, nullable = self.features[col]
        nullable = nullable and (self.text or self.dtype.startswith("float"))
        wanted = {"category": "strings or numbers", "bool": "true, false, 0 or 1"}.get(kind, "numbers")
        if self.text and kind in ("float", "int"):
            wanted = "numbers or strings that are numbers"
        return name, kind, wanted + (" or null" if nullable else "")


def _column_types(dtype: str, kind: str) -> frozenset[type]:
    """The JSON value types a column of this declared type takes in a tensor of this dtype. JSON null
    is read wherever the tensor has a missing value (NaN, ""): the guard then refuses it, counted and
    named with the rest of the batch, where the feature is not nullable."""
    types: set[type] = {str, int, float} if dtype == "str" else {int, float}
    if dtype.startswith(("int", "uint")):
        types = {int}
    if kind == "bool" or dtype == "bool":
        types.add(bool)
    if dtype == "bool":
        types = {bool}
    if dtype == "str" or dtype.startswith("float"):  # no other tensor has a missing value
        types.add(type(None))
    return frozenset(types)


def _accepting(types: frozenset[type]) -> Callable[[object], bool]:
    if types == {int, float}:
        return _accepts_number
    return lambda x: type(x) in types


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name, or onnxruntime's type string for non-tensors
    # The data contract's reading of a [batch, features] input: per column, the JSON values its
    # feature's declared type accepts (Columns). None: every value by the tensor's dtype.
    columns: Columns | None = None

    @classmethod
    def from_node(cls, node: Any) -> TensorSpec:
        shape = tuple(
            d if isinstance(d, str) or (isinstance(d, int) and d >= 0) else None for d in node.shape
        )
        return cls(node.name, shape, ORT_DTYPES.get(node.type, node.type))

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def contract(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def to_array(self, value: object, max_batch: int) -> np.ndarray:
        """Checks one input's JSON value against this spec, cheapest checks first, and converts it."""
        name, want = self.name, self.shape
        shape: list[int] = []
        node = value
        while isinstance(node, list):  # the shape the request claims, read along the first elements
            if not node:
                raise ApiError(
                    400, "bad_shape", f"input '{name}' contains an empty list; send at least one row"
                )
            shape.append(len(node))
            node = node[0]
        if len(shape) != len(want):
            raise ApiError(
                400,
                "bad_shape",
                f"input '{name}' must have {len(want)} dimension(s), shape {self.shape_text()}, "
                f"but the request has {len(shape)}; nest the lists to match",
            )
        if want and not isinstance(want[0], int) and shape[0] > max_batch:
            raise ApiError(
                400,
                "batch_too_large",
                f"input '{name}' has a batch of {shape[0]} but this server takes at most {max_batch} "
                "(AIRGAP_MAX_BATCH); split the request",
            )
        for axis, (got, expected) in enumerate(zip(shape, want)):
            if isinstance(expected, int) and got != expected:
                raise ApiError(
                    400,
                    "bad_shape",
                    f"input '{name}' dimension {axis} must be {expected}, shape {self.shape_text()}, "
                    f"but {_path(name, (0,) * axis)} has {got} elements",
                )
        flat = self._flatten(value, tuple(shape))
        if self.columns is not None and self.columns.text and len(shape) == 2:
            flat = [v if type(v) is str else _as_text(v) for v in flat]
        return self._convert(flat, tuple(shape))

    def _flatten(self, value: object, shape: tuple[int, ...]) -> list[Any]:
        accept = self._accepts()
        columns = self.columns if len(shape) == 2 else None
        flat: list[Any] = []

        def walk(node: list[Any], index: tuple[int, ...]) -> None:
            depth = len(index)
            if len(node) != shape[depth]:
                raise ApiError(
                    400,
                    "bad_shape",
                    f"input '{self.name}' is ragged: {_path(self.name, index)} has {len(node)} elements "
                    f"but {_path(self.name, (0,) * depth)} has {shape[depth]}; make every list at one depth "
                    "the same length",
                )
            if depth == len(shape) - 1:  # the innermost lists hold the values
                if columns is not None:
                    if not (
                        all(map(columns.same, node))
                        if columns.same
                        else all(map(_call, columns.accepts, node))
                    ):
                        i, item = next((i, x) for i, x in enumerate(node) if not columns.accepts[i](x))
                        raise self._bad_leaf((*index, i), item)
                elif not all(map(accept, node)):
                    i, item = next((i, item) for i, item in enumerate(node) if not accept(item))
                    raise self._bad_leaf((*index, i), item)
                flat.extend(node)
                return
            for i, child in enumerate(node):
                if not isinstance(child, list):
                    raise ApiError(
                        400,
                        "bad_shape",
                        f"input '{self.name}' is ragged: {_path(self.name, (*index, i))} is "
                        f"{_describe(child)} where a list of {shape[depth + 1]} was expected",
                    )
                walk(child, (*index, i))

        if shape:
            walk(value, ())  # type: ignore[arg-type]
        elif accept(value):
            flat.append(value)
        else:
            raise self._bad_leaf((), value)
        return flat

    def _accepts(self) -> Callable[[object], bool]:
        if self.dtype == "bool":
            return _accepts_bool
        if self.dtype == "str":
            return _accepts_str
        if self.dtype.startswith(("int", "uint")):
            return _accepts_integer
        return _accepts_number

    def _bad_leaf(self, index: tuple[int, ...], item: object) -> ApiError:
        where = _path(self.name, index)
        if isinstance(item, list):
            return ApiError(
                400,
                "bad_shape",
                f"input '{self.name}' must have shape {self.shape_text()}, but {where} is a list; "
                "remove the extra nesting",
            )
        wanted = {"bool": "true or false", "str": "strings"}.get(self.dtype, "numbers")
        if self.dtype.startswith(("int", "uint")):
            wanted = "whole numbers without a decimal point"
        if self.columns is not None and len(index) == 2:
            name, kind, wanted = self.columns.describe(index[1])
            return ApiError(
                400,
                "bad_dtype",
                f"{where} ({name}) is {_describe(item)}, but the data contract's {kind} feature "
                f"'{name}' in this {self.dtype} input takes {wanted}",
            )
        return ApiError(
            400,
            "bad_dtype",
            f"input '{self.name}' holds {self.dtype} values, but {where} is {_describe(item)}; send {wanted}",
        )

    def _convert(self, flat: list[Any], shape: tuple[int, ...]) -> np.ndarray:
        if self.dtype == "str":
            return np.array(flat, dtype=object).reshape(shape)
        dtype = np.dtype(self.dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            for bound in (min(flat), max(flat)):
                if not info.min <= bound <= info.max:
                    raise ApiError(
                        400,
                        "bad_dtype",
                        f"input '{self.name}' holds {self.dtype} values, but {bound} is outside "
                        f"[{info.min}, {info.max}]; send smaller numbers",
                    )
        try:
            try:
                array = np.array(flat, dtype=dtype).reshape(shape)  # 1e39 in float32: inf, refused below
            except TypeError:  # JSON null where the contract allows a missing value: NaN for the model
                array = np.array([math.nan if v is None else v for v in flat], dtype=dtype).reshape(shape)
        except OverflowError:
            raise ApiError(
                400,
                "bad_dtype",
                f"input '{self.name}' has a number too large for {self.dtype}; send smaller numbers",
            ) from None
        if dtype.kind == "f" and np.isinf(array).any():  # 1e400 reads as infinity; 1e39 is one in float32
            where = _path(self.name, tuple(int(i) for i in np.argwhere(np.isinf(array))[0]))
            raise ApiError(
                400,
                "bad_dtype",
                f"input '{self.name}' holds finite {self.dtype} values, but {where} is beyond its range "
                "(infinite); send finite numbers",
            )
        return array

    def zeros(self) -> np.ndarray:
        """A warm-up value when there is no golden file: dynamic dimensions set to 1."""
        shape = tuple(d if isinstance(d, int) else 1 for d in self.shape)
        return np.zeros(shape, dtype=object if self.dtype == "str" else self.dtype)


def _path(name: str, index: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in index)


NON_FINITE_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite_or_text(x: float) -> Any:
    """JSON has no NaN or infinity: they travel as the strings "NaN", "Infinity", "-Infinity"."""
    return x if math.isfinite(x) else NON_FINITE_JSON[repr(x)]


def _jsonable(value: Any) -> Any:
    """onnxruntime's outputs as JSON values, the same bytes for the same outputs every time.

    A tensor becomes nested lists; a sequence a list; a map an object whose keys, strings in JSON,
    come in the map's own key order (numeric for integer keys, so "2" before "10"); a sequence of maps
    (a ZipMap classifier) a list of such objects. Floats are written as Python writes a double (the
    shortest text that reads back to the same value), non-finite ones as the strings "NaN",
    "Infinity", "-Infinity"; bytes as UTF-8 text.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and value.size and not np.isfinite(value).all():
            return _jsonable(value.astype(object))
        if value.dtype.kind == "O":
            return [_jsonable(v) for v in value] if value.ndim else _jsonable(value.item())
        return value.tolist()
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return _finite_or_text(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(value[k]) for k in sorted(value)}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class Model:
    """An onnxruntime session and the contract read from it; ``session.run`` is thread-safe."""

    def __init__(self, path: str, threads: int) -> None:
        if not os.path.isfile(path):
            raise FatalError(f"model file {path} does not exist; set AIRGAP_MODEL_PATH (check: --model)")
        self.ir_version, self.opsets = read_onnx_header(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # fatal only: its errors reach us as exceptions, and its log
        # lines on stderr would break check's one-line contract and serve's one JSON object per line
        try:
            self.session = ort.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types; its message is the answer
            raise FatalError(one_line(exc)) from None
        self.inputs = [TensorSpec.from_node(node) for node in self.session.get_inputs()]
        self.outputs = [TensorSpec.from_node(node) for node in self.session.get_outputs()]
        for spec in self.inputs:
            if spec.dtype not in ORT_DTYPES.values():
                raise FatalError(
                    f"input '{spec.name}' has type {spec.dtype}; the server takes tensor inputs only"
                )

    def prepare(self, inputs: object, max_batch: int) -> dict[str, np.ndarray]:
        """The feeds for onnxruntime from a request's ``inputs`` object, or the ApiError that says why not."""
        names = [spec.name for spec in self.inputs]
        expected = ", ".join(f"'{n}'" for n in names)
        if not isinstance(inputs, dict):
            raise ApiError(400, "bad_json", f'"inputs" must be an object with the keys {expected}')
        unknown = [key for key in inputs if key not in names]
        if unknown:
            raise ApiError(
                400,
                "unknown_input",
                f"the model has no input {', '.join(repr(k) for k in unknown)}; its inputs are {expected}",
            )
        missing = [name for name in names if name not in inputs]
        if missing:
            raise ApiError(
                400,
                "missing_input",
                f"input {', '.join(repr(m) for m in missing)} is missing; send every input: {expected}",
            )
        feeds = {spec.name: spec.to_array(inputs[spec.name], max_batch) for spec in self.inputs}
        seen: dict[str, tuple[str, int]] = {}  # a named dynamic dimension must agree across inputs
        for spec in self.inputs:
            for dim, size in zip(spec.shape, feeds[spec.name].shape):
                if isinstance(dim, str):
                    first = seen.setdefault(dim, (spec.name, size))
                    if first[1] != size:
                        raise ApiError(
                            400,
                            "bad_shape",
                            f"inputs '{first[0]}' and '{spec.name}' share dimension '{dim}' but have "
                            f"{first[1]} and {size}; make them equal",
                        )
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        return list(self.session.run(None, feeds))

    def outputs_json(self, results: list[Any]) -> dict[str, Any]:
        return {spec.name: _jsonable(value) for spec, value in zip(self.outputs, results)}


def load_golden(path: str) -> list[tuple[str, object]]:
    """(name, inputs) of every case in golden.json: {"cases": [{"name": ..., "inputs": {...}}, ...]}."""
    try:
        document = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise FatalError(f"cannot read golden file {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise FatalError(f"golden file {path} is not valid JSON: {one_line(exc)}") from None
    cases = document.get("cases") if isinstance(document, dict) else None
    if not isinstance(cases, list) or not cases:
        raise FatalError(
            f'golden file {path} has no cases; expected {{"cases": [{{"name": ..., "inputs": ...}}]}}'
        )
    result = []
    for i, case in enumerate(cases):
        if not (
            isinstance(case, dict)
            and isinstance(case.get("name"), str)
            and isinstance(case.get("inputs"), dict)
        ):
            raise FatalError(f'golden file {path}: case {i} needs a string "name" and an object "inputs"')
        result.append((case["name"], case["inputs"]))
    return result


def fit_case(model: Model, name: str, inputs: object, max_batch: int) -> dict[str, np.ndarray]:
    try:
        return model.prepare(inputs, max_batch)
    except ApiError as exc:
        raise FatalError(f"golden case '{name}' does not fit the model: {exc.message}") from None


# ---------------------------------------------------------------------------------------------------
# Data contract and drift


DATA_CONTRACT_FORMAT = "airgap.data-contract/v1"
DRIFT_WINDOW = 1000  # rows of recent requests the drift index is measured over
PSI_FLOOR = 1e-4
MAX_LISTED = 20  # bad cells a refusal names; the count says how many there were
# Up to this many rows a plain loop over the row's values beats numpy, whose every call costs about
# a microsecond whatever its size: a one-row request would pay ten of them.
SMALL_BATCH = 4
FOLD_AFTER = 64  # per-thread counters kept before a new thread folds in those of ended ones
RULES = ("min", "max", "int", "bool", "allowed", "missing", "type", "finite")
WARNABLE = frozenset(("min", "max", "int", "bool", "allowed"))  # a warn-mode feature answers these
CONTRACT_WARNING_HEADER = "Airgap-Contract-Warning"
NUMERIC_KINDS = ("float", "int", "bool")


def _num_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def contract_warning_header(warnings: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The response header that flags an answer given to a row outside a warn-mode feature's contract:
    ``Airgap-Contract-Warning: income=max, age=int``; None when there is nothing to flag."""
    if not warnings:
        return None
    return CONTRACT_WARNING_HEADER, ", ".join(f"{f}={r}" for f, r in warnings)


class ContractError(ApiError):
    """A 400 out_of_contract naming every bad cell of the batch (the first MAX_LISTED in the message and
    in ``cells``; ``count`` is how many there were), so a caller fixes a batch in one round trip."""

    def __init__(self, message: str, cells: list[dict[str, Any]], count: int) -> None:
        super().__init__(400, "out_of_contract", message)
        self.cells, self.count = cells, count


class _Tally:
    """One thread's counters: written only by that thread, summed by the scrape. No lock on the
    request path, and no increment is lost to another thread's."""

    __slots__ = ("thread", "refused", "warned", "unseen", "answers")

    def __init__(self, features: int, answers: list[int]) -> None:
        self.thread = threading.current_thread()
        self.refused = [[0] * len(RULES) for _ in range(features)]
        self.warned = [[0] * len(RULES) for _ in range(features)]
        self.unseen = [0] * features
        self.answers = [[0] * n for n in answers]


class DataGuard:
    """Refuses rows outside the signed data contract and keeps the recent rows' bins for drift.

    The model answers with confidence for any number; the contract is what the model was built and
    tested on. A row outside it is the caller's error (400 naming every bad cell: feature, value and
    rule), unless its feature is in ``warn`` mode: then the answer is given, flagged and counted.
    Every feature is checked by its declared type whatever the tensor's dtype: the numbers of a
    string tensor are read as numbers. The check is vectorised over the batch, and nothing on the
    request path takes a lock: counters are per thread, the drift window is a ring of per-request
    slots claimed with an atomic counter, and the scrape merges both.
    """

    def __init__(self, doc: object, model: Model) -> None:
        if not isinstance(doc, dict) or doc.get("format") != DATA_CONTRACT_FORMAT:
            raise FatalError(f"the data contract is not {DATA_CONTRACT_FORMAT}")
        spec = next((s for s in model.inputs if s.name == doc.get("input")), None)
        if spec is None:
            names = ", ".join(s.name for s in model.inputs)
            raise FatalError(
                f"the data contract names input {doc.get('input')!r}; the model's inputs are {names}"
            )
        features = doc.get("features")
        if not isinstance(features, list) or not features or not all(isinstance(f, dict) for f in features):
            raise FatalError("the data contract lists no features")
        if len(spec.shape) != 2 or (isinstance(spec.shape[1], int) and spec.shape[1] != len(features)):
            raise FatalError(
                f"the data contract has {len(features)} features but input '{spec.name}' is {spec.shape_text()}: "
                "a contract describes the columns of a [batch, features] input"
            )
        self.input = spec.name
        self.features = features
        self.names = [str(f.get("name")) for f in features]
        self.dtype = spec.dtype
        kinds = [str(f.get("type", "float")) for f in features]
        nullable = [bool(f.get("nullable")) for f in features]
        for name, kind, null in zip(self.names, kinds, nullable):
            if kind not in (*NUMERIC_KINDS, "category"):
                raise FatalError(f"the data contract gives feature '{name}' the unknown type {kind!r}")
            if null and not (spec.dtype == "str" or spec.dtype.startswith("float")):
                raise FatalError(
                    f"the data contract lets feature '{name}' be missing, but input '{spec.name}' is "
                    f"{spec.dtype}, which has no missing value; make the input float or the feature not nullable"
                )
        # The request's JSON is read column by column by the declared types from now on.
        model.inputs = [
            replace(s, columns=Columns(s.dtype, list(zip(self.names, kinds, nullable))))
            if s.name == spec.name
            else s
            for s in model.inputs
        ]
        self.warn = np.array([f.get("mode") == "warn" for f in features])
        self.nullable = np.array(nullable)
        self.numeric = [i for i, k in enumerate(kinds) if k in NUMERIC_KINDS]
        self.categories = [i for i, k in enumerate(kinds) if k == "category"]
        # Bounds through the tensor's dtype: a float32 tensor's 0.1 is the contract's 0.1.
        bound_type = np.dtype(spec.dtype) if spec.dtype.startswith("float") else np.dtype(np.float64)

        def bound(key: str, default: float, col: int) -> float:
            value = features[col].get(key)
            if kinds[col] == "bool":
                value = 0.0 if key == "min" else 1.0
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return default
            return float(np.array(value, dtype=np.float64).astype(bound_type))

        self._lo = np.array([bound("min", -math.inf, c) for c in self.numeric], dtype=np.float64)
        self._hi = np.array([bound("max", math.inf, c) for c in self.numeric], dtype=np.float64)
        self._whole = [k for k, c in enumerate(self.numeric) if kinds[c] in ("int", "bool")]
        self._num_nullable = self.nullable[self.numeric] if self.numeric else np.zeros(0, dtype=bool)
        self._allowed = [
            frozenset(str(a) for a in (features[c].get("allowed") or [])) for c in self.categories
        ]
        self._tallies: list[_Tally] = []
        self._local = threading.local()
        self._scrape = threading.Lock()  # two scrapes at once fold a finished thread once; never a request

        # Drift: the reference's bins per feature, plus a bin for missing and one for unseen values.
        baseline = {b.get("name"): b for b in doc.get("baseline", []) if isinstance(b, dict)}
        self._baseline: list[Any] = [baseline.get(n) for n in self.names]
        self._expected: list[np.ndarray | None] = []
        for base in self._baseline:
            if base is None:
                self._expected.append(None)
                continue
            shares = np.array(base["shares"], dtype=np.float64)
            rate = float(base.get("missing_rate") or 0.0)
            self._expected.append(np.concatenate([shares * (1.0 - rate), [rate, 0.0]]))
        numeric_edges = [
            (k, base["edges"])
            for k, c in enumerate(self.numeric)
            if (base := self._baseline[c]) is not None and base.get("kind") != "category"
        ]
        width = max((len(e) for _, e in numeric_edges), default=0)
        self._binned = [k for k, _ in numeric_edges]  # positions in self.numeric
        self._edges = np.full((len(numeric_edges), max(width, 1)), math.inf)
        for row, (_, edges) in enumerate(numeric_edges):
            self._edges[row, : len(edges)] = edges
        self._missing_bin = np.array([len(e) + 1 for _, e in numeric_edges], dtype=np.int64)
        self._category_index: list[dict[str, int] | None] = [
            {v: i for i, v in enumerate(base["categories"])}
            if (base := self._baseline[c]) is not None and base.get("kind") == "category"
            else None
            for c in self.categories
        ]
        # The same for the loops of a few rows: (column, bounds), (column, edges, missing bin), lookups.
        self._bounds = [(c, float(lo), float(hi)) for c, lo, hi in zip(self.numeric, self._lo, self._hi)]
        self._whole_cols = [self.numeric[k] for k in self._whole]
        self._bisect = [
            (self.numeric[k], [float(e) for e in edges], len(edges) + 1) for k, edges in numeric_edges
        ]
        self._lookup = [
            (col, index) for col, index in zip(self.categories, self._category_index) if index is not None
        ]
        self._ring: list[tuple[int, Any] | None] = [None] * DRIFT_WINDOW
        self._cursor = itertools.count()

        self._predictions: list[tuple[int, str, dict[str, int], list[str], list[float]]] = []
        names = [s.name for s in model.outputs]
        for p in doc.get("predictions", []):
            if isinstance(p, dict) and p.get("output") in names:
                values = [str(v) for v in p["values"]]
                self._predictions.append(
                    (
                        names.index(p["output"]),
                        p["output"],
                        {v: i for i, v in enumerate(values)},
                        values,
                        [float(x) for x in p["shares"]],
                    )
                )
        self._answer_ring: list[tuple[int, list[list[int]]] | None] = [None] * DRIFT_WINDOW
        self._answer_cursor = itertools.count()
        # The counts of threads that have ended, folded in at the scrape.
        self._retired = _Tally(len(features), [len(v) + 1 for _, _, _, v, _ in self._predictions])

    # ---- the request path (no lock)

    def _tally(self) -> _Tally:
        tally: _Tally | None = getattr(self._local, "tally", None)
        if tally is None:
            tally = _Tally(len(self.features), [len(v) + 1 for _, _, _, v, _ in self._predictions])
            self._local.tally = tally
            # A thread per connection: fold the ended ones even if nobody scrapes. Never waits: when
            # a scrape holds the lock, it is folding them anyway.
            if len(self._tallies) >= FOLD_AFTER and self._scrape.acquire(blocking=False):
                try:
                    self._fold_finished()
                finally:
                    self._scrape.release()
            self._tallies.append(tally)  # list.append is atomic
        return tally

    def _fold_finished(self) -> None:
        """Adds the counts of threads that have ended to the retired ones (the caller holds _scrape)."""
        retired = self._retired
        for tally in list(self._tallies):
            if not tally.thread.is_alive():  # it can no longer write: its counts are final
                _add(retired, retired, tally)
                self._tallies.remove(tally)

    def _numbers(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The numeric features' columns as float64, where each is missing, and (a string tensor
        only) where a text is not a number at all."""
        if array.dtype.kind != "O":
            values = array[:, self.numeric] if len(self.numeric) != array.shape[1] else array
            values = values.astype(np.float64, copy=False)
            return values, np.isnan(values), None
        texts = array[:, self.numeric]
        missing = texts == ""
        try:
            values = np.where(missing, "nan", texts).astype(np.float64)
            return values, missing, None
        except (ValueError, TypeError):  # some cell is no number: find each, the rest as read
            values = np.empty(texts.shape, dtype=np.float64)
            not_number = np.zeros(texts.shape, dtype=bool)
            for (r, k), text in np.ndenumerate(texts):
                try:
                    values[r, k] = math.nan if text == "" else float(text)
                except (ValueError, TypeError):
                    values[r, k], not_number[r, k] = math.nan, True
            return values, missing, not_number

    def check(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        """Raises the 400 naming every value outside the contract of an ``enforce`` feature; answers
        the (feature, rule) pairs a ``warn`` feature broke, to be flagged (``contract_warning_header``)."""
        array = feeds[self.input]
        if array.ndim != 2 or array.shape[1] != len(self.features):
            raise ApiError(
                400,
                "out_of_contract",
                f"input '{self.input}' needs {len(self.features)} columns, one per feature",
            )
        values = missing = not_number = rows = None
        bad: list[tuple[int, int, str]] = []  # (row, column, rule)
        if array.shape[0] <= SMALL_BATCH and array.dtype.kind != "O":
            rows = array.tolist()
        if self.numeric and (rows is None or not self._rows_ok(rows)):
            values, missing, not_number = self._numbers(array)
            ok = (values >= self._lo) & (values <= self._hi)
            if self._whole:
                whole = values[:, self._whole]
                ok[:, self._whole] &= whole == np.floor(whole)
            if not ok.all():
                bad += self._numeric_faults(values, missing, not_number, ok)
        for k, col in enumerate(self.categories):
            allowed = self._allowed[k]
            column = [row[col] for row in rows] if rows is not None else array[:, col].tolist()
            texts = [v if type(v) is str else _num_text(v) for v in column]
            if not all(t in allowed for t in texts):
                null_ok = bool(self.nullable[col])
                for r, t in enumerate(texts):
                    if t in allowed:
                        continue
                    if t in ("", "nan"):
                        if not null_ok:
                            bad.append((r, col, "missing"))
                    else:
                        bad.append((r, col, "allowed"))
        self._local.checked = (array, values, missing, rows)
        if not bad:
            return []
        return self._judge(array, values, bad)

    def _rows_ok(self, rows: list[list[Any]]) -> bool:
        """A few rows inside every numeric bound and whole where they must be (else: the masks)."""
        for row in rows:
            for c, low, high in self._bounds:
                if not low <= row[c] <= high:  # NaN (a missing value) fails too
                    return False
            for c in self._whole_cols:
                if not float(row[c]).is_integer():
                    return False
        return True

    def _numeric_faults(
        self, values: np.ndarray, missing: np.ndarray, not_number: np.ndarray | None, ok: np.ndarray
    ) -> list[tuple[int, int, str]]:
        """Every failing numeric cell and the rule it breaks (the rare path: masks rule by rule)."""
        out = []
        null_ok = self._num_nullable
        for r, k in zip(*np.nonzero(~ok)):
            col, value = self.numeric[k], values[r, k]
            if not_number is not None and not_number[r, k]:
                rule = "type"
            elif missing[r, k]:
                if null_ok[k]:
                    continue
                rule = "missing"
            elif not math.isfinite(value):
                rule = "finite"
            elif value < self._lo[k]:
                rule = "bool" if self.features[col].get("type") == "bool" else "min"
            elif value > self._hi[k]:
                rule = "bool" if self.features[col].get("type") == "bool" else "max"
            else:
                rule = "bool" if self.features[col].get("type") == "bool" else "int"
            out.append((int(r), col, rule))
        return out

    def _judge(
        self, array: np.ndarray, values: np.ndarray | None, bad: list[tuple[int, int, str]]
    ) -> list[tuple[str, str]]:
        tally = self._tally()
        refused = [(r, c, rule) for r, c, rule in bad if not (self.warn[c] and rule in WARNABLE)]
        if not refused:
            warned = sorted({(c, rule) for _, c, rule in bad})
            for c, rule in warned:
                tally.warned[c][RULES.index(rule)] += 1
            return [(self.names[c], rule) for c, rule in warned]
        for c, rule in {(c, rule) for _, c, rule in refused}:
            tally.refused[c][RULES.index(rule)] += 1
        refused.sort()
        cells = []
        for r, c, rule in refused[:MAX_LISTED]:
            value = array[r, c]
            if values is not None and rule != "type" and c in self.numeric:  # a number, as read
                value = values[r, self.numeric.index(c)]
            text = _value_text(value)
            cells.append(
                {
                    "row": r,
                    "column": c,
                    "feature": self.names[c],
                    "value": text,
                    "rule": rule,
                    "message": f"{self.input}[{r}][{c}] ({self.names[c]}) = {text} "
                    + self._why(self.features[c], rule),
                }
            )
        listed = "; ".join(cell["message"] for cell in cells)
        more = len(refused) - len(cells)
        rows = len({r for r, _, _ in refused})
        tail = f"; and {more} more ({len(refused)} values in {rows} rows)" if more else ""
        raise ContractError(
            f"{listed}{tail}; the model is only trusted inside its data contract (GET /v1/contract)",
            cells,
            len(refused),
        )

    @staticmethod
    def _why(feature: dict[str, Any], rule: str) -> str:
        if rule == "min":
            return f"is below the contract's minimum {_num_text(feature['min'])}"
        if rule == "max":
            return f"is above the contract's maximum {_num_text(feature['max'])}"
        if rule == "int":
            return "is not a whole number (the contract says int)"
        if rule == "bool":
            return "is not true or false, 0 or 1 (the contract says bool)"
        if rule == "missing":
            return "is missing, and the contract does not allow missing values"
        if rule == "type":
            return f"is not a number (the contract says {feature.get('type', 'float')})"
        if rule == "finite":
            return "is not a finite number"
        shown = ", ".join(str(a) for a in (feature.get("allowed") or [])[:8])
        return f"is not one of the allowed values ({shown})"

    def observe(self, feeds: dict[str, np.ndarray]) -> None:
        """Adds an answered request's rows to the drift window: each row's bin per feature (missing
        and never-seen values in bins of their own), and counts the values the reference never had."""
        array = feeds[self.input]
        checked = getattr(self._local, "checked", None)
        if checked is not None and checked[0] is array:
            values, missing, rows = checked[1], checked[2], checked[3]
        elif array.shape[0] <= SMALL_BATCH and array.dtype.kind != "O":
            values, missing, rows = None, None, array.tolist()
        elif self.numeric:
            (values, missing, _), rows = self._numbers(array), None
        else:
            values = missing = rows = None
        if values is None and rows is not None:
            self._remember(self._row_codes(rows))
            return
        n = array.shape[0]
        codes = np.full((n, len(self.features)), -1, dtype=np.int64)
        if self._binned and values is not None and missing is not None:
            sub = values[:, self._binned] if len(self._binned) != values.shape[1] else values
            bins = (sub[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
            gone = missing[:, self._binned] if len(self._binned) != missing.shape[1] else missing
            if gone.any():
                bins = np.where(gone, self._missing_bin, bins)
            codes[:, [self.numeric[k] for k in self._binned]] = bins
        unseen = None
        for k, col in enumerate(self.categories):
            index = self._category_index[k]
            if index is None:
                continue
            other = len(index) + 1
            column = [v if type(v) is str else _num_text(v) for v in array[:, col].tolist()]
            found = [len(index) if t in ("", "nan") else index.get(t, other) for t in column]
            codes[:, col] = found
            if other in found:
                unseen = unseen or self._tally().unseen
                unseen[col] += found.count(other)
        self._remember(codes)

    def _row_codes(self, rows: list[list[Any]]) -> list[list[int]]:
        """observe for a few rows, value by value: bisect on the reference's edges, dict lookups."""
        out = []
        unseen = None
        width = len(self.features)
        for row in rows:
            codes = [-1] * width
            for c, edges, missing_bin in self._bisect:
                v = row[c]
                codes[c] = missing_bin if v != v else bisect.bisect_right(edges, v)
            for col, index in self._lookup:
                v = row[col]
                text = v if type(v) is str else _num_text(v)
                if text in ("", "nan"):
                    codes[col] = len(index)
                else:
                    code = codes[col] = index.get(text, len(index) + 1)
                    if code > len(index):
                        unseen = unseen or self._tally().unseen
                        unseen[col] += 1
            out.append(codes)
        return out

    def _remember(self, codes: Any) -> None:
        slot = next(self._cursor)  # atomic: two threads never claim one slot
        self._ring[slot % DRIFT_WINDOW] = (slot, codes)

    def observe_outputs(self, results: list[Any]) -> None:
        """Counts the answered labels of each output with a reference distribution ("other" past it)."""
        if not self._predictions:
            return
        tally = self._tally()
        per_output: list[list[int]] = []
        for k, (index, _, positions, values, _) in enumerate(self._predictions):
            answered = results[index]
            if not isinstance(answered, np.ndarray) or answered.ndim != 1:
                per_output.append([])
                continue
            other = len(values)
            codes = [
                positions.get(v if isinstance(v, str) else _num_text(v), other) for v in answered.tolist()
            ]
            totals = tally.answers[k]
            for c in codes:
                totals[c] += 1
            per_output.append(codes)
        slot = next(self._answer_cursor)  # one slot per request, every output's answers in it
        self._answer_ring[slot % DRIFT_WINDOW] = (slot, per_output)

    # ---- the scrape

    def _window(self) -> np.ndarray:
        """The codes of the newest DRIFT_WINDOW rows, from the newest requests back."""
        entries = sorted((e for e in list(self._ring) if e is not None), key=lambda e: -e[0])
        kept, rows = [], 0
        for _, codes in entries:
            kept.append(np.asarray(codes, dtype=np.int64)[: DRIFT_WINDOW - rows])
            rows += len(kept[-1])
            if rows >= DRIFT_WINDOW:
                break
        if not kept:
            return np.zeros((0, len(self.features)), dtype=np.int64)
        return np.concatenate(kept)

    def drift(self) -> list[tuple[str, float, int, float]]:
        """Per feature with a baseline: its population stability index over the window (missing and
        unseen values as bins of their own), the rows, and the share of them that was missing."""
        window = self._window()
        out = []
        for col, (name, expected) in enumerate(zip(self.names, self._expected)):
            if expected is None:
                continue
            column = window[:, col]
            column = column[column >= 0]
            total = len(column)
            if total == 0:
                continue
            counts = np.bincount(column, minlength=len(expected))[: len(expected)]
            actual = np.maximum(counts / total, PSI_FLOOR)
            e = np.maximum(expected, PSI_FLOOR)
            psi = float(np.sum((actual - e) * np.log(actual / e)))
            out.append((name, psi, total, float(counts[len(expected) - 2] / total)))
        return out

    def _merged(self) -> _Tally:
        """Every thread's counters summed; those of finished threads folded in once and dropped."""
        with self._scrape:
            self._fold_finished()
            total = _Tally.__new__(_Tally)
            _add(total, self._retired, None)
            for tally in list(self._tallies):
                _add(total, total, tally)
            return total

    def render(self) -> list[str]:
        """Prometheus lines for out-of-contract counts, warnings, unseen values and drift."""
        merged = self._merged()

        def by_rule(rows: list[list[int]]) -> list[str]:
            return [
                f'{{feature="{_label(self.names[c])}",rule="{rule}"}} {n}'
                for c, row in enumerate(rows)
                for rule, n in zip(RULES, row)
                if n
            ]

        lines = [
            "# HELP airgap_out_of_contract_total Requests refused for a value outside the data contract.",
            "# TYPE airgap_out_of_contract_total counter",
            *(f"airgap_out_of_contract_total{s}" for s in by_rule(merged.refused)),
            "# HELP airgap_contract_warnings_total Requests answered with a value outside a warn-mode feature's contract.",
            "# TYPE airgap_contract_warnings_total counter",
            *(f"airgap_contract_warnings_total{s}" for s in by_rule(merged.warned)),
            "# HELP airgap_unseen_categories_total Answered rows whose category value the reference never had.",
            "# TYPE airgap_unseen_categories_total counter",
            *(
                f'airgap_unseen_categories_total{{feature="{_label(self.names[c])}"}} {merged.unseen[c]}'
                for c in self.categories
                if self._baseline[c] is not None
            ),
            "# HELP airgap_feature_drift_psi Population stability index of recent rows against the reference.",
            "# TYPE airgap_feature_drift_psi gauge",
        ]
        drift = self.drift()
        lines += [f'airgap_feature_drift_psi{{feature="{_label(n)}"}} {p:.6f}' for n, p, _, _ in drift]
        lines += [
            "# HELP airgap_feature_drift_window_rows Rows the drift index is computed over (at most 1000).",
            "# TYPE airgap_feature_drift_window_rows gauge",
            *(f'airgap_feature_drift_window_rows{{feature="{_label(n)}"}} {t}' for n, _, t, _ in drift),
            "# HELP airgap_feature_missing_ratio Share of the drift window's rows missing the feature.",
            "# TYPE airgap_feature_missing_ratio gauge",
            *(f'airgap_feature_missing_ratio{{feature="{_label(n)}"}} {m:.6f}' for n, _, _, m in drift),
        ]
        return lines + self._prediction_lines(merged)

    def _prediction_lines(self, merged: _Tally) -> list[str]:
        lines = [
            "# HELP airgap_predictions_total Answers per output and value (values past the reference: other).",
            "# TYPE airgap_predictions_total counter",
        ]
        psi_lines = [
            "# HELP airgap_prediction_drift_psi Population stability index of the last 1000 answers per output.",
            "# TYPE airgap_prediction_drift_psi gauge",
        ]
        row_lines = [
            "# HELP airgap_prediction_drift_window_rows Answers the prediction drift index is computed over.",
            "# TYPE airgap_prediction_drift_window_rows gauge",
        ]
        entries = sorted((e for e in list(self._answer_ring) if e is not None), key=lambda e: -e[0])
        for k, (_, output, _, values, shares) in enumerate(self._predictions):
            for value, n in zip([*values, "other"], merged.answers[k]):
                lines.append(
                    f'airgap_predictions_total{{output="{_label(output)}",value="{_label(value)}"}} {n}'
                )
            window: list[int] = []
            for _, per_output in entries:
                if len(window) >= DRIFT_WINDOW:
                    break
                window += per_output[k][: DRIFT_WINDOW - len(window)]
            if not window:
                continue
            counts = np.bincount(np.array(window, dtype=np.int64), minlength=len(values) + 1)
            expected = np.maximum(np.array([*shares, max(0.0, 1.0 - sum(shares))]), PSI_FLOOR)
            actual = np.maximum(counts / len(window), PSI_FLOOR)
            psi = float(np.sum((actual - expected) * np.log(actual / expected)))
            psi_lines.append(f'airgap_prediction_drift_psi{{output="{_label(output)}"}} {psi:.6f}')
            row_lines.append(
                f'airgap_prediction_drift_window_rows{{output="{_label(output)}"}} {len(window)}'
            )
        return lines + psi_lines + row_lines


def _value_text(value: object) -> str:
    """A cell as an error message shows it: numbers as numbers, texts quoted, a missing value as null."""
    if isinstance(value, str):
        return "null" if value == "" else json.dumps(value)[:40]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return _num_text(float(value))  # type: ignore[arg-type]


def _add(into: _Tally, base: _Tally, more: _Tally | None) -> None:
    """``into`` = ``base`` + ``more``, counter by counter (``into`` may be ``base``)."""

    def plus(a: list[int], b: list[int] | None) -> list[int]:
        return list(a) if b is None else [x + y for x, y in zip(a, b)]

    into.refused = [plus(a, more.refused[i] if more else None) for i, a in enumerate(base.refused)]
    into.warned = [plus(a, more.warned[i] if more else None) for i, a in enumerate(base.warned)]
    into.unseen = plus(base.unseen, more.unseen if more else None)
    into.answers = [plus(a, more.answers[i] if more else None) for i, a in enumerate(base.answers)]


def load_data_contract(path: str, model: Model) -> DataGuard | None:
    """The guard for the contract at ``path``, ``None`` when the bundle has none (older bundles)."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(4 << 20), parse_constant=_reject_constant)
    except (OSError, ValueError) as exc:
        raise FatalError(f"data contract {path} is unreadable: {one_line(exc)}") from None
    return DataGuard(doc, model)


# ---------------------------------------------------------------------------------------------------
# Metrics


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and the inference histogram, behind one lock: handlers run on many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._errors = 0
        self._buckets = [0] * len(INFERENCE_BUCKETS)
        self._sum = 0.0
        self._count = 0
        self._latency: dict[str, list[float]] = {}  # path -> bucket counts..., sum, count

    def count_request(self, path: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self._requests[(path, status)] = self._requests.get((path, status), 0) + 1
            if status >= 400:
                self._errors += 1
            if seconds is not None:
                row = self._latency.setdefault(path, [0.0] * (len(REQUEST_BUCKETS) + 2))
                for i, bound in enumerate(REQUEST_BUCKETS):
                    if seconds <= bound:
                        row[i] += 1
                row[-2] += seconds
                row[-1] += 1

    def observe_inference(self, seconds: float) -> None:
        with self._lock:
            self._sum += seconds
            self._count += 1
            for i, bound in enumerate(INFERENCE_BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1

    def render(self, info: dict[str, str], ready: bool, in_flight: int) -> str:
        with self._lock:
            requests, errors = sorted(self._requests.items()), self._errors
            buckets, total, count = list(self._buckets), self._sum, self._count
            latency = sorted((p, list(row)) for p, row in self._latency.items())
        lines = [
            "# HELP airgap_request_seconds Time from a request's first byte to its answer, by path.",
            "# TYPE airgap_request_seconds histogram",
        ]
        for path, row in latency:
            p = _label(path)
            lines += [
                f'airgap_request_seconds_bucket{{path="{p}",le="{b:g}"}} {int(n)}'
                for b, n in zip(REQUEST_BUCKETS, row)
            ]
            lines += [
                f'airgap_request_seconds_bucket{{path="{p}",le="+Inf"}} {int(row[-1])}',
                f'airgap_request_seconds_sum{{path="{p}"}} {row[-2]:.9f}',
                f'airgap_request_seconds_count{{path="{p}"}} {int(row[-1])}',
            ]
        lines += [
            "# HELP airgap_requests_total HTTP requests answered, by path and status code.",
            "# TYPE airgap_requests_total counter",
            *(f'airgap_requests_total{{path="{_label(p)}",code="{c}"}} {n}' for (p, c), n in requests),
            "# HELP airgap_request_errors_total HTTP requests answered with a 4xx or 5xx status.",
            "# TYPE airgap_request_errors_total counter",
            f"airgap_request_errors_total {errors}",
            "# HELP airgap_inference_seconds Time in onnxruntime per predict request (queueing excluded).",
            "# TYPE airgap_inference_seconds histogram",
            *(
                f'airgap_inference_seconds_bucket{{le="{b:g}"}} {n}'
                for b, n in zip(INFERENCE_BUCKETS, buckets)
            ),
            f'airgap_inference_seconds_bucket{{le="+Inf"}} {count}',
            f"airgap_inference_seconds_sum {total:.9f}",
            f"airgap_inference_seconds_count {count}",
            "# HELP airgap_model_info The model served, and the onnxruntime serving it.",
            "# TYPE airgap_model_info gauge",
            "airgap_model_info{" + ",".join(f'{k}="{_label(v)}"' for k, v in info.items()) + "} 1",
            "# HELP airgap_ready 1 once the warm-up inference succeeded.",
            "# TYPE airgap_ready gauge",
            f"airgap_ready {int(ready)}",
            "# HELP airgap_requests_in_flight Requests being handled, this scrape included.",
            "# TYPE airgap_requests_in_flight gauge",
            f"airgap_requests_in_flight {in_flight}",
        ]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# HTTP


class StopSignal:
    """Wakes the main thread on SIGTERM/SIGINT or when another thread gives up, through a pipe.

    Not threading.Event: the kernel may deliver a signal to any thread (onnxruntime's included), and then
    the main thread's blocking wait is never interrupted; Python's wakeup fd writes to the pipe whichever
    thread receives it. And a handler that took a lock the interrupted main thread held would deadlock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.exit_code: int | None = None
        self.reason = ""

    def install(self, *signals: signal.Signals) -> None:
        """Call from the main thread: Python runs signal handlers there, and only there."""
        for sig in signals:
            signal.signal(sig, lambda signum, _frame: self.trigger(0, signal.Signals(signum).name))
        signal.set_wakeup_fd(self._write)

    def trigger(self, exit_code: int, reason: str) -> None:
        if self.exit_code is None:
            self.exit_code, self.reason = exit_code, reason
        with contextlib.suppress(BlockingIOError):  # the pipe is full: the main thread is waking anyway
            os.write(self._write, b"x")

    def wait(self) -> int:
        while self.exit_code is None:  # a byte from the wakeup fd comes before the Python handler has run
            os.read(self._read, 64)
        return self.exit_code


class App:
    """What the handlers share: configuration, the model once loaded, readiness, metrics."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model: Model | None = None
        self.guard: DataGuard | None = None
        self.contract_doc: bytes | None = None
        self.ready = threading.Event()
        self.metrics = Metrics()
        self.stop = StopSignal()
        self.when_ready: Callable[[], None] | None = None
        self._slots = threading.BoundedSemaphore(config.threads)

    def info(self) -> dict[str, str]:
        return {
            "name": self.config.model_name,
            "version": self.config.model_version,
            "onnxruntime": ort.__version__,
        }

    def infer(self, model: Model, feeds: dict[str, np.ndarray]) -> list[Any]:
        with self._slots:
            start = time.perf_counter()
            try:
                results = model.run(feeds)
            except OrtInvalidArgument as exc:  # e.g. two inputs that disagree on a shared dimension
                raise ApiError(400, "bad_shape", f"the model refused these inputs: {one_line(exc)}") from None
            self.metrics.observe_inference(time.perf_counter() - start)
        return results

    def load_and_warm_up(self) -> None:
        """Runs on its own thread so that /healthz answers while a large model loads."""
        cfg = self.config
        try:
            start = time.perf_counter()
            model = Model(cfg.model_path, cfg.threads)
            self.guard = load_data_contract(cfg.data_contract_path, model)
            if self.guard is not None:
                with open(cfg.data_contract_path, "rb") as f:
                    self.contract_doc = f.read(4 << 20)
            if cfg.golden_path:
                name, inputs = load_golden(cfg.golden_path)[0]
                feeds = fit_case(model, name, inputs, cfg.max_batch)
            else:
                name, feeds = "zeros", {spec.name: spec.zeros() for spec in model.inputs}
            with self._slots:
                model.run(feeds)
            self.model = model
            log("ready", warm_up_case=name, seconds=round(time.perf_counter() - start, 3))
            self.ready.set()
            if self.when_ready is not None:
                self.when_ready()
        except FatalError as exc:
            log("fatal", message=str(exc))
            self.stop.trigger(2, "model unusable")
        except Exception as exc:  # onnxruntime failed the warm-up run: stop rather than serve half-ready
            log("fatal", message=f"warm-up inference failed: {one_line(exc)}")
            self.stop.trigger(2, "warm-up failed")


class ConnectionTracker:
    """Open connections and whether each is inside a request, so that shutdown can close the idle ones
    and wait for the busy ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: dict[socket.socket, bool] = {}
        self.draining = False  # once set, every connection closes after the answer it is giving

    def opened(self, sock: socket.socket) -> None:
        with self._cond:
            self._busy[sock] = False

    def started(self, sock: socket.socket) -> None:
        with self._cond:
            if sock in self._busy:
                self._busy[sock] = True

    def idle(self, sock: socket.socket) -> None:
        """A keep-alive connection between requests: a drain may close it."""
        with self._cond:
            if sock in self._busy:
                self._busy[sock] = False
                self._cond.notify_all()

    def closed(self, sock: socket.socket) -> None:
        with self._cond:
            self._busy.pop(sock, None)
            self._cond.notify_all()

    def in_flight(self) -> int:
        with self._cond:
            return sum(self._busy.values())

    def drain(self, timeout: float) -> int:
        """Closes idle connections for reading and waits for the rest; returns how many were abandoned."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self.draining = True
            # An idle keep-alive connection first gets a moment to send its next request, answered
            # with "Connection: close": closed under a client that is sending, it would see a reset.
            grace = min(deadline, time.monotonic() + IDLE_GRACE_SECONDS)
            while not all(self._busy.values()) and time.monotonic() < grace:
                self._cond.wait(grace - time.monotonic())
            for sock, busy in self._busy.items():
                if not busy:
                    with contextlib.suppress(OSError):  # already closed by the client
                        sock.shutdown(socket.SHUT_RD)  # the handler's read returns EOF, and it ends
            while any(self._busy.values()) and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return sum(self._busy.values())


INSTANCE = os.urandom(8).hex()  # this process's id in /readyz (two containers may both be PID 1)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # idle connections must not keep the process alive after the drain

    def __init__(self, config: Config, app: App, listen: bool = True) -> None:
        self.app = app
        self.tracker = ConnectionTracker()
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        super().__init__((config.host, config.port), Handler, bind_and_activate=False)
        try:
            self.server_bind()
            if listen:
                self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def server_bind(self) -> None:
        # SO_REUSEPORT: a new version's server binds the port beside the running one, so that a switch
        # starts the new one before the old one stops and no request is refused in between.
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup that can hang for a long time on
        # a network without DNS; the name is only used for SERVER_NAME, which nothing here reads.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def take_backlog(self) -> None:
        """After the accept loop ended, before the socket closes: the connections the kernel already
        queued for it. With SO_REUSEPORT, a closed socket's queue is reset, not handed to the server
        beside it, so they are answered here (counted busy: the drain waits for them)."""
        self.socket.setblocking(False)
        while True:
            try:
                request, client_address = self.socket.accept()
            except OSError:  # none left
                return
            self.tracker.opened(request)
            self.tracker.started(request)
            ThreadingHTTPServer.process_request(self, request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.tracker.opened(request)  # before the thread starts, so that a drain cannot miss it
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            self.tracker.closed(request)


ROUTES = {
    "/v1/predict": "POST",
    "/v1/contract": "GET",
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
}


def _metrics_path(handler: BaseHTTPRequestHandler) -> str:
    """The path label: a route, or "other" (request paths are client-chosen: unbounded label values)."""
    path = urlsplit(getattr(handler, "path", "") or "").path
    return path if path in ROUTES else "other"


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "airgap-server/1"
    protocol_version = "HTTP/1.1"  # keep-alive: a client under load reuses its connection
    timeout = REQUEST_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; with Nagle's algorithm on, a kept-alive connection
        # waits for the client's delayed ACK (40 ms on Linux) before the body goes.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        self.server.tracker.idle(self.connection)

    def parse_request(self) -> bool:
        self._started = time.perf_counter()
        self._bytes_in = 0
        self._responded = False
        self._body_read = False
        self.server.tracker.started(self.connection)
        return super().parse_request()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        try:
            method = ROUTES.get(path)
            if method is None:
                raise ApiError(
                    404,
                    "not_found",
                    f"there is no {path}; use POST /v1/predict, GET /v1/contract, GET /healthz, GET /readyz or GET /metrics",
                )
            if self.command != method:
                raise ApiError(
                    405,
                    "method_not_allowed",
                    f"{path} takes {method}, not {self.command}",
                    (("Allow", method),),
                )
            {
                "/v1/predict": self._predict,
                "/healthz": self._healthz,
                "/readyz": self._readyz,
                "/metrics": self._metrics,
                "/v1/contract": self._contract,
            }[path]()
        except ApiError as exc:
            self._send_error(exc)
        except (ConnectionError, TimeoutError, socket.timeout):  # the client left; no one to answer
            self.close_connection = True
            if not self._responded:  # else _send has logged the request already
                self._log_request(None, 0, "client_disconnected")
        except Exception as exc:  # a bug: answer 500, log it on one line, keep serving
            log("internal_error", path=path, error=one_line(exc), traceback=traceback.format_exc())
            if not self._responded:
                self._send_error(ApiError(500, "internal", "the server failed on this request; see its log"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    # ---- endpoints

    def _healthz(self) -> None:
        self._send_json(200, {"status": "ok"})

    def _readyz(self) -> None:
        app = self.server.app
        if not app.ready.is_set():
            raise ApiError(503, "not_ready", "the model is loading or warming up; retry shortly")
        self._send_json(
            200, {"status": "ready", "model_version": app.config.model_version, "instance": INSTANCE}
        )

    def _metrics(self) -> None:
        app = self.server.app
        text = app.metrics.render(app.info(), app.ready.is_set(), self.server.tracker.in_flight())
        if app.guard is not None:
            text += "\n".join(app.guard.render()) + "\n"
        self._send(200, text.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")

    def _contract(self) -> None:
        app = self.server.app
        if not app.ready.is_set():
            raise ApiError(503, "not_ready", "the model is loading or warming up; retry shortly")
        if app.contract_doc is None:
            raise ApiError(404, "not_found", "this model was bundled without a data contract")
        self._send(200, app.contract_doc, "application/json")

    def _predict(self) -> None:
        app = self.server.app
        body = self._read_body(app.config.max_request_bytes)
        model = app.model
        if model is None or not app.ready.is_set():
            raise ApiError(
                503, "not_ready", "the model is loading or warming up; retry when GET /readyz answers 200"
            )
        try:
            document = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ApiError(
                400, "bad_json", f'the body is not valid JSON ({one_line(exc)}); send {{"inputs": {{...}}}}'
            ) from None
        if not isinstance(document, dict) or "inputs" not in document or len(document) != 1:
            raise ApiError(400, "bad_json", 'the body must be a JSON object with exactly one key, "inputs"')
        feeds = model.prepare(document["inputs"], app.config.max_batch)
        guard = app.guard
        if guard is not None:
            guard.check(feeds)
        results = app.infer(model, feeds)
        if guard is not None:
            guard.observe(feeds)
            guard.observe_outputs(results)
        self._send_json(
            200,
            {
                "model": app.config.model_name,
                "model_version": app.config.model_version,
                "outputs": model.outputs_json(results),
            },
        )

    # ---- plumbing

    def _read_body(self, limit: int) -> bytes:
        raw = self.headers.get("Content-Length")
        if raw is None or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # where this body ends, and the next request starts, is unknown
            raise ApiError(411, "length_required", "send the body with a Content-Length header, not chunked")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad_request", f"Content-Length {raw!r} is not a byte count") from None
        if length > limit:
            raise ApiError(
                413,
                "too_large",
                f"the body has {length} bytes but this server takes at most {limit} "
                "(AIRGAP_MAX_REQUEST_BYTES); send fewer rows per request",
            )
        body = self.rfile.read(length)
        self._bytes_in = len(body)
        self._body_read = True
        if len(body) != length:
            raise ConnectionError("client closed the connection before sending the whole body")
        return body

    def _send_json(
        self, status: int, document: object, error_code: str | None = None, headers: Any = ()
    ) -> None:
        payload = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send(status, payload, "application/json", error_code, headers)

    def _send_error(self, exc: ApiError) -> None:
        headers = getattr(self, "headers", None)  # absent when the request line itself was refused
        announced = headers is not None and (
            headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in headers
        )
        unread = announced and not getattr(self, "_body_read", False)
        if unread:
            self.close_connection = True  # the unread body would be taken for the next request
        self._send_json(
            exc.status, {"error": {"code": exc.code, "message": exc.message}}, exc.code, exc.headers
        )
        if unread:
            self._discard_unread_body()

    def _send(
        self, status: int, payload: bytes, content_type: str, error_code: str | None = None, headers: Any = ()
    ) -> None:
        self._responded = True
        # Counted before the answer leaves: a client that scrapes /metrics next must see this request.
        self.server.app.metrics.count_request(
            _metrics_path(self), status, time.perf_counter() - getattr(self, "_started", time.perf_counter())
        )
        sent = 0
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            if self.server.tracker.draining:  # stopping: this answer is the connection's last
                self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
                sent = len(payload)
        finally:
            self._log_request(status, sent, error_code)

    def _discard_unread_body(self) -> None:
        """After refusing a request without reading its body, drop what the client still sends, briefly:
        closing a socket with unread data makes the kernel reset the connection, and the client could
        lose the answer it has not read yet."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass

    def _log_request(self, status: int | None, bytes_out: int, error_code: str | None) -> None:
        log(
            "request",
            method=getattr(self, "command", None),
            path=urlsplit(getattr(self, "path", "") or "").path[:200],
            status=status,
            error=error_code,
            bytes_in=getattr(self, "_bytes_in", 0),
            bytes_out=bytes_out,
            ms=round((time.perf_counter() - getattr(self, "_started", time.perf_counter())) * 1000, 3),
            client=self.client_address[0],
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (malformed request line, unknown method, headers too long), as JSON."""
        self.close_connection = True
        if code == 501:  # a method no handler exists for
            error = ApiError(405, "method_not_allowed", f"{self.command} is not supported; use GET or POST")
        else:
            text = one_line(message or self.responses.get(code, ("error",))[0])
            error = ApiError(code, "bad_request", f"{text}; send a well-formed HTTP/1.1 request")
        self._send_error(error)

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # _send logs every request, as JSON

    def log_message(self, format: str, *args: Any) -> None:
        log("http", message=one_line(format % args), client=self.client_address[0])


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------------------------------------------
# Commands


def serve(config: Config) -> int:
    app = App(config)
    # Another server answers on this port already (a switch starts the new version beside the old
    # one, both with SO_REUSEPORT): bind now, so that a port that cannot be shared fails at once, but
    # take connections only once warm, or the kernel would hand this one requests it can only refuse.
    beside = config.port != 0 and _answering(config.host, config.port)
    try:
        server = Server(config, app, listen=not beside)
    except OSError as exc:
        log("fatal", message=f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
        return 1

    app.stop.install(signal.SIGTERM, signal.SIGINT)
    accepting = threading.Event()

    def accept() -> None:
        if beside:
            server.server_activate()
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
        ).start()
        accepting.set()
        host, port = server.server_address[:2]
        log("listening", host=host, port=port, model_path=config.model_path, **app.info())

    if beside:
        app.when_ready = accept
    else:
        accept()
    threading.Thread(target=app.load_and_warm_up, name="warm-up", daemon=True).start()

    exit_code = app.stop.wait()
    log("stopping", reason=app.stop.reason, in_flight=server.tracker.in_flight())
    if accepting.is_set():
        server.shutdown()  # the accept loop ends...
        server.take_backlog()  # ...what the kernel queued for it is answered...
    server.server_close()  # ...and the listening socket closes: new connections are refused
    abandoned = server.tracker.drain(DRAIN_SECONDS)
    log("stopped", exit_code=exit_code, abandoned_requests=abandoned)
    return exit_code


def _answering(host: str, port: int) -> bool:
    """Whether a server already takes connections on host:port."""
    try:
        with socket.create_connection((host if host not in ("0.0.0.0", "::") else "localhost", port), 1):
            return True
    except OSError:
        return False


def check(config: Config, model_path: str, golden_path: str | None) -> int:
    """The model's contract and the golden cases' outputs, as the bundler records them inside the image."""
    model = Model(model_path, config.threads)
    cases = []
    for name, inputs in load_golden(golden_path) if golden_path else []:
        feeds = fit_case(model, name, inputs, config.max_batch)
        try:
            results = model.run(feeds)
        except Exception as exc:  # onnxruntime's own exception types
            raise FatalError(f"golden case '{name}' failed in onnxruntime: {one_line(exc)}") from None
        cases.append({"name": name, "outputs": model.outputs_json(results)})
    document = {
        "onnxruntime": ort.__version__,
        "opset": model.opsets,
        "ir_version": model.ir_version,
        "inputs": [spec.contract() for spec in model.inputs],
        "outputs": [spec.contract() for spec in model.outputs],
        "cases": cases,
    }
    print(json.dumps(document, indent=2, allow_nan=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="airgap_server.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP (the default)")
    check_parser = commands.add_parser("check", help="print the model's contract and the golden outputs")
    check_parser.add_argument("--model", help="the .onnx file (default: AIRGAP_MODEL_PATH)")
    check_parser.add_argument("--golden", help="golden.json (default: AIRGAP_GOLDEN_PATH; none: no cases)")
    args = parser.parse_args(argv)

    if args.command == "check":
        try:
            config = Config.from_env()
            return check(config, args.model or config.model_path, args.golden or config.golden_path)
        except FatalError as exc:
            print(one_line(exc), file=sys.stderr)
            return 2
    try:
        config = Config.from_env()
    except FatalError as exc:
        log("fatal", message=str(exc))
        return 2
    code = serve(config)
    # Leave without interpreter teardown: daemon threads may still be inside onnxruntime's C++ code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
