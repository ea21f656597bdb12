"""Serving under load: sustained photo and text searches against a real `iddetective serve`.

What it does:

1. Builds a data directory once and keeps it in bench/.cache/serve_load/ (git-ignored): the
   face_recognition set ($IDDETECTIVE_FACES/face_recognition, default ../shared/faces beside
   the repository) indexed with `iddetective index IMAGES --people labels.csv`. The catalogue
   records where the photos are; they are never copied.
2. Creates a search key (`iddetective keys create --role search`) and starts
   `python -m iddetective serve --data DIR --port P` with the default analysis workers.
3. Sends open-loop traffic for --seconds: photo searches (POST /api/search with the set's
   photos, in turn) arriving at --photo-rate per second and text searches
   (GET /api/find?q=<a fragment of a name>, or /api/people?q= on servers before /api/find)
   at --text-rate per second: exactly rate x seconds requests of each kind at random times
   (Poisson arrivals given their count, fixed seed), over at most --clients connections.
   A request's latency runs from its scheduled arrival, so a slow server (or a queue in the
   client) is not hidden.
4. Prints one table per round: per kind the requests, ok (2xx), errors (any other status, or
   no answer, or a 503 without Retry-After), 503s, ok answers per second, p50 / p99 latency
   of the ok answers. Under it: the statuses seen, how long after the last request was due
   the last answer came, whether the server is still up, and the cores the server, its
   analysis workers, this client and every other process used (this machine may be shared:
   a round where others were busy is not a measurement of the server). --timeline adds the
   same per 10 s of the round.

Before each round it waits (up to --quiet-wait s) for other processes to go idle.

`--overload` runs the photo searches at 2x and 4x --photo-rate instead (text searches at
--text-rate): the server must shed what it cannot analyse with 503 + Retry-After, keep
answering text searches, stay up, and answer the last request soon after it was due
(no backlog building up; --timeline shows the latency staying level).

`--bad-uploads` adds a round with the same load plus a hostile upload every 2 s (24 bytes
that start like a GIF: before the analysis pool was rebuilt, each broke the pool and failed
every search in flight). Each must be answered 422 and no legitimate search may fail: the
round prints the failed legitimate searches (target 0) and the bad uploads' statuses.

Run from the repository root, in the project's virtualenv:

    python bench/serve_load.py --photo-rate 5 --text-rate 50 --seconds 60   # the target
    python bench/serve_load.py --overload --seconds 60 --timeline
    python bench/serve_load.py --bad-uploads --seconds 30
    python bench/serve_load.py --rebuild     # index the set again (after changing it)

Targets (issue): 5 photo + 50 text searches per second for 60 s, no errors, p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import mimetypes
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

try:
    import httpx
except ModuleNotFoundError:  # the test extra installs httpx2, the same client renamed
    # a redefinition to mypy only where plain httpx is installed as well
    import httpx2 as httpx  # type: ignore[no-redef, unused-ignore]

from machine import machine_busy_seconds, wait_for_quiet

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache" / "serve_load"
SEED = 20240611
KINDS = ("photo", "text")
#: 24 bytes that start like a GIF: the hostile tester's upload (`--bad-uploads`).
BAD_UPLOAD = (
    "tiny.gif",
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00",
)
#: What a bad upload must be answered: 422, the file refused, the pool unharmed.
BAD_STATUS = 422


@dataclass(frozen=True)
class Outcome:
    """One request: its kind, when it was due (s into the round), status (0: no answer),
    latency and whether a 503 said when to retry."""

    kind: str
    at: float
    status: int
    seconds: float
    retry_after: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def shed(self) -> bool:
        """Refused as busy, the way the server should: 503 with Retry-After."""
        return self.status == 503 and self.retry_after


@dataclass
class Round:
    """One load round: its rates, what happened, and how the server was afterwards."""

    title: str
    rates: dict[str, float]
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    #: Seconds from the last scheduled request to its last answer.
    drain: float = 0.0
    #: Largest delay between a request's scheduled arrival and the client sending it.
    client_lag: float = 0.0
    server_alive: bool = True
    health_ms: float | None = None
    #: Resource use sampled every second of the round, from its start to its end.
    samples: list[Usage] = field(default_factory=list)


# -- the data directory ----------------------------------------------------------------------
def faces_set() -> Path:
    """The face_recognition set: under $IDDETECTIVE_FACES, default ../shared/faces."""
    root = Path(os.environ.get("IDDETECTIVE_FACES") or REPO.parent / "shared" / "faces")
    folder = root.resolve() / "face_recognition"
    if not (folder / "labels.csv").is_file():
        sys.exit(f"no face_recognition set at {folder} (set IDDETECTIVE_FACES)")
    return folder


def iddetective(*args: str, capture: bool = False) -> str:
    """Run the command line with this interpreter; its stdout when `capture`."""
    command = [sys.executable, "-m", "iddetective", *args]
    done = subprocess.run(command, check=False, text=True, capture_output=capture)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}): {done.stderr or ''}")
    return done.stdout or ""


def data_dir(folder: Path, rebuild: bool) -> Path:
    """The cached data directory indexing `folder`; built when missing or out of date."""
    data, stamp = CACHE / "data", CACHE / "built-from.json"
    source = {"set": str(folder), "labels_mtime_ns": (folder / "labels.csv").stat().st_mtime_ns}
    if not rebuild and stamp.is_file() and json.loads(stamp.read_text()) == source:
        return data
    shutil.rmtree(data, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"indexing {folder} into {data} ...", file=sys.stderr)
    iddetective(
        "index", str(folder / "images"), "--people", str(folder / "labels.csv"),
        "--data", str(data), "--workers", "2",
    )  # fmt: skip
    stamp.write_text(json.dumps(source))
    return data


def search_key(data: Path) -> str:
    """A new search key for this run (printed on stdout by `keys create`)."""
    out = iddetective(
        "keys", "create", "--role", "search", "--label", "bench/serve_load", "--data", str(data),
        capture=True,
    )  # fmt: skip
    return out.strip().splitlines()[-1]


# -- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(data: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`iddetective serve` on a free port: (base URL, process); stopped with Ctrl-C after."""
    port = free_port()
    command = [sys.executable, "-m", "iddetective", "serve", "--data", str(data)]
    with open(CACHE / "server.log", "wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process)
            yield base, process
        finally:
            stop(process)


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode}); see {CACHE / 'server.log'}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server did not answer within {timeout:.0f} s; see {CACHE / 'server.log'}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Usage:
    """CPU seconds used so far (server process, its analysis workers, this client, the whole
    machine) and the server's resident memory with its workers, at one moment."""

    wall: float
    server: float
    workers: float
    client: float
    machine: float
    rss_mb: float

    @classmethod
    def now(cls, pid: int) -> Usage:
        children = descendants(pid)
        own = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.perf_counter(),
            proc_stat(pid)[0],
            sum(proc_stat(child)[0] for child in children),
            own.ru_utime + own.ru_stime,
            machine_busy_seconds(),
            sum(proc_stat(p)[1] for p in [pid, *children]),
        )


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (the analysis workers), from /proc; [] where it is missing."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in descendants(child)]


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MB) of one process; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- what the clients send -------------------------------------------------------------------
def photos_of(folder: Path) -> list[tuple[str, bytes]]:
    """The set's labelled photos (name, bytes), read once into memory."""
    with open(folder / "labels.csv", newline="") as handle:
        paths = [folder / row["path"] for row in csv.DictReader(handle)]
    return [(path.name, path.read_bytes()) for path in paths]


