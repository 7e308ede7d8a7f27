"""Connection files and port ranges, without a cluster."""

from __future__ import annotations

import pytest

from imgdist.cluster.connection import parse_ports
from imgdist.errors import ParameterError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("50000", "ports '50000' is not a range LO-HI of TCP ports between 1024 and 65535"),
        ("5-50000", "is not a range LO-HI"),
        ("50010-50000", "is not a range LO-HI"),
        ("abc-def", "is not a range LO-HI"),
        (
            "50000-50005",
            (
                r"holds 6 ports, but imgdist needs 19 \(18 for the controller, 1 for the data "
                r"route\); give a wider range, e.g. 50000-50018\."
            ),
        ),
    ],
)
def test_port_range_errors(text, message):
    """Malformed or too narrow port ranges are one sentence each."""
    with pytest.raises(ParameterError, match=message):
        parse_ports(text)
