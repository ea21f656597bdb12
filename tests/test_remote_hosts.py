"""Remote workers over a real OpenSSH server on 127.0.0.1, started by these tests.

The server has a host key, a client key and a home folder of its own (HOME is set for its
sessions), so the tests never touch a system sshd or the user's ~/.iddetective. The workers
are harmless stand-in processes: the host is this machine, so their pids are checked here.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import pytest

from iddetective.errors import UsageError
from iddetective.ingest.fleet.remote_hosts import (
    STATE_FILE,
    AuthenticationFailed,
    CommandMissing,
    Host,
    HostKeyRejected,
    HostsFileError,
    HostUnreachable,
    WorkerStartFailed,
    down,
    fleet_down,
    fleet_up,
    host_named,
    load_hosts,
    status,
    up,
)

pytestmark = pytest.mark.services

SSHD = Path("/usr/sbin/sshd")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
BROKER = "redis://:secret@broker.example:6379/0"


@dataclass(frozen=True)
class Server:
    """A running sshd and the files a client needs to reach it."""

    folder: Path
    port: int
    home: Path
    client_key: Path
    other_key: Path
    known_hosts: Path

    def hosts_file(self, extra: str = "", name: str = "local", **fields: object) -> Path:
        """A hosts file with one host `name` for this server."""
        entry = {
            "address": "127.0.0.1",
            "port": self.port,
            "user": getpass.getuser(),
            "identity": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            **fields,
        }
        lines = [f"[hosts.{name}]"] + [f"{key} = {_toml(value)}" for key, value in entry.items()]
        path = self.folder / "hosts.toml"
        path.write_text("\n".join(lines) + "\n" + extra)
        return path

    def host(self, **fields: object) -> Host:
        """The host of `hosts_file(**fields)`."""
        return host_named(self.hosts_file(extra="", name="local", **fields), "local")


def _toml(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _keygen(path: Path) -> Path:
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)]
    subprocess.run(command, check=True)
    return path


def _start_sshd(folder: Path) -> tuple[subprocess.Popen[bytes], Server]:
    home = folder / "home"
    home.mkdir()
    host_key = _keygen(folder / "host_key")
    client_key = _keygen(folder / "client_key")
    other_key = _keygen(folder / "other_key")
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = _free_port()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text()}")
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"PidFile {folder / 'sshd.pid'}\nUsePAM no\nStrictModes no\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"SetEnv HOME={home}\nMaxStartups 100\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    with open(folder / "sshd.log", "wb") as log:  # the child keeps its own copy
        command = [str(SSHD), "-D", "-f", str(config), "-e"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    server = Server(folder, port, home, client_key, other_key, known_hosts)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                if connection.recv(4).startswith(b"SSH-"):
                    return process, server
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()[-2000:]}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Our own sshd on a free port of 127.0.0.1, stopped at the end of the module.

    Under CI a missing or failing sshd fails the tests; elsewhere they skip with the reason.
    """
    try:
        if not SSHD.exists() or not shutil.which("ssh-keygen"):
            raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server (dev/setup.sh)")
        process, server = _start_sshd(tmp_path_factory.mktemp("sshd"))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        reason = f"cannot run an sshd for the remote host tests: {error}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield server
    with contextlib.suppress(Exception):
        down(server.host(), grace=1)  # what a failed test left running
    process.terminate()
    process.wait(timeout=10)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process here (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


def test_up_status_down_and_up_again(sshd: Server) -> None:
    host = sshd.host()
    started = up(host, 2, BROKER, "postgresql://u:pw@db.example/x", command=SLEEPER, settle=0.1)
    pids = sorted(worker.pid for worker in started)
    assert [worker.host for worker in started] == ["local", "local"]
    assert all(worker.alive and worker.started_at.tzinfo for worker in started)
    assert len(set(pids)) == 2 and all(_running(pid) for pid in pids)
    assert sorted(w.pid for w in status(host) if w.alive) == pids
    # The URLs reach the workers through their environment, not their command line.
    environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    assert f"IDDETECTIVE_BROKER={BROKER}".encode() in environ
    assert b"IDDETECTIVE_DB=postgresql://u:pw@db.example/x" in environ
    assert b"secret" not in Path(f"/proc/{pids[0]}/cmdline").read_bytes()
    assert os.getsid(pids[0]) == pids[0]  # detached: a session of its own

    assert sorted(down(host, grace=5)) == pids
    assert all(_wait_gone(pid) for pid in pids)
    assert status(host) == []
    assert (sshd.home / STATE_FILE).read_text() == ""

    again = up(host, 1, BROKER, command=SLEEPER, settle=0.1)
    assert [w.pid for w in status(host) if w.alive] == [again[0].pid]
    assert down(host, grace=5) == [again[0].pid]
    assert _wait_gone(again[0].pid)


def test_down_kills_what_ignores_sigterm_and_forgets_the_dead(sshd: Server) -> None:
    host = sshd.host()
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
    [kept, killed] = up(host, 2, BROKER, command=stubborn, settle=0.1)
    os.kill(killed.pid, 9)
    assert _wait_gone(killed.pid)
    alive = {worker.pid: worker.alive for worker in status(host)}
    assert alive == {kept.pid: True, killed.pid: False}
    started = time.monotonic()
    assert down(host, grace=0.5) == [kept.pid]
    assert time.monotonic() - started < 5
    assert _wait_gone(kept.pid)
    assert status(host) == []


def test_a_worker_that_exits_at_once_is_reported_with_its_log(sshd: Server) -> None:
    host = sshd.host()
    failing = [sys.executable, "-c", "import sys; sys.exit('cannot reach the broker')"]
    with pytest.raises(WorkerStartFailed, match=r"host 'local'.*cannot reach the broker"):
        up(host, 1, BROKER, command=failing)
    assert down(host, grace=1) == []
    assert status(host) == []


def test_fleet_up_takes_the_broker_from_the_hosts_env(sshd: Server) -> None:
    # `iddetective worker` with a stand-in for iddetective: python -c '...' worker.
    hosts = sshd.hosts_file(
        extra='[hosts.local.env]\nIDDETECTIVE_BROKER = "redis://broker.lan:6379/0"\n',
        iddetective=SLEEPER,
    )
    [worker] = fleet_up(hosts, "local", 1)
    environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
    assert b"IDDETECTIVE_BROKER=redis://broker.lan:6379/0" in environ
    assert Path(f"/proc/{worker.pid}/cmdline").read_bytes().endswith(b"\0worker\0")
    assert fleet_down(hosts, "local", grace=5) == [worker.pid]
    assert _wait_gone(worker.pid)
    with pytest.raises(UsageError, match=r"host 'local'.*--broker"):
        fleet_up(sshd.hosts_file(), "local", 1)


def test_a_missing_command_names_the_host(sshd: Server) -> None:
    host = replace(sshd.host(), name="gpu1")
    with pytest.raises(CommandMissing, match=r"host 'gpu1'.*/opt/none/bin/iddetective"):
        up(host, 1, BROKER, command=["/opt/none/bin/iddetective", "worker"])
    assert status(host) == []


def test_an_unreachable_port_names_the_host(sshd: Server) -> None:
    host = replace(sshd.host(), name="gpu1", port=_free_port())
    with pytest.raises(HostUnreachable, match=r"host 'gpu1': cannot reach .*@127\.0\.0\.1:"):
        status(host, connect_timeout=2)


def test_a_wrong_key_names_the_host(sshd: Server) -> None:
    host = replace(sshd.host(), name="gpu1", identity=sshd.other_key)
    with pytest.raises(AuthenticationFailed, match=r"host 'gpu1'.*refused the key"):
        status(host)
    missing = replace(host, identity=sshd.folder / "no_such_key")
    with pytest.raises(AuthenticationFailed, match=r"host 'gpu1'.*no_such_key does not exist"):
        status(missing)


def test_an_unknown_host_key_is_refused(sshd: Server) -> None:
    empty = sshd.folder / "empty_known_hosts"
    empty.write_text("")
    host = replace(sshd.host(), name="gpu1", known_hosts=empty)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.folder / "host_key.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    with pytest.raises(HostKeyRejected, match=r"host 'gpu1'.*not in .*ssh-keyscan -p") as caught:
        status(host)
    assert fingerprint in str(caught.value)


def test_a_hosts_file_is_read_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(
        '[hosts.gpu1]\naddress = "10.0.0.5"\nuser = "ingest"\nidentity = "keys/fleet"\n'
        'iddetective = "/opt/iddetective/.venv/bin/iddetective --verbose"\n'
        '[hosts.gpu1.env]\nIDDETECTIVE_DB = "postgresql://db.lan/iddetective"\n'
        '[hosts.gpu2]\naddress = "gpu2.lan"\nport = 2222\n'
    )
    hosts = load_hosts(path)
    assert hosts["gpu1"] == Host(
        name="gpu1",
        address="10.0.0.5",
        user="ingest",
        identity=tmp_path / "keys" / "fleet",
        iddetective=("/opt/iddetective/.venv/bin/iddetective", "--verbose"),
        env={"IDDETECTIVE_DB": "postgresql://db.lan/iddetective"},
    )
    assert (hosts["gpu2"].port, hosts["gpu2"].user, hosts["gpu2"].identity) == (2222, None, None)
    assert hosts["gpu2"].iddetective == ("iddetective",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hosts.gpu1\n", r"hosts\.toml: is not valid TOML"),
        ("", r"hosts\.toml: lists no host"),
        ('[servers.gpu1]\naddress = "a"\n', r"unknown top-level key 'servers'"),
        ("[hosts.gpu1]\nport = 22\n", r"host 'gpu1': address: is required"),
        ('[hosts.gpu1]\naddress = ""\n', r"host 'gpu1': address: must be a non-empty string"),
        ('[hosts.gpu1]\naddress = "a"\nport = "22"\n', r"host 'gpu1': port: must be a number"),
        ('[hosts.gpu1]\naddress = "a"\nport = 70000\n', r"host 'gpu1': port: .* not 70000"),
        ('[hosts.gpu1]\naddress = "a"\npassword = "x"\n', r"'gpu1': password: .*use a key"),
        ('[hosts.gpu1]\naddress = "a"\nhostname = "b"\n', r"'gpu1': hostname: unknown field"),
        ('[hosts.gpu1]\naddress = "a"\niddetective = ""\n', r"'gpu1': iddetective: must be"),
        ('[hosts.gpu1]\naddress = "a"\niddetective = "\'x"\n', r"'gpu1': iddetective: cannot"),
        ('[hosts.gpu1]\naddress = "a"\nenv = 3\n', r"'gpu1': env: must be a table"),
        ('[hosts.gpu1]\naddress = "a"\n[hosts.gpu1.env]\n"A-B" = "x"\n', r"env\.A-B: is not"),
        ('[hosts.gpu1]\naddress = "a"\n[hosts.gpu1.env]\nA = 1\n', r"env\.A: must be a string"),
        ("hosts = 3\n", r"lists no host"),
        ("[hosts]\ngpu1 = 3\n", r"host 'gpu1': must be a table"),
    ],
)
def test_bad_hosts_files_say_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(HostsFileError, match=message) as caught:
        load_hosts(path)
    assert str(caught.value).startswith(str(path))