def fragments_of(folder: Path) -> list[str]:
    """Text to search: 3-letter pieces of every person's name, and some that match nobody."""
    with open(folder / "labels.csv", newline="") as handle:
        names = sorted({row["person"] for row in csv.DictReader(handle)})
    pieces = sorted({name[i : i + 3] for name in names for i in range(0, len(name) - 2, 2)})
    return [*pieces, "zzq", "xyw", "qqq"]


def arrivals(rate: float, seconds: float, rng: random.Random) -> list[float]:
    """Exactly rate x seconds arrival times (seconds from the start), each uniformly random:
    a Poisson process given its count, so the offered rate is exact and bursts are real."""
    return sorted(rng.uniform(0, seconds) for _ in range(round(rate * seconds)))


async def photo_search(client: httpx.AsyncClient, photo: tuple[str, bytes]) -> httpx.Response:
    name, data = photo
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return await client.post("/api/search", files={"photo": (name, data, kind)})


def text_route(base: str) -> str:
    """Where text searches go: GET /api/find?q= where the server has it, else /api/people?q=."""
    paths = httpx.get(f"{base}/openapi.json", timeout=10.0).json()["paths"]
    return "/api/find" if "/api/find" in paths else "/api/people"


async def text_search(client: httpx.AsyncClient, route: str, text: str) -> httpx.Response:
    return await client.get(route, params={"q": text})


# -- a round ---------------------------------------------------------------------------------
async def sample(round_: Round, pid: int) -> None:
    """Record resource use every second until cancelled."""
    while True:
        round_.samples.append(Usage.now(pid))
        await asyncio.sleep(1.0)


