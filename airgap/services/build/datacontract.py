"""The data contract at bundle time: derived from the reference data, checked against the model and
the golden inputs before any slow phase, written beside the model so the server enforces it.

The check uses the model server's own ``DataGuard`` (the file that ships in the image), so the
workstation refuses exactly what the far side would refuse: a golden input outside the contract
would make the far side's smoke test fail with a 400, hours and a media transfer later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airgap.core.datacontract import MISSING, DataContract, derive, override
from airgap.core.project import Project
from airgap.errors import InvalidInputError
from airgap.services.build.acceptance import prepare_acceptance, read_csv_file
from airgap.services.build.model_image import server_module


def prepare_data_contract(project: Project, project_dir: Path, model: Path) -> dict[str, Any] | None:
    """The signed ``model/data-contract.json`` for the project, or ``None`` when it declares no ``data``."""
    spec = project.data
    if spec is None:
        return None
    server = server_module()
    loaded = server.Model(str(model), 1)
    names = [s.name for s in loaded.inputs]
    input_name = spec.input
    if input_name is None:
        if len(names) != 1:
            raise InvalidInputError(
                f"the model has {len(names)} inputs ({', '.join(names)}); data.input must say which one "
                "the data contract describes"
            )
        input_name = names[0]
    elif input_name not in names:
        raise InvalidInputError(
            f"data.input names {input_name!r}; the model's inputs are {', '.join(names)}",
            hint="name the [batch, features] input whose columns the contract describes",
        )
    if spec.reference is not None:
        header, rows = read_csv_file(project_dir / spec.reference, "reference data")
        contract = override(
            derive(header, rows, input_name), {f.name: f for f in spec.features}, dict(spec.modes)
        )
    else:
        contract = DataContract(input_name, spec.features, 0, ())
    doc = contract.to_json()
    try:
        guard = server.DataGuard(doc, loaded)
    except server.FatalError as exc:
        raise InvalidInputError(f"data: {exc}", hint="see docs/project-file.md#data") from None
    if spec.reference is not None:
        doc["predictions"] = _prediction_baseline(
            server, loaded, input_name, rows, project.serving.max_batch, doc["features"]
        )
    golden = project_dir / project.model.golden
    for name, inputs in server.load_golden(str(golden)):
        feeds = server.fit_case(loaded, name, inputs, project.serving.max_batch)
        try:
            guard.check(feeds)
        except server.ApiError as exc:
            raise InvalidInputError(
                f"{golden}: golden case {name!r}: {exc.message.split(';')[0]}",
                hint="the far side would refuse it: widen data.features in airgap.yaml, or fix the input",
            ) from None
    return doc


MAX_VALUES = 50  # an output with more distinct answers is a score, not a label


def _prediction_baseline(
    server: Any,
    loaded: Any,
    input_name: str,
    rows: list[list[str]],
    batch: int,
    features: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """What the model answers on the reference data, per label-like output (rank 1, integer, bool or
    text): each value's share, the baseline the server measures prediction drift against. The rows
    are sent as a client would: each cell by its feature's type, a missing one as null."""
    typed: list[list[Any]] = []
    for row in rows:
        cells: list[Any] = []
        for cell, feature in zip(row, features):
            if cell in MISSING:
                cells.append(None)
            elif feature.get("type") == "category":
                cells.append(cell)
            else:
                try:
                    cells.append(float(cell))
                except ValueError:
                    return []  # a hand-written type the reference contradicts: no baseline
        typed.append(cells)
    numbers = typed
    specs = [s for s in loaded.outputs if len(s.shape) == 1 and s.dtype in ("int64", "int32", "bool", "str")]
    if not specs:
        return []
    counts: dict[str, dict[str, int]] = {s.name: {} for s in specs}
    for start in range(0, len(numbers), batch):
        try:
            feeds = loaded.prepare({input_name: numbers[start : start + batch]}, batch)
        except server.ApiError:
            return []  # the model's input cannot carry this table as it is: no baseline
        answers = loaded.outputs_json(loaded.run(feeds))
        for s in specs:
            for value in answers[s.name]:
                text = value if isinstance(value, str) else str(int(value))
                counts[s.name][text] = counts[s.name].get(text, 0) + 1
    out = []
    for s in specs:
        top = sorted(counts[s.name].items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_VALUES]
        out.append(
            {
                "output": s.name,
                "values": [v for v, _ in top],
                "shares": [round(n / len(numbers), 6) for _, n in top],
            }
        )
    return out


def model_documents(project: Project, project_dir: Path, model: Path) -> dict[str, bytes]:
    """The deployment contract's signed files, by path in the bundle: beside the model the data
    contract, the acceptance set with the workstation's scores and the SLO; under ``monitoring/``
    the alert rules (plain and as a PrometheusRule), the ServiceMonitor that scrapes the model as the
    job the rules select, and the Grafana dashboard for them."""
    import yaml

    from airgap.core import monitoring

    def pretty(doc: dict[str, Any]) -> bytes:
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    files: dict[str, bytes] = {}
    data = prepare_data_contract(project, project_dir, model)
    if data is not None:
        files["model/data-contract.json"] = pretty(data)
    acceptance = prepare_acceptance(project, project_dir, model, data)
    if acceptance is not None:
        files["model/acceptance.json"] = pretty(acceptance)
    if project.slo is not None:
        files["model/slo.json"] = pretty({"format": "airgap.slo/v1", **project.slo.to_json()})
    if project.promote is not None:
        files["model/promote.json"] = pretty({"format": "airgap.promote/v1", **project.promote.to_json()})
    rules = monitoring.alert_rules(
        project.name, project.slo, data is not None, bool(data and data.get("predictions"))
    )
    namespace = project.kubernetes.namespace
    resource = monitoring.prometheus_rule(project.name, namespace, rules)
    scrape = monitoring.service_monitor(project.name, namespace)
    for rel, doc in (
        ("monitoring/alerts.rules.yaml", rules),
        ("monitoring/prometheusrule.yaml", resource),
        ("monitoring/servicemonitor.yaml", scrape),
    ):
        files[rel] = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000).encode()
    files["monitoring/dashboard.json"] = pretty(
        monitoring.dashboard(project.name, project.version, project.slo)
    )
    return files
