"""The command line's argument types, without running anything."""

from __future__ import annotations

import pytest

from imgdist.cli import build_parser
from imgdist.cli.common import comma_list


def test_comma_lists_drop_blanks():
    assert comma_list(" worker1@a, ,worker2@b,") == ["worker1@a", "worker2@b"]


@pytest.mark.parametrize("text", ["0", "32,x", "-1"])
def test_scaling_takes_whole_numbers(text, capsys):
    """A bad --scaling list is refused by argparse in one sentence naming the value."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["bench", "--scaling", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --scaling: give whole numbers of at least 1, e.g. 32,256;" in err
    assert "is not one." in err


def test_lists_are_parsed_once():
    args = build_parser().parse_args(["run", "--workers", "w1@a,w2@b", "--ssh", "me@h1,me@h2"])
    assert args.workers == ["w1@a", "w2@b"]
    assert args.ssh == ["me@h1", "me@h2"]
    assert build_parser().parse_args(["bench", "--scaling", "32,256"]).scaling == [32, 256]