async def run_round(
    round_: Round,
    base: str,
    key: str,
    clients: int,
    photos: list[tuple[str, bytes]],
    texts: list[str],
    pid: int,
) -> None:
    """Send the round's traffic and record every outcome (and the server's use) in `round_`."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx.Timeout(30.0, pool=None)
    rng = random.Random(SEED)
    route = text_route(base)
    plan = sorted(
        (at, kind, i)
        for kind in KINDS
        for i, at in enumerate(arrivals(round_.rates[kind], round_.seconds, rng))
    )
    if round_.rates.get("bad"):  # evenly spaced, not random: one every 1/rate seconds
        every = 1 / round_.rates["bad"]
        plan = sorted(
            plan + [(every * (i + 0.5), "bad", i) for i in range(int(round_.seconds / every))]
        )
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=timeout
    ) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sampler = asyncio.create_task(sample(round_, pid))

        async def one(at: float, kind: str, i: int) -> None:
            round_.client_lag = max(round_.client_lag, loop.time() - (start + at))
            if kind == "bad":
                request = photo_search(client, BAD_UPLOAD)
            elif kind == "photo":
                request = photo_search(client, photos[i % len(photos)])
            else:
                request = text_search(client, route, texts[i % len(texts)])
            round_.outcomes.append(await timed(kind, at, request, loop.time, start))

        tasks = []
        for at, kind, i in plan:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            tasks.append(asyncio.create_task(one(at, kind, i)))
        last_sent = start + (plan[-1][0] if plan else 0.0)
        await asyncio.gather(*tasks)
        round_.drain = max(0.0, loop.time() - last_sent)
        sampler.cancel()
        round_.samples.append(Usage.now(pid))


async def timed(
    kind: str,
    at: float,
    request: Awaitable[httpx.Response],
    clock: Callable[[], float],
    start: float,
) -> Outcome:
    """The outcome of awaiting `request`, timed from when it was due (`start` + `at`)."""
    try:
        response = await request
        status, retry = response.status_code, "retry-after" in response.headers
    except httpx.HTTPError:
        status, retry = 0, False
    return Outcome(kind, at, status, clock() - (start + at), retry)


def check_health(round_: Round, base: str, process: subprocess.Popen[bytes]) -> None:
    round_.server_alive = process.poll() is None
    started = time.perf_counter()
    try:
        if httpx.get(f"{base}/healthz", timeout=5.0).status_code == 200:
            round_.health_ms = (time.perf_counter() - started) * 1000
    except httpx.TransportError:
        round_.health_ms = None


# -- the report ------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank) of `values`; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def table(round_: Round) -> str:
    header = "| kind | requests | ok | errors | 503s | ok/s | p50 ms | p99 ms |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        mine = [o for o in round_.outcomes if o.kind == kind]
        ok = [o.seconds * 1000 for o in mine if o.ok]
        errors = sum(1 for o in mine if not o.ok and not o.shed)
        shed = sum(1 for o in mine if o.shed)
        lines.append(
            f"| {kind} | {len(mine)} | {len(ok)} | {errors} | {shed} | "
            f"{len(ok) / round_.seconds:.1f} | {percentile(ok, 0.5):.0f} | "
            f"{percentile(ok, 0.99):.0f} |"
        )
    return "\n".join(lines)


def bad_upload_line(round_: Round) -> str:
    """How the bad uploads were answered, and the legitimate searches that failed."""
    bad = [o for o in round_.outcomes if o.kind == "bad"]
    statuses = {s: sum(o.status == s for o in bad) for s in sorted({o.status for o in bad})}
    failed = [o for o in round_.outcomes if o.kind != "bad" and not o.ok and not o.shed]
    return (
        f"bad uploads: {len(bad)}, answered {statuses} (want all {BAD_STATUS}); "
        f"failed legitimate searches: {len(failed)} (target 0)"
    )


def verdict(round_: Round) -> str:
    """The facts under a round's table."""
    statuses = sorted({o.status for o in round_.outcomes if not o.ok and o.kind != "bad"})
    busy = [o for o in round_.outcomes if o.status == 503]
    health = f"{round_.health_ms:.0f} ms" if round_.health_ms is not None else "no answer"
    return (
        f"non-2xx statuses seen: {statuses or 'none'} (0: no answer); "
        f"503s with Retry-After: {sum(o.shed for o in busy)}/{len(busy)}; "
        f"last answer {round_.drain * 1000:.0f} ms after the last request was due; "
        f"client lag max {round_.client_lag * 1000:.0f} ms; "
        f"server {'alive' if round_.server_alive else 'DEAD'}, /healthz after: {health}"
    )


