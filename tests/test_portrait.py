"""Getting the portrait: the bundled one, real downloads from a loopback server, and copies."""

from __future__ import annotations

import socket

import pytest

from imgdist.errors import DownloadError, ImageError, ParameterError
from imgdist.portrait import check_copies, get_portrait, make_copies

from .httpserver import PortraitServer


@pytest.fixture(scope="module")
def server(portrait_path):
    with PortraitServer(portrait_path.read_bytes()) as running:
        yield running


def test_empty_url_uses_the_bundled_portrait(tmp_path, portrait_path):
    """No URL: matplotlib's grace_hopper.jpg is copied into the folder and decoded."""
    portrait = get_portrait("", tmp_path)
    assert portrait.path == tmp_path / "grace_hopper.jpg"
    assert portrait.path.read_bytes() == portrait_path.read_bytes()
    assert portrait.pixels.shape == (600, 512, 3)
    assert "matplotlib" in portrait.origin


def test_download_from_a_real_server(tmp_path, server, portrait_path):
    """A URL is fetched with requests and saved under its own name."""
    portrait = get_portrait(f"{server.url}/portrait.jpg", tmp_path)
    assert portrait.path == tmp_path / "portrait.jpg"
    assert portrait.path.read_bytes() == portrait_path.read_bytes()
    assert portrait.origin.endswith("/portrait.jpg")


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/missing.jpg", r"answered HTTP 404 Not Found; check the address"),
        ("/broken.jpg", r"answered HTTP 500 Internal Server Error"),
        ("/huge-declared.jpg", r"body is 1,000,000,000 bytes, over the limit of 1,000,000"),
        ("/huge-streamed.jpg", r"body passed the limit of 1,000,000 bytes"),
    ],
)
def test_download_failures_are_named(tmp_path, server, route, message):
    """HTTP errors and oversized bodies give a sentence naming the URL and the cause."""
    with pytest.raises(DownloadError, match=message) as info:
        get_portrait(f"{server.url}{route}", tmp_path, max_bytes=1_000_000)
    assert route in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_body_that_is_not_an_image(tmp_path, server):
    """A page that is not an image is refused and nothing is written."""
    with pytest.raises(ImageError, match=r"cannot decode as an image") as info:
        get_portrait(f"{server.url}/text.jpg", tmp_path)
    assert "/text.jpg (downloaded)" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_timeout(tmp_path, server):
    """A server slower than the timeout gives a message naming the timeout."""
    with pytest.raises(DownloadError, match=r"did not answer within 0.3 s"):
        get_portrait(f"{server.url}/slow.jpg", tmp_path, timeout_s=0.3)


def test_connection_refused(tmp_path):
    """A port nobody listens on gives 'could not connect'."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        DownloadError, match=r"could not connect .*check the address and that the server is up"
    ):
        get_portrait(f"http://127.0.0.1:{port}/portrait.jpg", tmp_path)


@pytest.mark.parametrize("url", ["ftp://example.org/a.jpg", "file:///etc/passwd", "portrait.jpg"])
def test_only_http_urls(tmp_path, url):
    """Anything but http(s) is refused before any request."""
    with pytest.raises(DownloadError, match=r"is not http\(s\)"):
        get_portrait(url, tmp_path)


def test_copies_are_named_like_the_livebook(tmp_path, portrait_path):
    """32 copies named `<base>_d_<i><ext>`, byte-identical to the portrait."""
    copies = make_copies(portrait_path, 32, tmp_path)
    assert [p.name for p in copies[:3]] == [
        "grace_hopper_d_0.jpg",
        "grace_hopper_d_1.jpg",
        "grace_hopper_d_2.jpg",
    ]
    assert len(copies) == 32
    assert all(p.read_bytes() == portrait_path.read_bytes() for p in copies)


def test_copies_are_idempotent(tmp_path, portrait_path):
    """Running the copy step again leaves existing copies untouched."""
    first = make_copies(portrait_path, 4, tmp_path)
    stamps = [p.stat().st_mtime_ns for p in first]
    again = make_copies(portrait_path, 4, tmp_path)
    assert [p.stat().st_mtime_ns for p in again] == stamps


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, r"copies = 0 is out of range; give a number from 1 to 100,000"),
        (-3, r"copies = -3 is out of range"),
        ("many", r"copies = 'many' is not a whole number"),
        (100_001, r"copies = 100001 is out of range"),
    ],
)
def test_copies_parameter_errors(value, message):
    """Bad copy counts are refused with the value and the valid range."""
    with pytest.raises(ParameterError, match=message):
        check_copies(value)


def test_copies_accepts_text_numbers():
    """'32' typed in a box is 32."""
    assert check_copies(" 32 ") == 32


def test_a_download_never_replaces_a_file_of_the_users(tmp_path, server, portrait_path):
    """A file already at the download's name keeps its bytes; the portrait goes beside it."""
    mine = tmp_path / "portrait.jpg"
    mine.write_bytes(b"my own photo, not the portrait")
    portrait = get_portrait(f"{server.url}/portrait.jpg", tmp_path)
    assert mine.read_bytes() == b"my own photo, not the portrait"
    assert portrait.path == tmp_path / "portrait_2.jpg"
    assert portrait.path.read_bytes() == portrait_path.read_bytes()
    again = get_portrait(f"{server.url}/portrait.jpg", tmp_path)  # the same bytes: reused
    assert again.path == portrait.path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portrait.jpg", "portrait_2.jpg"]


def test_the_bundled_portrait_never_replaces_a_file_of_the_users(tmp_path, portrait_path):
    """The same for the bundled portrait: a different grace_hopper.jpg already there is kept."""
    (tmp_path / "grace_hopper.jpg").write_bytes(b"someone else's")
    portrait = get_portrait("", tmp_path)
    assert (tmp_path / "grace_hopper.jpg").read_bytes() == b"someone else's"
    assert portrait.path.read_bytes() == portrait_path.read_bytes()
