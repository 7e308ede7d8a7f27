"""Notebook parameters: defaults written in the notebook, overridable as IMGDIST_<NAME> variables.

`make run`, the tests and `jupyter nbconvert --execute` set the environment; a person in
JupyterLab edits the values in the cell.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from imgdist.errors import ImgdistError, ParameterError

PREFIX = "IMGDIST_"


@dataclass(frozen=True)
class Parameters:
    """The effective parameters, and which came from the environment."""

    values: dict
    overridden: tuple[str, ...]

    def __getattr__(self, name: str):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        lines = [
            f"{name} = {value!r}"
            + ("   (from $" + PREFIX + name.upper() + ")" if name in self.overridden else "")
            for name, value in self.values.items()
        ]
        return "\n".join(lines)


def parameters(**defaults) -> Parameters:
    """`defaults`, each replaced by $IMGDIST_<NAME> when set, converted to the default's type."""
    values, overridden = {}, []
    for name, default in defaults.items():
        raw = os.environ.get(PREFIX + name.upper())
        if raw is None:
            values[name] = default
            continue
        values[name] = _convert(name, raw, default)
        overridden.append(name)
    return Parameters(values, tuple(overridden))


def _convert(name: str, raw: str, default: object) -> object:
    variable = PREFIX + name.upper()
    if isinstance(default, bool):
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        msg = f"${variable} = {raw!r} is not true or false; set it to 1 or 0."
        raise ParameterError(msg)
    if isinstance(default, int | float):
        try:
            return type(default)(raw.strip())
        except ValueError:
            msg = f"${variable} = {raw!r} is not a {type(default).__name__}; set it to a number like {default!r}."
            raise ParameterError(msg) from None
    return raw


def brief_errors() -> None:
    """In IPython, show imgdist's errors as their one-sentence message, without a traceback.

    Errors from user input (a bad name, URL or parameter) are for a person to read; other
    exceptions keep their full traceback.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return

    def show(shell, etype, value, tb, tb_offset=None):
        print(f"{etype.__name__}: {value}", file=sys.stderr)

    shell.set_custom_exc((ImgdistError,), show)
