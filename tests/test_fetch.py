"""Fetching photos from URLs: limits, retries, the per-host cap and the SSRF guard.

Everything runs against real HTTP(S) servers on 127.0.0.1 started here, which the tests'
settings allow. Connection attempts are observed with a `socket.connect` audit hook, so
"refused before connecting" is checked on the real socket calls. The only fake is the DNS
resolver for made-up names (no DNS server runs here): it maps them to 127.0.0.1.
"""

from __future__ import annotations

import io
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from iddetective.errors import UsageError
from iddetective.sources.fetch import Fetcher, FetchError, FetchSettings, refusal_reason

LOCAL = ("127.0.0.1/32",)


def image_bytes(image_format: str) -> bytes:
    """A small photo made here (no photo of a person is needed to test downloading)."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 120, 40)).save(buffer, image_format)
    return buffer.getvalue()


JPEG = image_bytes("JPEG")
PNG = image_bytes("PNG")


def settings(**changes: Any) -> FetchSettings:
    """Test settings: 127.0.0.1 allowed, short backoff and timeout."""
    values: dict[str, Any] = {"allow": LOCAL, "backoff": 0.01, "timeout": 2.0}
    return FetchSettings(**(values | changes))


# --- the servers ---------------------------------------------------------------------

Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    """Answers with the route the test registered for the path (query ignored)."""

    server: TestServer

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.record(path, self.headers.get("Host", ""))
        route = self.server.routes.get(path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TestServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that counts requests per path."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.sni: list[str | None] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.scheme = "http"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def record(self, path: str, host: str) -> None:
        with self.lock:
            self.hits[path] += 1
            self.hosts.append(host)

    def reset(self) -> None:
        self.routes.clear()
        self.hits.clear()
        self.hosts.clear()
        self.sni.clear()
        self.release.clear()
        self.active = self.peak = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (size limit, timeout) break the pipe: expected here.
        pass


@contextmanager
def running(server: TestServer) -> Iterator[TestServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture(scope="module")
def http_server() -> Iterator[TestServer]:
    with running(TestServer()) as server:
        yield server


@pytest.fixture
def server(http_server: TestServer) -> Iterator[TestServer]:
    http_server.reset()
    yield http_server
    http_server.release.set()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, photos.example and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ]
    command += ["-nodes", "-days", "2", "-subj", "/CN=iddetective test"]
    command += ["-keyout", str(key), "-out", str(cert)]
    command += ["-addext", "subjectAltName=DNS:localhost,DNS:photos.example,IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def https_module_server(certificate: tuple[Path, Path]) -> Iterator[TestServer]:
    server = TestServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)

    def record_sni(_socket: Any, name: str | None, _context: Any) -> None:
        server.sni.append(name)

    context.sni_callback = record_sni
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.scheme = "https"
    with running(server):
        yield server


@pytest.fixture
def https_server(https_module_server: TestServer) -> Iterator[TestServer]:
    https_module_server.reset()
    yield https_module_server
    https_module_server.release.set()


def send(
    handler: Handler, body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> None:
    headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(body))} | (headers or {})
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def photo(body: bytes, headers: dict[str, str] | None = None) -> Route:
    return lambda handler: send(handler, body, headers=headers)


def redirect(location: str, status: int = 302) -> Route:
    return lambda handler: send(handler, b"", status, {"Location": location})


def failing(statuses: list[int], then: Route, headers: dict[str, str] | None = None) -> Route:
    """Answer with `statuses` one after the other, then as `then` does."""
    remaining = list(statuses)

    def route(handler: Handler) -> None:
        if remaining:
            send(handler, b"busy", remaining.pop(0), headers)
        else:
            then(handler)

    return route


# --- observing connections and faking DNS ----------------------------------------------

_recorders: list[list[Any]] = []
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _recorders:
        _recorders[-1].append(args[1])


@contextmanager
def connections() -> Iterator[list[Any]]:
    """The addresses this process connects to while the block runs."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # hooks cannot be removed; it only records inside blocks
        _hook_installed = True
    seen: list[Any] = []
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


