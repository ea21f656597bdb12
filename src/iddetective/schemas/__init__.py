"""JSON Schemas of the versioned outputs (docs/contracts.md)."""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

__all__ = ["search_schema"]


@functools.cache
def search_schema() -> dict[str, Any]:
    """The JSON Schema of `iddetective search --json` (iddetective/search/v1)."""
    text = (files(__name__) / "search-v1.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