def test_unknown_host_names_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text('[hosts.gpu1]\naddress = "a"\n[hosts.gpu2]\naddress = "b"\n')
    with pytest.raises(HostsFileError, match=r"no host 'gpu3' \(hosts: gpu1, gpu2\)"):
        host_named(path, "gpu3")
    with pytest.raises(HostsFileError, match=r"absent\.toml: cannot be read"):
        load_hosts(tmp_path / "absent.toml")
    with pytest.raises(UsageError, match="at least 1"):
        up(load_hosts(path)["gpu1"], 0, BROKER)


def test_the_documented_hosts_file_reads(tmp_path: Path) -> None:
    scaling = (Path(__file__).resolve().parent.parent / "docs" / "scaling.md").read_text()
    section = scaling.split("## Remote hosts", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "hosts.toml"
    path.write_text(example)
    hosts = load_hosts(path)
    assert sorted(hosts) == ["gpu1", "gpu2"]
    assert hosts["gpu1"].env["IDDETECTIVE_BROKER"] == "redis://broker.lan:6379/0"
    assert hosts["gpu1"].identity == Path("~/.ssh/iddetective_fleet").expanduser()


# -- the same from the dashboard's API ---------------------------------------------------------


def test_the_dashboard_starts_and_ends_workers_on_a_host(sshd: Server, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from test_web_fleet import bearer, new_data

    from iddetective.web import ServerSettings, create_app

    broker = '[hosts.local.env]\nIDDETECTIVE_BROKER = "redis://broker.lan:6379/0"\n'
    hosts = sshd.hosts_file(extra=broker, iddetective=SLEEPER)
    data, keys = new_data(tmp_path)
    settings = ServerSettings(data, analysis_workers=0, broker=None, hosts_file=hosts)
    with TestClient(create_app(settings)) as client:
        admin = bearer(keys["admin"])
        for role in ("search", "ingest"):
            assert client.get("/api/fleet/hosts", headers=bearer(keys[role])).status_code == 403
            refused = client.post(
                "/api/fleet/hosts/local/up", headers=bearer(keys[role]), json={"workers": 1}
            )
            assert refused.status_code == 403
        listed = client.get("/api/fleet/hosts", headers=admin).json()
        assert listed["hosts_file"] == str(hosts) and listed["exists"]
        assert [(h["name"], h["address"], h["port"]) for h in listed["hosts"]] == [
            ("local", "127.0.0.1", sshd.port)
        ]

        started = client.post("/api/fleet/hosts/local/up", headers=admin, json={"workers": 2})
        assert started.status_code == 200, started.text
        pids = sorted(started.json()["pids"])
        assert len(pids) == 2 and all(_running(pid) for pid in pids)
        ended = client.post("/api/fleet/hosts/local/down", headers=admin)
        assert ended.status_code == 200 and sorted(ended.json()["pids"]) == pids
        assert all(_wait_gone(pid) for pid in pids)

        unknown = client.post("/api/fleet/hosts/nowhere/up", headers=admin, json={"workers": 1})
        assert unknown.status_code == 400 and "nowhere" in unknown.json()["error"]["message"]
        zero = client.post("/api/fleet/hosts/local/up", headers=admin, json={"workers": 0})
        assert zero.status_code == 422
    settings = ServerSettings(
        data, analysis_workers=0, broker=None, hosts_file=tmp_path / "none.toml"
    )
    with TestClient(create_app(settings)) as client:
        missing = client.get("/api/fleet/hosts", headers=admin).json()
        assert missing == {"hosts_file": str(tmp_path / "none.toml"), "exists": False, "hosts": []}
    closed = sshd.hosts_file(extra=broker, iddetective=SLEEPER, port=_free_port())
    settings = ServerSettings(data, analysis_workers=0, broker=None, hosts_file=closed)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/fleet/hosts/local/up", headers=admin, json={"workers": 1})
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"]["code"] == "remote_host"
        assert "host 'local'" in answer.json()["error"]["message"]


# --- the shipped script ------------------------------------------------------------------
WORKERS_SCRIPT = resources.files("iddetective") / "scripts" / "workers.sh"


def run_script(home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """scripts/workers.sh run as a host runs it: `sh -s` reading `set -- …` and the script."""
    text = f"set -- {shlex.join(arguments)}\n" + WORKERS_SCRIPT.read_text()
    environment = {"PATH": os.environ["PATH"], "HOME": str(home)}
    return subprocess.run(
        ["sh", "-s"], input=text, capture_output=True, text=True, env=environment, timeout=30
    )


def test_the_workers_script_is_package_data_and_posix_sh() -> None:
    assert WORKERS_SCRIPT.is_file()
    checked = subprocess.run(["dash", "-n"], input=WORKERS_SCRIPT.read_text(), text=True)
    assert checked.returncode == 0
    assert f'"$HOME/{STATE_FILE}"' in WORKERS_SCRIPT.read_text()


def test_the_workers_script_starts_finds_stops_and_forgets(tmp_path: Path) -> None:
    started = run_script(tmp_path, "start", "2", *SLEEPER)
    assert started.returncode == 0, started.stderr
    pids = [line.split("\t")[0] for line in started.stdout.splitlines()]
    assert len(pids) == 2 and (tmp_path / STATE_FILE).read_text() == started.stdout
    try:
        alive = run_script(tmp_path, "alive", *pids, "999999").stdout.split()[::2]
        assert alive == pids
        assert run_script(tmp_path, "signal", "TERM", "group", pids[0]).returncode == 0
        deadline = time.monotonic() + 10
        while pids[0] in run_script(tmp_path, "alive", *pids).stdout.split()[::2]:
            assert time.monotonic() < deadline, "the signalled worker still runs"
            time.sleep(0.1)
        assert run_script(tmp_path, "forget", pids[0]).returncode == 0
        assert run_script(tmp_path, "records").stdout.split("\t")[0] == pids[1]
    finally:
        run_script(tmp_path, "signal", "KILL", "group", *pids)


def test_the_workers_script_refuses_an_unknown_action(tmp_path: Path) -> None:
    refused = run_script(tmp_path, "reboot")
    assert refused.returncode == 2 and "unknown action 'reboot'" in refused.stderr
    missing = run_script(tmp_path, "start", "1", "no-such-program-here")
    assert missing.returncode == 127 and "no-such-program-here: command not found" in (
        missing.stderr
    )
