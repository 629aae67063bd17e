"""What airgap reads from an ONNX graph without loading a weight: the external data files it
references, and the inputs it asks its caller for.

A model over 2 GB cannot be one protobuf: its initializers say ``data_location: EXTERNAL`` and name
a file beside the model (``location``), a byte ``offset`` and a ``length``. What the far side needs
is therefore the graph *and* every file it names, and a bundle that carries the graph alone fails
only when the far side loads it. This module reads those references from a stream of the
``ModelProto``, skipping every payload (``raw_data`` of a 100 MB initializer is a seek, not a
read), so a multi-gigabyte model is checked in well under a second; and it judges a ``location``
as onnxruntime will: relative to the model's directory, never out of it. The graph's inputs
(``graph_inputs``) are read the same way, so that golden inputs are checked against them without
the memory of the weights (onnxruntime would hold every one of them).

Pure: a binary stream in, values out. The caller stats the files (services/build/model_files.py).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Union

from airgap.errors import InvalidInputError

# TensorProto.DataType → bytes per element (a float means a fraction: 4-bit types pack two per byte).
_ELEMENT_BYTES: dict[int, float] = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
    17: 1, 18: 1, 19: 1, 20: 1, 21: 0.5, 22: 0.5, 23: 0.5,
}  # fmt: skip
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


@dataclass(frozen=True)
class ExternalTensor:
    """One initializer (or constant) whose bytes live in another file: ``location`` as the graph
    spells it, the byte range it claims, and the size its shape and type imply (None: unknown)."""

    name: str
    location: str
    offset: int
    length: int | None
    expected_length: int | None

    @property
    def end(self) -> int:
        """The first byte after the tensor's data in its file."""
        size = self.length if self.length is not None else self.expected_length
        return self.offset + (size or 0)


class NotAModel(ValueError):
    """The stream is not a well-formed ModelProto."""


