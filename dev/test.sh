#!/usr/bin/env bash
# Set up, then run the whole test suite with lint and type checks. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh --browser
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
