#!/usr/bin/env bash
# Set up, then run the whole test suite with lint and type checks. CI runs exactly this.
# With --fast: only the tests that need nothing beyond Python (no face sets, no services, no
# browser; markers in tests/needs.py), without lint: the lane to run while editing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fast" ]; then
    shift
    dev/setup.sh
    exec .venv/bin/python -m pytest -m "not faces and not services and not browser" "$@"
fi
dev/setup.sh --browser
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
