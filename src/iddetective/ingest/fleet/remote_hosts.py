"""Hosts reachable over SSH, and the ingestion worker processes we run there.

A hosts file (TOML) names the machines; `up` starts detached worker processes on one of them,
`status` says which are alive and `down` stops them. What runs where is recorded on the host
itself, in `~/.iddetective/workers.pids`, so any operator machine with the key can stop what
another one started. Workers get their broker and catalogue URLs through the environment,
never on the command line, where every user of the host could read them with `ps`.

The SSH client is paramiko: a synchronous API suits a library called from click commands
(asyncssh would need an event loop around every call), it is pure Python on top of
`cryptography`, and it reads OpenSSH's key and known_hosts files. Keys only: the hosts file
has no password field, and a host whose key is not in known_hosts is refused, never trusted
on first use.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import re
import shlex
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import paramiko

from ...errors import IDDetectiveError, UsageError

__all__ = [
    "STATE_FILE",
    "AuthenticationFailed",
    "CommandMissing",
    "Host",
    "HostKeyRejected",
    "HostUnreachable",
    "HostsFileError",
    "RemoteCommandFailed",
    "RemoteHostError",
    "RemoteWorker",
    "WorkerStartFailed",
    "down",
    "fleet_down",
    "fleet_up",
    "host_named",
    "load_hosts",
    "status",
    "up",
    "worker_command",
]

#: Where each host records the workers started there, relative to the SSH user's home.
STATE_FILE = ".iddetective/workers.pids"
_FIELDS = {"address", "port", "user", "identity", "known_hosts", "iddetective", "env"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_COMMAND_MISSING = 127
#: The shell script every action on a host runs (package data).
_WORKERS_SCRIPT = resources.files("iddetective") / "scripts" / "workers.sh"
_STOP_POLL = 0.1


class HostsFileError(UsageError):
    """The hosts file cannot be used: the message names the file, the host entry and field."""

    def __init__(self, path: Path, reason: str, host: str | None = None, key: str | None = None):
        where = str(path) + (f": host {host!r}" if host else "") + (f": {key}" if key else "")
        super().__init__(f"{where}: {reason}")
        self.path, self.host, self.key, self.reason = path, host, key, reason


class RemoteHostError(IDDetectiveError):
    """Something went wrong on or on the way to a host; the message starts with its name."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host!r}: {reason}")
        self.host, self.reason = host, reason


class HostUnreachable(RemoteHostError):
    """No SSH server answered at the host's address and port."""


class AuthenticationFailed(RemoteHostError):
    """The SSH server refused the user and key."""


class HostKeyRejected(RemoteHostError):
    """The host's key is not in known_hosts, or differs from the one recorded there."""


class CommandMissing(RemoteHostError):
    """The worker command does not exist on the host."""


class WorkerStartFailed(RemoteHostError):
    """A worker exited right after it was started; the message ends with its log."""


class RemoteCommandFailed(RemoteHostError):
    """A shell command run on the host failed."""


def _default_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


@dataclass(frozen=True)
class Host:
    """One machine of the hosts file, and how to reach it and run iddetective there."""

    name: str
    address: str
    port: int = 22
    #: The SSH user; None means the local user's name, as ssh does.
    user: str | None = None
    #: The private key; None means ssh-agent and the default keys in ~/.ssh.
    identity: Path | None = None
    known_hosts: Path = field(default_factory=_default_known_hosts)
    #: The command that runs iddetective on the host (e.g. a virtualenv's bin/iddetective).
    iddetective: tuple[str, ...] = ("iddetective",)
    #: Environment of the workers (IDDETECTIVE_DB, IDDETECTIVE_BROKER, ...).
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteWorker:
    """A worker process recorded on a host: its pid there, when it started, where it logs."""

    host: str
    pid: int
    started_at: datetime
    log: str
    alive: bool


@dataclass(frozen=True)
class _Record:
    """One line of the state file; `ticks` tells this process from a later one with its pid."""

    pid: int
    started_at: str
    ticks: str
    log: str

    def line(self) -> str:
        return f"{self.pid}\t{self.started_at}\t{self.ticks}\t{self.log}\n"


# --- the hosts file ---------------------------------------------------------------------


