"""What a test needs beyond Python: the labelled face sets, services it starts, a browser.

Each need is a marker (`faces`, `services`, `browser`), so the fast lane leaves such tests
out (`dev/test.sh --fast`, README). Markers are kept honest: a test that uses a need it is
not marked with fails, saying which mark to add (`require`). Tests using the embedded
PostgreSQL are marked `services` by its fixtures, wherever they are.
"""

from __future__ import annotations

import pytest

__all__ = ["NEEDS", "current_test", "require"]

#: The markers, with what each means (registered in pyproject.toml too).
NEEDS = {
    "faces": "uses the labelled face sets ($IDDETECTIVE_FACES)",
    "services": "starts PostgreSQL, Redis, sshd or a server process of its own",
    "browser": "drives Debian's Chromium",
}

_running: list[pytest.Item] = []


def current_test(item: pytest.Item | None) -> None:
    """Remember the test being set up (conftest's hook), or forget it (None)."""
    _running[:] = [item] if item is not None else []


def require(need: str) -> None:
    """Fail the running test if it is not marked as having `need` (outside tests: nothing)."""
    if _running and _running[0].get_closest_marker(need) is None:
        item = _running[0]
        pytest.fail(
            f"{item.nodeid} {NEEDS[need]} but is not marked so: add "
            f"`pytestmark = pytest.mark.{need}` to its module, so the fast lane leaves it out"
        )
