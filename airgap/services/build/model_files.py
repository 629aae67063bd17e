"""Which files make up the project's model, decided before any slow phase.

A model is its graph (``.onnx``) plus every external data file the graph references, and, for a
model directory, every other file beside it (a tokenizer, a label map). All of them travel under
``model/`` in the bundle, at the same paths relative to the graph, so onnxruntime finds the data
beside the model on every target (the image, a virtualenv) without being told. A reference that
escapes the model's directory, a missing file or one shorter than the bytes the graph claims is
refused here, in well under a second, rather than by onnxruntime after the image is built.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from airgap.core.bundle_format import check_member_path
from airgap.core.onnx_external import NotAModel, data_file, external_tensors
from airgap.core.project import Project
from airgap.errors import AirgapError, EnvironmentFailure, InvalidInputError
from airgap.services.observer import BYTES, Observer

# What airgap itself writes beside the model in the bundle: a model file must not take these names.
RESERVED = frozenset(
    {"golden.json", "contract.json", "data-contract.json", "acceptance.json", "slo.json", "promote.json"}
)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DataFile:
    """An external data file: its path under ``model/``, its size, and the bytes the graph reads of it."""

    name: str
    size: int
    needed: int


@dataclass(frozen=True)
class ModelFiles:
    """The model as it travels: the graph's source, its path under ``model/``, and every file that
    goes with it (the graph first) as (path under ``model/``, source)."""

    graph: Path
    graph_name: str
    files: tuple[tuple[str, Path], ...]
    data: tuple[DataFile, ...]


def model_files(project: Project, project_dir: Path) -> ModelFiles:
    """The graph, its external data files and (for a model directory) the files beside it.

    Raises InvalidInputError (exit 4) naming the file or the initializer, before anything slow."""
    spec = project.model
    source = project_dir / spec.path
    if source.is_dir():
        root, graph = source, source / _graph_in(source, spec.path, spec.graph)
    else:
        if spec.graph is not None:
            raise InvalidInputError(
                f"model.graph names a file in a model directory, but model.path {spec.path} is a file",
                hint="point model.path at the directory, or drop model.graph",
            )
        root, graph = source.parent, source
    data = _data_files(graph, root)
    files: dict[str, Path] = {graph.name: graph}
    for d in data:
        files[d.name] = root / d.name
    if source.is_dir():
        taken_elsewhere = {
            (project_dir / rel).resolve()
            for rel in (spec.golden, project.data.reference if project.data else None,
                        project.acceptance.data if project.acceptance else None)
            if rel
        }  # fmt: skip
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            if any(seg.startswith(".") for seg in rel.split("/")) or path.is_dir():
                continue  # a bundle carries no hidden files
            if path.resolve() in taken_elsewhere:
                continue  # travels as what the project file names it (golden, reference, acceptance)
            _inside(path, root, f"{spec.path}/{rel}")
            if not path.is_file():
                raise InvalidInputError(
                    f"{spec.path}/{rel} is not a regular file (a broken link, a device or a socket)",
                    hint="remove it from the model directory",
                )
            files.setdefault(rel, path)
    for rel in files:
        if rel in RESERVED:
            raise InvalidInputError(
                f"{spec.path}: model/{rel} is a name airgap writes itself beside the model",
                hint="rename that file in the model directory",
            )
        try:
            check_member_path(f"model/{rel}")
        except AirgapError:
            raise InvalidInputError(
                f"{spec.path}: {rel!r} is not a name a bundle can carry (letters, digits, ._+@=,~- only)",
                hint="rename the file",
            ) from None
    ordered = [(graph.name, graph), *sorted((k, v) for k, v in files.items() if k != graph.name)]
    return ModelFiles(graph, graph.name, tuple(ordered), data)


def refuse_early(project_path: Path) -> None:
    """The project file and the model's files, checked before anything else is even imported:
    what ``bundle`` refuses first, in well under a second on any machine (it checks them again)."""
    from airgap.services.build.project import load_project, locate_project

    project_dir, _ = locate_project(project_path)
    project, _ = load_project(project_path)
    model_files(project, project_dir.resolve())


def _graph_in(directory: Path, rel: str, graph: str | None) -> str:
    if graph is not None:
        if not (directory / graph).is_file():
            raise InvalidInputError(f"model.graph {graph} is not a file in the model directory {rel}")
        return graph
    found = sorted(p.name for p in directory.iterdir() if p.suffix == ".onnx" and p.is_file())
    if len(found) != 1:
        what = "no .onnx file" if not found else f"{len(found)} .onnx files ({', '.join(found)})"
        raise InvalidInputError(
            f"the model directory {rel} holds {what}",
            hint="name the graph with model.graph: NAME.onnx",
        )
    return found[0]


def _inside(path: Path, root: Path, what: str) -> None:
    """Refuses a file whose real location (symbolic links followed) is outside the model directory."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise InvalidInputError(
            f"{what} escapes the model's directory (it resolves to {path.resolve()})",
            hint="copy the file into the model directory instead of linking to it",
        ) from None