def load_hosts(path: Path) -> dict[str, Host]:
    """The hosts of the TOML file at `path` by name; `HostsFileError` says what is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HostsFileError(path, f"cannot be read: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise HostsFileError(path, f"is not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"hosts"})
    if unknown:
        raise HostsFileError(path, f"unknown top-level key {unknown[0]!r} (only [hosts.NAME])")
    hosts = document.get("hosts", {})
    if not isinstance(hosts, dict) or not hosts:
        raise HostsFileError(path, "lists no host (add a [hosts.NAME] table)")
    return {name: _host(path, name, entry) for name, entry in hosts.items()}


def host_named(path: Path, name: str) -> Host:
    """The host called `name` in the hosts file at `path`."""
    hosts = load_hosts(path)
    if name not in hosts:
        raise HostsFileError(path, f"no host {name!r} (hosts: {', '.join(sorted(hosts))})")
    return hosts[name]


def _host(path: Path, name: str, entry: Any) -> Host:
    if not isinstance(entry, dict):
        raise HostsFileError(path, "must be a table of fields", name)
    if "password" in entry:
        raise HostsFileError(path, "passwords are never stored; use a key", name, "password")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        known = ", ".join(sorted(_FIELDS))
        raise HostsFileError(path, f"unknown field (fields: {known})", name, unknown[0])
    if "address" not in entry:
        raise HostsFileError(path, "is required", name, "address")
    port = entry.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise HostsFileError(path, f"must be a number from 1 to 65535, not {port!r}", name, "port")
    return Host(
        name=name,
        address=_text(path, name, entry, "address"),
        port=port,
        user=_text(path, name, entry, "user") if "user" in entry else None,
        identity=_path(path, name, entry, "identity") if "identity" in entry else None,
        known_hosts=_path(path, name, entry, "known_hosts")
        if "known_hosts" in entry
        else _default_known_hosts(),
        iddetective=_command(path, name, entry.get("iddetective", "iddetective")),
        env=_environment(path, name, entry.get("env", {})),
    )


def _text(path: Path, name: str, entry: dict[str, Any], key: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise HostsFileError(path, f"must be a non-empty string, not {value!r}", name, key)
    return value


def _path(path: Path, name: str, entry: dict[str, Any], key: str) -> Path:
    """A local file named by the entry: `~` expanded, relative to the hosts file's folder."""
    return path.parent / Path(_text(path, name, entry, key)).expanduser()


