"""The repository's own promises: environment.yml agrees with pyproject.toml, notebooks are stripped,
the README's commands are the ones CI and make run."""

from __future__ import annotations

import json
import re
import tomllib

import yaml

from .conftest import REPO


def requirement_names(requirements: list[str]) -> dict[str, str]:
    """{name: version spec} of PEP 508 requirement strings, extras expanded as conda packages."""
    names = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?(.*)$", requirement.strip())
        name, extras, spec = match.group(1).lower(), match.group(2), match.group(3).strip()
        names[name] = spec
        if extras and "distributed" in extras:
            names["distributed"] = spec
    return names


def test_environment_yml_agrees_with_pyproject():
    """Every dependency and test/bench extra of pyproject.toml is in environment.yml with the same bound."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = requirement_names(
        project["dependencies"]
        + project["optional-dependencies"]["test"]
        + project["optional-dependencies"]["bench"]
    )
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = [], []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip += [p for p in entry["pip"] if not p.startswith("-e")]
        else:
            conda.append(entry)
    have = requirement_names([re.sub(r"^python=", "python==", c) for c in conda] + pip)
    assert have.pop("python") == "==3.11"
    have.pop("pip")
    assert have == wanted


def test_notebooks_are_stored_without_outputs():
    """No cell of a committed notebook carries outputs or an execution count."""
    for path in (REPO / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            assert not cell.get("outputs"), path
            assert not cell.get("execution_count"), path


def test_readme_commands_are_the_ones_ci_runs():
    """The README shows make run / make test / make lab, and .ci/run calls make test."""
    readme = (REPO / "README.md").read_text()
    for command in ("make run", "make test", "make lab", "make bench"):
        assert command in readme, command
    makefile = (REPO / "Makefile").read_text()
    for target in ("run:", "test:", "lab:", "bench:"):
        assert f"\n{target}" in makefile, target
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_readme_describes_every_transport():
    """The README's transport table has a row for each record of the registry, and no other."""
    from imgdist.transports import TRANSPORTS

    readme = (REPO / "README.md").read_text()
    table = readme.split("| transport | what crosses |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1].strip().split()[0].strip("`") for line in table.splitlines()[2:]]
    assert rows == list(TRANSPORTS)
