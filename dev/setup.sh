#!/usr/bin/env bash
# Create .venv (Python 3.11) and install iddetective with its test tools, once per change of
# pyproject.toml. With --browser (dev/test.sh), also Debian's Chromium for the browser test
# when /usr/bin/chromium is missing, and openssh-server for the remote host tests when
# /usr/sbin/sshd is missing (apt-get, as root or with sudo). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.iddetective-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing iddetective and its test tools into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$wanted" > "$stamp"
fi
# The browser test (tests/test_browser.py) drives Debian's Chromium, never a downloaded browser;
# the remote host tests (tests/test_remote_hosts.py) start their own OpenSSH server, the worker
# tests (tests/test_workers.py, tests/test_web_fleet.py) their own Redis.
wanted_packages=()
if [ "${1:-}" = "--browser" ]; then
    [ -x /usr/bin/chromium ] || wanted_packages+=(chromium)
    [ -x /usr/sbin/sshd ] || wanted_packages+=(openssh-server)
    command -v redis-server >/dev/null || wanted_packages+=(redis-server)
fi
if [ "${#wanted_packages[@]}" -gt 0 ]; then
    packages="${wanted_packages[*]}"
    missing="setup: $packages missing; install as root: apt-get install -y $packages"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null; then
        sudo=sudo
    else
        echo "$missing (this is not root and sudo is absent)" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "setup: $packages missing and apt-get is absent: install them there" >&2
        exit 1
    fi
    echo "setup: installing $packages with apt-get for the browser and remote host tests"
    apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get"
    if ! $apt install -y "${wanted_packages[@]}"; then
        echo "setup: updating the package lists, then trying again"
        $apt update && $apt install -y "${wanted_packages[@]}" || { echo "$missing" >&2; exit 1; }
    fi
fi
