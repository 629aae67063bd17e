"""The acceptance set at bundle time: the labelled rows, scored on the workstation with the model
server's own code, recorded in the signed ``model/acceptance.json`` for the far side to score again.

A model that misses its own thresholds on the workstation is not bundled (exit 1): carrying it
across the gap would only move the failure to a place with fewer tools.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from airgap.adapters.fs import read_bytes
from airgap.core import acceptance as metrics
from airgap.core.acceptance import evaluate, predictions
from airgap.core.datacontract import MISSING, read_csv
from airgap.core.project import Project
from airgap.errors import AnswerIsNo, InvalidInputError
from airgap.services.build.model_image import server_module

FORMAT = "airgap.acceptance/v1"
MAX_ROWS = 100_000


def load_rows(
    project: Project, project_dir: Path, width: int, names: list[str] | None
) -> tuple[list[str], list[list[float]], list[Any]]:
    """The feature columns (in the contract's order), the rows as numbers, and the labels."""
    spec = project.acceptance
    assert spec is not None
    path = project_dir / spec.data
    header, cells = read_csv_file(path, "acceptance data")
    if spec.label not in header:
        raise InvalidInputError(
            f"{path}: no column {spec.label!r} (acceptance.label)", hint=f"columns: {', '.join(header)}"
        )
    if len(cells) > MAX_ROWS:
        raise InvalidInputError(f"{path}: {len(cells)} rows; an acceptance set has at most {MAX_ROWS}")
    features = [h for h in header if h != spec.label]
    if names is not None and features != names:
        raise InvalidInputError(
            f"{path}: the feature columns are {', '.join(features)}; "
            f"the data contract's are {', '.join(names)}",
            hint="give the acceptance data the reference data's columns, in the same order, plus the label",
        )
    if len(features) != width:
        raise InvalidInputError(f"{path}: {len(features)} feature columns; the model's input takes {width}")
    label_at = header.index(spec.label)
    rows: list[list[float]] = []
    labels: list[Any] = []
    for n, row in enumerate(cells, start=2):
        values = []
        for i, cell in enumerate(row):
            if i == label_at:
                continue
            try:
                value = float(cell) if cell not in MISSING else math.nan
            except ValueError:
                raise InvalidInputError(f"{path}:{n}: {header[i]} = {cell!r} is not a number") from None
            if not math.isfinite(value):
                raise InvalidInputError(
                    f"{path}:{n}: {header[i]} is missing; acceptance rows must be complete"
                )
            values.append(value)
        rows.append(values)
        label = row[label_at]
        try:
            labels.append(float(label) if "." in label or "e" in label.lower() else int(label))
        except ValueError:
            labels.append(label)
    return features, rows, labels


def prepare_acceptance(
    project: Project, project_dir: Path, model: Path, data_contract: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``model/acceptance.json``: the rows, labels and thresholds, and the workstation's scores."""
    spec = project.acceptance
    if spec is None:
        return None
    server = server_module()
    loaded = server.Model(str(model), 1)
    input_name = (
        data_contract["input"]
        if data_contract
        else (loaded.inputs[0].name if len(loaded.inputs) == 1 else None)
    )
    if input_name is None:
        raise InvalidInputError(
            "the model has several inputs; declare data.input so the acceptance rows have one"
        )
    tensor = next(s for s in loaded.inputs if s.name == input_name)
    width = tensor.shape[1] if len(tensor.shape) == 2 and isinstance(tensor.shape[1], int) else -1
    names = [f["name"] for f in data_contract["features"]] if data_contract else None
    features, rows, labels = load_rows(project, project_dir, width if width > 0 else len(names or []), names)
    guard = server.DataGuard(data_contract, loaded) if data_contract else None
    outputs: dict[str, list[Any]] = {}
    batch = project.serving.max_batch
    for start in range(0, len(rows), batch):
        feeds = loaded.prepare({input_name: rows[start : start + batch]}, batch)
        if guard is not None:
            try:
                guard.check(feeds)
            except server.ApiError as exc:  # the far side would refuse the row: say which, here
                where = exc.message.split(";")[0].split("]", 1)
                row = start + int(where[0].split("[")[1]) + 2  # the CSV's line: header first
                why = where[1].split("]", 1)[1].strip().replace("(", "", 1).replace(")", "", 1)
                raise InvalidInputError(
                    f"{spec.data}:{row}: {why}",
                    hint="the far side refuses rows outside the data contract: fix it or widen data.features",
                ) from None
        for key, value in loaded.outputs_json(loaded.run(feeds)).items():
            outputs.setdefault(key, []).extend(value)
    predicted, scores = predictions(outputs, spec.output, spec.scores)
    thresholds = dict(spec.thresholds)
    try:
        values = evaluate(thresholds, labels, predicted, scores)
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise InvalidInputError(f"{spec.data}: cannot score the model on it: {exc}") from None
    missed = [
        f"{m} {values[m]:g} (promised {'≥' if metrics.HIGHER_IS_BETTER[m] else '≤'} {b:g})"
        for m, b in thresholds.items()
        if not metrics.meets(m, values[m], b)
    ]
    if missed:
        raise AnswerIsNo(
            f"the model misses its acceptance thresholds on this workstation: {'; '.join(missed)}",
            hint="fix the model or the thresholds in airgap.yaml (acceptance.thresholds) before bundling",
        )
    import onnxruntime

    return {
        "format": FORMAT,
        "input": input_name,
        "features": features,
        "label": spec.label,
        "output": spec.output,
        "scores": spec.scores,
        "rows": rows,
        "labels": labels,
        "thresholds": thresholds,
        "workstation": {"onnxruntime": onnxruntime.__version__, "metrics": values},
    }


def read_csv_file(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """A project's CSV file (acceptance or reference data): UTF-8 text, refused in one line
    naming ``what`` and the file otherwise."""
    try:
        text = read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path}: the {what} is not UTF-8 text") from None
    return read_csv(text, str(path))
