"""The server's analysis pool under hostile uploads, over real HTTP with real worker processes:
a bad file, a photo that crashes its worker, and one that never finishes each fail alone,
with a specific message, while the searches around them are answered."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from iddetective.cli import main
from iddetective.faces.pipeline import PipelineSettings
from iddetective.web import AnalysisLimits, ServerSettings, create_app

from support.facesets import WebCatalogue, copy_data
from support.live_server import serving

pytestmark = pytest.mark.faces

#: 24 bytes that start like a GIF: the hostile tester's upload.
BAD_BYTES = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00"
TIME_BOUND = 4.0


def png(colour: tuple[int, int, int], size: tuple[int, int] = (120, 120)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Site:
    url: str
    app: object
    web: WebCatalogue


@pytest.fixture(scope="module")
def site(web_catalogue: WebCatalogue, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A real server with two analysis processes whose detector crashes its process on an
    all-black photo and hangs on an all-white one (tests/support/crashing_detector.py)."""
    data = copy_data(web_catalogue.data_dir, tmp_path_factory.mktemp("analysis") / "data")
    settings = ServerSettings(
        data,
        analysis_workers=2,
        analysis_queue=32,
        pipeline=PipelineSettings(detector="support.crashing_detector:HangingDetector"),
        limits=AnalysisLimits(seconds=TIME_BOUND),
        broker=None,
    )
    app = create_app(settings)
    with serving(app) as url:
        yield Site(url, app, web_catalogue)


def upload(site: Site, name: str, data: bytes) -> httpx.Response:
    """POST /api/search with `data` as the photo `name`, on a connection of its own."""
    key = site.web.keys["search"]
    with httpx.Client(base_url=site.url, timeout=120) as client:
        return client.post(
            "/api/search",
            headers={"Authorization": f"Bearer {key}"},
            files={"photo": (name, data, "image/jpeg")},
        )


