"""Names in one place: workers' (`label@host`) and outputs' (`<stem>_processed<ext>`)."""

from __future__ import annotations

import socket

import pytest

from imgdist.errors import WorkerNameError
from imgdist.names import (
    check_label,
    copy_name,
    drawable_label,
    engine_label,
    name_of,
    non_ascii_note,
    numbered_label,
    output_name,
    own_name,
    processed_name,
    worker_name,
)


def test_names():
    """Copies are `<base>_d_<i><ext>`, outputs `<base>_d_<i>_processed<ext>`."""
    assert copy_name("grace_hopper", 7, ".jpg") == "grace_hopper_d_7.jpg"
    assert processed_name("grace_hopper_d_7.jpg") == "grace_hopper_d_7_processed.jpg"
    assert processed_name("dir/a.b.png") == "a.b_processed.png"


def test_drawable_label_replaces_non_ascii():
    """Hershey fonts draw ASCII only: other characters show as '?'."""
    assert drawable_label("wörker@höst") == "w?rker@h?st"
    assert drawable_label("worker1@lab") == "worker1@lab"


def test_worker_names():
    """`label@host`; labels checked; engines nobody named and engines imgdist starts."""
    assert worker_name("worker1", "lab-pc") == "worker1@lab-pc"
    assert worker_name("worker1") == f"worker1@{socket.gethostname()}"
    assert name_of(engine_label(3), "h") == "engine3@h"
    assert numbered_label(2) == "worker2"
    assert own_name() == f"main@{socket.gethostname()}"
    with pytest.raises(WorkerNameError, match=r"label 'a b' cannot name a worker"):
        check_label("a b")


def test_a_second_output_of_the_same_name_is_numbered():
    assert output_name("a", ".jpg") == "a_processed.jpg"
    assert output_name("a", ".jpg", 2) == "a_2_processed.jpg"


def test_non_ascii_names_say_what_will_be_drawn():
    """Hershey fonts draw only ASCII: the note shows the name as it will appear."""
    assert non_ascii_note("wörker1@höst") == (
        "'wörker1@höst' has non-ASCII characters; OpenCV's Hershey font will draw it as 'w?rker1@h?st'."
    )
    assert non_ascii_note("worker1@host") == ""
