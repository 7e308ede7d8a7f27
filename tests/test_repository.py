"""The repository's own promises: environment.yml agrees with pyproject.toml, notebooks are stripped,
the README's commands are the ones CI and make run."""

from __future__ import annotations

import ast
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


def _modules():
    return sorted((REPO / "src" / "imgdist").rglob("*.py"))


def test_only_the_cluster_package_imports_ipyparallel():
    """At module level, only `imgdist.cluster` imports ipyparallel (engine-side functions may
    import its data channel inside themselves, on the engine)."""
    importers = []
    for path in _modules():
        for node in ast.parse(path.read_text()).body:
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "ipyparallel" for name in names):
                importers.append(path.relative_to(REPO / "src").as_posix())
    assert importers
    assert all(path.startswith("imgdist/cluster/") for path in importers), importers


def test_the_readme_maps_every_module():
    """The README's module map has a line for each module of the package."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    for path in _modules():
        if path.name == "__main__.py":
            continue
        module = path.relative_to(REPO / "src").with_suffix("").as_posix().replace("/", ".")
        module = module.removesuffix(".__init__")
        assert f"`{module}`" in section, module


def test_public_names_are_not_shadowed_by_modules():
    """`from imgdist import X` gives the function or class X even after the modules are imported
    (a module named like a public name would replace it on the package)."""
    import importlib
    import pkgutil

    import imgdist

    for module in pkgutil.walk_packages(imgdist.__path__, "imgdist."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name in imgdist.__all__:
        value = getattr(imgdist, name)
        assert not isinstance(value, type(imgdist)), name


def test_modules_and_functions_stay_small():
    """No module over 300 lines and no function over 60 (a newcomer reads each in one go)."""
    for path in _modules():
        text = path.read_text()
        assert len(text.splitlines()) <= 300, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno < 60, f"{path}: {node.name}"


def test_every_code_cell_has_a_sentence_before_it():
    """The notebook teaches: each code cell follows a markdown cell, and nothing dumps help()."""
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "main.ipynb", as_version=4)
    for before, cell in zip(nb.cells, nb.cells[1:], strict=False):
        if cell.cell_type == "code":
            assert before.cell_type == "markdown", f"no sentence before: {cell.source[:60]!r}"
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "help(" not in sources
    assert "import *" not in sources
    assert "transport=DEFAULT_TRANSPORT" in sources
