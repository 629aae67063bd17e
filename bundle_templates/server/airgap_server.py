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
    AIRGAP_THREADS             onnxruntime intra-op threads      default 2
    AIRGAP_MAX_BATCH           largest first (batch) dimension a request may have, for inputs whose
                               first dimension is dynamic, and most rows one run takes from
                               requests queued while the model was busy   default 64
    AIRGAP_MAX_REQUEST_BYTES   largest request body               default 1048576 (1 MiB)
    AIRGAP_RUNNERS             model runs at once                 default 1
    AIRGAP_BATCH_WAIT_MS       how long a free runner waits for more rows   default 0
    AIRGAP_MAX_QUEUE           predictions waiting for the model before 503 overloaded   default 256
    AIRGAP_BACKLOG             listen backlog                     default 2048
    AIRGAP_PREPACK             onnxruntime's weight pre-packing: on, off or auto (default: off for a
                               model whose directory holds 1 GiB or more, whose weights then stay
                               shared, reclaimable file pages instead of a private copy as large)

Design: one asyncio event loop parses HTTP/1.1 and checks requests; onnxruntime runs on
AIRGAP_RUNNERS threads (it releases the GIL), taking the requests that queued meanwhile as one batch.
The socket has SO_REUSEPORT, so a second instance (a promote on host networking) shares the port.

HTTP/1.1 with keep-alive (every answer is JSON except /metrics)
    POST /v1/predict   {"inputs": {"<input>": nested lists}}
                       → 200 {"model": name, "model_version": v, "outputs": {"<output>": value}}
                       value: a tensor as nested lists, a sequence as a list, a map as an object with
                       string keys in key order, a ZipMap output as a list of objects; NaN and
                       infinities as the strings "NaN", "Infinity", "-Infinity" (docs/serving.md)
    GET  /v1/contract  → 200 the data contract (404 not_found when the bundle has none)
    GET  /healthz      → 200 {"status": "ok"} as soon as the process listens
    GET  /readyz       → 503 until the warm-up inference succeeded, then
                         200 {"status": "ready", "model_version": v, "instance": this process's id}
    GET  /metrics      → Prometheus text 0.0.4: airgap_requests_total{path,code},
                         airgap_request_errors_total, airgap_request_seconds{path} and
                         airgap_inference_seconds (histograms),
                         airgap_model_info{name,version,onnxruntime}, airgap_ready,
                         airgap_requests_in_flight, airgap_client_disconnects_total;
                         with a data contract also
                         airgap_out_of_contract_total{feature,rule},
                         airgap_feature_drift_psi{feature}, airgap_feature_drift_window_rows{feature},
                         airgap_predictions_total{output,value} and airgap_prediction_drift_psi{output}
                         (population stability index of the last 1000 answered rows, and answers,
                         against the reference's; no request payload is kept)

    Open Inference Protocol v2: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME[/versions/V]
    (metadata), .../ready; POST .../infer with JSON tensors or the binary tensor data extension
    (Inference-Header-Content-Length); inputs pass the same checks and data contract as /v1.

    A request must name exactly the model's inputs; values are JSON numbers (whole numbers for integer
    inputs, true/false for bool, strings for string inputs; NaN/Infinity refused), with the model's
    rank and fixed dimensions, no empty or ragged lists, and a first dimension <= AIRGAP_MAX_BATCH.

    Errors: {"error": {"code": C, "message": one sentence saying what to fix}} where C is
    bad_json, bad_shape, bad_dtype, unknown_input, missing_input, batch_too_large,
    out_of_contract (a value outside the data contract: the message names the feature, value, rule) (400),
    bad_request (400, malformed HTTP), length_required (411, no Content-Length), too_large (413,
    Content-Length above AIRGAP_MAX_REQUEST_BYTES, refused before reading), not_found (404),
    method_not_allowed (405), not_ready (503), overloaded (503, Retry-After: 1), internal (500);
    unknown_output (400, v2). v2 errors are {"error": message, "code": C}.

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
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

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
    runners: int = 1
    batch_wait_ms: float = 0.0
    max_queue: int = 256
    backlog: int = 2048
    prepack: str = "auto"

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
            runners=_int_env(env, "AIRGAP_RUNNERS", 1, 1, 64),
            batch_wait_ms=_int_env(env, "AIRGAP_BATCH_WAIT_MS", 0, 0, 1000),
            max_queue=_int_env(env, "AIRGAP_MAX_QUEUE", 256, 1, 1 << 20),
            backlog=_int_env(env, "AIRGAP_BACKLOG", 2048, 1, 65535),
            prepack=_choice_env(env, "AIRGAP_PREPACK", ("auto", "on", "off")),
        )