class FakeDNS:
    """Names the resolver answers with given addresses (others go to the real resolver)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self._real = socket.getaddrinfo

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self.names:
            return self._real(host, port, *args, **kwargs)
        self.lookups.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
            for address in self.names[host]
        ]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns


def refused(fetcher: Fetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)
    return caught.value


# --- downloads that work -----------------------------------------------------------------


def test_fetches_photos_whatever_type_the_server_claims(server: TestServer) -> None:
    server.routes["/a.jpg"] = photo(JPEG)
    server.routes["/b"] = photo(PNG, {"Content-Type": "text/plain"})
    fetcher = Fetcher(settings())
    assert fetcher.fetch(server.url("/a.jpg")) == JPEG
    assert fetcher.fetch(server.url("/b")) == PNG
    assert server.hosts == [f"127.0.0.1:{server.port}"] * 2


def test_html_served_as_jpeg_is_not_an_image(server: TestServer) -> None:
    server.routes["/fake.jpg"] = photo(b"<!doctype html><html><body>login</body></html>")
    error = refused(Fetcher(settings()), server.url("/fake.jpg"))
    assert error.reason.startswith("not an image")
    assert str(error) == f"{server.url('/fake.jpg')}: {error.reason}"
    assert error.exit_code == 2
    assert server.hits["/fake.jpg"] == 1


# --- limits --------------------------------------------------------------------------------


def test_a_body_announced_above_the_limit_is_refused_unread(server: TestServer) -> None:
    server.routes["/big.jpg"] = photo(JPEG + bytes(5000))
    error = refused(Fetcher(settings(max_bytes=1000)), server.url("/big.jpg"))
    assert f"announces {len(JPEG) + 5000} bytes, above the 1000 bytes limit" in error.reason
    assert server.hits["/big.jpg"] == 1  # not retried


def endless(chunked: bool) -> Route:
    """A body without a length that never ends (until the client goes or the test ends)."""

    def route(handler: Handler) -> None:
        if chunked:
            handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        block = JPEG[:1024].ljust(1024, b"\0")
        while not handler.server.release.is_set():
            data = b"400\r\n" + block + b"\r\n" if chunked else block
            handler.wfile.write(data)
            time.sleep(0.001)

    return route


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
def test_a_body_without_length_stops_at_the_limit(server: TestServer, chunked: bool) -> None:
    server.routes["/stream.jpg"] = endless(chunked)
    started = time.monotonic()
    error = refused(Fetcher(settings(max_bytes=10_000)), server.url("/stream.jpg"))
    assert error.reason == "the body is larger than the 10000 bytes limit"
    assert time.monotonic() - started < 1.0
    assert server.hits["/stream.jpg"] == 1


def test_a_server_that_does_not_answer_times_out_after_retries(server: TestServer) -> None:
    def never(handler: Handler) -> None:
        server.release.wait(5)

    server.routes["/slow.jpg"] = never
    started = time.monotonic()
    error = refused(Fetcher(settings(timeout=0.2, retries=1)), server.url("/slow.jpg"))
    elapsed = time.monotonic() - started
    assert error.reason == "timed out (no complete answer within 0.2 s) (gave up after 2 attempts)"
    assert server.hits["/slow.jpg"] == 2
    assert 0.4 <= elapsed < 1.0


def test_the_timeout_covers_the_whole_answer_not_each_read(server: TestServer) -> None:
    def drip(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(JPEG)))
        handler.end_headers()
        for byte in JPEG:
            if server.release.wait(0.02):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    server.routes["/drip.jpg"] = drip
    started = time.monotonic()
    error = refused(Fetcher(settings(timeout=0.3, retries=0)), server.url("/drip.jpg"))
    assert error.reason.startswith("timed out")
    assert time.monotonic() - started < 0.6


# --- redirects -------------------------------------------------------------------------------


def redirect_chain(server: TestServer) -> str:
    """/r3 -> /r2 -> /r1 -> /a.jpg, relative and absolute, with several statuses."""
    server.routes["/a.jpg"] = photo(JPEG)
    server.routes["/r1"] = redirect("/a.jpg", 303)
    server.routes["/r2"] = redirect(server.url("/r1"), 308)
    server.routes["/r3"] = redirect("r2", 301)
    return server.url("/r3")


def test_redirects_are_followed_up_to_the_limit(server: TestServer) -> None:
    url = redirect_chain(server)
    assert Fetcher(settings(max_redirects=3)).fetch(url) == JPEG
    error = refused(Fetcher(settings(max_redirects=2)), url)
    assert error.reason == "more than 2 redirects"
    assert server.hits["/a.jpg"] == 1


@pytest.mark.parametrize(
    ("target", "address", "kind"),
    [
        ("http://10.1.2.3/x", "10.1.2.3", "a private address"),
        ("http://169.254.169.254/latest", "169.254.169.254", "a link-local address"),
        ("http://[::1]:80/", "::1", "a loopback address"),
    ],
)
def test_a_redirect_to_a_refused_address_is_refused_before_connecting(
    server: TestServer, target: str, address: str, kind: str
) -> None:
    server.routes["/go"] = redirect(target, 307)
    with connections() as seen:
        error = refused(Fetcher(settings()), server.url("/go"))
    assert seen == [("127.0.0.1", server.port)]
    assert error.reason == (
        f"redirected to {target}: {address} is {kind} "
        "(refused; allow it with --allow-network if it is yours)"
    )


def test_a_redirect_to_another_scheme_is_refused(server: TestServer) -> None:
    server.routes["/go"] = redirect("file:///etc/passwd")
    error = refused(Fetcher(settings()), server.url("/go"))
    assert error.reason == (
        "redirected to file:///etc/passwd: only http and https URLs can be fetched, not file: URLs"
    )


# --- the SSRF guard on the first URL ----------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_refused_unless_allowed(server: TestServer, host: str) -> None:
    server.routes["/a.jpg"] = photo(JPEG)
    url = server.url("/a.jpg", host)
    with connections() as seen:
        error = refused(Fetcher(settings(allow=())), url)
    assert seen == []
    assert "127.0.0.1" in error.reason and "a loopback address (refused;" in error.reason
    if host == "localhost":
        assert error.reason.startswith("localhost resolves to 127.0.0.1, a loopback address")
    assert Fetcher(settings()).fetch(url) == JPEG


def test_a_name_is_refused_if_any_of_its_addresses_is(
    server: TestServer, fake_dns: FakeDNS
) -> None:
    fake_dns.names["mixed.example"] = ["127.0.0.1", "10.0.0.7"]
    with connections() as seen:
        error = refused(Fetcher(settings()), f"http://mixed.example:{server.port}/a.jpg")
    assert seen == []
    assert error.reason.startswith("mixed.example resolves to 10.0.0.7, a private address")


def test_the_checked_address_is_the_one_connected_to(server: TestServer, fake_dns: FakeDNS) -> None:
    # One lookup per request, and the socket goes to its answer: a second, rebound
    # answer is never asked for. The Host header keeps the name.
    fake_dns.names["photos.example"] = ["127.0.0.1"]
    server.routes["/a.jpg"] = photo(JPEG)
    with connections() as seen:
        data = Fetcher(settings()).fetch(f"http://photos.example:{server.port}/a.jpg")
    assert data == JPEG
    assert fake_dns.lookups == ["photos.example"]
    assert seen == [("127.0.0.1", server.port)]
    assert server.hosts == [f"photos.example:{server.port}"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http and https URLs can be fetched, not file: URLs"),
        ("ftp://127.0.0.1/a.jpg", "only http and https URLs can be fetched, not ftp: URLs"),
        ("gopher://127.0.0.1:70/", "only http and https URLs can be fetched, not gopher: URLs"),
        ("//127.0.0.1/a.jpg", "only http and https URLs can be fetched, not URLs without a scheme"),
        ("http:///a.jpg", "the URL has no host"),
        ("http://user:secret@127.0.0.1/", "URLs with a user name or password are refused"),
        ("http://127.0.0.1:99999/", "the URL has an invalid port"),
        ("http://127.0.0.1/a\r\nX-Evil: 1", "the URL contains control characters"),
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str, reason: str) -> None:
    with connections() as seen:
        error = refused(Fetcher(settings()), url)
    assert seen == []
    assert error.reason == reason
    assert "secret" not in str(error)


# --- retries ----------------------------------------------------------------------------------


def test_server_errors_are_retried(server: TestServer) -> None:
    server.routes["/flaky.jpg"] = failing([500, 500], photo(JPEG))
    assert Fetcher(settings(retries=2)).fetch(server.url("/flaky.jpg")) == JPEG
    assert server.hits["/flaky.jpg"] == 3


def test_retrying_gives_up_after_the_last_attempt(server: TestServer) -> None:
    server.routes["/down.jpg"] = failing([503] * 5, photo(JPEG))
    error = refused(Fetcher(settings(retries=2)), server.url("/down.jpg"))
    assert error.reason == "HTTP 503 Service Unavailable (gave up after 3 attempts)"
    assert server.hits["/down.jpg"] == 3


def test_client_errors_are_not_retried(server: TestServer) -> None:
    error = refused(Fetcher(settings(retries=3)), server.url("/missing.jpg"))
    assert error.reason == "HTTP 404 Not Found"
    assert server.hits["/missing.jpg"] == 1


def test_too_many_requests_waits_as_retry_after_says(server: TestServer) -> None:
    server.routes["/busy.jpg"] = failing([429], photo(JPEG), {"Retry-After": "1"})
    started = time.monotonic()
    assert Fetcher(settings(retries=1)).fetch(server.url("/busy.jpg")) == JPEG
    assert time.monotonic() - started >= 0.95  # the backoff alone would be 0.01 s
    assert server.hits["/busy.jpg"] == 2


# --- the per-host cap ---------------------------------------------------------------------------


def test_no_more_than_per_host_requests_reach_one_host_at_once(server: TestServer) -> None:
    def slow(handler: Handler) -> None:
        with server.lock:
            server.active += 1
            server.peak = max(server.peak, server.active)
        time.sleep(0.15)
        with server.lock:
            server.active -= 1
        send(handler, JPEG)

    server.routes["/slow.jpg"] = slow
    urls = [server.url(f"/slow.jpg?n={n}") for n in range(6)]
    results = dict(Fetcher(settings(per_host=2)).fetch_many(urls, workers=6))
    assert results == {url: JPEG for url in urls}
    assert server.peak == 2


def test_fetch_many_yields_errors_beside_photos(server: TestServer) -> None:
    server.routes["/a.jpg"] = photo(JPEG)
    good, bad = server.url("/a.jpg"), server.url("/nothing")
    results = dict(Fetcher(settings()).fetch_many([good, bad], workers=2))
    assert results[good] == JPEG
    failed = results[bad]
    assert isinstance(failed, FetchError)
    assert failed.reason == "HTTP 404 Not Found"


# --- https: the name is verified, the checked address is connected to -------------------------


def test_https_verifies_the_certificate_for_the_name_in_the_url(
    https_server: TestServer, certificate: tuple[Path, Path], fake_dns: FakeDNS
) -> None:
    fake_dns.names["photos.example"] = ["127.0.0.1"]
    https_server.routes["/a.jpg"] = photo(JPEG)
    fetcher = Fetcher(settings(ca_file=str(certificate[0])))
    assert fetcher.fetch(https_server.url("/a.jpg", "localhost")) == JPEG
    assert fetcher.fetch(https_server.url("/a.jpg", "photos.example")) == JPEG
    assert https_server.sni == ["localhost", "photos.example"]
    assert https_server.hosts == [
        f"localhost:{https_server.port}",
        f"photos.example:{https_server.port}",
    ]


def test_https_refuses_a_certificate_for_another_name(
    https_server: TestServer, certificate: tuple[Path, Path], fake_dns: FakeDNS
) -> None:
    fake_dns.names["other.example"] = ["127.0.0.1"]
    fetcher = Fetcher(settings(ca_file=str(certificate[0]), retries=2))
    with connections() as seen:
        error = refused(fetcher, https_server.url("/a.jpg", "other.example"))
    assert error.reason.startswith("TLS certificate verification failed: Hostname mismatch")
    assert len(seen) == 1  # not retried
    assert https_server.hits == Counter()


def test_https_refuses_an_untrusted_certificate(https_server: TestServer) -> None:
    error = refused(Fetcher(settings()), https_server.url("/a.jpg", "localhost"))
    assert error.reason.startswith("TLS certificate verification failed")
    assert https_server.hits == Counter()


# --- the address check and the settings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("::ffff:10.0.0.1", "an IPv4-mapped form of 10.0.0.1, a private address"),
        ("64:ff9b::a9fe:a9fe", "a NAT64 form of 169.254.169.254, a link-local address"),
        ("2002:c0a8:101::1", "a 6to4 form of 192.168.1.1, a private address"),
        ("10.20.30.40", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00:ec2::254", "a private (unique local) address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("100.100.100.200", "a shared (carrier-grade NAT) address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "the broadcast address"),
        ("192.0.2.10", "a special-purpose address, not globally routable"),
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str, kind: str) -> None:
    assert refusal_reason(address) == (
        f"{address} is {kind} (refused; allow it with --allow-network if it is yours)"
    )


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(address) is None
    assert refusal_reason("64:ff9b::5db8:d70e") is None  # NAT64 form of a public address


def test_the_operator_can_allow_a_range() -> None:
    assert refusal_reason("10.1.2.3", ["10.0.0.0/8"]) is None
    assert refusal_reason("::ffff:10.1.2.3", ["10.0.0.0/8"]) is None
    assert refusal_reason("10.1.2.3", ["10.9.0.0/16"]) is not None
    assert refusal_reason("fd12::5", ["fd12::/16"]) is None


@pytest.mark.parametrize(
    "changes",
    [{"allow": ("not-a-range",)}, {"allow": "10.0.0.0/8"}, {"timeout": 0}, {"per_host": 0}],
)
def test_bad_settings_are_usage_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        FetchSettings(**changes)