def _varint(f: BinaryIO) -> int:
    result = shift = 0
    for _ in range(10):
        byte = f.read(1)
        if not byte:
            raise NotAModel("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
    raise NotAModel("varint longer than 10 bytes")


def _fields(f: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """(field, wire type, value) up to offset ``end``; for wire type 2 the value is the payload's
    length, and the caller may read it: the next field starts after it either way."""
    while f.tell() < end:
        key = _varint(f)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise NotAModel("field number 0")
        if wire == 0:
            yield field, wire, _varint(f)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        elif wire == 2:
            length = _varint(f)
            start = f.tell()
            if start + length > end:
                raise NotAModel("a length-delimited field runs past its end")
            yield field, wire, length
            f.seek(start + length)
        else:
            raise NotAModel(f"wire type {wire}")
    if f.tell() != end:
        raise NotAModel("the last field runs past its end")


def _text(f: BinaryIO, length: int) -> str:
    if length > 1 << 16:
        raise NotAModel("a name longer than 64 KiB")
    try:
        return f.read(length).decode("utf-8")
    except UnicodeDecodeError:
        raise NotAModel("a name that is not UTF-8") from None


def _tensor(f: BinaryIO, end: int) -> ExternalTensor | None:
    """A TensorProto: the reference it holds when its data is external, else None."""
    name, dtype, location_kind = "", 0, 0
    dims: list[int] = []
    entries: dict[str, str] = {}
    for field, wire, value in _fields(f, end):
        if field == 1 and wire == 0:
            dims.append(value)
        elif field == 1 and wire == 2:  # packed dims
            stop = f.tell() + value
            while f.tell() < stop:
                dims.append(_varint(f))
        elif field == 2 and wire == 0:
            dtype = value
        elif field == 8 and wire == 2:
            name = _text(f, value)
        elif field == 13 and wire == 2:  # external_data: StringStringEntryProto
            key = val = ""
            for sub, sub_wire, sub_value in _fields(f, f.tell() + value):
                if sub == 1 and sub_wire == 2:
                    key = _text(f, sub_value)
                elif sub == 2 and sub_wire == 2:
                    val = _text(f, sub_value)
            entries[key] = val
        elif field == 14 and wire == 0:
            location_kind = value
    if location_kind != _EXTERNAL:
        return None
    label = name or "(unnamed)"
    location = entries.get("location", "")
    offset = _count(entries, "offset", label) or 0
    length = _count(entries, "length", label)
    count: int | None = 1
    for d in dims:
        count = None if count is None or d >= 1 << 63 else count * d  # negative: no fixed size
    per = _ELEMENT_BYTES.get(dtype)
    expected = None
    if per is not None and count is not None:
        expected = (count + 1) // 2 if per < 1 else count * int(per)
    return ExternalTensor(label, location, offset, length, expected)


def _count(entries: dict[str, str], key: str, tensor: str) -> int | None:
    raw = entries.get(key)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInputError(f"initializer {tensor}: external data {key} {raw!r} is not a byte count")
    return int(raw)


def _graph(f: BinaryIO, end: int, out: list[ExternalTensor], depth: int) -> None:
    """GraphProto: its initializers (5), sparse initializers (15) and nodes (1), whose attributes
    may hold tensors and subgraphs (If, Loop, Scan bodies) with external data of their own."""
    if depth > 64:
        raise NotAModel("subgraphs nested deeper than 64")
    for field, wire, value in _fields(f, end):
        if wire != 2:
            continue
        stop = f.tell() + value
        if field == 5:
            _add(_tensor(f, stop), out)
        elif field == 15:
            _sparse(f, stop, out)
        elif field == 1:
            _node(f, stop, out, depth)


def _sparse(f: BinaryIO, end: int, out: list[ExternalTensor]) -> None:
    for field, wire, value in _fields(f, end):
        if field in (1, 2) and wire == 2:  # values, indices
            _add(_tensor(f, f.tell() + value), out)


def _node(f: BinaryIO, end: int, out: list[ExternalTensor], depth: int) -> None:
    for field, wire, value in _fields(f, end):
        if field != 5 or wire != 2:  # attribute
            continue
        for sub, sub_wire, sub_value in _fields(f, f.tell() + value):
            if sub_wire != 2:
                continue
            stop = f.tell() + sub_value
            if sub in (5, 10):  # t, tensors
                _add(_tensor(f, stop), out)
            elif sub in (6, 11):  # g, graphs
                _graph(f, stop, out, depth + 1)
            elif sub in (22, 23):  # sparse_tensor, sparse_tensors
                _sparse(f, stop, out)


def _add(tensor: ExternalTensor | None, out: list[ExternalTensor]) -> None:
    if tensor is not None:
        out.append(tensor)


def external_tensors(f: BinaryIO, size: int) -> tuple[ExternalTensor, ...]:
    """Every tensor of the ModelProto in ``f`` (``size`` bytes) whose data lives in another file:
    the graph's, its subgraphs' and its local functions' (ModelProto fields 7 and 25).

    Raises NotAModel when the bytes are not a ModelProto with a graph."""
    out: list[ExternalTensor] = []
    has_graph = False
    for field, wire, value in _fields(f, size):
        if field == 7 and wire == 2:
            has_graph = True
            _graph(f, f.tell() + value, out, 0)
        elif field == 25 and wire == 2:  # FunctionProto: its nodes are field 7
            for sub, sub_wire, sub_value in _fields(f, f.tell() + value):
                if sub == 7 and sub_wire == 2:
                    _node(f, f.tell() + sub_value, out, 0)
    if not has_graph:
        raise NotAModel("no graph")
    return tuple(out)


def data_file(location: str, tensor: str) -> str:
    """The file ``location`` names, as a normalized path relative to the model's directory.

    Refused as onnxruntime refuses it, only earlier: empty, absolute, or climbing out with
    ``..``; and a hidden name (a bundle carries no dot-files, so it could not travel)."""
    where = f"initializer {tensor}: external data location {location!r}"
    if not location or "\x00" in location:
        raise InvalidInputError(f"{where} is empty", hint="re-save the model with onnx's save_model")
    if location.startswith(("/", "\\")) or "\\" in location or (len(location) > 1 and location[1] == ":"):
        raise InvalidInputError(
            f"{where} is an absolute path: it must be a file in the model's directory",
            hint="re-save it with a relative location (onnx.save_model(..., location='model.onnx.data'))",
        )
    norm = posixpath.normpath(location)
    if norm == ".." or norm.startswith("../") or norm in (".", ""):
        raise InvalidInputError(
            f"{where} escapes the model's directory",
            hint="put the data file beside the model and re-save it with a relative location",
        )
    if any(seg.startswith(".") for seg in norm.split("/")):
        raise InvalidInputError(
            f"{where} is a hidden file, which a bundle does not carry",
            hint="re-save the model with a location that does not start with '.'",
        )
    return norm


# TensorProto.DataType → the name onnxruntime (and onnx) give it in a type such as ``tensor(float)``.
_ELEMENT_NAMES: dict[int, str] = {
    1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64", 14: "complex64",
    15: "complex128", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
    20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1",
}  # fmt: skip

Dim = Union[int, str, None]  # a fixed size, a symbolic name, or a dynamic size without a name


@dataclass(frozen=True)
class GraphInput:
    """One input the graph asks its caller for, as onnxruntime's ``session.get_inputs()`` reports
    it: the name, the type spelt as onnxruntime spells it (``tensor(float)``, ``seq(tensor(int64))``)
    and per dimension its size, its symbolic name or None (no dimensions: the shape is not given)."""

    name: str
    type: str
    shape: tuple[Dim, ...]


def _signed(value: int) -> int:
    """A varint read as the int64 it encodes (a negative one takes ten bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _element(value: int) -> str:
    return _ELEMENT_NAMES.get(value, f"undefined({value})")


def _type(f: BinaryIO, end: int, depth: int) -> tuple[str, tuple[Dim, ...]]:
    """A TypeProto: its onnxruntime spelling and, for a (sparse) tensor, its shape."""
    if depth > 16:
        raise NotAModel("types nested deeper than 16")
    text = ""
    shape: tuple[Dim, ...] = ()
    for field, wire, value in _fields(f, end):
        if wire != 2:
            continue
        stop = f.tell() + value
        if field in (1, 8):  # tensor_type, sparse_tensor_type: elem_type 1, shape 2
            elem, shape = 0, ()
            for sub, sub_wire, sub_value in _fields(f, stop):
                if sub == 1 and sub_wire == 0:
                    elem = sub_value
                elif sub == 2 and sub_wire == 2:
                    shape = _shape(f, f.tell() + sub_value)
            text = ("tensor(" if field == 1 else "sparse_tensor(") + _element(elem) + ")"
        elif field in (4, 9):  # sequence_type, optional_type: elem_type 1
            inner = "undefined"
            inner_shape: tuple[Dim, ...] = ()
            for sub, sub_wire, sub_value in _fields(f, stop):
                if sub == 1 and sub_wire == 2:
                    inner, inner_shape = _type(f, f.tell() + sub_value, depth + 1)
            # onnxruntime gives an optional tensor its tensor's shape, a sequence none
            text, shape = ("seq(" if field == 4 else "optional(") + inner + ")", ()
            if field == 9:
                shape = inner_shape
        elif field == 5:  # map_type: key_type 1, value_type 2
            key, inner = 0, "undefined"
            for sub, sub_wire, sub_value in _fields(f, stop):
                if sub == 1 and sub_wire == 0:
                    key = sub_value
                elif sub == 2 and sub_wire == 2:
                    inner = _type(f, f.tell() + sub_value, depth + 1)[0]
            text, shape = f"map({_element(key)},{inner})", ()
        elif field == 7:  # opaque_type: domain 1, name 2
            parts = {1: "", 2: ""}
            for sub, sub_wire, sub_value in _fields(f, stop):
                if sub in parts and sub_wire == 2:
                    parts[sub] = _text(f, sub_value)
            text, shape = f"opaque({parts[1]},{parts[2]})", ()
    return text or "undefined", shape


def _shape(f: BinaryIO, end: int) -> tuple[Dim, ...]:
    """A TensorShapeProto: per dimension (field 1) its dim_value (1), dim_param (2) or None."""
    dims: list[Dim] = []
    for field, wire, value in _fields(f, end):
        if field != 1 or wire != 2:
            continue
        if len(dims) >= 1 << 12:
            raise NotAModel("a shape of more than 4096 dimensions")
        dim: Dim = None
        for sub, sub_wire, sub_value in _fields(f, f.tell() + value):
            if sub == 1 and sub_wire == 0:
                dim = _signed(sub_value)
            elif sub == 2 and sub_wire == 2:
                dim = _text(f, sub_value)
        # onnxruntime clears a negative size and an empty name: both are a dynamic dimension.
        dims.append(None if dim == "" or (isinstance(dim, int) and dim < 0) else dim)
    return tuple(dims)


def _value_info(f: BinaryIO, end: int) -> GraphInput:
    """A ValueInfoProto: name (1), type (2)."""
    name, text = "", "undefined"
    shape: tuple[Dim, ...] = ()
    for field, wire, value in _fields(f, end):
        if field == 1 and wire == 2:
            name = _text(f, value)
        elif field == 2 and wire == 2:
            text, shape = _type(f, f.tell() + value, 0)
    return GraphInput(name, text, shape)


def _tensor_name(f: BinaryIO, end: int) -> str:
    """A TensorProto's name (8); its data, inline or not, is skipped unread."""
    name = ""
    for field, wire, value in _fields(f, end):
        if field == 8 and wire == 2:
            name = _text(f, value)
    return name


def graph_inputs(f: BinaryIO, size: int) -> tuple[GraphInput, ...]:
    """The inputs of the ModelProto's graph in ``f`` (``size`` bytes) that its caller must feed, in
    the graph's order: its declared inputs (GraphProto field 11) less those an initializer (5) or
    sparse initializer (15) gives a value, as onnxruntime reports them. No tensor's data is read,
    so this costs the graph's structure, never its weights.

    Raises NotAModel when the bytes are not a ModelProto with a graph."""
    declared: list[GraphInput] = []
    given: set[str] = set()
    has_graph = False
    for field, wire, value in _fields(f, size):
        if field != 7 or wire != 2:
            continue
        has_graph = True
        for sub, sub_wire, sub_value in _fields(f, f.tell() + value):
            if sub_wire != 2:
                continue
            stop = f.tell() + sub_value
            if sub == 11:
                declared.append(_value_info(f, stop))
            elif sub == 5:
                given.add(_tensor_name(f, stop))
            elif sub == 15:  # SparseTensorProto: its values (1) carry the name
                for part, part_wire, part_value in _fields(f, stop):
                    if part == 1 and part_wire == 2:
                        given.add(_tensor_name(f, f.tell() + part_value))
    if not has_graph:
        raise NotAModel("no graph")
    return tuple(i for i in declared if i.name not in given)