def _command(path: Path, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as error:
            reason = f"cannot be split into words: {error}"
            raise HostsFileError(path, reason, name, "iddetective") from None
        if words:
            return tuple(words)
    reason = f"must be a command (a string or a list of strings), not {value!r}"
    raise HostsFileError(path, reason, name, "iddetective")


def _environment(path: Path, name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise HostsFileError(path, 'must be a table of NAME = "value"', name, "env")
    for key, text in value.items():
        if not _ENV_NAME.match(key):
            raise HostsFileError(path, "is not a variable name", name, f"env.{key}")
        if not isinstance(text, str):
            raise HostsFileError(path, f"must be a string, not {text!r}", name, f"env.{key}")
    return dict(value)


# --- workers ---------------------------------------------------------------------------


def worker_command(host: Host) -> list[str]:
    """The command of one ingestion worker on `host`: `iddetective worker`.

    The broker and catalogue URLs reach it as IDDETECTIVE_BROKER (what its `--broker`
    defaults to) and IDDETECTIVE_DB (the catalogue of every command, docs/contracts.md).
    """
    return [*host.iddetective, "worker"]


def up(
    host: Host,
    workers: int,
    broker: str,
    db: str | None = None,
    *,
    command: Sequence[str] | None = None,
    settle: float = 0.5,
    connect_timeout: float = 10.0,
) -> list[RemoteWorker]:
    """Start `workers` detached worker processes on `host` and record them there.

    `command` replaces `worker_command(host)`. Each worker logs to
    ~/.iddetective/logs/ on the host. A worker that has exited after `settle` seconds
    raises `WorkerStartFailed` with the end of its log (the others keep running).
    """
    if workers < 1:
        raise UsageError(f"the number of workers must be at least 1, not {workers}")
    argv = list(command) if command is not None else worker_command(host)
    environment = {**host.env, "IDDETECTIVE_BROKER": broker}
    if db is not None:
        environment["IDDETECTIVE_DB"] = db
    with _connected(host, connect_timeout) as client:
        output = _control(client, host, "start", workers, *argv, environment=environment)
        started = [_parse_record(line) for line in output.splitlines() if line.strip()]
        time.sleep(settle)
        alive = _alive(client, host, started)
        dead = [record for record in started if record.pid not in alive]
        if dead:
            tail = _control(client, host, "log", dead[0].log)
            reason = f"worker {dead[0].pid} ({shlex.join(argv)}) exited at once; its log:\n{tail}"
            raise WorkerStartFailed(host.name, reason)
    return [_worker(host, record, True) for record in started]


def status(host: Host, *, connect_timeout: float = 10.0) -> list[RemoteWorker]:
    """The workers recorded on `host`, each with whether it is still running."""
    with _connected(host, connect_timeout) as client:
        records = _records(client, host)
        alive = _alive(client, host, records)
    return [_worker(host, record, record.pid in alive) for record in records]


def down(host: Host, *, grace: float = 30.0, connect_timeout: float = 10.0) -> list[int]:
    """Stop the workers recorded on `host`: the pids that were running.

    SIGTERM lets each finish its batch (Celery's warm shutdown); whatever still runs after
    `grace` seconds gets SIGKILL, with its process group. Every stopped or already dead
    worker leaves the state file.
    """
    with _connected(host, connect_timeout) as client:
        records = _records(client, host)
        running = sorted(_alive(client, host, records))
        if running:
            _signal(client, host, "TERM", running)
            left = _wait_until_gone(client, host, records, grace)
            if left:
                _signal(client, host, "KILL", left, group=True)
                _wait_until_gone(client, host, records, grace=5.0)
        _forget(client, host, {record.pid for record in records})
    return running


def fleet_up(
    hosts_file: Path,
    name: str,
    workers: int,
    broker: str | None = None,
    db: str | None = None,
) -> list[RemoteWorker]:
    """`iddetective fleet up`: start workers on the host `name` of the hosts file.

    The broker and catalogue default to the host's own IDDETECTIVE_BROKER and IDDETECTIVE_DB
    (a URL that works here may not work there).
    """
    host = host_named(hosts_file, name)
    broker = broker or host.env.get("IDDETECTIVE_BROKER")
    if not broker:
        raise UsageError(f"host {name!r}: give --broker, or IDDETECTIVE_BROKER in its env")
    return up(host, workers, broker, db or host.env.get("IDDETECTIVE_DB"))


def fleet_down(hosts_file: Path, name: str, grace: float = 30.0) -> list[int]:
    """`iddetective fleet down`: stop the workers recorded on the host `name`."""
    return down(host_named(hosts_file, name), grace=grace)


def _control(
    client: paramiko.SSHClient,
    host: Host,
    action: str,
    *arguments: object,
    environment: Mapping[str, str] | None = None,
) -> str:
    """The output of the shipped script scripts/workers.sh doing `action` on the host: the
    script, its arguments and the `environment` it exports all go through standard input."""
    exports = "".join(
        f"export {key}={shlex.quote(value)}\n" for key, value in (environment or {}).items()
    )
    call = f"set -- {shlex.join([action, *map(str, arguments)])}\n"
    return _run(client, host, exports + call + _WORKERS_SCRIPT.read_text())


def _records(client: paramiko.SSHClient, host: Host) -> list[_Record]:
    text = _control(client, host, "records")
    return [_parse_record(line) for line in text.splitlines() if line.strip()]


def _parse_record(line: str) -> _Record:
    pid, started_at, ticks, log = line.rstrip("\n").split("\t", 3)
    return _Record(int(pid), started_at, ticks, log)


def _alive(client: paramiko.SSHClient, host: Host, records: Sequence[_Record]) -> set[int]:
    """The pids of `records` still running as the same process (not a zombie, not reused)."""
    if not records:
        return set()
    output = _control(client, host, "alive", *(record.pid for record in records))
    running: dict[str, str] = {}
    for line in output.splitlines():
        pid, _, ticks = line.partition(" ")
        running[pid] = ticks
    return {r.pid for r in records if r.ticks and running.get(str(r.pid)) == r.ticks}


def _signal(
    client: paramiko.SSHClient, host: Host, signal: str, pids: Sequence[int], group: bool = False
) -> None:
    if pids:
        _control(client, host, "signal", signal, "group" if group else "one", *pids)


def _wait_until_gone(
    client: paramiko.SSHClient, host: Host, records: Sequence[_Record], grace: float
) -> list[int]:
    deadline = time.monotonic() + grace
    while True:
        left = sorted(_alive(client, host, records))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(_STOP_POLL)


def _forget(client: paramiko.SSHClient, host: Host, pids: set[int]) -> None:
    """Remove `pids` from the state file."""
    if pids:
        _control(client, host, "forget", *sorted(pids))


def _worker(host: Host, record: _Record, alive: bool) -> RemoteWorker:
    started = datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
    return RemoteWorker(host.name, record.pid, started, record.log, alive)


# --- SSH -------------------------------------------------------------------------------


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key is not in known_hosts, saying how to add it."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        client.close()
        port = f"-p {self.host.port} " if self.host.port != 22 else ""
        raise HostKeyRejected(
            self.host.name,
            f"its key ({key.get_name()} {_fingerprint(key)}) is not in "
            f"{self.host.known_hosts}; check it, then add it: "
            f"ssh-keyscan {port}{self.host.address} >> {self.host.known_hosts}",
        )


def _fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH shows it (`ssh-keygen -lf`)."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@contextmanager
def _connected(host: Host, timeout: float) -> Iterator[paramiko.SSHClient]:
    """An SSH connection to `host`, closed at the end; failures raise `RemoteHostError`s."""
    if host.identity is not None and not host.identity.is_file():
        raise AuthenticationFailed(host.name, f"identity file {host.identity} does not exist")
    client = paramiko.SSHClient()
    if host.known_hosts.is_file():
        client.load_host_keys(str(host.known_hosts))
    client.set_missing_host_key_policy(_RefuseUnknownHost(host))
    try:
        _connect(client, host, timeout)
        yield client
    finally:
        client.close()


def _connect(client: paramiko.SSHClient, host: Host, timeout: float) -> None:
    where = f"{host.user or getpass.getuser()}@{host.address}:{host.port}"
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.user or getpass.getuser(),
            key_filename=str(host.identity) if host.identity else None,
            look_for_keys=host.identity is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.PasswordRequiredException:
        reason = f"identity file {host.identity} is encrypted: load it into ssh-agent"
        raise AuthenticationFailed(host.name, reason) from None
    except paramiko.AuthenticationException as error:
        raise AuthenticationFailed(host.name, f"{where} refused the key: {error}") from None
    except paramiko.BadHostKeyException as error:
        reason = f"its key differs from the one in {host.known_hosts} ({error})"
        raise HostKeyRejected(host.name, reason) from None
    except paramiko.SSHException as error:  # not an SSH server, or no common algorithm
        reason = str(error) or type(error).__name__
        raise HostUnreachable(host.name, f"SSH with {where} failed: {reason}") from None
    except OSError as error:  # refused, timed out, no route, unknown name
        reason = error.strerror or str(error) or type(error).__name__
        raise HostUnreachable(host.name, f"cannot reach {where}: {reason}") from None


def _run(client: paramiko.SSHClient, host: Host, script: str, timeout: float = 60.0) -> str:
    """The standard output of `script`, run by `sh` on the host from its standard input.

    The script goes through stdin, not the command line, so the URLs it exports never
    show in the host's process list.
    """
    try:
        stdin, stdout, stderr = client.exec_command("sh -s", timeout=timeout)
        stdin.write(script.encode())
        stdin.channel.shutdown_write()
        output = stdout.read().decode(errors="replace")
        errors = stderr.read().decode(errors="replace").strip()
        code = stdout.channel.recv_exit_status()
    except (OSError, paramiko.SSHException) as error:
        raise RemoteCommandFailed(host.name, f"the connection failed: {error}") from None
    if code == _COMMAND_MISSING:
        raise CommandMissing(host.name, errors or "command not found")
    if code != 0:
        raise RemoteCommandFailed(host.name, f"a command failed (exit {code}): {errors}")
    return output
