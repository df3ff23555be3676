"""One download: conditional, size-limited, deadline-bound, into a temporary file beside the target.

An unchanged upstream file costs one round trip: the request carries the ``ETag`` and
``Last-Modified`` of the copy we have, and a ``304 Not Modified`` ends it. Everything else either
yields a complete temporary file or raises :class:`FetchError` with a one-line reason and leaves
nothing behind: a body shorter than its ``Content-Length`` (httpx refuses it), a gzip stream that
does not end, more than ``max_bytes`` after decompression (a gzip bomb stops there too), no
progress for ``timeout`` seconds, or the whole download running past ``deadline``.

A body that starts with the gzip magic is decompressed while it is written, whatever the URL or
headers say, so an operator may point a source at a ``.mmdb.gz``; ``Content-Encoding: gzip`` is
undone by httpx itself.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

GZIP_MAGIC = b"\x1f\x8b"
#: Redirects followed before giving up (GitHub release downloads redirect once, to their storage).
MAX_REDIRECTS = 5
#: Decompressed bytes produced per step, so one small compressed chunk cannot balloon in memory.
INFLATE_STEP = 4 * 1024 * 1024

Progress = Callable[[int, int | None], None]


class FetchError(Exception):
    """The download failed; the message says why in a few words (it ends up on the operator's screen)."""


@dataclass(slots=True)
class Fetched:
    """What a download gave: ``path`` is None when the server said nothing changed (304)."""

    url: str
    path: Path | None
    etag: str | None = None
    last_modified: str | None = None
    size: int = 0  # bytes written (after decompression)
    received: int = 0  # bytes received from the server
    gzip: bool = False
    seconds: float = 0.0


def client(timeout: float) -> httpx.Client:
    """An HTTP client for the updater: ``timeout`` seconds without progress, a few redirects."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        headers={"User-Agent": "apviz-data-update", "Accept-Encoding": "gzip"},
    )


def fetch(
    http: httpx.Client,
    url: str,
    dest_dir: Path,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int,
    deadline: float,
    progress: Progress | None = None,
) -> Fetched:
    """GET ``url`` into a new temporary file in ``dest_dir``; the caller renames or deletes it.

    ``deadline`` is a :func:`time.monotonic` value the whole download must finish by.
    """
    start = time.monotonic()
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with http.stream("GET", url, headers=headers) as response:
            final = str(response.url)
            if response.status_code == 304:
                return Fetched(final, None, etag, last_modified, seconds=time.monotonic() - start)
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} {response.reason_phrase} from {final}")
            total = _length(response)
            if total is not None and total > max_bytes:
                raise FetchError(f"the file is {total} bytes, more than data.max_bytes ({max_bytes})")
            fetched = Fetched(
                final, None, response.headers.get("etag"), response.headers.get("last-modified")
            )
            _write(response, dest_dir, fetched, max_bytes, deadline, total, progress)
    except httpx.TimeoutException as exc:
        raise FetchError(f"no progress for {http.timeout.read:.0f} s ({type(exc).__name__})") from None
    except httpx.RemoteProtocolError as exc:  # mostly: the body ended before its Content-Length
        raise FetchError(f"the download broke off (truncated): {exc}") from None
    except httpx.TooManyRedirects:
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    fetched.seconds = time.monotonic() - start
    return fetched


def _length(response: httpx.Response) -> int | None:
    """The body's announced size, when it is the size of what we write (not a compressed transfer)."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return None
    with contextlib.suppress(TypeError, ValueError):
        return int(response.headers["content-length"])
    return None


def _write(
    response: httpx.Response,
    dest_dir: Path,
    fetched: Fetched,
    max_bytes: int,
    deadline: float,
    total: int | None,
    progress: Progress | None,
) -> None:
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix=".download-", suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            inflate: zlib._Decompress | None = None
            first = True
            # As the data arrives (no re-chunking): the deadline is looked at after every read.
            for chunk in response.iter_bytes():
                if time.monotonic() > deadline:
                    raise FetchError("the download took too long (over its deadline); given up")
                fetched.received += len(chunk)
                if first:
                    first = False
                    if chunk.startswith(GZIP_MAGIC):
                        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                        fetched.gzip = True
                if inflate is None:
                    _put(out, chunk, fetched, max_bytes)
                else:
                    data = chunk
                    while data:
                        _put(out, inflate.decompress(data, INFLATE_STEP), fetched, max_bytes)
                        data = inflate.unconsumed_tail
                if progress is not None:
                    progress(fetched.received, total)
            if inflate is not None:
                _put(out, inflate.flush(), fetched, max_bytes)
                if not inflate.eof:
                    raise FetchError(f"the gzip stream ends early after {fetched.received} bytes (truncated)")
                if inflate.unused_data:
                    raise FetchError("data after the end of the gzip stream")
            if total is not None and fetched.received != total:  # httpx checks too; say it in our words
                raise FetchError(f"got {fetched.received} of {total} bytes (truncated)")
            if fetched.size == 0:
                raise FetchError("the server sent an empty file")
            out.flush()
            os.fsync(out.fileno())
    except zlib.error as exc:
        path.unlink(missing_ok=True)
        raise FetchError(f"not a valid gzip stream ({exc})") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    fetched.path = path


def _put(out: BinaryIO, data: bytes, fetched: Fetched, max_bytes: int) -> None:
    if not data:
        return
    fetched.size += len(data)
    if fetched.size > max_bytes:
        raise FetchError(f"the file grows past data.max_bytes ({max_bytes} bytes); refused")
    out.write(data)
