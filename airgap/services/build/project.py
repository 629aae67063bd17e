"""The project a build starts from: ``airgap.yaml`` found, parsed and checked against its directory.

Shared by ``airgap bundle`` and ``airgap check --project`` (which reads the project's waivers and
policy directories), so that both refuse the same project the same way.
"""

from __future__ import annotations

from pathlib import Path

from airgap.adapters.fs import MAX_PROJECT, read_bytes
from airgap.core.project import PROJECT_FILE, Project, parse_project, parse_requirements_in
from airgap.errors import InvalidInputError


def locate_project(path: Path) -> tuple[Path, Path]:
    """(project directory, project file) from either one: `bundle DIR` and `bundle DIR/airgap.yaml`."""
    if path.is_dir():
        return path, path / PROJECT_FILE
    if path.is_file():
        return path.parent, path
    raise InvalidInputError(
        f"{path} does not exist",
        hint=f"pass the project directory (the one holding {PROJECT_FILE}) or its {PROJECT_FILE}",
    )


def load_project(project_path: Path) -> tuple[Project, tuple[str, ...]]:
    """The validated project and its requirements; every referenced file must exist inside it.

    ``project_path`` is the project directory or its project file.
    """
    project_dir, path = locate_project(project_path)
    if not path.exists():
        raise InvalidInputError(
            f"{project_dir} has no {PROJECT_FILE}",
            hint=f"pass the project directory that holds {PROJECT_FILE} (docs/project-file.md describes it)",
        )
    text = read_bytes(path, "project file", MAX_PROJECT).decode("utf-8", "replace")
    project = parse_project(text, str(path))
    if project.requirements_file:
        req_path = project_dir / project.requirements_file
        reqs = parse_requirements_in(
            read_bytes(req_path, "requirements file", MAX_PROJECT).decode(), str(req_path)
        )
    else:
        reqs = project.requirements
    for what, rel in (("model", project.model.path), ("golden inputs", project.model.golden)):
        if not (project_dir / rel).is_file():
            raise InvalidInputError(f"{path}: the {what} file {rel} does not exist in {project_dir}")
    return project, reqs
