"""Download photos from http(s) URLs without letting a URL reach what it should not.

An import file is data, and a URL in it makes this machine send a request wherever it
points: to the cloud metadata service (169.254.169.254, which hands out credentials), to
an admin page on localhost, to a database on the private network. That is server-side
request forgery (SSRF). So before connecting, the host name is resolved and every address
it resolves to is checked; loopback, private, link-local, shared (CGNAT), multicast,
reserved and other special-purpose addresses are refused unless the operator allows the
range explicitly. Each redirect is checked the same way before it is followed.

Checking a name and then letting the HTTP library resolve it again would be useless: a
hostile DNS server can answer a public address to the check and 127.0.0.1 to the second
lookup (DNS rebinding). Here the socket is opened to the very address that was checked,
and only the Host header, the TLS server name (SNI) and certificate verification use the
name.

The other limits keep one bad URL from stalling or flooding an import: a size cap, a time
cap per request, a redirect cap, retries with backoff for transient failures only, and a
cap on concurrent requests per host. What arrives must be an image by its bytes: the
Content-Type header and the URL's suffix are not trusted. See docs/fetching.md.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import itertools
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ..errors import BadImage, IDDetectiveError, UsageError, printable
from ..faces.imaging import photo_suffix
from ..retrying import Backoff, retried
from ..urls import masked_url

__all__ = ["FetchError", "FetchSettings", "Fetcher", "refusal_reason"]

#: The longest wait a Retry-After header can impose before the next attempt, in seconds.
MAX_RETRY_AFTER = 30.0

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_ALLOW_HINT = " (refused; allow it with --allow-network if it is yours)"
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A checked address to connect to: (socket family, socket address).
_Address = tuple[int, Any]


@dataclass(frozen=True)
class FetchSettings:
    """Limits for downloading photos; `allow` lists CIDR ranges the operator says are theirs."""

    max_bytes: int = 50 * 1024 * 1024
    #: Seconds for one request (connect, TLS, send, the whole answer), per attempt and hop.
    timeout: float = 20.0
    max_redirects: int = 5
    #: Extra attempts after the first, for transient failures only.
    retries: int = 3
    #: First retry delay in seconds; it doubles for each further retry, with jitter.
    backoff: float = 0.5
    #: Concurrent requests to one host name at most, across all threads of a `Fetcher`.
    per_host: int = 2
    #: CIDR ranges allowed although they are not public, e.g. ("127.0.0.1/32",).
    allow: tuple[str, ...] = ()
    #: PEM file of CA certificates trusted for https instead of the system's.
    ca_file: str | None = None

    def __post_init__(self) -> None:
        _check_positive("max_bytes", self.max_bytes)
        _check_positive("timeout", self.timeout)
        _check_positive("per_host", self.per_host)
        for name in ("max_redirects", "retries", "backoff"):
            if getattr(self, name) < 0:
                raise UsageError(f"fetch setting {name} must not be negative")
        if isinstance(self.allow, str):
            raise UsageError("fetch setting allow must be a sequence of CIDR ranges, not a string")
        _parse_networks(self.allow)

    def allowed_networks(self) -> tuple[IPNetwork, ...]:
        """The `allow` ranges, parsed."""
        return _parse_networks(self.allow)


class FetchError(IDDetectiveError):
    """A URL could not be fetched as a photo: the message names the URL and the reason."""

    exit_code = 2

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{_redact(url)}: {reason}")
        self.url = url
        self.reason = reason


def refusal_reason(address: str, allow: Sequence[str | IPNetwork] = ()) -> str | None:
    """Why a connection to the IP `address` is refused, or None when it may be made.

    `address` must be an IP address (ValueError otherwise); `allow` holds CIDR ranges.

    Loopback, private, link-local (which holds cloud metadata services), shared (CGNAT),
    unspecified, multicast, reserved and other non-global addresses are refused, and so are
    IPv4-mapped, NAT64 and 6to4 IPv6 forms of them, unless the address lies in `allow`.
    """
    networks = _parse_networks(allow)
    ip = ipaddress.ip_address(address)
    kind = _refused_kind(ip, networks)
    return None if kind is None else f"{address} is {kind}{_ALLOW_HINT}"


class Fetcher:
    """Downloads photos under `FetchSettings`; one instance may be shared by many threads."""

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self.settings = settings or FetchSettings()
        self._allow = self.settings.allowed_networks()
        self._tls = ssl.create_default_context(cafile=self.settings.ca_file)
        self._tls.sslsocket_class = _DeadlineSSLSocket
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def fetch(self, url: str) -> bytes:
        """The bytes of the photo at `url`, after retries; `FetchError` says why not."""
        try:
            return self._fetch_with_retries(_parse_target(url))
        except _Failure as failure:
            raise FetchError(url, failure.reason) from None

    def fetch_many(
        self, urls: Sequence[str], workers: int = 8
    ) -> Iterator[tuple[str, bytes | FetchError]]:
        """Fetch `urls` on `workers` threads; yield (url, bytes or the error) as each finishes."""
        if workers < 1:
            raise UsageError("fetch workers must be at least 1")
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iddetective-fetch")
        try:
            futures = {pool.submit(self._fetch_or_error, url): url for url in urls}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_or_error(self, url: str) -> bytes | FetchError:
        try:
            return self.fetch(url)
        except FetchError as error:
            return error

    def _fetch_with_retries(self, target: _Target) -> bytes:
        attempts = self.settings.retries + 1
        try:
            return retried(lambda: self._attempt(target), self._retry_delay, attempts=attempts)
        except _Failure as failure:
            # Failures that are not transient are never tried again: a transient one here
            # is the last of the attempts.
            raise failure.gave_up(attempts) if failure.transient else failure from None

    def _retry_delay(self, error: Exception, retry: int) -> float | None:
        """How long to wait after a failed attempt: transient failures only, with jittered
        backoff, or longer when the server said so (Retry-After)."""
        if not isinstance(error, _Failure) or not error.transient:
            return None
        delay = Backoff(self.settings.backoff, jitter=True).delay(retry)
        return delay if error.retry_after is None else max(delay, error.retry_after)

    def _attempt(self, first: _Target) -> bytes:
        target = first
        for hop in itertools.count():
            answer = self._exchange_hop(target, hop)
            if answer.location is None:
                return _sniffed(answer.body)
            if hop == self.settings.max_redirects:
                raise _Failure(f"more than {self.settings.max_redirects} redirects")
            target = _redirect_target(target.url, answer.location)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange_hop(self, target: _Target, hop: int) -> _Answer:
        try:
            return self._exchange(target)
        except _Failure as failure:
            if hop == 0:
                raise
            raise failure.after_redirect(target.url) from None

    def _exchange(self, target: _Target) -> _Answer:
        addresses = _resolve_checked(target, self._allow)
        with self._host_slot(target.host):
            deadline = time.monotonic() + self.settings.timeout
            try:
                return self._request(target, addresses, deadline)
            except (OSError, http.client.HTTPException) as error:
                raise _network_failure(error, self.settings.timeout) from None

    def _request(self, target: _Target, addresses: list[_Address], deadline: float) -> _Answer:
        sock = self._connect(target, addresses, deadline)
        connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = sock
        response = None
        try:
            _send_request(connection, target, deadline)
            response = connection.getresponse()
            return _read_answer(response, self.settings.max_bytes)
        finally:
            if response is not None:
                response.close()
            connection.close()

    def _connect(
        self, target: _Target, addresses: list[_Address], deadline: float
    ) -> socket.socket:
        last_error: OSError | None = None
        for family, sockaddr in addresses:
            try:
                return self._open_socket(target, family, sockaddr, deadline)
            except (TimeoutError, ssl.SSLError):
                raise
            except OSError as error:
                last_error = error
        detail = (last_error and (last_error.strerror or str(last_error))) or "no address"
        raise _Failure(f"cannot connect to {target.host_header}: {detail}", transient=True)

    def _open_socket(
        self, target: _Target, family: int, sockaddr: Any, deadline: float
    ) -> socket.socket:
        plain = _DeadlineSocket(family, socket.SOCK_STREAM)
        try:
            plain.deadline = deadline
            plain.settimeout(_remaining(deadline))
            plain.connect(sockaddr)
            if target.scheme == "http":
                return plain
            return self._start_tls(plain, target.host, deadline)
        except BaseException:
            plain.close()
            raise

    def _start_tls(self, plain: socket.socket, host: str, deadline: float) -> socket.socket:
        # The name, not the address, is what the certificate must match (and what SNI says).
        tls = self._tls.wrap_socket(plain, server_hostname=host, do_handshake_on_connect=False)
        try:
            assert isinstance(tls, _DeadlineSSLSocket)
            tls.deadline = deadline
            tls.settimeout(_remaining(deadline))
            tls.do_handshake()
            return tls
        except BaseException:
            tls.close()
            raise

    @contextmanager
    def _host_slot(self, host: str) -> Iterator[None]:
        with self._slots_lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(self.settings.per_host)
        with slot:
            yield


@dataclass(frozen=True)
class _Target:
    """One URL, checked and split into what a request needs."""

    url: str
    scheme: str
    host: str  # ASCII, lower case, IPv6 without brackets
    port: int
    path: str  # the request target: path and query, percent-encoded

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class _Answer:
    body: bytes
    location: str | None = None


class _Failure(Exception):
    """Why one attempt failed, and whether trying again may help."""

    def __init__(
        self, reason: str, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after

    def after_redirect(self, url: str) -> _Failure:
        reason = f"redirected to {_redact(url)}: {self.reason}"
        return _Failure(reason, self.transient, self.retry_after)

    def gave_up(self, attempts: int) -> _Failure:
        return _Failure(f"{self.reason} (gave up after {attempts} attempts)")


class _DeadlineSocket(socket.socket):
    """A socket whose every read waits at most until `deadline` (time.monotonic)."""

    deadline = math.inf

    def recv_into(  # type: ignore[override]
        self, buffer: memoryview | bytearray, nbytes: int = 0, flags: int = 0
    ) -> int:
        # A server dripping one byte just before each read timeout would otherwise never end.
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS form of `_DeadlineSocket`."""

    deadline = math.inf

    def recv_into(  # type: ignore[override]
        self, buffer: memoryview | bytearray, nbytes: int | None = None, flags: int = 0
    ) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