def _data_files(graph: Path, root: Path) -> tuple[DataFile, ...]:
    """The external data files the graph references, each present and as long as the graph needs."""
    try:
        with open(graph, "rb", buffering=1 << 16) as f:
            tensors = external_tensors(f, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise InvalidInputError(f"cannot read the model {graph}: {exc.strerror or exc}") from None
    except NotAModel as exc:
        raise InvalidInputError(
            f"{graph} is not an ONNX model: {exc}",
            hint="export the model to ONNX (e.g. torch.onnx.export) and point model.path at it",
        ) from None
    needed: dict[str, int] = {}
    for t in tensors:
        name = data_file(t.location, t.name)
        if t.length is not None and t.expected_length is not None and t.length != t.expected_length:
            raise InvalidInputError(
                f"initializer {t.name}: external data length {t.length} disagrees with its shape and "
                f"type ({t.expected_length} bytes)",
                hint="re-save the model with onnx.save_model(..., save_as_external_data=True)",
            )
        needed[name] = max(needed.get(name, 0), t.end)
    out = []
    for name, end in sorted(needed.items()):
        path = root / name
        where = f"{graph.name} references external data {name}"
        if not path.is_file():
            raise InvalidInputError(
                f"{where}, which does not exist in {root}",
                hint="copy the data file beside the model (it was saved with it)",
            )
        _inside(path, root, f"external data {name}")
        size = path.stat().st_size
        if size < end:
            raise InvalidInputError(
                f"{where} up to byte {end}, but the file has {size} bytes (offset + length disagree with it)",
                hint="the data file is truncated or belongs to another save of the model: copy it again",
            )
        out.append(DataFile(name, size, end))
    return tuple(out)


def copy_model(files: ModelFiles, model_dir: Path, observer: Observer) -> dict[str, tuple[str, int]]:
    """Stages every file of the model under ``model_dir`` — a hard link to the project's file where
    the file system allows one, else a copy — hashing it as it is read (one pass over
    multi-gigabyte weights); returns {path under model/: (sha256, size)}.

    A link costs no disk: a 10 GB model then needs the bundle's 10 GB, not 20. It is not a snapshot,
    so the packer compares every model file's packed hash with the one returned here and refuses a
    model that changed meanwhile (services/build/sign.py)."""
    out = {}
    total = sum(src.stat().st_size for _, src in files.files)
    observer.begin("copy model", total, BYTES)
    try:
        for rel, src in files.files:
            dest = model_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            try:
                linked = _link(src, dest)
                with (
                    open(dest if linked else src, "rb") as fin,
                    open(os.devnull if linked else dest, "wb") as fout,
                ):
                    while chunk := fin.read(_CHUNK):
                        digest.update(chunk)
                        if not linked:
                            fout.write(chunk)
                        size += len(chunk)
                        observer.advance("copy model", len(chunk))
            except OSError as exc:
                raise EnvironmentFailure(
                    f"copying the model file {src} into the bundle failed: {exc.strerror or exc}"
                ) from None
            out[rel] = (digest.hexdigest(), size)
    finally:
        observer.end("copy model")
    return out


def _link(src: Path, dest: Path) -> bool:
    """Whether ``dest`` could be made a hard link to the regular file ``src`` (another file system,
    or one without links, or a file not ours to link: False, and the caller copies)."""
    try:
        os.link(src, dest, follow_symlinks=True)
    except OSError:
        return False
    return True


def check_model_file(model: Path) -> None:
    """Refuses early — before any download — a model file onnxruntime cannot even parse.

    The session is made with no graph optimization and no pre-packing: those are what read every
    weight (constant folding, packed matrices), so a 10 GB model would cost 10 GB of this
    workstation's memory; without them onnxruntime still parses and resolves the graph, checks
    every operator against its opset and finds a kernel for each, and leaves the weights unread
    (onnxruntime 1.32: 55 MB of memory for a 2 GB external-data model). The image runs the model
    for real when it records the golden outputs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.log_severity_level = 3  # errors only: they reach us as the exception
    try:
        ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            f"{model} is not an ONNX model onnxruntime can load: {first[:300]}",
            hint="export the model to ONNX (e.g. torch.onnx.export) and point model.path at it",
        ) from None


def model_record(
    files: ModelFiles, copied: dict[str, tuple[str, int]], onnxruntime: str
) -> dict[str, object]:
    """The signed build record's ``model``: the graph and its hash, the onnxruntime that recorded
    the golden outputs, the external data files (path, SHA-256, size), and for a model directory
    every file that travels with the graph."""
    out: dict[str, object] = {
        "file": f"model/{files.graph_name}",
        "sha256": copied[files.graph_name][0],
        "onnxruntime": onnxruntime,
    }
    if files.data:
        out["external_data"] = [
            {"file": f"model/{d.name}", "sha256": copied[d.name][0], "size": d.size} for d in files.data
        ]
    if len(files.files) > len(files.data) + 1:
        out["files"] = [f"model/{rel}" for rel, _ in files.files]
    return out