def _choice_env(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or choices[0]
    if raw not in choices:
        raise FatalError(f"{name} must be one of {', '.join(choices)}, not {raw!r}; fix the environment")
    return raw


PREPACK_OFF_FROM = 1 << 30  # bytes in the model's directory


def prepacks(model_path: str, setting: str) -> bool:
    """Whether onnxruntime pre-packs the weights. Pre-packing copies every packed weight into
    private memory: a model loaded from external data (mapped, shared with the page cache) then
    needs its size twice over, which a multi-gigabyte model cannot afford; below that it is the
    faster matrix product and is kept."""
    if setting != "auto":
        return setting == "on"
    directory = os.path.dirname(os.path.abspath(model_path))
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total < PREPACK_OFF_FROM


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

    def __init__(self, path: str, threads: int, prepack: str = "auto") -> None:
        if not os.path.isfile(path):
            raise FatalError(f"model file {path} does not exist; set AIRGAP_MODEL_PATH (check: --model)")
        self.ir_version, self.opsets = read_onnx_header(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.prepacked = prepacks(path, prepack)
        if not self.prepacked:
            options.add_session_config_entry("session.disable_prepacking", "1")
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
        self._disconnects = 0

    def count_disconnect(self) -> None:
        """A client that closed its connection before its answer was sent."""
        with self._lock:
            self._disconnects += 1

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
            disconnects = self._disconnects
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
            "# HELP airgap_client_disconnects_total Requests whose client closed the connection before the answer.",
            "# TYPE airgap_client_disconnects_total counter",
            f"airgap_client_disconnects_total {disconnects}",
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
    """What the connections share: configuration, the model once loaded, readiness, metrics."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model: Model | None = None
        self.guard: DataGuard | None = None
        self.contract_doc: bytes | None = None
        self.ready = threading.Event()
        self.metrics = Metrics()
        self.stop = StopSignal()
        self.when_ready: Callable[[], None] | None = None  # called from the warm-up thread

    def info(self) -> dict[str, str]:
        return {
            "name": self.config.model_name,
            "version": self.config.model_version,
            "onnxruntime": ort.__version__,
        }

    def load_and_warm_up(self) -> None:
        """Runs on its own thread so that /healthz answers while a large model loads."""
        cfg = self.config
        try:
            start = time.perf_counter()
            model = Model(cfg.model_path, cfg.threads, cfg.prepack)
            self.guard = load_data_contract(cfg.data_contract_path, model)
            if self.guard is not None:
                with open(cfg.data_contract_path, "rb") as f:
                    self.contract_doc = f.read(4 << 20)
            if cfg.golden_path:
                name, inputs = load_golden(cfg.golden_path)[0]
                feeds = fit_case(model, name, inputs, cfg.max_batch)
            else:
                name, feeds = "zeros", {spec.name: spec.zeros() for spec in model.inputs}
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


# ---------------------------------------------------------------------------------------------------
# Inference: off the event loop, with requests that queue while the model is busy run as one batch


def batchable(model: Model) -> bool:
    """Whether requests can share a run: every input and output a tensor whose first dimension is
    dynamic (a batch), not fixed, and no output a non-tensor (a ZipMap's list of maps)."""
    return bool(model.inputs) and all(
        spec.shape and not isinstance(spec.shape[0], int) and spec.dtype in ORT_DTYPES.values()
        for spec in (*model.inputs, *model.outputs)
    )


INLINE_SECONDS = 0.001  # a model that runs faster than this runs on the event loop itself


class Batcher:
    """Runs the model as few times as it can: requests that queue together run as one batch.

    Requests that arrive while every runner is busy wait in a queue; the next free runner takes all of
    them that fit in AIRGAP_MAX_BATCH rows as one run (one call per batch, not per request, is where
    the throughput under load comes from) and splits the outputs back by rows. AIRGAP_BATCH_WAIT_MS
    (default 0) lets a free runner wait that long for more rows before it starts. A request that
    fails inside a batch is run again alone, so that one bad request never fails its neighbours.

    Where it runs is measured, not configured: a model whose runs average under INLINE_SECONDS runs
    on the event loop, after the loop has read every request that arrived in the same turn (handing
    a 20 µs run to a thread costs more than the run: a queue, a wake-up, two GIL switches); a slower
    model runs on AIRGAP_RUNNERS threads, and onnxruntime releases the GIL while the loop parses.
    """

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        cfg = app.config
        self.app, self.loop = app, loop
        self.runners = cfg.runners
        self.max_rows = cfg.max_batch
        self.wait = cfg.batch_wait_ms / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=cfg.runners, thread_name_prefix="inference")
        self._pending: deque[tuple[Model, dict[str, np.ndarray], int, Any, asyncio.Future[Any]]] = deque()
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._batchable: dict[int, bool] = {}
        self._average: float | None = None  # seconds per run, moving average

    @property
    def inline(self) -> bool:
        return self._average is not None and self._average < INLINE_SECONDS

    def key(self, model: Model, feeds: dict[str, np.ndarray]) -> tuple[Any, ...] | None:
        """What requests must share to run as one: each input's dtype and shape after the first axis."""
        ok = self._batchable.get(id(model))
        if ok is None:
            ok = self._batchable[id(model)] = batchable(model)
        if not ok:
            return None
        return tuple((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items())

    def submit(self, model: Model, feeds: dict[str, np.ndarray]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        key = self.key(model, feeds)
        rows = len(next(iter(feeds.values()))) if key is not None and feeds else 0
        self._pending.append((model, feeds, rows, key, future))
        if self._running < self.runners:
            if self.wait > 0 and key is not None and sum(p[2] for p in self._pending) < self.max_rows:
                if self._timer is None:
                    self._timer = self.loop.call_later(self.wait, self._dispatch)
            elif self.inline:
                if not self._scheduled:  # after the requests read in this turn of the loop
                    self._scheduled = True
                    self.loop.call_soon(self._dispatch)
            else:
                self._dispatch()
        return future

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._running < self.runners and self._pending:
            first = self._pending.popleft()
            batch = [first]
            if first[3] is not None:
                rows, keep = first[2], deque()
                while self._pending:
                    item = self._pending.popleft()
                    if item[3] == first[3] and item[0] is first[0] and rows + item[2] <= self.max_rows:
                        batch.append(item)
                        rows += item[2]
                    else:
                        keep.append(item)
                self._pending.extendleft(reversed(keep))
            if self.inline:
                self._deliver(batch, self._run(batch), None)
                continue
            self._running += 1
            done = self.loop.run_in_executor(self._executor, self._run, batch)
            done.add_done_callback(lambda f, b=batch: self._finished(b, f))  # type: ignore[misc]

    def _finished(self, batch: list[Any], done: asyncio.Future[list[Any]]) -> None:
        self._running -= 1
        failure: BaseException | None = (
            RuntimeError("the inference was cancelled") if done.cancelled() else done.exception()
        )
        self._deliver(batch, done.result() if failure is None else None, failure)
        if self._pending:
            self._dispatch()

    def _deliver(self, batch: list[Any], outcomes: list[Any] | None, failure: BaseException | None) -> None:
        for i, item in enumerate(batch):
            future = item[4]
            if future.done():
                continue
            outcome = outcomes[i] if outcomes is not None else failure
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _run(self, batch: list[Any]) -> list[Any]:
        """On a runner thread: one onnxruntime call for the batch; each request's outputs or exception."""
        if len(batch) > 1:
            model = batch[0][0]
            feeds = {name: np.concatenate([item[1][name] for item in batch]) for name in batch[0][1]}
            total = sum(item[2] for item in batch)
            try:
                results = self._timed(model, feeds)
            except Exception:  # find the request at fault: each alone
                results = None
            if results is not None and all(
                isinstance(r, np.ndarray) and r.ndim and r.shape[0] == total for r in results
            ):
                out, offset = [], 0
                for item in batch:
                    out.append([r[offset : offset + item[2]] for r in results])
                    offset += item[2]
                return out
        outcomes: list[Any] = []
        for item in batch:
            try:
                outcomes.append(self._timed(item[0], item[1]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _timed(self, model: Model, feeds: dict[str, np.ndarray]) -> list[Any]:
        start = time.perf_counter()
        try:
            results = model.run(feeds)
        except OrtInvalidArgument as exc:  # e.g. two inputs that disagree on a shared dimension
            raise ApiError(400, "bad_shape", f"the model refused these inputs: {one_line(exc)}") from None
        seconds = time.perf_counter() - start
        self.app.metrics.observe_inference(seconds)
        average = self._average
        self._average = seconds if average is None else 0.9 * average + 0.1 * seconds
        return results

    def close(self) -> None:
        self._executor.shutdown(wait=False)


# ---------------------------------------------------------------------------------------------------
# Open Inference Protocol v2 (KServe, Triton, MLServer): JSON tensors and the binary tensor extension

V2_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "str": "BYTES",
}
V2_ROUTE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?")


def v2_shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def v2_tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
    """Tensor inputs or outputs as the protocol's metadata lists them (non-tensor outputs have no v2 type)."""
    return [
        {"name": s.name, "datatype": V2_DATATYPES[s.dtype], "shape": v2_shape(s)}
        for s in specs
        if s.dtype in V2_DATATYPES
    ]


def v2_model_metadata(model: Model, name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": v2_tensors(model.inputs),
        "outputs": v2_tensors(model.outputs),
    }


def _nest(flat: list[Any], shape: list[int]) -> Any:
    """A row-major flat list as the nested lists of ``shape`` (what /v1 takes, and Model.prepare checks)."""
    if not shape:
        return flat[0]
    nested: list[Any] = flat
    for size in reversed(shape[1:]):
        nested = [nested[i : i + size] for i in range(0, len(nested), size)]
    return nested


def _flatten_json(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    flat: list[Any] = []
    for x in data:
        flat.extend(_flatten_json(x))
    return flat


def _decode_bytes_tensor(raw: bytes, count: int, name: str) -> list[str]:
    """BYTES elements in binary form: each a 4-byte little-endian length, then that many bytes."""
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            break
        size = int.from_bytes(raw[offset : offset + 4], "little")
        element = raw[offset + 4 : offset + 4 + size]
        if len(element) != size:
            break
        try:
            out.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(
                400, "bad_dtype", f"input '{name}' holds an element that is not UTF-8 text"
            ) from None
        offset += 4 + size
    if offset != len(raw) or len(out) != count:
        raise ApiError(
            400,
            "bad_shape",
            f"input '{name}' binary data does not hold {count} length-prefixed elements; "
            "check binary_data_size and shape",
        )
    return out


def v2_parse_request(
    body: bytes, header_length: str | None, model: Model
) -> tuple[dict[str, Any], dict[str, bool] | None, bool, Any]:
    """An infer request → (the inputs as /v1 nested lists, requested outputs {name: binary?} or None for
    all, whether outputs default to binary, the request id). Every input still goes through
    Model.prepare and the data contract afterwards, exactly as a /v1 request does."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
            if not 0 <= size <= len(body):
                raise ValueError
        except ValueError:
            raise ApiError(
                400,
                "bad_request",
                f"Inference-Header-Content-Length {header_length!r} is not a byte count within the body",
            ) from None
        body, binary = body[:size], body[size:]
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400, "bad_json", f"the inference request is not valid JSON ({one_line(exc)})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ApiError(400, "bad_json", 'the inference request must be a JSON object with an "inputs" list')
    specs = {s.name: s for s in model.inputs}
    inputs: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ApiError(400, "bad_json", f'inputs[{i}] must be an object with a "name"')
        name = tensor["name"]
        spec = specs.get(name)
        if spec is None:
            raise ApiError(
                400,
                "unknown_input",
                f"the model has no input {name!r}; its inputs are {', '.join(repr(n) for n in specs)}",
            )
        if name in inputs:
            raise ApiError(400, "bad_json", f"input {name!r} is given twice")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ApiError(400, "bad_shape", f"input '{name}' needs a shape: a list of non-negative integers")
        want = V2_DATATYPES.get(spec.dtype)
        if tensor.get("datatype") != want:
            raise ApiError(
                400,
                "bad_dtype",
                f"input '{name}' is {want} in this model, not {tensor.get('datatype')!r}; send datatype {want}",
            )
        count = math.prod(shape)
        if count == 0:
            raise ApiError(
                400, "bad_shape", f"input '{name}' has shape {shape} with no elements; send at least one row"
            )
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "bad_json", f"input '{name}' parameters must be an object")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise ApiError(
                    400,
                    "bad_request",
                    f"input '{name}' binary_data_size {size!r} runs past the binary data; "
                    "check Inference-Header-Content-Length",
                )
            raw = binary[offset : offset + size]
            offset += size
            if spec.dtype == "str":
                flat: list[Any] = _decode_bytes_tensor(raw, count, name)
            else:
                dtype = np.dtype(spec.dtype).newbyteorder("<")
                if size != count * dtype.itemsize:
                    raise ApiError(
                        400,
                        "bad_shape",
                        f"input '{name}' has {size} bytes of binary data but shape {shape} of {want} "
                        f"needs {count * dtype.itemsize}",
                    )
                array = np.frombuffer(raw, dtype=dtype)
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise ApiError(
                        400, "bad_dtype", f"input '{name}' holds NaN or an infinity; send finite numbers"
                    )
                flat = array.tolist()
        elif "data" in tensor:
            flat = _flatten_json(tensor["data"])
            if len(flat) != count:
                raise ApiError(
                    400, "bad_shape", f"input '{name}' has {len(flat)} values but shape {shape} needs {count}"
                )
        else:
            raise ApiError(
                400, "bad_json", f"input '{name}' has neither \"data\" nor a binary_data_size parameter"
            )
        inputs[name] = _nest(flat, shape)
    if offset != len(binary):
        raise ApiError(
            400,
            "bad_request",
            f"{len(binary) - offset} bytes of binary data follow the inputs; check binary_data_size",
        )
    parameters = doc.get("parameters") or {}
    binary_default = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    requested: dict[str, bool] | None = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise ApiError(400, "bad_json", '"outputs" must be a list of objects with a "name"')
        known = {s.name for s in model.outputs if s.dtype in V2_DATATYPES}
        requested = {}
        for wanted in doc["outputs"]:
            name = wanted.get("name") if isinstance(wanted, dict) else None
            if name not in known:
                raise ApiError(
                    400,
                    "unknown_output",
                    f"the model has no tensor output {name!r}; its outputs are {', '.join(sorted(known))}",
                )
            params = wanted.get("parameters") or {}
            requested[name] = bool(
                params.get("binary_data", binary_default) if isinstance(params, dict) else False
            )
    return inputs, requested, binary_default, doc.get("id")


def _v2_elements(value: np.ndarray) -> tuple[str, list[Any], bytes]:
    """(datatype, JSON data, binary data) of one output tensor."""
    if value.dtype.kind in "OUS":
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in value.reshape(-1).tolist()]
        raw = b"".join(len(v).to_bytes(4, "little") + v for v in items)
        return "BYTES", [v.decode("utf-8", "replace") for v in items], raw
    datatype = V2_DATATYPES[value.dtype.name]
    flat = value.reshape(-1)
    return datatype, flat, flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()


def v2_encode_response(
    model: Model,
    results: list[Any],
    requested: dict[str, bool] | None,
    binary_default: bool,
    header: dict[str, Any],
) -> tuple[bytes, str, tuple[tuple[str, str], ...]]:
    """The infer answer: JSON, or JSON then the binary outputs with Inference-Header-Content-Length."""
    outputs, chunks = [], []
    for spec, value in zip(model.outputs, results):
        if not isinstance(value, np.ndarray) or (requested is not None and spec.name not in requested):
            continue
        binary = requested[spec.name] if requested is not None else binary_default
        datatype, data, raw = _v2_elements(value)
        tensor: dict[str, Any] = {"name": spec.name, "datatype": datatype, "shape": list(value.shape)}
        if binary:
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = data if datatype == "BYTES" else _jsonable(data)
        outputs.append(tensor)
    document = json.dumps({**header, "outputs": outputs}, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return document, "application/json", ()
    return (
        document + b"".join(chunks),
        "application/octet-stream",
        (("Inference-Header-Content-Length", str(len(document))),),
    )


# ---------------------------------------------------------------------------------------------------
# HTTP/1.1 on asyncio: one event loop parses and answers; inference runs on the Batcher's threads

ROUTES = {
    "/v1/predict": "POST",
    "/v1/contract": "GET",
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
    "/v2": "GET",
    "/v2/health/live": "GET",
    "/v2/health/ready": "GET",
}
V2_MODEL_ROUTES = {
    None: ("/v2/models/{name}", "GET"),
    "/ready": ("/v2/models/{name}/ready", "GET"),
    "/infer": ("/v2/models/{name}/infer", "POST"),
}
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
MAX_HEAD_BYTES = 65536
MAX_HEADERS = 100
IDLE_SECONDS = 30.0  # a kept-alive connection that sends nothing for this long is closed
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
INSTANCE = os.urandom(8).hex()  # this process's start: /readyz tells two instances on one port apart


class _Clock:
    """The log's timestamp and the Date header, formatted once a second, not once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = self._date = ""

    def _tick(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            self._second = second
            t = time.gmtime(second)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t)
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", t)
        return second

    def stamp(self) -> str:
        now = time.time()
        second = self._tick(now)
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def date(self) -> str:
        self._tick(time.time())
        return self._date


class Request:
    __slots__ = ("method", "path", "label", "version", "headers", "keep_alive", "length", "v2")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.version, self.headers = method, path, version, headers
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        self.label = "other"
        self.length = 0
        self.v2: tuple[str, str | None] | None = None


class Service:
    """The listening server's shared state: the app, the batcher, open connections, logs."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.config = app.config
        self.batcher = Batcher(app, loop)
        self.connections: set[Connection] = set()
        self.draining = False
        self.admitted = 0  # predictions parsed and not yet answered
        self.clock = _Clock()
        self._log_lines: list[str] = []
        self.drained: asyncio.Event = asyncio.Event()

    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.in_flight)

    def log_request(self, fields: dict[str, Any]) -> None:
        """Request lines are written once per turn of the event loop, each whole, not one write each."""
        line = json.dumps({"ts": self.clock.stamp(), "event": "request", **fields}, separators=(",", ":"))
        if not self._log_lines:
            self.loop.call_soon(self._flush_log)
        self._log_lines.append(line + "\n")

    def _flush_log(self) -> None:
        lines, self._log_lines = self._log_lines, []
        with _log_lock:
            sys.stderr.write("".join(lines))
            sys.stderr.flush()

    def sweep(self) -> None:
        """Once a second: close connections stalled mid-request, or idle for too long."""
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.busy:
                continue
            if conn.in_flight and now - conn.last_data > REQUEST_TIMEOUT_SECONDS:
                conn.timed_out()
            elif not conn.in_flight and now - conn.last_data > IDLE_SECONDS:
                conn.close()
        if self.connections or not self.draining:
            self.loop.call_later(1.0, self.sweep)

    def connection_gone(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.draining and not any(c.in_flight for c in self.connections):
            self.drained.set()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class Connection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests from the bytes as they come, one at a time."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.client = "-"
        self.buffer = bytearray()
        self.request: Request | None = None  # head parsed, body awaited
        self.in_flight = False  # bytes of a request received and not yet answered
        self.busy = False  # a request is being answered (the model is running for it)
        self.closed = False
        self.paused = False
        self.discarding = False
        self.peer_done = False
        self.started = 0.0
        self.bytes_in = 0
        self.last_data = time.monotonic()

    # ---- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.service.connections.add(self)
        if self.service.draining:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.in_flight and not self.discarding:  # the client left before its answer
            self.service.app.metrics.count_disconnect()
            self._log(None, 0, "client_disconnected")
            self.in_flight = False
        self.service.connection_gone(self)

    def eof_received(self) -> bool:
        """The client sent its last byte. A request it left incomplete can never be answered; one
        being answered still is (its client may only have half-closed), but it is counted as a
        disconnect either way: most such clients have gone."""
        self.peer_done = True
        if self.in_flight and not self.discarding:
            self.service.app.metrics.count_disconnect()
            self.discarding = True  # counted once; nothing more will be read
            if not self.busy:
                self._log(None, 0, "client_disconnected")
                self.in_flight = False
                return False
            return True
        return False

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        if self.discarding:
            return
        if not self.in_flight:
            self.in_flight = True
            self.started = time.perf_counter()
            self.bytes_in = 0
        self.buffer += data
        if self.busy:
            if len(self.buffer) > self.service.config.max_request_bytes + MAX_HEAD_BYTES and not self.paused:
                self.paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self._process()

    # ---- parsing

    def _process(self) -> None:
        while not self.busy and not self.closed and not self.discarding:
            if self.request is None:
                while self.buffer[:2] == b"\r\n":  # stray line ends between requests are allowed
                    del self.buffer[:2]
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD_BYTES:
                        self._refuse(Request("GET", "", "HTTP/1.1", {}), 431, "the request head is too long")
                    elif not self.buffer and not self.busy:
                        self.in_flight = False
                        if self.peer_done:
                            self.close()
                    return
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                if not self.in_flight:
                    self.in_flight = True
                    self.started = time.perf_counter()
                if not self._begin(head):
                    return
            request = self.request
            assert request is not None
            if len(self.buffer) < request.length:
                return
            body = bytes(self.buffer[: request.length])
            del self.buffer[: request.length]
            self.bytes_in = len(body)
            self.request = None
            self._dispatch(request, body)

    def _begin(self, head: bytes) -> bool:
        """Parses a request head and decides, before any body is read, whether it can be served."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._refuse(Request("GET", "", "HTTP/1.1", {}), 400, f"bad request line {lines[0][:80]!r}")
            return False
        method, target, version = parts
        path = target.split("?", 1)[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._refuse(Request(method, path, "HTTP/1.1", {}), 400, f"bad header line {line[:80]!r}")
                return False
            key = name.lower()
            value = value.strip()
            if key in headers:
                if key == "content-length" and headers[key] != value:
                    self._refuse(Request(method, path, "HTTP/1.1", {}), 400, "conflicting Content-Length")
                    return False
                headers[key] = headers[key] + ", " + value
            else:
                headers[key] = value
        request = Request(method, path, version, headers)
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self._refuse(request, 505 if version >= "HTTP/2" else 400, f"unsupported version {version[:20]}")
            return False
        if len(lines) > MAX_HEADERS + 1:
            self._refuse(request, 431, "the request has too many headers")
            return False
        try:
            self._route(request)
            if (
                method in ("POST", "PUT", "PATCH")
                or "content-length" in headers
                or "transfer-encoding" in headers
            ):
                request.length = self._body_length(request)
        except ApiError as exc:
            self._send_error(request, exc)
            return False
        if request.length and "100-continue" in headers.get("expect", "").lower():
            if len(self.buffer) < request.length:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        self.request = request
        return True

    def _route(self, request: Request) -> None:
        path, method = request.path, request.method
        allowed = ROUTES.get(path)
        if allowed is not None:
            request.label = path
        else:
            match = V2_ROUTE.fullmatch(path)
            if match is not None:
                request.label, allowed = V2_MODEL_ROUTES[match.group(3)]
                request.v2 = (match.group(1), match.group(2))
        if method not in KNOWN_METHODS:
            raise ApiError(405, "method_not_allowed", f"{method[:20]} is not supported; use GET or POST")
        if allowed is None:
            raise ApiError(
                404,
                "not_found",
                f"there is no {path[:200]}; use POST /v1/predict, GET /v1/contract, GET /healthz, "
                "GET /readyz, GET /metrics, or the Open Inference Protocol under /v2",
            )
        if method != allowed:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.label} takes {allowed}, not {method}",
                (("Allow", allowed),),
            )

    def _body_length(self, request: Request) -> int:
        headers = request.headers
        raw = headers.get("content-length")
        if raw is None or "transfer-encoding" in headers:
            request.keep_alive = False  # where this body ends, and the next request starts, is unknown
            raise ApiError(411, "length_required", "send the body with a Content-Length header, not chunked")
        if not raw.isdigit():
            request.keep_alive = False
            raise ApiError(400, "bad_request", f"Content-Length {raw[:40]!r} is not a byte count")
        length = int(raw)
        limit = self.service.config.max_request_bytes
        if length > limit:
            raise ApiError(
                413,
                "too_large",
                f"the body has {length} bytes but this server takes at most {limit} "
                "(AIRGAP_MAX_REQUEST_BYTES); send fewer rows per request",
            )
        return length

    # ---- endpoints

    def _dispatch(self, request: Request, body: bytes) -> None:
        try:
            path = request.label
            if path == "/v1/predict":
                self._predict(request, body)
            elif path == "/metrics":
                self._metrics(request)
            elif path == "/healthz":
                self._send_json(request, 200, {"status": "ok"})
            elif path == "/readyz":
                self._require_ready()
                version = self.service.config.model_version
                self._send_json(
                    request, 200, {"status": "ready", "model_version": version, "instance": INSTANCE}
                )
            elif path == "/v1/contract":
                self._contract(request)
            else:
                self._v2(request, body)
        except ApiError as exc:
            self._send_error(request, exc)
        except Exception as exc:  # a bug: answer 500, log it on one line, keep serving
            self._internal(request, exc)

    def _require_ready(self) -> Model:
        app = self.service.app
        model = app.model
        if model is None or not app.ready.is_set():
            raise ApiError(
                503, "not_ready", "the model is loading or warming up; retry when GET /readyz answers 200"
            )
        return model

    def _metrics(self, request: Request) -> None:
        app, service = self.service.app, self.service
        text = app.metrics.render(app.info(), app.ready.is_set(), service.in_flight())
        if app.guard is not None:
            text += "\n".join(app.guard.render()) + "\n"
        self._send(request, 200, text.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")

    def _contract(self, request: Request) -> None:
        app = self.service.app
        self._require_ready()
        if app.contract_doc is None:
            raise ApiError(404, "not_found", "this model was bundled without a data contract")
        self._send(request, 200, app.contract_doc, "application/json")

    def _admit(self) -> None:
        service = self.service
        if service.admitted >= service.config.max_queue:
            raise ApiError(
                503,
                "overloaded",
                f"{service.admitted} predictions are already waiting (AIRGAP_MAX_QUEUE); retry after a second",
                (("Retry-After", "1"),),
            )

    def _infer(
        self,
        request: Request,
        model: Model,
        feeds: dict[str, np.ndarray],
        answer: Callable[[list[Any], tuple[tuple[str, str], ...]], None],
    ) -> None:
        """Checks the contract, queues the feeds for the model, and answers when the outputs come back,
        flagged with the contract warning header when a warn-mode feature let a value through."""
        guard = self.service.app.guard
        flagged: tuple[tuple[str, str], ...] = ()
        if guard is not None:
            warning = contract_warning_header(guard.check(feeds))
            flagged = (warning,) if warning is not None else ()
        self.busy = True
        self.service.admitted += 1
        future = self.service.batcher.submit(model, feeds)

        def done(f: asyncio.Future[Any]) -> None:
            self.service.admitted -= 1
            self.busy = False
            try:
                results = f.result()
                if not self.closed:
                    answer(results, flagged)
                # Drift is kept after the answer has left: the client need not wait for it, and a
                # client's next request (a scrape, say) is read only once this has run.
                if guard is not None:
                    guard.observe(feeds)
                    guard.observe_outputs(results)
            except ApiError as exc:
                if not self.closed:
                    self._send_error(request, exc)
            except Exception as exc:
                self._internal(request, exc)
            self._resume()

        future.add_done_callback(done)

    def _predict(self, request: Request, body: bytes) -> None:
        model = self._require_ready()
        self._admit()
        try:
            document = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ApiError(
                400, "bad_json", f'the body is not valid JSON ({one_line(exc)}); send {{"inputs": {{...}}}}'
            ) from None
        if not isinstance(document, dict) or "inputs" not in document or len(document) != 1:
            raise ApiError(400, "bad_json", 'the body must be a JSON object with exactly one key, "inputs"')
        feeds = model.prepare(document["inputs"], self.service.config.max_batch)
        config = self.service.config

        def answer(results: list[Any], flagged: tuple[tuple[str, str], ...]) -> None:
            self._send_json(
                request,
                200,
                {
                    "model": config.model_name,
                    "model_version": config.model_version,
                    "outputs": model.outputs_json(results),
                },
                None,
                flagged,
            )

        self._infer(request, model, feeds, answer)

    def _v2(self, request: Request, body: bytes) -> None:
        config, app = self.service.config, self.service.app
        label = request.label
        if label == "/v2":
            self._send_json(
                request, 200, {"name": "airgap-server", "version": "1", "extensions": ["binary_tensor_data"]}
            )
            return
        if label == "/v2/health/live":
            self._send_json(request, 200, {"live": True})
            return
        if label == "/v2/health/ready":
            ready = app.ready.is_set()
            self._send_json(request, 200 if ready else 503, {"ready": ready}, None if ready else "not_ready")
            return
        assert request.v2 is not None
        name, version = request.v2
        if name != config.model_name or (version is not None and version != config.model_version):
            asked = name + ("" if version is None else f" version {version}")
            raise ApiError(
                404,
                "not_found",
                f"there is no model {asked[:200]}; this server has {config.model_name} version {config.model_version}",
            )
        if label == "/v2/models/{name}/ready":
            ready = app.ready.is_set()
            self._send_json(
                request, 200 if ready else 503, {"name": name, "ready": ready}, None if ready else "not_ready"
            )
            return
        model = self._require_ready()
        if label == "/v2/models/{name}":
            self._send_json(request, 200, v2_model_metadata(model, config.model_name, config.model_version))
            return
        self._admit()
        inputs, requested, binary_default, request_id = v2_parse_request(
            body, request.headers.get("inference-header-content-length"), model
        )
        feeds = model.prepare(inputs, config.max_batch)
        header: dict[str, Any] = {"model_name": config.model_name, "model_version": config.model_version}
        if isinstance(request_id, str):
            header["id"] = request_id

        def answer(results: list[Any], flagged: tuple[tuple[str, str], ...]) -> None:
            payload, content_type, extra = v2_encode_response(
                model, results, requested, binary_default, header
            )
            self._send(request, 200, payload, content_type, None, extra + flagged)

        self._infer(request, model, feeds, answer)

    # ---- answers

    def _internal(self, request: Request, exc: Exception) -> None:
        log("internal_error", path=request.path[:200], error=one_line(exc), traceback=traceback.format_exc())
        if not self.closed and self.in_flight:
            self._send_error(
                request, ApiError(500, "internal", "the server failed on this request; see its log")
            )

    def _send_json(
        self,
        request: Request,
        status: int,
        document: object,
        error_code: str | None = None,
        headers: Any = (),
    ) -> None:
        payload = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send(request, status, payload, "application/json", error_code, headers)

    def _send_error(self, request: Request, exc: ApiError) -> None:
        if request.label.startswith("/v2"):  # the protocol's error shape: {"error": message}
            document: dict[str, Any] = {"error": exc.message, "code": exc.code}
        else:
            document = {"error": {"code": exc.code, "message": exc.message}}
        self._send_json(request, exc.status, document, exc.code, exc.headers)

    def _refuse(self, request: Request, status: int, text: str) -> None:
        """A request that is not HTTP this server can read: answer, then close the connection."""
        request.keep_alive = False
        self._send_error(
            request, ApiError(status, "bad_request", f"{one_line(text)}; send a well-formed HTTP/1.1 request")
        )

    def _send(
        self,
        request: Request,
        status: int,
        payload: bytes,
        content_type: str,
        error_code: str | None = None,
        headers: Any = (),
    ) -> None:
        service = self.service
        # Counted before the answer leaves: a client that scrapes /metrics next must see this request.
        service.app.metrics.count_request(request.label, status, time.perf_counter() - self.started)
        # A body announced but not read (the request was refused from its head) cannot be skipped
        # reliably: the connection ends after this answer.
        unread = request.length == 0 and (
            request.headers.get("content-length", "0").strip() not in ("", "0")
            or "transfer-encoding" in request.headers
        )
        keep = request.keep_alive and not unread and not service.draining and not self.peer_done
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Server: airgap-server/1\r\nDate: {service.clock.date()}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\nCache-Control: no-store\r\n"
        )
        if not keep:
            head += "Connection: close\r\n"
        for key, value in headers:
            head += f"{key}: {value}\r\n"
        data = (head + "\r\n").encode("latin-1")
        sent = 0
        if request.method != "HEAD":
            data += payload
            sent = len(payload)
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]
        self.in_flight = bool(self.buffer)  # a pipelined request may have started arriving
        self.started = time.perf_counter()
        self._log_for(request, status, sent, error_code)
        if not keep:
            if unread:
                self._discard()
            else:
                self.close()
        elif service.draining and not self.buffer:
            self.close()

    def _discard(self) -> None:
        """After refusing a request without reading its body, drop what the client still sends, briefly:
        closing a socket with unread data makes the kernel reset the connection, and the client could
        lose the answer it has not read yet."""
        self.discarding = True
        self.in_flight = False
        self.buffer.clear()
        transport = self.transport
        assert transport is not None
        with contextlib.suppress(OSError, RuntimeError):
            if transport.can_write_eof():
                transport.write_eof()
        self.service.loop.call_later(2.0, self.close)

    def _resume(self) -> None:
        if self.closed:
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self.buffer:
            self._process()
        elif self.peer_done and not self.in_flight:
            self.close()

    def timed_out(self) -> None:
        log("request_timeout", client=self.client, seconds=REQUEST_TIMEOUT_SECONDS)
        self.in_flight = False
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]  # what is buffered is still sent

    def _log_for(self, request: Request, status: int | None, bytes_out: int, error_code: str | None) -> None:
        self.service.log_request(
            {
                "method": request.method[:20],
                "path": request.path[:200],
                "status": status,
                "error": error_code,
                "bytes_in": self.bytes_in,
                "bytes_out": bytes_out,
                "ms": round((time.perf_counter() - self.started) * 1000, 3),
                "client": self.client,
            }
        )

    def _log(self, status: int | None, bytes_out: int, error_code: str | None) -> None:
        request = self.request or Request("-", "", "HTTP/1.1", {})
        self._log_for(request, status, bytes_out, error_code)


# ---------------------------------------------------------------------------------------------------
# Commands


def listening_socket(config: Config, listen: bool = True) -> socket.socket:
    """The listening socket, with SO_REUSEPORT: a second instance (a promote's new version, on host
    networking) binds the same port, and the kernel spreads new connections over both until the old
    one stops accepting. Bound at once (a port that cannot be shared fails now); with listen=False
    it takes connections only once `listen` is called."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
        if listen:
            sock.listen(config.backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _serve(config: Config, app: App, sock: socket.socket, beside: bool) -> int:
    loop = asyncio.get_running_loop()
    service = Service(app, loop)
    stopped = asyncio.Event()
    warm = asyncio.Event()
    accepting_now = asyncio.Event()
    # Connections accepted whose transport is still being made: a drain waits for them, or a process
    # that exits in between would reset them.
    pending: set[asyncio.Task[Any]] = set()

    def woken() -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(app.stop._read, 64)
        if app.stop.exit_code is not None:
            stopped.set()

    async def accept() -> None:
        if beside:
            # Another server answers on this port: this one takes connections only once warm, or the
            # kernel would hand it requests it could only refuse with 503.
            await warm.wait()
            sock.listen(config.backlog)
        loop.add_reader(sock.fileno(), _accept_queued, loop, sock, service, pending)
        accepting_now.set()
        host, port = sock.getsockname()[:2]
        log("listening", host=host, port=port, model_path=config.model_path, instance=INSTANCE, **app.info())

    loop.add_reader(app.stop._read, woken)
    app.when_ready = lambda: loop.call_soon_threadsafe(warm.set)
    accepting = loop.create_task(accept())
    if not beside:
        await accepting
    threading.Thread(target=app.load_and_warm_up, name="warm-up", daemon=True).start()
    loop.call_later(1.0, service.sweep)
    await stopped.wait()
    exit_code = app.stop.exit_code or 0
    log("stopping", reason=app.stop.reason, in_flight=service.in_flight())
    if accepting_now.is_set():
        loop.remove_reader(sock.fileno())
        # With SO_REUSEPORT a closed socket's queue is reset, not handed to the server beside it:
        # the connections the kernel already queued for this one are answered first.
        _accept_queued(loop, sock, service, pending)
    else:
        accepting.cancel()
    sock.close()  # the listening socket closes: new connections are refused
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    service.draining = True
    # An idle keep-alive connection gets a moment to send its next request, which is answered with
    # "Connection: close": closed under a client that is sending, it would see a reset.
    grace = loop.time() + IDLE_GRACE_SECONDS
    while loop.time() < grace and any(not c.in_flight and not c.busy for c in service.connections):
        await asyncio.sleep(0.02)
    for conn in list(service.connections):
        if not conn.in_flight and not conn.busy:
            conn.close()
    if any(c.in_flight for c in service.connections):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(service.drained.wait(), DRAIN_SECONDS)
    abandoned = service.in_flight()
    service._flush_log()
    log("stopped", exit_code=exit_code, abandoned_requests=abandoned)
    return exit_code


def _accept_queued(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, service: Service, pending: set[asyncio.Task[Any]]
) -> None:
    """Accepts every connection the kernel has queued; each one's transport is made on the loop."""
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. out of file descriptors: let the queue wait, try again shortly
            log("accept_failed", message=str(exc))
            loop.remove_reader(sock.fileno())
            loop.call_later(0.1, _accept_again, loop, sock, service, pending)
            return
        conn.setblocking(False)
        task = loop.create_task(loop.connect_accepted_socket(lambda: Connection(service), conn))
        pending.add(task)
        task.add_done_callback(pending.discard)


def _accept_again(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, service: Service, pending: set[asyncio.Task[Any]]
) -> None:
    """After a failed accept: listen again, unless the server closed its socket in the meantime."""
    if sock.fileno() != -1 and not service.draining:
        loop.add_reader(sock.fileno(), _accept_queued, loop, sock, service, pending)


def _answering(host: str, port: int) -> bool:
    """Whether a server already takes connections on host:port."""
    try:
        with socket.create_connection((host if host not in ("0.0.0.0", "::") else "localhost", port), 1):
            return True
    except OSError:
        return False


def serve(config: Config) -> int:
    app = App(config)
    beside = config.port != 0 and _answering(config.host, config.port)
    try:
        sock = listening_socket(config, listen=not beside)
    except OSError as exc:
        log("fatal", message=f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
        return 1
    app.stop.install(signal.SIGTERM, signal.SIGINT)
    return asyncio.run(_serve(config, app, sock, beside))


def check(config: Config, model_path: str, golden_path: str | None) -> int:
    """The model's contract and the golden cases' outputs, as the bundler records them inside the image."""
    model = Model(model_path, config.threads, config.prepack)
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