def at_once(site: Site, uploads: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """Every upload sent at the same time; the answers in the same order."""
    with ThreadPoolExecutor(len(uploads)) as threads:
        return list(threads.map(lambda u: upload(site, *u), uploads))


def searches(site: Site, count: int) -> list[tuple[str, bytes]]:
    probes = [p for p in site.web.probes if p.person == "biden"] or site.web.probes
    return [(Path(p.path).name, Path(p.path).read_bytes()) for p in probes[:1] * count]


def assert_found_biden(answers: list[httpx.Response]) -> None:
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["faces"][0]["matches"][0]["person"]["name"] == "biden"


def interleaved(good: list[tuple[str, bytes]], bad: list[tuple[str, bytes]]) -> list[int]:
    """Positions of the bad uploads when they are spread among the good ones."""
    step = max(1, len(good) // max(1, len(bad)))
    return [i * (step + 1) + step // 2 for i in range(len(bad))]


def mixed(
    good: list[tuple[str, bytes]], bad: list[tuple[str, bytes]]
) -> tuple[list[tuple[str, bytes]], Callable[[list[httpx.Response]], tuple[list, list]]]:
    """The uploads in one list, and a function splitting the answers back (good, bad)."""
    spots = set(interleaved(good, bad))
    bad_left, good_left = iter(bad), iter(good)
    order = [next(bad_left) if i in spots else next(good_left) for i in range(len(good) + len(bad))]

    def split(answers: list[httpx.Response]) -> tuple[list, list]:
        return (
            [a for i, a in enumerate(answers) if i not in spots],
            [a for i, a in enumerate(answers) if i in spots],
        )

    return order, split


def test_bad_uploads_fail_alone_with_the_message_the_cli_gives(site: Site, tmp_path: Path) -> None:
    bad_file = tmp_path / "tiny.gif"
    bad_file.write_bytes(BAD_BYTES)
    cli = CliRunner().invoke(main, ["search", str(bad_file), "--data", str(site.web.data_dir)])
    assert cli.exit_code == 2, cli.output
    cli_message = cli.output.strip().removeprefix("error: ")

    order, split = mixed(searches(site, 8), [(str(bad_file), BAD_BYTES)] * 6)
    good, bad = split(at_once(site, order))
    assert_found_biden(good)
    for answer in bad:
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "bad_image" and error["message"] == cli_message


def test_a_worker_killed_by_a_crash_fails_only_its_own_photo(site: Site) -> None:
    order, split = mixed(searches(site, 6), [("black.png", png((0, 0, 0)))] * 2)
    good, crashed = split(at_once(site, order))
    assert_found_biden(good)
    for answer in crashed:
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "pipeline_crashed"
        assert error["message"] == "black.png: the face pipeline crashed while analysing this photo"
    assert_found_biden(at_once(site, searches(site, 2)))  # the pool is whole again


def test_an_analysis_over_the_time_bound_is_refused_and_its_worker_replaced(site: Site) -> None:
    pool = site.app.state.analysis  # type: ignore[attr-defined]
    before = set(pool.worker_pids())
    started = time.monotonic()
    order, split = mixed(searches(site, 4), [("white.png", png((255, 255, 255)))])
    good, slow = split(at_once(site, order))
    took = time.monotonic() - started
    assert_found_biden(good)
    assert slow[0].status_code == 422, slow[0].text
    error = slow[0].json()["error"]
    assert error["code"] == "analysis_timeout"
    assert error["message"] == (
        f"white.png: analysing this photo took longer than the server's {TIME_BOUND:g} s "
        "limit; send a smaller photo"
    )
    assert took < TIME_BOUND + 30
    deadline = time.monotonic() + 60  # the replacement loads its models first
    while len(pool.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = set(pool.worker_pids())
    assert len(after) == 2 and after != before
    for pid in before - after:  # the stuck process was ended, not left burning its core
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert_found_biden(at_once(site, searches(site, 2)))


# -- bounds on what one query photo may cost ----------------------------------------------


def two_faces(web: WebCatalogue) -> bytes:
    """Two people's photos side by side in one PNG: a photo with two faces."""
    left, right = (Image.open(p.path).convert("RGB") for p in (web.probes[0], web.strangers[0]))
    height = max(left.height, right.height)
    both = Image.new("RGB", (left.width + right.width, height), (128, 128, 128))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    buffer = io.BytesIO()
    both.save(buffer, "PNG")
    return buffer.getvalue()


def test_query_photos_are_bounded_in_faces_and_pixels(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    limits = AnalysisLimits(max_faces=1, max_pixels=2_000_000)
    app = create_app(ServerSettings(data, analysis_workers=0, limits=limits, broker=None))
    key = {"Authorization": f"Bearer {web_catalogue.keys['admin']}"}
    with TestClient(app) as client:
        crowd = client.post(
            "/api/search", headers=key, files={"photo": ("two.png", two_faces(web_catalogue))}
        )
        assert crowd.status_code == 422, crowd.text
        assert crowd.json()["error"] == {
            "code": "too_many_faces",
            "message": "two.png: 2 faces found, more than the 1 allowed in one photo here; "
            "crop it to the faces you want",
        }
        large = client.post(
            "/api/photos", headers=key, files={"photo": ("big.png", png((9, 9, 9), (1500, 1500)))}
        )
        assert large.status_code == 422, large.text
        assert large.json()["error"]["message"] == (
            "big.png: refused as a possible decompression bomb: it declares 1500x1500 pixels "
            "(2.25 MP), above the 2 MP limit"
        )
        one = client.post(
            "/api/search", headers=key, files={"photo": ("one.jpg", b"")}
        )  # still the plain checks first
        assert one.status_code == 400


def test_serve_takes_the_bounds_from_its_options(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from support.services import free_port

    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    port = free_port()
    command = [sys.executable, "-m", "iddetective", "serve", "--data", str(data)]
    options = ["--port", str(port), "--workers", "0", "--max-faces", "1", "--max-megapixels", "2"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([*command, *options], stdout=output, stderr=output)
    url, key = (
        f"http://127.0.0.1:{port}",
        {"Authorization": f"Bearer {web_catalogue.keys['admin']}"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        crowd = httpx.post(
            f"{url}/api/search", headers=key, files={"photo": ("two.png", two_faces(web_catalogue))}
        )
        large = httpx.post(
            f"{url}/api/search",
            headers=key,
            files={"photo": ("big.png", png((9, 9, 9), (1500, 1500)))},
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert crowd.json()["error"]["code"] == "too_many_faces", crowd.text
    assert "more than the 1 allowed" in crowd.json()["error"]["message"]
    assert large.status_code == 422 and "above the 2 MP limit" in large.text
