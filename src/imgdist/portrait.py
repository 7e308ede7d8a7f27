"""Getting the portrait (a URL, or the one matplotlib ships) and making its copies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from imgdist.codec import decode, read_file
from imgdist.errors import DownloadError, ParameterError
from imgdist.files import atomic_write, write_new
from imgdist.names import copy_name

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 20_000_000
MAX_COPIES = 100_000


def sample_portrait() -> Path:
    """The portrait matplotlib ships: Grace Hopper, public domain."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@dataclass(frozen=True)
class Portrait:
    """The fetched portrait: where it is on disk, where it came from, and its pixels."""

    path: Path
    origin: str
    pixels: np.ndarray


def get_portrait(
    url: str,
    dest_dir: Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Portrait:
    """Download `url` into `dest_dir` (or copy the bundled portrait when `url` is empty)."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if not url.strip():
        source = sample_portrait()
        data = read_file(source)
        target = place(dest_dir / source.name, data)
        return Portrait(
            target, f"matplotlib sample data ({source.name})", decode(data, target.name)
        )
    data = download(url, timeout_s=timeout_s, max_bytes=max_bytes)
    name = Path(urlparse(url).path).name or "portrait.jpg"
    if "." not in name:
        name += ".jpg"
    pixels = decode(data, f"{url} (downloaded)")
    return Portrait(place(dest_dir / name, data), url, pixels)


def place(target: Path, data: bytes) -> Path:
    """Write `data` at `target`, or beside it as `<stem>_2<ext>`, `<stem>_3<ext>` ... when a
    different file is already there: a file of the user's is never written over. A file with
    the same bytes is reused."""
    candidate, number = target, 2
    while candidate.exists():
        same_size = candidate.is_file() and candidate.stat().st_size == len(data)
        if same_size and candidate.read_bytes() == data:
            return candidate
        candidate = target.with_name(f"{target.stem}_{number}{target.suffix}")
        number += 1
    if not write_new(candidate, data):  # another process took the name meanwhile
        return place(target, data)
    return candidate


def download(
    url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The body of `url`, fetched with `requests` within `timeout_s` and `max_bytes`."""
    import requests

    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        msg = f"URL {url!r} is not http(s); give an http:// or https:// address, or leave it empty for the bundled portrait."
        raise DownloadError(msg)
    try:
        with requests.get(url, timeout=timeout_s, stream=True) as response:
            if response.status_code != 200:
                msg = f"GET {url} answered HTTP {response.status_code} {response.reason}; check the address."
                raise DownloadError(msg)
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                msg = f"GET {url}: the body is {declared:,} bytes, over the limit of {max_bytes:,}; pick a smaller image or raise max_bytes."
                raise DownloadError(msg)
            body = bytearray()
            for chunk in response.iter_content(chunk_size=65536):
                body += chunk
                if len(body) > max_bytes:
                    msg = f"GET {url}: the body passed the limit of {max_bytes:,} bytes; pick a smaller image or raise max_bytes."
                    raise DownloadError(msg)
            return bytes(body)
    except requests.Timeout:
        msg = f"GET {url} did not answer within {timeout_s:g} s; check the address or raise the timeout."
        raise DownloadError(msg) from None
    except requests.ConnectionError as exc:
        msg = f"GET {url} could not connect ({_root_cause(exc)}); check the address and that the server is up."
        raise DownloadError(msg) from None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return str(exc) or type(exc).__name__


def make_copies(portrait: Path, copies: int, dest_dir: Path) -> list[Path]:
    """Write `copies` copies of the portrait as `<base>_d_<i><ext>` in `dest_dir`.

    Idempotent: a copy already there with the same bytes is left alone.
    """
    copies = check_copies(copies)
    portrait, dest_dir = Path(portrait), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    data = read_file(portrait)
    paths = []
    for index in range(copies):
        path = dest_dir / copy_name(portrait.stem, index, portrait.suffix)
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            atomic_write(path, data)
        paths.append(path)
    return paths


def check_copies(copies: object, maximum: int = MAX_COPIES) -> int:
    """`copies` as an int in 1..maximum, or a ParameterError that says so."""
    try:
        number = int(str(copies).strip()) if not isinstance(copies, int) else copies
    except ValueError:
        msg = f"copies = {copies!r} is not a whole number; give how many copies to make, e.g. 32."
        raise ParameterError(msg) from None
    if not 1 <= number <= maximum:
        msg = f"copies = {number} is out of range; give a number from 1 to {maximum:,}."
        raise ParameterError(msg)
    return number