def timeline_table(round_: Round, window: float = 10.0) -> str:
    """Per window of the round: photo answers, 503s, p99s, and the cores others used."""
    lines = [
        "| from s | photo ok | photo 503 | photo p99 ms | text p99 ms | workers cores | "
        "other cores |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for begin in range(0, int(round_.seconds), int(window)):
        mine = [o for o in round_.outcomes if begin <= o.at < begin + window]
        photo_ok = [o.seconds * 1000 for o in mine if o.kind == "photo" and o.ok]
        text_ok = [o.seconds * 1000 for o in mine if o.kind == "text" and o.ok]
        shed = sum(1 for o in mine if o.kind == "photo" and o.status == 503)
        workers, other = window_cores(round_.samples, begin, begin + window)
        lines.append(
            f"| {begin} | {len(photo_ok)} | {shed} | {percentile(photo_ok, 0.99):.0f} | "
            f"{percentile(text_ok, 0.99):.0f} | {workers:.2f} | {other:.2f} |"
        )
    return "\n".join(lines)


def window_cores(samples: list[Usage], begin: float, end: float) -> tuple[float, float]:
    """Cores the analysis workers and other processes used between two times of the round."""
    start = samples[0].wall
    inside = [u for u in samples if begin <= u.wall - start <= end + 0.5]
    if len(inside) < 2:
        return float("nan"), float("nan")
    first, last = inside[0], inside[-1]
    wall = last.wall - first.wall
    ours = sum(getattr(last, f) - getattr(first, f) for f in ("server", "workers", "client"))
    other = max(0.0, last.machine - first.machine - ours)
    return (last.workers - first.workers) / wall, other / wall


def cpu_line(start: Usage, end: Usage) -> str:
    """Cores busy on average over the round, by whom, and the server's memory."""
    wall = end.wall - start.wall
    server, workers = end.server - start.server, end.workers - start.workers
    client = end.client - start.client
    other = max(0.0, end.machine - start.machine - server - workers - client)
    return (
        f"cores busy (of {os.cpu_count()}): server {server / wall:.2f}, analysis workers "
        f"{workers / wall:.2f}, load client {client / wall:.2f}, other processes "
        f"{other / wall:.2f}; server RSS with workers {start.rss_mb:.0f} -> {end.rss_mb:.0f} MB"
    )


def report(round_: Round, timeline: bool) -> None:
    rates = ", ".join(f"{kind} {rate:g}/s" for kind, rate in round_.rates.items())
    print(f"\n### {round_.title}: {rates}, {round_.seconds:g} s")
    print(table(round_))
    print(verdict(round_))
    if round_.rates.get("bad"):
        print(bad_upload_line(round_))
    if len(round_.samples) >= 2:
        print(cpu_line(round_.samples[0], round_.samples[-1]))
    if timeline:
        print(timeline_table(round_))


def median_photo_kb(photos: list[tuple[str, bytes]]) -> float:
    return statistics.median(len(data) for _, data in photos) / 1024


# -- main ------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo-rate", type=float, default=5.0, help="photo searches/s")
    parser.add_argument("--text-rate", type=float, default=50.0, help="text searches/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each round")
    parser.add_argument("--clients", type=int, default=32, help="connections at most")
    parser.add_argument("--overload", action="store_true", help="photo rate x2 and x4 instead")
    parser.add_argument("--rebuild", action="store_true", help="index the set again")
    parser.add_argument("--timeline", action="store_true", help="also a table per 10 s")
    parser.add_argument(
        "--bad-uploads", action="store_true", help="add a round with a bad upload every 2 s"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="s to wait for an idle machine first"
    )
    return parser.parse_args()


def rounds_of(args: argparse.Namespace) -> list[Round]:
    factors = [2, 4] if args.overload else [1]
    rounds = [
        Round(
            f"photo rate x{factor}" if args.overload else "target",
            {"photo": args.photo_rate * factor, "text": args.text_rate},
            args.seconds,
        )
        for factor in factors
    ]
    if args.bad_uploads:
        rates = {"photo": args.photo_rate, "text": args.text_rate, "bad": 0.5}
        rounds.append(Round("target + a bad upload every 2 s", rates, args.seconds))
    return rounds


def main() -> None:
    args = parse_args()
    folder = faces_set()
    data = data_dir(folder, args.rebuild)
    key = search_key(data)
    photos, texts = photos_of(folder), fragments_of(folder)
    print(
        f"{len(photos)} query photos (median {median_photo_kb(photos):.0f} KB), "
        f"{len(texts)} text fragments, {args.clients} connections at most, "
        f"{os.cpu_count()} CPUs; server: default analysis workers"
    )
    with server(data) as (base, process):
        for round_ in rounds_of(args):
            wait_for_quiet(args.quiet_wait)
            asyncio.run(run_round(round_, base, key, args.clients, photos, texts, process.pid))
            check_health(round_, base, process)
            report(round_, args.timeline)


if __name__ == "__main__":
    main()
