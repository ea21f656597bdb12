#!/usr/bin/env bash
# Create .venv (Python 3.11) and install iddetective with its test tools, once per change of
# pyproject.toml. With --browser (dev/test.sh), also Debian's Chromium for the browser test
# when /usr/bin/chromium is missing (apt-get, as root or with sudo). Safe to run again.
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
# The browser test (tests/test_browser.py) drives Debian's Chromium; never a downloaded browser.
if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
    missing="setup: /usr/bin/chromium is missing; install it as root: apt-get install -y chromium"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null; then
        sudo=sudo
    else
        echo "$missing (this is not root and sudo is absent)" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "setup: /usr/bin/chromium is missing and apt-get is absent: install Chromium there" >&2
        exit 1
    fi
    echo "setup: installing chromium with apt-get for the browser test"
    apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get"
    if ! $apt install -y chromium; then
        echo "setup: updating the package lists, then trying again"
        $apt update && $apt install -y chromium || { echo "$missing" >&2; exit 1; }
    fi
fi