# Named first so that a refusal says what the address is; anything else that is not
# globally routable is refused by the catch-all in `_refused_kind`.
_IPV4_KINDS = [
    (ipaddress.IPv4Network(cidr), kind)
    for cidr, kind in [
        ("0.0.0.0/8", "an unspecified address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    ]
]
_IPV6_KINDS = [
    (ipaddress.IPv6Network(cidr), kind)
    for cidr, kind in [
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/8", "a reserved address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ]
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _refused_kind(ip: IPAddress, allow: Sequence[IPNetwork]) -> str | None:
    """What kind of refused address `ip` is ("a loopback address"), or None if it is fine."""
    embedded = _embedded_ipv4(ip)
    if any(ip in net or (embedded and embedded[1] in net) for net in allow):
        return None
    if embedded is not None:
        form, ipv4 = embedded
        kind = _refused_kind(ipv4, ())
        return None if kind is None else f"{form} form of {ipv4}, {kind}"
    kinds = _IPV4_KINDS if ip.version == 4 else _IPV6_KINDS
    for network, kind in kinds:
        if ip in network:
            return kind
    return None if ip.is_global else "a special-purpose address, not globally routable"


def _embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address reaches (mapped, NAT64, 6to4), with the form's name."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "a NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "a 6to4", ip.sixtofour
    return None


def _resolve_checked(target: _Target, allow: Sequence[IPNetwork]) -> list[_Address]:
    """Every address `target.host` resolves to, refusing them all if any one is refused."""
    try:
        infos = socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as error:
        transient = error.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_FAIL", None))
        reason = f"cannot resolve the host name {target.host} ({error.strerror or error})"
        raise _Failure(reason, transient=transient) from None
    addresses: list[_Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0])
        kind = _refused_kind(ipaddress.ip_address(text), allow)
        if kind is not None:
            raise _Failure(_refusal_sentence(target.host, text, kind))
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise _Failure(f"the host name {target.host} has no address")
    return addresses


def _refusal_sentence(host: str, address: str, kind: str) -> str:
    if _is_ip(host):
        return f"{address} is {kind}{_ALLOW_HINT}"
    return f"{host} resolves to {address}, {kind}{_ALLOW_HINT}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_target(url: str) -> _Target:
    """Split `url`, refusing what is not a plain http(s) URL of a named host."""
    if any(ord(char) < 0x20 or char == "\x7f" for char in url):
        raise _Failure("the URL contains control characters")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        named = f"{scheme}: URLs" if scheme else "URLs without a scheme"
        raise _Failure(f"only http and https URLs can be fetched, not {named}")
    if "@" in parts.netloc:
        raise _Failure("URLs with a user name or password are refused")
    try:
        port = parts.port
    except ValueError:
        raise _Failure("the URL has an invalid port") from None
    if port == 0:
        raise _Failure("the URL has an invalid port")
    host = _ascii_host(parts.hostname or "", bracketed="[" in parts.netloc)
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=~")
    default_port = 443 if scheme == "https" else 80
    return _Target(url, scheme, host, port or default_port, path)


def _ascii_host(host: str, bracketed: bool) -> str:
    """The host in the ASCII form DNS and TLS use; IDN names are IDNA-encoded."""
    if not host:
        raise _Failure("the URL has no host")
    if bracketed:
        if not _is_ip(host) or ":" not in host:
            raise _Failure(f"invalid IPv6 address in the URL: {host}")
        return host
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _Failure(f"invalid host name in the URL: {host}") from None
    if not _HOST_NAME.fullmatch(ascii_host):
        raise _Failure(f"invalid host name in the URL: {host}")
    return ascii_host


def _redirect_target(base: str, location: str) -> _Target:
    url = urljoin(base, location.strip())
    try:
        return _parse_target(url)
    except _Failure as failure:
        raise failure.after_redirect(url) from None


def _redact(url: str) -> str:
    """`url` for messages and logs: any user name and password masked, so that they do not
    keep them, and control characters escaped, so that a CR/LF in it forges no line."""
    return printable(masked_url(url, user=True))


def _send_request(connection: http.client.HTTPConnection, target: _Target, deadline: float) -> None:
    assert connection.sock is not None
    connection.sock.settimeout(_remaining(deadline))
    connection.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", target.host_header)
    connection.putheader("User-Agent", "iddetective")
    connection.putheader("Accept", "image/*")
    # A compressed body would make the size limit count the wrong bytes.
    connection.putheader("Accept-Encoding", "identity")
    connection.putheader("Connection", "close")
    connection.endheaders()


def _read_answer(response: http.client.HTTPResponse, max_bytes: int) -> _Answer:
    status = response.status
    if status in _REDIRECTS:
        location = response.getheader("Location")
        if not location:
            raise _Failure(f"HTTP {status} redirect without a Location header")
        return _Answer(b"", location)
    if status == 429 or status >= 500:
        retry_after = _retry_after(response.getheader("Retry-After"))
        raise _Failure(f"HTTP {status} {response.reason}", True, retry_after)
    if status != 200:
        raise _Failure(f"HTTP {status} {response.reason}")
    return _Answer(_read_body(response, max_bytes))


def _read_body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise _Failure(f"the server sent an encoded body (Content-Encoding: {encoding})")
    declared = response.length
    if declared is not None and declared > max_bytes:
        raise _Failure(f"the server announces {declared} bytes, above the {_size(max_bytes)} limit")
    chunks: list[bytes] = []
    total = 0
    while chunk := response.read(min(_CHUNK, max_bytes + 1 - total)):
        total += len(chunk)
        if total > max_bytes:
            raise _Failure(f"the body is larger than the {_size(max_bytes)} limit")
        chunks.append(chunk)
    if declared is not None and total < declared:
        reason = f"the connection closed after {total} of {declared} bytes"
        raise _Failure(reason, transient=True)
    if total == 0:
        raise _Failure("empty body (0 bytes)")
    return b"".join(chunks)


def _sniffed(body: bytes) -> bytes:
    """`body` if its bytes are an image format the photo decoder reads."""
    try:
        photo_suffix(body, "body")
    except BadImage as error:
        raise _Failure(error.reason) from None
    return body


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delay or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _network_failure(error: OSError | http.client.HTTPException, timeout: float) -> _Failure:
    """The reason for a failed connection or exchange, and whether it is worth retrying."""
    if isinstance(error, TimeoutError):
        return _Failure(f"timed out (no complete answer within {timeout:g} s)", transient=True)
    if isinstance(error, ssl.SSLCertVerificationError):
        return _Failure(f"TLS certificate verification failed: {error.verify_message}")
    if isinstance(error, ssl.SSLError):
        return _Failure(f"TLS error: {error.reason or error}", transient=True)
    if isinstance(error, http.client.RemoteDisconnected):
        return _Failure("the server closed the connection without answering", transient=True)
    if isinstance(error, http.client.IncompleteRead):
        return _Failure("the connection closed before the whole body arrived", transient=True)
    if isinstance(error, http.client.HTTPException):
        return _Failure(f"invalid HTTP answer ({type(error).__name__}: {error})")
    return _Failure(f"connection failed: {error.strerror or error}", transient=True)


def _remaining(deadline: float) -> float:
    """Seconds left until `deadline`; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _size(count: int) -> str:
    mib = 1024 * 1024
    return f"{count // mib} MiB" if count % mib == 0 else f"{count} bytes"


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"fetch setting {name} must be positive, not {value}")


def _parse_networks(allow: Sequence[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    networks = []
    for item in allow:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise UsageError(f"not an IP range (CIDR, e.g. 10.0.0.0/8): {item!r}") from None
    return tuple(networks)
