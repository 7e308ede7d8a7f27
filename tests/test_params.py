"""Notebook parameters and their IMGDIST_* overrides."""

from __future__ import annotations

import pytest

from imgdist.errors import ParameterError
from imgdist.params import parameters


def test_defaults_without_environment(monkeypatch):
    """With no IMGDIST_* set, the notebook's values stand."""
    monkeypatch.delenv("IMGDIST_COPIES", raising=False)
    params = parameters(copies=32, url="")
    assert params.copies == 32
    assert params.url == ""
    assert params.overridden == ()


def test_environment_overrides_with_the_default_type(monkeypatch):
    """IMGDIST_<NAME> replaces a default and takes its type; the repr says where it came from."""
    monkeypatch.setenv("IMGDIST_COPIES", "8")
    monkeypatch.setenv("IMGDIST_RATIO", "0.5")
    monkeypatch.setenv("IMGDIST_QUIET", "yes")
    params = parameters(copies=32, ratio=1.0, quiet=False, url="")
    assert (params.copies, params.ratio, params.quiet) == (8, 0.5, True)
    assert "copies = 8   (from $IMGDIST_COPIES)" in repr(params)


@pytest.mark.parametrize(
    ("value", "default", "message"),
    [
        ("lots", 32, r"\$IMGDIST_X = 'lots' is not a int; set it to a number like 32"),
        ("maybe", False, r"\$IMGDIST_X = 'maybe' is not true or false"),
    ],
)
def test_bad_overrides_are_named(monkeypatch, value, default, message):
    """A malformed override names the variable, its value and what to set."""
    monkeypatch.setenv("IMGDIST_X", value)
    with pytest.raises(ParameterError, match=message):
        parameters(x=default)


def test_unknown_attribute():
    """Asking for a parameter that was not declared is an AttributeError."""
    with pytest.raises(AttributeError):
        _ = parameters(a=1).b
