"""Fetch a file for `POST /v0/datasources?url=...` into a local file, within limits.

The server fetches what a caller names, so the fetch is bounded and guarded:
- `http`/`https` only; at most `max_bytes` (413 past it) within `timeout_s` in total
  (408 past it); redirects are followed by hand (at most 5), each hop checked again;
- unless `allow_private` (setting `import_private_urls`), a host that resolves to a
  loopback, private, link-local, multicast or reserved address is refused (400): a token
  that may append must not make the server read its own network (cloud metadata, the
  ClickHouse server, admin ports). Known limit: the name is resolved twice (check, then
  connect), so a DNS server that answers differently the second time is not stopped.
Errors are `RedpollError`s with a 4xx status and a message naming the URL's host only.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from redpoll.errors import ParameterError, PayloadTooLarge, QueryTimeout

__all__ = ("MAX_REDIRECTS", "check_url", "download")

MAX_REDIRECTS = 5
_CHUNK = 1 << 16


def check_url(url: str, *, allow_private: bool) -> str:
    """`url` if it may be fetched, else a 400 saying why."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ParameterError("url must be an http:// or https:// address")
    if not allow_private:
        host = parts.hostname
        try:
            infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            raise ParameterError(f"url: cannot resolve host {host[:200]}") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not address.is_global:
                raise ParameterError(
                    f"url: host {host[:200]} is a private or local address "
                    "(setting import_private_urls allows them)"
                )
    return url.strip()


def download(url: str, dest: Path, *, max_bytes: int, timeout_s: float, allow_private: bool) -> int:
    """Write the body at `url` to `dest`; returns its size in bytes."""
    deadline = time.monotonic() + timeout_s
    current = check_url(url, allow_private=allow_private)
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as http:
        for _ in range(MAX_REDIRECTS + 1):
            host = urlsplit(current).hostname or ""
            try:
                with http.stream("GET", current) as response:
                    if response.is_redirect:
                        target = response.headers.get("location", "")
                        current = check_url(urljoin(current, target), allow_private=allow_private)
                        continue
                    if response.status_code >= 400:
                        raise ParameterError(
                            f"url: {host[:200]} answered HTTP {response.status_code}"
                        )
                    return _save(response, dest, max_bytes, deadline)
            except httpx.TimeoutException:
                raise QueryTimeout(
                    f"url: {host[:200]} did not answer within {timeout_s} s"
                ) from None
            except httpx.HTTPError as exc:
                raise ParameterError(
                    f"url: cannot fetch from {host[:200]} ({type(exc).__name__})"
                ) from None
    raise ParameterError(f"url: more than {MAX_REDIRECTS} redirects")


def _save(response: httpx.Response, dest: Path, max_bytes: int, deadline: float) -> int:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"url: the file is larger than {max_bytes} bytes (import_max_bytes)")
    size = 0
    with open(dest, "wb") as out:
        for chunk in response.iter_bytes(_CHUNK):  # decoded: the cap bounds what is stored
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"url: the file is larger than {max_bytes} bytes (import_max_bytes)"
                )
            if time.monotonic() > deadline:
                raise QueryTimeout("url: the download took longer than import_timeout_s")
            out.write(chunk)
    return size
